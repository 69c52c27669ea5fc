//! `{{steps.<id>.result}}` and `{{result}}` references in step arguments.

use serde_json::Value;

/// Fills the references in every string of `args`.
///
/// - `{{steps.<id>.result}}` is the result of step `<id>`; `{{result}}` is `own_result` (the
///   step's own result, used in `compensate_args`).
/// - A path may follow: `{{steps.create.result.id}}`, `{{result.items.0}}`. A result that is a
///   string holding JSON is looked into as JSON.
/// - A string that is exactly one reference becomes the referenced value with its JSON type; a
///   reference inside longer text is replaced by the value's text.
/// - A reference that cannot be resolved is left as it is.
///
/// ```
/// use agenthelm::orchestrate::resolve_templates;
/// use serde_json::json;
///
/// let results = json!({"create": {"id": 7, "name": "report"}});
/// let lookup = |id: &str| results.get(id);
/// let args = json!({"id": "{{steps.create.result.id}}", "note": "made {{steps.create.result.name}}"});
/// assert_eq!(resolve_templates(&args, &lookup, None), json!({"id": 7, "note": "made report"}));
/// ```
pub fn resolve_templates<'a>(
    args: &Value,
    step_result: &dyn Fn(&str) -> Option<&'a Value>,
    own_result: Option<&Value>,
) -> Value {
    match args {
        Value::String(text) if text.contains("{{") => resolve_text(text, step_result, own_result),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| resolve_templates(v, step_result, own_result))
                .collect(),
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), resolve_templates(v, step_result, own_result)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The step ids a value refers to with `{{steps.<id>.result}}`.
pub(crate) fn referenced_steps(args: &Value, out: &mut Vec<String>) {
    match args {
        Value::String(text) => {
            for reference in references(text) {
                if let Some((Source::Step(id), _)) = parse(reference.inner) {
                    out.push(id.to_owned());
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| referenced_steps(v, out)),
        Value::Object(map) => map.values().for_each(|v| referenced_steps(v, out)),
        _ => {}
    }
}

fn resolve_text<'a>(
    text: &str,
    step_result: &dyn Fn(&str) -> Option<&'a Value>,
    own_result: Option<&Value>,
) -> Value {
    let lookup = |inner: &str| -> Option<Value> {
        let (source, path) = parse(inner)?;
        let base = match source {
            Source::Step(id) => step_result(id)?,
            Source::Own => own_result?,
        };
        follow(base, &path)
    };
    let refs = references(text);
    if let [only] = refs.as_slice() {
        if only.start == 0 && only.end == text.len() {
            return lookup(only.inner).unwrap_or_else(|| Value::String(text.to_owned()));
        }
    }
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for r in refs {
        out.push_str(&text[last..r.start]);
        match lookup(r.inner) {
            Some(Value::String(s)) => out.push_str(&s),
            Some(value) => out.push_str(&value.to_string()),
            None => out.push_str(&text[r.start..r.end]),
        }
        last = r.end;
    }
    out.push_str(&text[last..]);
    Value::String(out)
}

struct Reference<'t> {
    start: usize,
    end: usize,
    inner: &'t str,
}

fn references(text: &str) -> Vec<Reference<'_>> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(open) = text[from..].find("{{").map(|i| i + from) {
        let Some(close) = text[open + 2..].find("}}").map(|i| i + open + 2) else {
            break;
        };
        found.push(Reference {
            start: open,
            end: close + 2,
            inner: text[open + 2..close].trim(),
        });
        from = close + 2;
    }
    found
}

enum Source<'t> {
    Step(&'t str),
    Own,
}

/// `steps.<id>.result[.path]` or `result[.path]`.
fn parse(inner: &str) -> Option<(Source<'_>, Vec<&str>)> {
    let (source, rest) = if let Some(rest) = inner.strip_prefix("steps.") {
        let at = find_result_segment(rest)?;
        (Source::Step(&rest[..at]), &rest[at + ".result".len()..])
    } else {
        (Source::Own, inner.strip_prefix("result")?)
    };
    let path = match rest {
        "" => Vec::new(),
        _ => rest.strip_prefix('.')?.split('.').collect(),
    };
    Some((source, path))
}

/// Where `.result` ends the step id: followed by the end or by a path.
fn find_result_segment(rest: &str) -> Option<usize> {
    rest.match_indices(".result").map(|(i, _)| i).find(|&i| {
        let after = &rest[i + ".result".len()..];
        i > 0 && (after.is_empty() || after.starts_with('.'))
    })
}

fn follow(base: &Value, path: &[&str]) -> Option<Value> {
    if path.is_empty() {
        return Some(base.clone());
    }
    let parsed;
    let mut at = match base {
        Value::String(s) => {
            parsed = serde_json::from_str::<Value>(s).ok()?;
            &parsed
        }
        other => other,
    };
    for key in path {
        at = match at {
            Value::Object(map) => map.get(*key)?,
            Value::Array(items) => items.get(key.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(at.clone())
}
