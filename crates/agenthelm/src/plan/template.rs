//! `{{steps.<id>.result}}`, `{{result}}` and `{{env.NAME}}` references in step arguments: the
//! one place that knows their syntax. Everything else (resolution, validation, the planner's
//! schema checks, the scheduler) works with the parsed form, [`Template`] and [`Reference`].

use serde_json::Value;
use std::fmt;

const OPEN: &str = "{{";
const CLOSE: &str = "}}";

/// What a `{{ ... }}` placeholder refers to.
///
/// ```
/// use agenthelm::plan::{Reference, Template};
///
/// let template = Template::parse("made {{ steps.create.result.id }} and {{result}}");
/// let found: Vec<&Reference> = template.references().collect();
/// assert_eq!(found, [
///     &Reference::Step { id: "create", path: vec!["id"] },
///     &Reference::OwnResult { path: vec![] },
/// ]);
/// assert_eq!(found[0].to_string(), "{{steps.create.result.id}}");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reference<'t> {
    /// `{{steps.<id>.result}}`: the result of step `id`, then `path` into it (object keys and
    /// array indexes, from `{{steps.<id>.result.a.0}}`).
    Step {
        /// The step's id.
        id: &'t str,
        /// Keys and indexes into the result.
        path: Vec<&'t str>,
    },
    /// `{{result}}`: the step's own result (in `compensate_args`), then `path` into it.
    OwnResult {
        /// Keys and indexes into the result.
        path: Vec<&'t str>,
    },
}

impl<'t> Reference<'t> {
    /// Reads the text between the braces, already trimmed: `steps.<id>.result[.path]` or
    /// `result[.path]`. `None` for anything else.
    fn parse(inner: &'t str) -> Option<Self> {
        if let Some(rest) = inner.strip_prefix("steps.") {
            let at = find_result_segment(rest)?;
            let path = parse_path(&rest[at + ".result".len()..])?;
            Some(Reference::Step {
                id: &rest[..at],
                path,
            })
        } else {
            let path = parse_path(inner.strip_prefix("result")?)?;
            Some(Reference::OwnResult { path })
        }
    }

    /// The step id, for a reference to another step's result.
    pub fn step_id(&self) -> Option<&'t str> {
        match self {
            Reference::Step { id, .. } => Some(id),
            Reference::OwnResult { .. } => None,
        }
    }

    /// The keys and indexes into the result.
    pub fn path(&self) -> &[&'t str] {
        match self {
            Reference::Step { path, .. } | Reference::OwnResult { path } => path,
        }
    }
}

/// Writes the reference as a placeholder, the way plans spell it.
impl fmt::Display for Reference<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(OPEN)?;
        match self {
            Reference::Step { id, .. } => write!(f, "steps.{id}.result")?,
            Reference::OwnResult { .. } => f.write_str("result")?,
        }
        for key in self.path() {
            write!(f, ".{key}")?;
        }
        f.write_str(CLOSE)
    }
}

/// Where `.result` ends the step id: followed by the end or by a path. Ids may themselves hold
/// `.result`, so the first such segment after a non-empty id wins.
fn find_result_segment(rest: &str) -> Option<usize> {
    rest.match_indices(".result").map(|(i, _)| i).find(|&i| {
        let after = &rest[i + ".result".len()..];
        i > 0 && (after.is_empty() || after.starts_with('.'))
    })
}

/// `""` or `.key.0.other`.
fn parse_path(rest: &str) -> Option<Vec<&str>> {
    match rest {
        "" => Some(Vec::new()),
        _ => Some(rest.strip_prefix('.')?.split('.').collect()),
    }
}

/// A piece of a string with placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment<'t> {
    /// Plain text, kept as it is.
    Text(&'t str),
    /// A `{{ ... }}` placeholder.
    Placeholder {
        /// The placeholder as written, braces included.
        raw: &'t str,
        /// What it refers to; `None` when its content is not a reference (it is then left as
        /// it is).
        reference: Option<Reference<'t>>,
    },
}

/// A string cut into plain text and `{{ ... }}` placeholders. Parsing never fails: an opening
/// `{{` without a closing `}}` is plain text.
///
/// ```
/// use agenthelm::plan::{Reference, Template};
///
/// let whole = Template::parse("{{steps.a.result}}");
/// assert_eq!(whole.single_reference(), Some(&Reference::Step { id: "a", path: vec![] }));
/// assert_eq!(Template::parse("id {{steps.a.result}}").single_reference(), None);
/// assert_eq!(Template::parse("no braces {{ here").references().count(), 0);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template<'t> {
    segments: Vec<Segment<'t>>,
}

impl<'t> Template<'t> {
    /// Cuts `text` into its segments.
    pub fn parse(text: &'t str) -> Self {
        let mut segments = Vec::new();
        let mut rest = text;
        while let Some((before, raw, inner, after)) = next_placeholder(rest) {
            if !before.is_empty() {
                segments.push(Segment::Text(before));
            }
            segments.push(Segment::Placeholder {
                raw,
                reference: Reference::parse(inner),
            });
            rest = after;
        }
        if !rest.is_empty() {
            segments.push(Segment::Text(rest));
        }
        Template { segments }
    }

    /// The segments, in order.
    pub fn segments(&self) -> &[Segment<'t>] {
        &self.segments
    }

    /// The references, in order (placeholders that are not references are left out).
    pub fn references(&self) -> impl Iterator<Item = &Reference<'t>> + '_ {
        self.segments.iter().filter_map(|segment| match segment {
            Segment::Placeholder {
                reference: Some(reference),
                ..
            } => Some(reference),
            _ => None,
        })
    }

    /// The reference, when the whole text is exactly one: such a string is replaced by the
    /// referenced value itself, with its JSON type.
    pub fn single_reference(&self) -> Option<&Reference<'t>> {
        match self.segments.as_slice() {
            [Segment::Placeholder {
                reference: Some(reference),
                ..
            }] => Some(reference),
            _ => None,
        }
    }
}

/// The text before the next placeholder, the placeholder, its trimmed content and the text
/// after it.
fn next_placeholder(text: &str) -> Option<(&str, &str, &str, &str)> {
    let open = text.find(OPEN)?;
    let content_start = open + OPEN.len();
    let close = content_start + text[content_start..].find(CLOSE)?;
    let end = close + CLOSE.len();
    Some((
        &text[..open],
        &text[open..end],
        text[content_start..close].trim(),
        &text[end..],
    ))
}

/// Every reference in the strings of `value` (object values and array items, at any depth).
///
/// ```
/// use agenthelm::plan::{references_in, Reference};
/// use serde_json::json;
///
/// let args = json!({"a": "{{steps.x.result}}", "b": [1, "see {{result.id}}"], "c": "{{nope}}"});
/// assert_eq!(references_in(&args), [
///     Reference::Step { id: "x", path: vec![] },
///     Reference::OwnResult { path: vec!["id"] },
/// ]);
/// ```
pub fn references_in(value: &Value) -> Vec<Reference<'_>> {
    let mut found = Vec::new();
    collect_references(value, &mut found);
    found
}

fn collect_references<'v>(value: &'v Value, found: &mut Vec<Reference<'v>>) {
    match value {
        Value::String(text) if text.contains(OPEN) => {
            found.extend(Template::parse(text).references().cloned());
        }
        Value::Array(items) => items.iter().for_each(|v| collect_references(v, found)),
        Value::Object(map) => map.values().for_each(|v| collect_references(v, found)),
        _ => {}
    }
}

/// The variable an `{{env.NAME}}` placeholder names (`raw` with its braces), when it is one.
/// `NAME` is letters, digits and `_`.
fn env_name(raw: &str) -> Option<&str> {
    let inner = raw.strip_prefix(OPEN)?.strip_suffix(CLOSE)?.trim();
    let name = inner.strip_prefix("env.")?;
    let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    valid.then_some(name)
}

/// Every `{{env.NAME}}` in the strings of `value`, as the variable names, in order. The
/// orchestrator resolves them in memory when a tool is called, and only for variables the
/// workspace allows (`redact.env`); plans are checked against that list before they run.
///
/// ```
/// use agenthelm::plan::env_references_in;
/// use serde_json::json;
///
/// let args = json!({"auth": "{{env.API_TOKEN}}", "note": ["for {{ env.USER }}", "{{steps.a.result}}"]});
/// assert_eq!(env_references_in(&args), ["API_TOKEN", "USER"]);
/// ```
pub fn env_references_in(value: &Value) -> Vec<&str> {
    let mut found = Vec::new();
    collect_env(value, &mut found);
    found
}

fn collect_env<'v>(value: &'v Value, found: &mut Vec<&'v str>) {
    match value {
        Value::String(text) if text.contains(OPEN) => {
            for segment in Template::parse(text).segments() {
                if let Segment::Placeholder { raw, .. } = segment {
                    found.extend(env_name(raw));
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_env(v, found)),
        Value::Object(map) => map.values().for_each(|v| collect_env(v, found)),
        _ => {}
    }
}

/// Replaces each `{{env.NAME}}` in the strings of `value` with `lookup(NAME)`; a placeholder
/// whose variable `lookup` does not give is kept as written. `None` when there is none to
/// replace (the common case: no copy is made).
pub(crate) fn fill_env(value: &Value, lookup: &dyn Fn(&str) -> Option<String>) -> Option<Value> {
    match value {
        Value::String(text) if text.contains(OPEN) => {
            let mut changed = false;
            let mut out = String::with_capacity(text.len());
            for segment in Template::parse(text).segments() {
                match segment {
                    Segment::Text(plain) => out.push_str(plain),
                    Segment::Placeholder { raw, .. } => match env_name(raw).and_then(lookup) {
                        Some(secret) => {
                            changed = true;
                            out.push_str(&secret);
                        }
                        None => out.push_str(raw),
                    },
                }
            }
            changed.then_some(Value::String(out))
        }
        Value::Array(items) => {
            let filled: Vec<Option<Value>> = items.iter().map(|v| fill_env(v, lookup)).collect();
            filled.iter().any(Option::is_some).then(|| {
                let pairs = items.iter().zip(filled);
                Value::Array(
                    pairs
                        .map(|(old, new)| new.unwrap_or_else(|| old.clone()))
                        .collect(),
                )
            })
        }
        Value::Object(map) => {
            let filled: Vec<Option<Value>> = map.values().map(|v| fill_env(v, lookup)).collect();
            filled.iter().any(Option::is_some).then(|| {
                let pairs = map.iter().zip(filled);
                Value::Object(
                    pairs
                        .map(|((k, old), new)| (k.clone(), new.unwrap_or_else(|| old.clone())))
                        .collect(),
                )
            })
        }
        _ => None,
    }
}

/// A reference that [`try_resolve_templates`] could not fill in: the step has no result, or the
/// result has nothing at the path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot resolve `{reference}`: {missing}")]
pub struct UnresolvedReference {
    /// The placeholder, as plans spell it (`{{steps.a.result.id}}`).
    pub reference: String,
    /// What is missing, naming the step and the path (`step `a` has no result`,
    /// `the result of step `a` has nothing at `.id``).
    pub missing: String,
}

/// Fills the references in every string of `args`.
///
/// - `{{steps.<id>.result}}` is the result of step `<id>`; `{{result}}` is `own_result` (the
///   step's own result, used in `compensate_args`).
/// - A path may follow: `{{steps.create.result.id}}`, `{{result.items.0}}`. A result that is a
///   string holding JSON is looked into as JSON.
/// - A string that is exactly one reference becomes the referenced value with its JSON type; a
///   reference inside longer text is replaced by the value's text.
/// - A reference that cannot be resolved is left as it is. The orchestrator does not accept
///   that for arguments it passes to tools: it uses [`try_resolve_templates`].
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
    let results = Results {
        step_result,
        own_result,
    };
    // Lenient: an unresolved reference keeps its text, so filling never fails.
    fill(args, &results, false).unwrap_or_else(|_| args.clone())
}

/// Like [`resolve_templates`], but a reference that cannot be resolved is an error naming it and
/// what is missing, instead of being passed on as text.
///
/// ```
/// use agenthelm::plan::try_resolve_templates;
/// use serde_json::json;
///
/// let results = json!({"create": {"id": 7}});
/// let lookup = |id: &str| results.get(id);
/// let ok = try_resolve_templates(&json!({"id": "{{steps.create.result.id}}"}), &lookup, None);
/// assert_eq!(ok, Ok(json!({"id": 7})));
/// let err = try_resolve_templates(&json!("{{steps.create.result.nope}}"), &lookup, None).unwrap_err();
/// assert_eq!(err.reference, "{{steps.create.result.nope}}");
/// assert!(err.missing.contains("`.nope`"), "{err}");
/// ```
pub fn try_resolve_templates<'a>(
    args: &Value,
    step_result: &dyn Fn(&str) -> Option<&'a Value>,
    own_result: Option<&Value>,
) -> Result<Value, UnresolvedReference> {
    let results = Results {
        step_result,
        own_result,
    };
    fill(args, &results, true)
}

/// Where references look their values up.
struct Results<'r, 'a> {
    step_result: &'r dyn Fn(&str) -> Option<&'a Value>,
    own_result: Option<&'r Value>,
}

impl Results<'_, '_> {
    fn lookup(&self, reference: &Reference) -> Result<Value, UnresolvedReference> {
        let unresolved = |missing: String| UnresolvedReference {
            reference: reference.to_string(),
            missing,
        };
        let (base, whose) = match reference {
            Reference::Step { id, .. } => ((self.step_result)(id), format!("step `{id}`")),
            Reference::OwnResult { .. } => (self.own_result, "the step".to_owned()),
        };
        let base = base.ok_or_else(|| unresolved(format!("{whose} has no result")))?;
        follow(base, reference.path()).ok_or_else(|| {
            let path: String = reference.path().iter().map(|k| format!(".{k}")).collect();
            unresolved(format!("the result of {whose} has nothing at `{path}`"))
        })
    }
}

/// Fills `args`; `strict` makes an unresolved reference an error rather than kept text.
fn fill(args: &Value, results: &Results, strict: bool) -> Result<Value, UnresolvedReference> {
    Ok(match args {
        Value::String(text) if text.contains(OPEN) => fill_text(text, results, strict)?,
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| fill(v, results, strict))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), fill(v, results, strict)?)))
                .collect::<Result<_, UnresolvedReference>>()?,
        ),
        other => other.clone(),
    })
}

/// The value of one reference; in lenient mode `None` (keep the text) when it cannot be found.
fn value_of(
    reference: &Reference,
    results: &Results,
    strict: bool,
) -> Result<Option<Value>, UnresolvedReference> {
    match results.lookup(reference) {
        Ok(value) => Ok(Some(value)),
        Err(e) if strict => Err(e),
        Err(_) => Ok(None),
    }
}

fn fill_text(text: &str, results: &Results, strict: bool) -> Result<Value, UnresolvedReference> {
    let template = Template::parse(text);
    if let Some(only) = template.single_reference() {
        let value = value_of(only, results, strict)?;
        return Ok(value.unwrap_or_else(|| Value::String(text.to_owned())));
    }
    let mut out = String::with_capacity(text.len());
    for segment in template.segments() {
        match segment {
            Segment::Text(plain) => out.push_str(plain),
            // Not a reference (`{{junk}}`): plain text to the plan, kept as written.
            Segment::Placeholder {
                raw,
                reference: None,
            } => out.push_str(raw),
            Segment::Placeholder {
                raw,
                reference: Some(reference),
            } => match value_of(reference, results, strict)? {
                Some(Value::String(s)) => out.push_str(&s),
                Some(value) => out.push_str(&value.to_string()),
                None => out.push_str(raw),
            },
        }
    }
    Ok(Value::String(out))
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
