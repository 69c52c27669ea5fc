//! Tools: the `#[tool]` macro, contracts, `tools!`, `ToolSet`, `FnTool` and schema checks.

use agenthelm::prelude::*;
use agenthelm::tool::{schema, ToolCallInfo};
use serde_json::{json, Value};
use std::time::Duration;

/// Add two whole numbers.
///
/// Returns their sum.
#[tool]
fn add(
    /// The first number.
    a: i64,
    /// The second number.
    b: i64,
) -> i64 {
    a + b
}

/// Greet someone, politely or not.
#[tool]
async fn greet(name: String, title: Option<String>) -> String {
    tokio::task::yield_now().await;
    match title {
        Some(title) => format!("Hello, {title} {name}"),
        None => format!("Hi {name}"),
    }
}

#[derive(Debug)]
struct DiskFull(u32);

impl std::fmt::Display for DiskFull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "disk full ({}% used)", self.0)
    }
}

/// Write a file.
#[tool]
fn write_file(path: String) -> Result<String, DiskFull> {
    if path.starts_with("/full") {
        Err(DiskFull(100))
    } else {
        Ok(format!("wrote {path}"))
    }
}

/// Fetch a page.
#[tool]
async fn fetch_page(url: String) -> Result<Value, ToolError> {
    if url.is_empty() {
        return Err(ToolError::Timeout {
            tool: "fetch_page".into(),
            after: Duration::from_secs(3),
        });
    }
    Ok(json!({"url": url, "status": 200}))
}

#[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
struct Address {
    /// Street and number.
    street: String,
    zip: u32,
}

/// Store an address.
#[tool]
fn store_address(address: Address, tags: Vec<String>) -> usize {
    address.street.len() + address.zip as usize + tags.len()
}

/// Create a record.
#[tool(
    compensating_tool = "delete_record",
    requires_approval,
    retries = 3,
    timeout = 5,
    tags = ["db", "write"],
    side_effects = ["database"],
    partial_effects
)]
fn create_record(name: String) -> String {
    name
}

/// Slow thing.
#[tool(
    timeout = 0.25,
    requires_approval = false,
    name = "slow_thing",
    description = "Does it slowly"
)]
fn slow(x: u8) -> u8 {
    x
}

/// Nothing needed.
#[tool]
fn ping() -> &'static str {
    "pong"
}

fn info() -> ToolCallInfo {
    ToolCallInfo::default()
}

fn spec_of<T: Tool + Default>() -> agenthelm::ToolSpec {
    T::default().spec().clone()
}

#[tokio::test]
async fn sync_tool_is_a_plain_function_and_a_tool() {
    assert_eq!(add(2, 3), 5);
    let tool = add::default();
    let spec = tool.spec();
    assert_eq!(spec.name, "add");
    assert_eq!(
        spec.description,
        "Add two whole numbers.\n\nReturns their sum."
    );
    assert_eq!(
        tool.call(json!({"a": 2, "b": 40}), &info()).await,
        Ok(json!(42))
    );
}

#[test]
fn parameter_docs_become_schema_descriptions() {
    let spec = spec_of::<add>();
    let params = &spec.parameters;
    assert_eq!(params["type"], "object");
    assert_eq!(
        params["properties"]["a"]["description"],
        "The first number."
    );
    assert_eq!(
        params["properties"]["b"]["description"],
        "The second number."
    );
    assert_eq!(params["properties"]["a"]["type"], "integer");
    let mut required: Vec<&str> = params["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    required.sort();
    assert_eq!(required, ["a", "b"]);
    assert!(params.get("$schema").is_none() && params.get("title").is_none());
    // The schema is one that our own checker accepts.
    assert_eq!(schema::check_schema(params), []);
}

#[tokio::test]
async fn async_tool_with_optional_parameter() {
    assert_eq!(greet("Ada".into(), None).await, "Hi Ada");
    let tool = greet::default();
    let params = &tool.spec().parameters;
    assert_eq!(params["required"], json!(["name"]));
    assert!(params["properties"]["title"].is_object());
    assert_eq!(
        tool.call(json!({"name": "Ada"}), &info()).await,
        Ok(json!("Hi Ada"))
    );
    assert_eq!(
        tool.call(json!({"name": "Ada", "title": "Dr"}), &info())
            .await,
        Ok(json!("Hello, Dr Ada"))
    );
    assert_eq!(
        tool.call(json!({"name": "Ada", "title": null}), &info())
            .await,
        Ok(json!("Hi Ada"))
    );
    // Both a missing optional field and an explicit null pass the schema as well.
    assert_eq!(schema::validate(params, &json!({"name": "Ada"})), []);
    assert_eq!(
        schema::validate(params, &json!({"name": "Ada", "title": null})),
        []
    );
}

#[tokio::test]
async fn string_result_is_a_json_string() {
    let out = write_file::default()
        .call(json!({"path": "/tmp/a"}), &info())
        .await
        .unwrap();
    assert_eq!(out, Value::String("wrote /tmp/a".into()));
    assert_eq!(
        ping::default().call(json!({}), &info()).await,
        Ok(json!("pong"))
    );
}

#[tokio::test]
async fn display_error_becomes_a_failure_with_its_message() {
    let err = write_file::default()
        .call(json!({"path": "/full/x"}), &info())
        .await
        .unwrap_err();
    assert_eq!(err, ToolError::Failed("disk full (100% used)".into()));
    assert!(err.is_retryable());
}

#[tokio::test]
async fn tool_error_variant_is_kept() {
    let tool = fetch_page::default();
    let err = tool.call(json!({"url": ""}), &info()).await.unwrap_err();
    assert!(
        matches!(err, ToolError::Timeout { ref tool, .. } if tool == "fetch_page"),
        "{err:?}"
    );
    assert_eq!(
        tool.call(json!({"url": "http://x"}), &info()).await,
        Ok(json!({"url": "http://x", "status": 200}))
    );
}

#[tokio::test]
async fn bad_arguments_name_the_field_and_never_panic() {
    let tool = add::default();
    let err = tool
        .call(json!({"a": "two", "b": 1}), &info())
        .await
        .unwrap_err();
    let ToolError::InvalidArguments {
        tool: name,
        problems,
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(name, "add");
    assert_eq!(problems[0].path, "a");
    assert!(err.to_string().contains("`a`"), "{err}");
    assert!(!err.is_retryable());

    let err = tool.call(json!({"a": 1}), &info()).await.unwrap_err();
    assert!(err.to_string().contains('b'), "{err}");

    let nested = store_address::default();
    let err = nested
        .call(
            json!({"address": {"street": "Main 1", "zip": "x"}, "tags": []}),
            &info(),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("address.zip"), "{err}");
    let err = nested
        .call(
            json!({"address": {"street": "Main 1", "zip": 1}, "tags": ["ok", 3]}),
            &info(),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("tags[1]"), "{err}");
    assert!(tool.call(Value::Null, &info()).await.is_err());

    // Through the contract (as agents and the orchestrator call tools) the schema is checked
    // first: every problem is reported, and positional arrays are not arguments.
    let ctx = StepContext::new();
    let shared: std::sync::Arc<dyn Tool> = std::sync::Arc::new(add::default());
    let err = ctx.call_tool(&shared, json!([1, 2])).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid arguments for tool `add`: expected object, got an array"
    );
    let err = ctx.call_tool(&shared, json!({"a": 1.5})).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid arguments for tool `add`: `b`: required field is missing; `a`: expected integer, got number 1.5"
    );
}

#[test]
fn nested_parameter_types_have_schemas() {
    let params = spec_of::<store_address>().parameters;
    let address = &params["properties"]["address"];
    assert_eq!(address["type"], "object");
    assert_eq!(
        address["properties"]["street"]["description"],
        "Street and number."
    );
    assert_eq!(params["properties"]["tags"]["type"], "array");
    let problems = schema::validate(&params, &json!({"address": {"street": 1}, "tags": "x"}));
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert!(paths.contains(&"address.street"), "{problems:?}");
    assert!(paths.contains(&"address.zip"), "{problems:?}");
    assert!(paths.contains(&"tags"), "{problems:?}");
}

#[test]
fn contract_options_are_recorded() {
    let spec = spec_of::<create_record>();
    let c = &spec.contract;
    assert_eq!(c.compensating_tool.as_deref(), Some("delete_record"));
    assert!(c.requires_approval);
    assert_eq!(c.retries, 3);
    assert_eq!(c.timeout, Some(Duration::from_secs(5)));
    assert_eq!(c.tags, ["db", "write"]);
    assert_eq!(c.side_effects, ["database"]);
    assert!(c.partial_effects);

    let spec = spec_of::<slow>();
    assert_eq!(spec.name, "slow_thing");
    assert_eq!(spec.description, "Does it slowly");
    assert_eq!(spec.contract.timeout, Some(Duration::from_millis(250)));
    assert!(!spec.contract.requires_approval);

    let plain = spec_of::<add>().contract;
    assert_eq!(plain, agenthelm::ToolContract::default());
    assert_eq!(plain.retries, 0);
    assert_eq!(plain.timeout, None);

    // The spec serializes with the timeout in seconds.
    let json = serde_json::to_value(spec_of::<slow>()).unwrap();
    assert_eq!(json["contract"]["timeout"], 0.25);
}

#[test]
fn tools_macro_builds_a_set_in_order() {
    let set = tools![add, greet, write_file];
    assert_eq!(set.len(), 3);
    assert!(!set.is_empty());
    assert_eq!(
        set.names().collect::<Vec<_>>(),
        ["add", "greet", "write_file"]
    );
    assert!(set.contains("greet") && !set.contains("nope"));
    assert_eq!(set.get("add").unwrap().spec().name, "add");
    assert_eq!(set.specs().count(), 3);
    assert_eq!(set.iter().count(), 3);
    assert!(tools![].is_empty());
    assert_eq!(tools![add, add].len(), 1, "same name is kept once");
    // A renamed tool is found under its tool name.
    assert!(tools![slow].contains("slow_thing"));
    assert_eq!(format!("{:?}", tools![add, ping]), r#"["add", "ping"]"#);
}

#[test]
fn tool_set_require_insert_and_extend() {
    let mut set = ToolSet::new().with(add::default());
    let err = set.require("ad").err().unwrap();
    assert_eq!(
        err,
        ToolError::NotFound {
            tool: "ad".into(),
            available: vec!["add".into()]
        }
    );
    assert_eq!(err.to_string(), "unknown tool `ad` (available: add)");
    assert!(set.require("add").is_ok());

    assert!(set.insert(ping::default()).is_none());
    let replacement = FnTool::new("add", "fake add", json!({"type": "object"}), |_, _| async {
        Ok(json!(0))
    })
    .unwrap();
    let replaced = set.insert(replacement).unwrap();
    assert_eq!(
        replaced.spec().description,
        "Add two whole numbers.\n\nReturns their sum."
    );
    assert_eq!(set.get("add").unwrap().spec().description, "fake add");
    assert_eq!(
        set.names().collect::<Vec<_>>(),
        ["add", "ping"],
        "order kept"
    );

    let mut other = tools![greet];
    other.extend(&set);
    assert_eq!(other.names().collect::<Vec<_>>(), ["greet", "add", "ping"]);

    let collected: ToolSet = vec![add::default(), add::default()].into_iter().collect();
    assert_eq!(collected.len(), 1);
}

#[tokio::test]
async fn fn_tool_built_at_run_time() {
    let tool = FnTool::new(
        "upper",
        "Upper-case a text",
        json!({"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}),
        |args, call: ToolCallInfo| async move {
            let text = args["text"]
                .as_str()
                .ok_or(ToolError::new("text missing"))?;
            Ok(json!(format!("{}:{}", call.attempt, text.to_uppercase())))
        },
    )
    .unwrap()
    .compensating_tool("lower")
    .requires_approval(true)
    .retries(2)
    .timeout(Duration::from_millis(1500))
    .tags(["text"])
    .side_effects(["none really"])
    .partial_effects(true);
    let c = &tool.spec().contract;
    assert_eq!(c.compensating_tool.as_deref(), Some("lower"));
    assert!(c.requires_approval && c.partial_effects);
    assert_eq!(c.retries, 2);
    assert_eq!(c.timeout, Some(Duration::from_millis(1500)));
    assert_eq!(c.tags, ["text"]);
    assert_eq!(c.side_effects, ["none really"]);
    assert_eq!(tool.spec().name, "upper");
    let call = ToolCallInfo {
        attempt: 2,
        ..ToolCallInfo::default()
    };
    assert_eq!(
        tool.call(json!({"text": "abc"}), &call).await,
        Ok(json!("2:ABC"))
    );
    assert!(format!("{tool:?}").contains("upper"));
}

fn invalid(schema: Value) -> agenthelm::tool::InvalidSchema {
    FnTool::new("t", "d", schema, |_, _| async { Ok(Value::Null) })
        .expect_err("schema should be rejected")
}

#[test]
fn fn_tool_rejects_invalid_schemas_naming_the_keyword() {
    let err = invalid(json!({"type": "object", "properties": {"n": {"type": "integr"}}}));
    assert_eq!(err.tool, "t");
    assert_eq!(err.problems[0].path, "properties.n.type");
    let text = err.to_string();
    assert!(
        text.contains("`properties.n.type`") && text.contains("integr"),
        "{text}"
    );

    let err = invalid(json!({"type": "string"}));
    assert_eq!(err.problems[0].path, "type");

    let err = invalid(json!("not a schema"));
    assert!(err.to_string().contains("must be an object"), "{err}");

    let err = invalid(json!({
        "type": "object",
        "required": "name",
        "properties": {
            "list": {"type": "array", "items": {"type": 5}, "minItems": -1},
            "pick": {"anyOf": {"type": "string"}},
            "n": {"type": "number", "maximum": "ten"}
        }
    }));
    let paths: Vec<&str> = err.problems.iter().map(|p| p.path.as_str()).collect();
    for expected in [
        "required",
        "properties.list.items.type",
        "properties.list.minItems",
        "properties.pick.anyOf",
        "properties.n.maximum",
    ] {
        assert!(paths.contains(&expected), "{expected} not in {paths:?}");
    }

    // Valid shapes are accepted, including a schema without `type` and boolean sub-schemas.
    assert!(FnTool::new(
        "ok",
        "d",
        json!({"properties": {"x": true}}),
        |_, _| async { Ok(Value::Null) }
    )
    .is_ok());
}

fn problems_of(schema: &Value, value: Value) -> Vec<String> {
    schema::validate(schema, &value)
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn schema_errors_name_the_field_path() {
    let s = json!({
        "type": "object",
        "properties": {
            "user": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "minLength": 2, "maxLength": 5},
                    "age": {"type": "integer", "minimum": 0, "maximum": 150}
                },
                "required": ["name"],
                "additionalProperties": false
            },
            "items": {
                "type": "array",
                "items": {"type": "object", "properties": {"qty": {"type": "number", "exclusiveMinimum": 0}}},
                "maxItems": 3
            },
            "color": {"enum": ["red", "green"]}
        },
        "required": ["user"]
    });
    assert_eq!(
        problems_of(&s, json!({"user": {"name": "Ada"}})),
        Vec::<String>::new()
    );

    let found = problems_of(
        &s,
        json!({
            "user": {"name": "A", "age": 200, "nick": "x"},
            "items": [{"qty": 1}, {"qty": 0}, {"qty": "lots"}, {}],
            "color": "blue"
        }),
    );
    let expected = [
        "`user.name`: is 1 characters long, shorter than 2",
        "`user.age`: 200 is more than the maximum 150",
        "`user.nick`: unknown field (expected one of: age, name)",
        "`items[1].qty`: 0 must be more than 0",
        "`items[2].qty`: expected number, got string \"lots\"",
        "`items`: has 4 items, more than 3",
        "`color`: \"blue\" is not one of \"red\", \"green\"",
    ];
    for e in expected {
        assert!(found.iter().any(|f| f == e), "`{e}` not in {found:#?}");
    }
    assert_eq!(found.len(), expected.len(), "{found:#?}");

    let found = problems_of(&s, json!({"user": {"age": -1}}));
    assert!(
        found.contains(&"`user.name`: required field is missing".to_string()),
        "{found:?}"
    );
    assert!(
        found.contains(&"`user.age`: -1 is less than the minimum 0".to_string()),
        "{found:?}"
    );
    assert_eq!(
        problems_of(&s, json!({})),
        ["`user`: required field is missing"]
    );
    assert_eq!(
        problems_of(&s, json!("x")),
        ["expected object, got string \"x\""]
    );
}

#[test]
fn schema_any_of_one_of_and_refs() {
    let s = json!({
        "type": "object",
        "properties": {
            "id": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
            "shape": {"oneOf": [
                {"type": "object", "properties": {"r": {"type": "number"}}, "required": ["r"]},
                {"type": "object", "properties": {"w": {"type": "number"}}, "required": ["w"]}
            ]},
            "owner": {"$ref": "#/$defs/person"}
        },
        "$defs": {
            "person": {"type": "object", "properties": {"email": {"type": "string"}}, "required": ["email"]}
        }
    });
    assert!(schema::validate(
        &s,
        &json!({"id": 3, "shape": {"r": 1}, "owner": {"email": "a@b"}})
    )
    .is_empty());
    let found = problems_of(
        &s,
        json!({"id": true, "shape": {"r": 1, "w": 2}, "owner": {"email": 5}}),
    );
    assert!(
        found.contains(&"`id`: true matches none of the allowed forms".to_string()),
        "{found:?}"
    );
    assert!(
        found.iter().any(|f| f.starts_with("`shape`:")
            && f.contains("exactly one")
            && f.contains("matches 2")),
        "{found:?}"
    );
    assert!(
        found.contains(&"`owner.email`: expected string, got number 5".to_string()),
        "{found:?}"
    );
    let found = problems_of(&s, json!({"shape": {}}));
    assert!(found.iter().any(|f| f.contains("matches 0")), "{found:?}");
    // A reference to nothing makes the schema unusable: it is found when the schema is
    // compiled, before any value is checked.
    let mut broken = s.clone();
    broken["properties"]["missing"] = json!({"$ref": "#/$defs/nobody"});
    let found = problems_of(&broken, json!({"id": 3}));
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0]
            == "the schema is not usable: `properties.missing.$ref`: schema reference `#/$defs/nobody` not found",
        "{found:?}"
    );

    // A reference to itself does not overflow the stack: it constrains nothing, unless a
    // keyword beside it does.
    let recursive = json!({"$ref": "#"});
    assert_eq!(schema::validate(&recursive, &json!(1)), []);
    let recursive = json!({"$ref": "#", "type": "object", "properties": {"next": {"$ref": "#"}}});
    assert_eq!(
        problems_of(&recursive, json!({"next": {"next": 3}})),
        ["`next.next`: expected object, got number 3"]
    );
}

#[test]
fn schema_numbers_and_integers() {
    let s = json!({"type": "object", "properties": {
        "n": {"type": "integer", "multipleOf": 5},
        "f": {"type": "number", "exclusiveMaximum": 1.5},
        "u": {"type": "array", "uniqueItems": true, "minItems": 1}
    }});
    assert!(schema::validate(&s, &json!({"n": 10, "f": 1.0, "u": [1]})).is_empty());
    assert!(
        schema::validate(&s, &json!({"n": 10.0})).is_empty(),
        "10.0 is an integer"
    );
    let found = problems_of(&s, json!({"n": 7, "f": 1.5, "u": []}));
    assert!(
        found.contains(&"`n`: 7 is not a multiple of 5".into()),
        "{found:?}"
    );
    assert!(
        found.contains(&"`f`: 1.5 must be less than 1.5".into()),
        "{found:?}"
    );
    assert!(
        found.contains(&"`u`: has 0 items, fewer than 1".into()),
        "{found:?}"
    );
    let found = problems_of(&s, json!({"n": 2.5, "u": [1, 1.0]}));
    assert!(
        found.contains(&"`n`: expected integer, got number 2.5".into()),
        "{found:?}"
    );
    assert!(
        found.contains(&"`u`: items must be unique".into()),
        "{found:?}"
    );
}

static GATE: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
static GATE_OPENED: std::sync::Condvar = std::sync::Condvar::new();

fn open_gate() {
    *GATE.lock().unwrap() = true;
    GATE_OPENED.notify_all();
}

/// Blocks its thread until the test opens the gate.
#[tool(timeout = 0.05)]
fn blocker() -> String {
    let mut open = GATE.lock().unwrap();
    while !*open {
        open = GATE_OPENED.wait(open).unwrap();
    }
    "through".to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_sync_tool_cannot_escape_its_timeout() {
    // Found by probing: the body of a sync tool ran inline, so a blocked body held its thread and
    // the timeout never fired. The gate is opened only after the call has returned.
    let orchestrator = Orchestrator::new(AgentRegistry::new()).tools(tools![blocker]);
    let mut plan = Plan::new("block");
    plan.approved = true;
    plan.steps.push(PlanStep::new("b", "block").tool("blocker"));
    let outcome =
        tokio::time::timeout(Duration::from_secs(20), orchestrator.execute(&mut plan)).await;
    open_gate();
    let result = outcome
        .expect("the blocked tool ignored its timeout")
        .unwrap();
    assert!(!result.success);
    assert_eq!(
        plan.get_step("b").unwrap().error.as_deref(),
        Some("tool `blocker` timed out after 0.050s")
    );
}

/// Has a bug.
#[tool]
fn crash(n: u8) -> u8 {
    if n > 0 {
        panic!("sync bug {n}");
    }
    n
}

#[tokio::test]
async fn a_panicking_sync_tool_is_a_failure() {
    let err = crash::default()
        .call(json!({"n": 3}), &info())
        .await
        .unwrap_err();
    assert_eq!(
        err,
        ToolError::Failed("tool `crash` panicked: sync bug 3".into())
    );
    assert_eq!(
        crash::default().call(json!({"n": 0}), &info()).await,
        Ok(json!(0))
    );
}

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Node {
    name: String,
    children: Vec<Node>,
}

/// Count a tree's direct children, unless its name is empty.
#[tool]
fn count_children(root: Node) -> usize {
    if root.name.is_empty() {
        0
    } else {
        root.children.len()
    }
}

#[tokio::test]
async fn recursive_parameter_types_use_refs_that_validation_follows() {
    let tool = count_children::default();
    let params = &tool.spec().parameters;
    assert_eq!(schema::check_schema(params), []);
    let problems = schema::validate(
        params,
        &json!({"root": {"name": "a", "children": [{"name": 1, "children": []}]}}),
    );
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].path, "root.children[0].name");
    let ok = json!({"root": {"name": "a", "children": [{"name": "b", "children": []}]}});
    assert!(schema::validate(params, &ok).is_empty());
    assert_eq!(tool.call(ok, &info()).await, Ok(json!(1)));
}
