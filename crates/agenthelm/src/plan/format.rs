//! Reading plans from YAML and JSON with errors that say where the problem is.

use super::{Plan, PlanError};

pub(super) fn from_yaml(text: &str) -> Result<Plan, PlanError> {
    let deserializer = yaml_serde::Deserializer::from_str(text);
    let plan = serde_path_to_error::deserialize(deserializer).map_err(|e| {
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
    })?;
    // After the deserializer, so its own messages (a duplicate field, say) come first.
    super::check_yaml(text)?;
    Ok(plan)
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
    // serde_json keeps the last of two equal keys; JSON is YAML, so the same check finds them.
    super::check_yaml(text).map_err(|e| match e {
        PlanError::Parse {
            line,
            column,
            path,
            message,
            ..
        } => PlanError::Parse {
            format: "JSON",
            line,
            column,
            path,
            message,
        },
        other => other,
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
    let message = strip_location(&message);
    // The YAML parser starts its messages with the field path, which the error shows already.
    let message = match message.strip_prefix(path.as_str()) {
        Some(rest) if !path.is_empty() => rest.strip_prefix(": ").unwrap_or(rest).to_owned(),
        _ => message,
    };
    PlanError::Parse {
        format,
        line: line.filter(|&l| l > 0),
        column: column.filter(|&c| c > 0),
        path: Some(path).filter(|p| !p.is_empty() && p != "."),
        message,
    }
}

/// Drops the " at line N column M" the parsers put in their messages (at the end or in the
/// middle), since the error shows the location separately.
fn strip_location(message: &str) -> String {
    let mut out = message.to_owned();
    while let Some((start, end)) = location_span(&out) {
        out.replace_range(start..end, "");
    }
    out.trim_end().to_owned()
}

/// Where " at line N column M" (or " at line N, column M") is in `text`.
fn location_span(text: &str) -> Option<(usize, usize)> {
    let start = text.find(" at line ")?;
    let mut rest = &text[start + " at line ".len()..];
    let digits = |s: &str| s.len() - s.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let line_digits = digits(rest);
    if line_digits == 0 {
        return None;
    }
    rest = &rest[line_digits..];
    let after_comma = rest.strip_prefix(',').unwrap_or(rest);
    let after_column = after_comma.strip_prefix(" column ")?;
    let column_digits = digits(after_column);
    if column_digits == 0 {
        return None;
    }
    let end = text.len() - after_column.len() + column_digits;
    Some((start, end))
}
