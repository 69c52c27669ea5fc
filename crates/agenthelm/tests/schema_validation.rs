//! Tool arguments against full JSON schemas: `pattern`, `format`, `$ref`/`$defs` from schemars,
//! `oneOf`, tuples in both drafts' spellings; and what a plan check makes of them.

use agenthelm::plan::PlanProblem;
use agenthelm::prelude::*;
use agenthelm::tool::schema::{self, Problem, Schema};
use agenthelm::tool::{check_parameters, FnTool, ToolError, ToolSpec};
use agenthelm::{OrchestratorError, PlanError, StepContext};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A tool with `parameters` that counts its calls and echoes its arguments.
fn counting_tool(name: &str, parameters: Value) -> (Arc<dyn Tool>, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let tool = FnTool::new(name, "test tool", parameters, move |args, _| {
        counter.fetch_add(1, Ordering::SeqCst);
        async move { Ok(args) }
    })
    .unwrap();
    (Arc::new(tool), calls)
}

/// The problems of a call through the contract (as agents and plans call tools).
async fn refused(tool: &Arc<dyn Tool>, args: Value) -> Vec<Problem> {
    match StepContext::new().call_tool(tool, args).await {
        Err(ToolError::InvalidArguments { problems, .. }) => problems,
        other => panic!("expected invalid arguments, got {other:?}"),
    }
}

fn mail_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "to": {"type": "string", "format": "email"},
            "ticket": {"type": "string", "pattern": "^[A-Z]{2,5}-[0-9]+$"}
        },
        "required": ["to"]
    })
}

#[tokio::test]
async fn a_pattern_violation_names_the_field_and_the_rule() {
    let (tool, calls) = counting_tool("mail", mail_schema());
    let problems = refused(&tool, json!({"to": "ada@example.com", "ticket": "ops 12"})).await;
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].path, "ticket");
    assert_eq!(problems[0].keyword.as_deref(), Some("pattern"));
    assert_eq!(
        problems[0].to_string(),
        "`ticket`: \"ops 12\" does not match the pattern `^[A-Z]{2,5}-[0-9]+$`"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0, "the tool never ran");
    let ok = StepContext::new()
        .call_tool(&tool, json!({"to": "ada@example.com", "ticket": "OPS-12"}))
        .await;
    assert!(ok.is_ok(), "{ok:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_email_format_violation_is_refused() {
    let (tool, calls) = counting_tool("mail", mail_schema());
    for bad in ["ada", "ada@", "@example.com", "ada example.com"] {
        let problems = refused(&tool, json!({"to": bad})).await;
        assert_eq!(problems.len(), 1, "{bad}: {problems:?}");
        assert_eq!(
            (problems[0].path.as_str(), problems[0].keyword.as_deref()),
            ("to", Some("format"))
        );
        assert!(
            problems[0].message.contains("format `email`"),
            "{}",
            problems[0]
        );
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[derive(serde::Deserialize, schemars::JsonSchema)]
#[allow(dead_code)]
struct Address {
    street: String,
    #[schemars(regex(pattern = r"^[0-9]{5}$"))]
    zip: String,
}

#[derive(serde::Deserialize, schemars::JsonSchema)]
#[allow(dead_code)]
struct Customer {
    #[schemars(email)]
    email: String,
    address: Address,
}

#[derive(serde::Deserialize, schemars::JsonSchema)]
#[allow(dead_code)]
struct Order {
    customer: Customer,
    lines: Vec<Address>,
}

#[tokio::test]
async fn schemars_refs_are_followed_and_the_nested_path_is_named() {
    // schemars' own output: `$schema` 2020-12, nested types under `$defs`, used by `$ref`.
    let parameters = serde_json::to_value(schemars::schema_for!(Order)).unwrap();
    assert!(parameters["$defs"]["Customer"].is_object(), "{parameters}");
    assert_eq!(
        parameters["properties"]["customer"]["$ref"],
        "#/$defs/Customer"
    );
    let (tool, _) = counting_tool("order", parameters);
    let good = json!({
        "customer": {"email": "ada@example.com", "address": {"street": "Main 1", "zip": "12345"}},
        "lines": [{"street": "Dock 2", "zip": "54321"}]
    });
    assert!(StepContext::new().call_tool(&tool, good).await.is_ok());

    let problems = refused(
        &tool,
        json!({
            "customer": {"email": "nobody", "address": {"street": "Main 1", "zip": "1234"}},
            "lines": [{"street": "Dock 2", "zip": "54321"}, {"zip": 7}]
        }),
    )
    .await;
    let found: Vec<(&str, Option<&str>)> = problems
        .iter()
        .map(|p| (p.path.as_str(), p.keyword.as_deref()))
        .collect();
    for expected in [
        ("customer.email", Some("format")),
        ("customer.address.zip", Some("pattern")),
        ("lines[1].street", Some("required")),
        ("lines[1].zip", Some("type")),
    ] {
        assert!(found.contains(&expected), "{expected:?} not in {found:?}");
    }
    assert_eq!(problems.len(), 4, "{problems:#?}");
}

#[test]
fn one_of_with_no_match_or_two_matches() {
    let s = Schema::compile(&json!({
        "type": "object",
        "properties": {
            "target": {"oneOf": [
                {"type": "string", "format": "email"},
                {"type": "string", "pattern": "example\\.com$"},
                {"type": "integer"}
            ]}
        }
    }))
    .unwrap();
    assert!(s
        .validate(&json!({"target": "ada@lovelace.org"}))
        .is_empty());
    assert!(s.validate(&json!({"target": 7})).is_empty());
    let none = s.validate(&json!({"target": true}));
    assert_eq!(
        none.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["`target`: true must match exactly one allowed form, matches 0"]
    );
    assert_eq!(none[0].keyword.as_deref(), Some("oneOf"));
    // An address at example.com fits the first form and the second.
    let two = s.validate(&json!({"target": "ada@example.com"}));
    let two_text: Vec<String> = two.iter().map(ToString::to_string).collect();
    assert_eq!(two.len(), 1, "{two_text:?}");
    assert!(two_text[0].starts_with("`target`:"), "{two_text:?}");
    assert!(two_text[0].ends_with("matches 2"), "{two_text:?}");
}

/// The same tuple (a name, then a count) in draft 2020-12's and draft 7's spellings.
fn tuples() -> [(&'static str, Value); 3] {
    let pair = [json!({"type": "string"}), json!({"type": "integer"})];
    [
        (
            "prefixItems",
            json!({"type": "object", "properties": {"pair": {"type": "array", "prefixItems": pair}}}),
        ),
        (
            "items array, no $schema",
            json!({"type": "object", "properties": {"pair": {"type": "array", "items": pair}}}),
        ),
        (
            "items array, draft 7",
            json!({
                "$schema": "http://json-schema.org/draft-07/schema#",
                "type": "object",
                "properties": {"pair": {"type": "array", "items": pair, "additionalItems": false}}
            }),
        ),
    ]
}

#[tokio::test]
async fn tuple_items_name_the_index_in_either_draft() {
    for (spelling, parameters) in tuples() {
        assert_eq!(check_parameters(&parameters), [], "{spelling}");
        let (tool, calls) = counting_tool("pair", parameters);
        let problems = refused(&tool, json!({"pair": ["apples", "three"]})).await;
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            ["`pair[1]`: expected integer, got string \"three\""],
            "{spelling}"
        );
        assert_eq!(problems[0].keyword.as_deref(), Some("type"), "{spelling}");
        let ok = StepContext::new()
            .call_tool(&tool, json!({"pair": ["apples", 3]}))
            .await;
        assert!(ok.is_ok(), "{spelling}: {ok:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 1, "{spelling}");
    }
}

#[test]
fn schemas_that_do_not_compile_are_named_not_panicked_on() {
    // A pattern that is not a regular expression, and a reference to nothing.
    let Err(err) = FnTool::new(
        "bad",
        "d",
        json!({"type": "object", "properties": {"code": {"type": "string", "pattern": "(["}}}),
        |_, _| async { Ok(Value::Null) },
    ) else {
        panic!("the schema was accepted")
    };
    let text = err.to_string();
    assert!(
        text.starts_with("tool `bad` has an invalid parameter schema: `properties.code.pattern`"),
        "{text}"
    );
    let problems = check_parameters(&json!({
        "type": "object",
        "properties": {"owner": {"$ref": "#/$defs/nobody"}}
    }));
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].message.contains("nobody"), "{problems:?}");

    // A hand-made tool may carry a broken schema: its calls are refused with the reason.
    let spec = ToolSpec::new("odd", "d", json!({"type": "object", "minLength": "x"}));
    let problems = spec.argument_problems(&json!({}));
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0]
            .message
            .starts_with("the schema is not usable: "),
        "{problems:?}"
    );
    assert_eq!(
        schema::validate(&json!({"$ref": "#/nope"}), &json!(1)).len(),
        1
    );
}

#[test]
fn a_spec_compiles_its_schema_once_and_follows_a_changed_schema() {
    let mut spec = ToolSpec::new("t", "d", mail_schema());
    assert_eq!(spec.argument_problems(&json!({"to": "x"})).len(), 1);
    assert!(spec.argument_problems(&json!({"to": "a@b.org"})).is_empty());
    // A changed `parameters` field is not judged by the schema compiled before.
    spec.parameters = json!({"type": "object", "required": ["id"]});
    let problems = spec.argument_problems(&json!({"to": "x"}));
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].path, "id");
    let copy = spec.clone();
    assert_eq!(copy, spec);
    assert_eq!(copy.argument_problems(&json!({"id": 1})), []);
}

fn orchestrator() -> (Orchestrator, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let (first, first_calls) = counting_tool("first", json!({"type": "object"}));
    let (mail, mail_calls) = counting_tool("mail", mail_schema());
    let orchestrator =
        Orchestrator::new(AgentRegistry::new()).tools(ToolSet::new().with(first).with(mail));
    (orchestrator, first_calls, mail_calls)
}

fn mail_plan(ticket: &str) -> Plan {
    let mut plan = Plan::new("mail a ticket");
    plan.steps
        .push(PlanStep::new("first", "warm up").tool("first"));
    plan.steps.push(
        PlanStep::new("send", "send it")
            .tool("mail")
            .args(json!({"to": "ada@example.com", "ticket": ticket}))
            .depends_on(["first"]),
    );
    plan.approved = true;
    plan
}

#[tokio::test]
async fn a_plan_whose_arguments_fit_runs_its_tools_directly() {
    let (orchestrator, first_calls, mail_calls) = orchestrator();
    let mut plan = mail_plan("OPS-12");
    let result = orchestrator.execute(&mut plan).await.unwrap();
    assert!(result.success, "{:?}", plan.get_step("send").unwrap().error);
    assert_eq!(
        plan.get_step("send").unwrap().result,
        Some(json!({"to": "ada@example.com", "ticket": "OPS-12"}))
    );
    assert_eq!(first_calls.load(Ordering::SeqCst), 1);
    assert_eq!(mail_calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_plan_with_a_bad_pattern_is_refused_before_any_step_runs() {
    let (orchestrator, first_calls, mail_calls) = orchestrator();
    let mut plan = mail_plan("ops 12");
    let err = orchestrator.execute(&mut plan).await.unwrap_err();
    let OrchestratorError::InvalidPlan(PlanError::Invalid(problems)) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(
        problems,
        &[PlanProblem::InvalidArgs {
            step: "send".into(),
            tool: "mail".into(),
            path: "ticket".into(),
            message: "\"ops 12\" does not match the pattern `^[A-Z]{2,5}-[0-9]+$`".into(),
        }]
    );
    assert_eq!(first_calls.load(Ordering::SeqCst), 0, "no step ran");
    assert_eq!(mail_calls.load(Ordering::SeqCst), 0, "no step ran");
    // A value filled in at run time is not judged before it exists.
    let plan = mail_plan("{{steps.first.result}}");
    assert_eq!(orchestrator.check(&plan), Ok(()));
}
