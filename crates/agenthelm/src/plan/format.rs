//! Reading plans from YAML and JSON with errors that say where the problem is.

use super::{Plan, PlanError};

pub(super) fn from_yaml(text: &str) -> Result<Plan, PlanError> {
    let deserializer = yaml_serde::Deserializer::from_str(text);
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let location = inner.location();
        parse_error(
            "YAML",
            location.as_ref().map(|l| l.line()),
            location.as_ref().map(|l| l.column()),
            path,
            inner.to_string(),
        )
    })
}

pub(super) fn from_json(text: &str) -> Result<Plan, PlanError> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let plan: Plan = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        parse_error(
            "JSON",
            Some(inner.line()),
            Some(inner.column()),
            path,
            inner.to_string(),
        )
    })?;
    deserializer.end().map_err(|e| {
        parse_error(
            "JSON",
            Some(e.line()),
            Some(e.column()),
            String::new(),
            e.to_string(),
        )
    })?;
    Ok(plan)
}

fn parse_error(
    format: &'static str,
    line: Option<usize>,
    column: Option<usize>,
    path: String,
    message: String,
) -> PlanError {
    PlanError::Parse {
        format,
        line: line.filter(|&l| l > 0),
        column: column.filter(|&c| c > 0),
        path: Some(path).filter(|p| !p.is_empty() && p != "."),
        message: strip_location(&message),
    }
}

/// Drops the " at line N column M" the parsers append, since the error shows it separately.
fn strip_location(message: &str) -> String {
    let cut = message
        .rfind(" at line ")
        .filter(|&i| message[i..].contains("column"))
        .unwrap_or(message.len());
    message[..cut].trim_end().to_owned()
}
