//! Checking JSON values against JSON schemas, and checking that a schema is one.
//!
//! Covers the keywords tool schemas use: `type` (one or several), `enum`, `const`,
//! `properties`, `required`, `additionalProperties`, `items`, `prefixItems`, `minItems`,
//! `maxItems`, `uniqueItems`, `minLength`, `maxLength`, `minimum`, `maximum`,
//! `exclusiveMinimum`, `exclusiveMaximum`, `multipleOf`, `anyOf`, `oneOf`, `allOf`, `not`, and
//! local `$ref`s (`#/$defs/..`, `#/definitions/..`). Annotation keywords (`description`,
//! `title`, `format`, `default`, `examples`, ...) are accepted and not checked.
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
//! ```

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;

/// One way a value fails its schema, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// Path to the offending value: `""` for the whole value, `"a.b[2]"` inside it.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl Problem {
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

/// Checks `value` against `schema` and returns every problem found (empty when it is valid).
pub fn validate(schema: &Value, value: &Value) -> Vec<Problem> {
    let mut check = Check {
        root: schema,
        problems: Vec::new(),
        depth: 0,
    };
    check.value(schema, value, &mut String::new());
    check.problems
}

/// Checks that `schema` is a usable JSON schema: an object (or boolean) whose keywords have the
/// right shapes. Returns every problem found, with the path of the keyword.
pub fn check_schema(schema: &Value) -> Vec<Problem> {
    let mut problems = Vec::new();
    schema_shape(schema, "", &mut problems);
    problems
}

const TYPES: [&str; 7] = [
    "null", "boolean", "object", "array", "number", "string", "integer",
];
/// Deeper than this a `$ref` is taken to be recursive without end.
const MAX_DEPTH: usize = 64;

struct Check<'a> {
    root: &'a Value,
    problems: Vec<Problem>,
    depth: usize,
}

impl<'a> Check<'a> {
    fn fail(&mut self, path: &str, message: String) {
        self.problems.push(Problem {
            path: path.to_owned(),
            message,
        });
    }

    /// Whether `value` passes `schema`, without recording anything.
    fn passes(&mut self, schema: &'a Value, value: &Value, path: &mut String) -> bool {
        let before = self.problems.len();
        self.value(schema, value, path);
        let ok = self.problems.len() == before;
        self.problems.truncate(before);
        ok
    }

    fn value(&mut self, schema: &'a Value, value: &Value, path: &mut String) {
        let schema = match schema {
            Value::Bool(true) => return,
            Value::Bool(false) => return self.fail(path, "no value is allowed here".into()),
            Value::Object(schema) => schema,
            _ => return,
        };
        if self.depth > MAX_DEPTH {
            return self.fail(path, "schema nests too deeply (recursive $ref?)".into());
        }
        self.depth += 1;
        if let Some(Value::String(reference)) = schema.get("$ref") {
            match resolve_ref(self.root, reference) {
                Some(target) => self.value(target, value, path),
                None => self.fail(path, format!("schema reference `{reference}` not found")),
            }
        }
        let type_ok = self.type_keyword(schema, value, path);
        if type_ok {
            self.enum_const(schema, value, path);
            match value {
                Value::Object(map) => self.object(schema, map, path),
                Value::Array(items) => self.array(schema, items, path),
                Value::String(s) => self.string(schema, s, path),
                Value::Number(_) => self.number(schema, value, path),
                _ => {}
            }
        }
        self.combinators(schema, value, path);
        self.depth -= 1;
    }

    fn type_keyword(&mut self, schema: &Map<String, Value>, value: &Value, path: &str) -> bool {
        let allowed: Vec<&str> = match schema.get("type") {
            Some(Value::String(t)) => vec![t.as_str()],
            Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
            _ => return true,
        };
        if allowed.iter().any(|t| is_type(value, t)) {
            return true;
        }
        let expected = allowed.join(" or ");
        self.fail(
            path,
            format!("expected {expected}, got {}", describe(value)),
        );
        false
    }

    fn enum_const(&mut self, schema: &Map<String, Value>, value: &Value, path: &str) {
        if let Some(Value::Array(options)) = schema.get("enum") {
            if !options.iter().any(|o| json_eq(o, value)) {
                let list: Vec<String> = options.iter().map(Value::to_string).collect();
                self.fail(
                    path,
                    format!("{} is not one of {}", short(value), list.join(", ")),
                );
            }
        }
        if let Some(expected) = schema.get("const") {
            if !json_eq(expected, value) {
                self.fail(path, format!("{} is not {}", short(value), short(expected)));
            }
        }
    }

    fn object(
        &mut self,
        schema: &'a Map<String, Value>,
        map: &Map<String, Value>,
        path: &mut String,
    ) {
        if let Some(Value::Array(required)) = schema.get("required") {
            for name in required.iter().filter_map(Value::as_str) {
                if !map.contains_key(name) {
                    let field = join_path(path, name);
                    self.fail(&field, "required field is missing".into());
                }
            }
        }
        let properties = schema.get("properties").and_then(Value::as_object);
        let additional = schema.get("additionalProperties");
        for (name, field_value) in map {
            let len = path.len();
            push_field(path, name);
            match properties.and_then(|p| p.get(name)) {
                Some(field_schema) => self.value(field_schema, field_value, path),
                None => match additional {
                    Some(Value::Bool(false)) => {
                        let known = properties
                            .map(|p| p.keys().map(String::as_str).collect::<Vec<_>>().join(", "))
                            .unwrap_or_default();
                        self.fail(path, format!("unknown field (expected one of: {known})"));
                    }
                    Some(extra @ Value::Object(_)) => self.value(extra, field_value, path),
                    _ => {}
                },
            }
            path.truncate(len);
        }
    }

    fn array(&mut self, schema: &'a Map<String, Value>, items: &[Value], path: &mut String) {
        let prefix = schema.get("prefixItems").and_then(Value::as_array);
        let prefix_len = prefix.map_or(0, Vec::len);
        for (i, item) in items.iter().enumerate() {
            let len = path.len();
            path.push_str(&format!("[{i}]"));
            match prefix.and_then(|p| p.get(i)) {
                Some(item_schema) => self.value(item_schema, item, path),
                None if i >= prefix_len => {
                    if let Some(item_schema) = schema.get("items") {
                        self.value(item_schema, item, path);
                    }
                }
                None => {}
            }
            path.truncate(len);
        }
        if let Some(min) = schema.get("minItems").and_then(Value::as_u64) {
            if (items.len() as u64) < min {
                self.fail(path, format!("has {} items, fewer than {min}", items.len()));
            }
        }
        if let Some(max) = schema.get("maxItems").and_then(Value::as_u64) {
            if items.len() as u64 > max {
                self.fail(path, format!("has {} items, more than {max}", items.len()));
            }
        }
        if schema.get("uniqueItems") == Some(&Value::Bool(true)) {
            let repeated = items
                .iter()
                .enumerate()
                .any(|(i, a)| items[..i].iter().any(|b| json_eq(a, b)));
            if repeated {
                self.fail(path, "items must be unique".into());
            }
        }
    }

    fn string(&mut self, schema: &Map<String, Value>, s: &str, path: &str) {
        let chars = s.chars().count() as u64;
        if let Some(min) = schema.get("minLength").and_then(Value::as_u64) {
            if chars < min {
                self.fail(
                    path,
                    format!("is {chars} characters long, shorter than {min}"),
                );
            }
        }
        if let Some(max) = schema.get("maxLength").and_then(Value::as_u64) {
            if chars > max {
                self.fail(
                    path,
                    format!("is {chars} characters long, longer than {max}"),
                );
            }
        }
    }

    fn number(&mut self, schema: &Map<String, Value>, value: &Value, path: &str) {
        let Some(n) = value.as_f64() else { return };
        let bound = |key: &str| schema.get(key).and_then(Value::as_f64);
        let shown = short(value);
        if let Some(min) = bound("minimum").filter(|&min| n < min) {
            self.fail(
                path,
                format!("{shown} is less than the minimum {}", num(min)),
            );
        }
        if let Some(max) = bound("maximum").filter(|&max| n > max) {
            self.fail(
                path,
                format!("{shown} is more than the maximum {}", num(max)),
            );
        }
        if let Some(min) = bound("exclusiveMinimum").filter(|&min| n <= min) {
            self.fail(path, format!("{shown} must be more than {}", num(min)));
        }
        if let Some(max) = bound("exclusiveMaximum").filter(|&max| n >= max) {
            self.fail(path, format!("{shown} must be less than {}", num(max)));
        }
        if let Some(step) = bound("multipleOf").filter(|&m| m > 0.0) {
            let ratio = n / step;
            if (ratio - ratio.round()).abs() > 1e-9 {
                self.fail(path, format!("{shown} is not a multiple of {}", num(step)));
            }
        }
    }

    fn combinators(&mut self, schema: &'a Map<String, Value>, value: &Value, path: &mut String) {
        if let Some(Value::Array(all)) = schema.get("allOf") {
            for sub in all {
                self.value(sub, value, path);
            }
        }
        if let Some(Value::Array(any)) = schema.get("anyOf") {
            if !any.iter().any(|sub| self.passes(sub, value, path)) {
                self.fail(
                    path,
                    format!("{} matches none of the allowed forms", short(value)),
                );
            }
        }
        if let Some(Value::Array(one)) = schema.get("oneOf") {
            let matches = one
                .iter()
                .filter(|sub| self.passes(sub, value, path))
                .count();
            if matches != 1 {
                self.fail(
                    path,
                    format!(
                        "{} must match exactly one allowed form, matches {matches}",
                        short(value)
                    ),
                );
            }
        }
        if let Some(not) = schema.get("not") {
            if self.passes(not, value, path) {
                self.fail(
                    path,
                    format!("{} matches a form that is not allowed", short(value)),
                );
            }
        }
    }
}

fn resolve_ref<'a>(root: &'a Value, reference: &str) -> Option<&'a Value> {
    let pointer = reference.strip_prefix('#')?;
    if pointer.is_empty() {
        return Some(root);
    }
    root.pointer(pointer)
}

fn is_type(value: &Value, t: &str) -> bool {
    match t {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "number" => value.is_number(),
        "integer" => match value {
            Value::Number(n) => {
                n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
            }
            _ => false,
        },
        _ => true,
    }
}

/// JSON equality where `1` and `1.0` are the same number.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y || x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
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

fn num(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        n.to_string()
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

fn schema_shape(schema: &Value, path: &str, problems: &mut Vec<Problem>) {
    let mut fail = |at: &str, message: String| {
        problems.push(Problem {
            path: at.to_owned(),
            message,
        })
    };
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
            "items" | "additionalProperties" | "not" | "contains" | "propertyNames" => {
                sub_schemas.push((at(key), value))
            }
            "anyOf" | "oneOf" | "allOf" | "prefixItems" => match value.as_array() {
                Some(subs) => {
                    for (i, sub) in subs.iter().enumerate() {
                        sub_schemas.push((format!("{}[{i}]", at(key)), sub));
                    }
                }
                None => fail(&at(key), "must be an array of schemas".into()),
            },
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
            "$ref" if !value.is_string() => fail(&at(key), "must be a string".into()),
            _ => {}
        }
    }
    for (sub_path, sub) in sub_schemas {
        schema_shape(sub, &sub_path, problems);
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
