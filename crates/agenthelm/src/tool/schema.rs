//! Checking JSON values against JSON schemas, and checking that a schema is one.
//!
//! Validation is the [`jsonschema`] crate's: drafts 4, 6, 7, 2019-09 and 2020-12, with every
//! keyword (`pattern`, `format`, local `$ref`s, tuple `items` / `prefixItems`, `oneOf`, ...).
//! A schema's draft comes from its `$schema`; without one it is 2020-12, or draft 7 (then 4)
//! when the schema is only valid there, as older tools' array-form `items: [..]` is. `format` is
//! checked (`email`, `date-time`, `uri`, ...; unknown formats pass). References are resolved
//! inside the schema only: nothing is fetched.
//!
//! Compile a schema once with [`Schema::compile`] and check many values with
//! [`Schema::validate`]; tools do this through [`ToolSpec`](super::ToolSpec), so each tool's
//! schema is compiled once. Each [`Problem`] names the field (`a.b[2]`) and the rule (keyword).
//!
//! ```
//! use agenthelm::tool::schema;
//! use serde_json::json;
//!
//! let schema = json!({
//!     "type": "object",
//!     "properties": { "path": { "type": "string" }, "size": { "type": "integer", "minimum": 0 } },
//!     "required": ["path"]
//! });
//! assert!(schema::validate(&schema, &json!({"path": "/tmp/x"})).is_empty());
//! let problems = schema::validate(&schema, &json!({"size": -1}));
//! assert_eq!(problems[0].to_string(), "`path`: required field is missing");
//! assert_eq!(problems[1].to_string(), "`size`: -1 is less than the minimum 0");
//! assert_eq!(problems[1].keyword.as_deref(), Some("minimum"));
//! ```

use jsonschema::error::{ValidationError, ValidationErrorKind};
use jsonschema::paths::{Location, LocationSegment};
use jsonschema::Draft;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;
use std::sync::Arc;

/// One way a value fails its schema, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// Path to the offending value: `""` for the whole value, `"a.b[2]"` inside it.
    pub path: String,
    /// The schema keyword (rule) that failed, like `pattern` or `required`; `None` when the
    /// problem was not found by a schema keyword (arguments that do not deserialize, say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyword: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl Problem {
    /// A problem at `path` that no schema keyword names.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            path: path.into(),
            keyword: None,
            message: message.into(),
        }
    }

    fn of_keyword(path: String, keyword: &str, message: String) -> Self {
        Problem {
            path,
            keyword: Some(keyword.to_owned()),
            message,
        }
    }

    /// The value the problem is about, inside `checked` (the value that was validated); `None`
    /// when it is not there (a missing required field) or a key holds `.` or `[`.
    ///
    /// ```
    /// use agenthelm::tool::schema;
    /// use serde_json::json;
    ///
    /// let schema = json!({"type": "object", "properties": {"xs": {"type": "array", "items": {"type": "integer"}}}});
    /// let args = json!({"xs": [1, "two"]});
    /// let problems = schema::validate(&schema, &args);
    /// assert_eq!(problems[0].path, "xs[1]");
    /// assert_eq!(problems[0].locate(&args), Some(&json!("two")));
    /// ```
    pub fn locate<'v>(&self, checked: &'v Value) -> Option<&'v Value> {
        let mut value = checked;
        for segment in self.path.split('.').filter(|s| !s.is_empty()) {
            let (key, indexes) = segment.split_at(segment.find('[').unwrap_or(segment.len()));
            if !key.is_empty() {
                value = value.get(key)?;
            }
            for index in indexes.split(']').filter_map(|s| s.strip_prefix('[')) {
                value = value.get(index.parse::<usize>().ok()?)?;
            }
        }
        Some(value)
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "`{}`: {}", self.path, self.message)
        }
    }
}

/// A schema compiled for checking values: compile once, validate many times. Cloning is cheap.
///
/// ```
/// use agenthelm::tool::schema::Schema;
/// use serde_json::json;
///
/// let schema = Schema::compile(&json!({
///     "type": "object",
///     "properties": {"to": {"type": "string", "format": "email"}}
/// }))?;
/// assert!(schema.validate(&json!({"to": "ada@example.com"})).is_empty());
/// let problems = schema.validate(&json!({"to": "ada"}));
/// assert_eq!(problems[0].to_string(), "`to`: \"ada\" does not have the format `email`");
/// # Ok::<(), Vec<agenthelm::tool::schema::Problem>>(())
/// ```
#[derive(Clone)]
pub struct Schema {
    validator: Arc<jsonschema::Validator>,
    /// The schema's text, to find the keywords an error points at.
    source: Arc<Value>,
}

impl Schema {
    /// Compiles `schema`; the problems say why it is not a usable schema, by keyword path
    /// (`properties.n.type`).
    pub fn compile(schema: &Value) -> Result<Schema, Vec<Problem>> {
        let mut problems = Vec::new();
        schema_shape(schema, schema, "", &mut problems);
        if !problems.is_empty() {
            return Err(problems);
        }
        let build = |draft: Option<Draft>| {
            let mut options = jsonschema::options()
                .offline()
                .should_validate_formats(true);
            if let Some(draft) = draft {
                options = options.with_draft(draft);
            }
            options.build(schema)
        };
        let first = build(None);
        // Without `$schema` the draft is 2020-12; a schema written for an older draft (array
        // `items`, boolean `exclusiveMinimum`) is read as that draft instead of refused.
        let result = match first {
            Err(error) if schema.get("$schema").is_none() => build(Some(Draft::Draft7))
                .or_else(|_| build(Some(Draft::Draft4)))
                .map_err(|_| error),
            other => other,
        };
        match result {
            Ok(validator) => Ok(Schema {
                validator: Arc::new(validator),
                source: Arc::new(schema.clone()),
            }),
            Err(error) => Err(schema_problems(&error)),
        }
    }

    /// Checks `value` and returns every problem found (empty when it is valid).
    pub fn validate(&self, value: &Value) -> Vec<Problem> {
        if self.validator.is_valid(value) {
            return Vec::new();
        }
        let mut problems = Vec::new();
        for error in self.validator.iter_errors(value) {
            describe_error(&error, &self.source, &mut problems);
        }
        problems
    }

    /// The schema's JSON.
    pub fn source(&self) -> &Value {
        &self.source
    }
}

impl fmt::Debug for Schema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Schema").field(&self.source).finish()
    }
}

/// Checks `value` against `schema` and returns every problem found (empty when it is valid).
///
/// Compiles `schema` on every call: to check many values, [`Schema::compile`] it once. A schema
/// that does not compile gives one problem saying why.
pub fn validate(schema: &Value, value: &Value) -> Vec<Problem> {
    match Schema::compile(schema) {
        Ok(schema) => schema.validate(value),
        Err(problems) => vec![unusable(&problems)],
    }
}

/// The one problem reported for every value when its schema is not usable.
pub(crate) fn unusable(problems: &[Problem]) -> Problem {
    let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
    Problem::new("", format!("the schema is not usable: {}", list.join("; ")))
}

/// Checks that `schema` is a usable JSON schema: an object (or boolean) whose keywords have the
/// right shapes, whose patterns are regular expressions and whose references resolve. Returns
/// every problem found, with the path of the keyword.
pub fn check_schema(schema: &Value) -> Vec<Problem> {
    Schema::compile(schema).err().unwrap_or_default()
}

const TYPES: [&str; 7] = [
    "null", "boolean", "object", "array", "number", "string", "integer",
];

/// The problems of a schema that does not compile: the error is the schema's own, found by its
/// meta-schema (the path is a keyword path) or while resolving a reference.
fn schema_problems(error: &ValidationError<'_>) -> Vec<Problem> {
    let path = dotted(error.instance_path());
    let message = match error.kind() {
        ValidationErrorKind::Referencing(e) => format!("schema reference problem: {e}"),
        ValidationErrorKind::Format { format } if format == "regex" => {
            format!(
                "{} is not a valid regular expression",
                short(error.instance())
            )
        }
        _ => error.to_string(),
    };
    vec![Problem::new(path, message)]
}

/// Turns one validation error into problems (more than one for several unknown fields).
fn describe_error(error: &ValidationError<'_>, root: &Value, out: &mut Vec<Problem>) {
    let path = dotted(error.instance_path());
    let instance: &Value = error.instance();
    let shown = short(instance);
    // The keyword's value in the schema, and the schema object holding it.
    let keyword_value = root.pointer(error.schema_path().as_str());
    let kind = error.kind();
    let keyword = kind.keyword();
    let message = match kind {
        ValidationErrorKind::Type { kind } => {
            let expected = match keyword_value {
                Some(Value::String(t)) => t.clone(),
                Some(Value::Array(ts)) => ts
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(" or "),
                _ => format!("{kind:?}"),
            };
            format!("expected {expected}, got {}", describe(instance))
        }
        ValidationErrorKind::Required { property } => {
            let name = property
                .as_str()
                .map_or_else(|| property.to_string(), str::to_owned);
            let field = join_path(&path, &name);
            out.push(Problem::of_keyword(
                field,
                keyword,
                "required field is missing".into(),
            ));
            return;
        }
        ValidationErrorKind::AdditionalProperties { unexpected }
        | ValidationErrorKind::UnevaluatedProperties { unexpected } => {
            let known = parent_of(root, error.schema_path())
                .and_then(|parent| parent.get("properties"))
                .and_then(Value::as_object)
                .map(|p| p.keys().map(String::as_str).collect::<Vec<_>>().join(", "))
                .unwrap_or_default();
            for name in unexpected {
                out.push(Problem::of_keyword(
                    join_path(&path, name),
                    keyword,
                    format!("unknown field (expected one of: {known})"),
                ));
            }
            return;
        }
        ValidationErrorKind::Enum { options } => {
            let list: Vec<String> = match &**options {
                Value::Array(options) => options.iter().map(Value::to_string).collect(),
                other => vec![other.to_string()],
            };
            format!("{shown} is not one of {}", list.join(", "))
        }
        ValidationErrorKind::Constant { expected_value } => {
            format!("{shown} is not {}", short(expected_value))
        }
        ValidationErrorKind::MinItems { limit } => {
            format!("has {} items, fewer than {limit}", array_len(instance))
        }
        ValidationErrorKind::MaxItems { limit } => {
            format!("has {} items, more than {limit}", array_len(instance))
        }
        ValidationErrorKind::AdditionalItems { limit } => {
            format!(
                "has {} items, more than the {limit} allowed",
                array_len(instance)
            )
        }
        ValidationErrorKind::UniqueItems => "items must be unique".into(),
        ValidationErrorKind::MinLength { limit } => {
            format!(
                "is {} characters long, shorter than {limit}",
                chars(instance)
            )
        }
        ValidationErrorKind::MaxLength { limit } => {
            format!(
                "is {} characters long, longer than {limit}",
                chars(instance)
            )
        }
        ValidationErrorKind::Minimum { limit } => {
            format!("{shown} is less than the minimum {}", short(limit))
        }
        ValidationErrorKind::Maximum { limit } => {
            format!("{shown} is more than the maximum {}", short(limit))
        }
        ValidationErrorKind::ExclusiveMinimum { limit } => {
            format!("{shown} must be more than {}", short(limit))
        }
        ValidationErrorKind::ExclusiveMaximum { limit } => {
            format!("{shown} must be less than {}", short(limit))
        }
        ValidationErrorKind::MultipleOf { .. } => match keyword_value {
            Some(step) => format!("{shown} is not a multiple of {}", short(step)),
            None => format!("{shown} is not a multiple of the required step"),
        },
        ValidationErrorKind::Pattern { pattern } => {
            format!("{shown} does not match the pattern `{pattern}`")
        }
        ValidationErrorKind::Format { format } => {
            format!("{shown} does not have the format `{format}`")
        }
        ValidationErrorKind::AnyOf { .. } => format!("{shown} matches none of the allowed forms"),
        ValidationErrorKind::OneOfNotValid { .. } => {
            format!("{shown} must match exactly one allowed form, matches 0")
        }
        ValidationErrorKind::OneOfMultipleValid { context } => {
            let matches = context.iter().filter(|branch| branch.is_empty()).count();
            format!("{shown} must match exactly one allowed form, matches {matches}")
        }
        ValidationErrorKind::Not { .. } => format!("{shown} matches a form that is not allowed"),
        ValidationErrorKind::FalseSchema => "no value is allowed here".into(),
        ValidationErrorKind::MinProperties { limit } => {
            format!("has {} fields, fewer than {limit}", object_len(instance))
        }
        ValidationErrorKind::MaxProperties { limit } => {
            format!("has {} fields, more than {limit}", object_len(instance))
        }
        ValidationErrorKind::Contains => "no item has the required form".into(),
        ValidationErrorKind::PropertyNames { error } => {
            format!("field name {}", error)
        }
        // The crate's own words for the rest (content encodings, regex engine limits, ...).
        _ => error.to_string(),
    };
    out.push(Problem::of_keyword(path, keyword, message));
}

/// A JSON pointer as a field path: `/a/b/2` is `a.b[2]`.
fn dotted(location: &Location) -> String {
    let mut path = String::new();
    for segment in location.segments() {
        match segment {
            LocationSegment::Property(name) => push_field(&mut path, &name),
            LocationSegment::Index(i) => path.push_str(&format!("[{i}]")),
        }
    }
    path
}

/// The schema object holding the keyword at `keyword` (a pointer into `root`).
fn parent_of<'a>(root: &'a Value, keyword: &Location) -> Option<&'a Value> {
    let pointer = keyword.as_str();
    root.pointer(&pointer[..pointer.rfind('/')?])
}

fn array_len(value: &Value) -> usize {
    value.as_array().map_or(0, Vec::len)
}

fn object_len(value: &Value) -> usize {
    value.as_object().map_or(0, |m| m.len())
}

fn chars(value: &Value) -> usize {
    value.as_str().map_or(0, |s| s.chars().count())
}

fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(_) => format!("boolean {value}"),
        Value::Number(_) => format!("number {value}"),
        Value::String(_) => format!("string {}", short(value)),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// A value shown in a message, cut short when long.
fn short(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(60) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

fn push_field(path: &mut String, name: &str) {
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(name);
}

fn join_path(path: &str, name: &str) -> String {
    let mut joined = path.to_owned();
    push_field(&mut joined, name);
    joined
}

/// The shapes of the common keywords, in plainer words than a meta-schema's errors; what this
/// passes is then compiled, which finds the rest.
fn schema_shape(root: &Value, schema: &Value, path: &str, problems: &mut Vec<Problem>) {
    let mut fail = |at: &str, message: String| problems.push(Problem::new(at, message));
    let map = match schema {
        Value::Bool(_) => return,
        Value::Object(map) => map,
        other => {
            return fail(
                path,
                format!("a schema must be an object, got {}", describe(other)),
            )
        }
    };
    let at = |key: &str| join_path(path, key);
    match map.get("type") {
        None => {}
        Some(Value::String(t)) if TYPES.contains(&t.as_str()) => {}
        Some(Value::Array(ts))
            if ts
                .iter()
                .all(|t| t.as_str().is_some_and(|t| TYPES.contains(&t))) => {}
        Some(other) => fail(
            &at("type"),
            format!(
                "{} is not a JSON schema type (use one of {})",
                short(other),
                TYPES.join(", ")
            ),
        ),
    }
    let mut sub_schemas: Vec<(String, &Value)> = Vec::new();
    for (key, value) in map {
        match key.as_str() {
            "properties" | "$defs" | "definitions" | "patternProperties" => match value {
                Value::Object(props) => {
                    for (name, sub) in props {
                        sub_schemas.push((format!("{}.{name}", at(key)), sub));
                    }
                }
                other => fail(
                    &at(key),
                    format!("must be an object, got {}", describe(other)),
                ),
            },
            "required" => {
                let ok = value
                    .as_array()
                    .is_some_and(|a| a.iter().all(Value::is_string));
                if !ok {
                    fail(&at(key), "must be an array of field names".into());
                }
            }
            "enum" if !value.is_array() => fail(&at(key), "must be an array".into()),
            "additionalProperties" | "not" | "contains" | "propertyNames" => {
                sub_schemas.push((at(key), value))
            }
            // Draft 7 and older write a tuple as an array of `items`.
            "items" if !value.is_array() => sub_schemas.push((at(key), value)),
            "anyOf" | "oneOf" | "allOf" | "prefixItems" | "items" => match value.as_array() {
                Some(subs) => {
                    for (i, sub) in subs.iter().enumerate() {
                        sub_schemas.push((format!("{}[{i}]", at(key)), sub));
                    }
                }
                None => fail(&at(key), "must be an array of schemas".into()),
            },
            // Draft 4's `exclusiveMinimum: true` qualifies `minimum`.
            "exclusiveMinimum" | "exclusiveMaximum" if value.is_boolean() => {}
            "minimum" | "maximum" | "exclusiveMinimum" | "exclusiveMaximum" | "multipleOf"
                if !value.is_number() =>
            {
                fail(
                    &at(key),
                    format!("must be a number, got {}", describe(value)),
                )
            }
            "minLength" | "maxLength" | "minItems" | "maxItems" | "minProperties"
            | "maxProperties"
                if !value.is_u64() =>
            {
                fail(
                    &at(key),
                    format!("must be a whole number, got {}", describe(value)),
                )
            }
            "$ref" => match value.as_str() {
                None => fail(&at(key), "must be a string".into()),
                // A reference inside this schema must lead somewhere.
                Some(reference) => {
                    let target = reference.strip_prefix('#').and_then(|pointer| {
                        pointer
                            .is_empty()
                            .then_some(root)
                            .or_else(|| root.pointer(pointer))
                    });
                    if reference.starts_with('#') && target.is_none() {
                        fail(
                            &at(key),
                            format!("schema reference `{reference}` not found"),
                        );
                    }
                }
            },
            _ => {}
        }
    }
    for (sub_path, sub) in sub_schemas {
        schema_shape(root, sub, &sub_path, problems);
    }
}

/// The JSON schema of `T`, as tools declare their arguments: draft 2020-12, sub-schemas inlined
/// (models read flat schemas best), without the `$schema` and `title` noise.
///
/// ```
/// #[derive(serde::Deserialize, schemars::JsonSchema)]
/// struct Args {
///     /// Where to look.
///     path: String,
///     depth: Option<u32>,
/// }
/// let schema = agenthelm::tool::schema::of::<Args>();
/// assert_eq!(schema["properties"]["path"]["description"], "Where to look.");
/// assert_eq!(schema["required"], serde_json::json!(["path"]));
/// ```
pub fn of<T: schemars::JsonSchema>() -> Value {
    let mut schema = schemars::generate::SchemaSettings::draft2020_12()
        .with(|s| s.inline_subschemas = true)
        .into_generator()
        .into_root_schema_for::<T>()
        .to_value();
    if let Value::Object(map) = &mut schema {
        map.remove("$schema");
        map.remove("title");
    }
    schema
}
