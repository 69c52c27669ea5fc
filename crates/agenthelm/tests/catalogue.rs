//! The one plan checker: `Catalogue::check` against agents, a default agent and extra tools.

mod common;

use agenthelm::agent::{AgentInfo, Catalogue};
use agenthelm::plan::PlanProblem;
use agenthelm::prelude::*;
use agenthelm::{OrchestratorError, PlanError};
use common::*;
use serde_json::json;

/// Read a file.
#[tool]
fn read(path: String) -> String {
    format!("read {path}")
}

/// Remove a file.
#[tool]
fn danger(path: String) -> String {
    format!("removed {path}")
}

/// Make a record; rollback removes it.
#[tool(compensating_tool = "danger")]
fn make(name: String, size: u32) -> String {
    format!("{name}:{size}")
}

fn plan_of(steps: Vec<PlanStep>) -> Plan {
    let mut plan = Plan::new("goal");
    plan.steps = steps;
    plan
}

fn reader_catalogue() -> Catalogue {
    Catalogue::new()
        .agent(AgentInfo::new("reader").with_tools(tools![read, make]))
        .extra_tools(&tools![danger])
}

fn unknown_tool(step: &str, agent: &str, tool: &str) -> PlanProblem {
    PlanProblem::UnknownTool {
        step: step.into(),
        agent: Some(agent.into()),
        tool: tool.into(),
    }
}

#[test]
fn an_agents_tool_list_is_enforced_even_for_the_extra_tools() {
    let plan = plan_of(vec![
        PlanStep::new("ok", "read").agent("reader").tool("read"),
        PlanStep::new("bad", "remove")
            .agent("reader")
            .tool("danger"),
    ]);
    assert_eq!(
        reader_catalogue().check(&plan),
        [unknown_tool("bad", "reader", "danger")]
    );
}

#[test]
fn extra_tools_serve_as_compensations_and_for_steps_with_no_agent() {
    let plan = plan_of(vec![
        // `make`'s contract names `danger`, found among the extra tools.
        PlanStep::new("make", "make").agent("reader").tool("make"),
        PlanStep::new("undo", "read, undone by danger")
            .agent("reader")
            .tool("read")
            .compensate("danger", json!({})),
        PlanStep::new("direct", "no agent")
            .tool("danger")
            .args(json!({"path": "a"})),
    ]);
    assert_eq!(reader_catalogue().check(&plan), []);
}

#[test]
fn a_step_with_no_agent_must_give_arguments_that_fit() {
    // Its tool is called directly: nothing could make other arguments work.
    let plan = plan_of(vec![PlanStep::new("direct", "no agent").tool("danger")]);
    let problems = reader_catalogue().check(&plan);
    assert_eq!(
        problems.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["step `direct`: arguments for `danger`: `path`: required field is missing"]
    );
}

#[test]
fn steps_without_an_agent_need_a_default_or_an_extra_tool() {
    let plan = plan_of(vec![
        PlanStep::new("think", "no tool, no agent"),
        PlanStep::new("read", "a tool only agents have").tool("read"),
    ]);
    let no_agent = |step: &str| PlanProblem::NoAgent { step: step.into() };
    assert_eq!(
        reader_catalogue().check(&plan),
        [no_agent("think"), no_agent("read")]
    );
    // A tool no one has is unknown, not a missing agent.
    let nowhere = plan_of(vec![PlanStep::new("x", "typo").tool("raed")]);
    assert_eq!(
        reader_catalogue().check(&nowhere),
        [PlanProblem::UnknownTool {
            step: "x".into(),
            agent: None,
            tool: "raed".into()
        }]
    );

    // A default agent takes both; a step naming no agent may still call an extra tool, and a
    // tool that is neither the default agent's nor an extra one is a problem.
    let with_default =
        reader_catalogue().default_agent(AgentInfo::new("helper").with_tools(tools![read]));
    assert_eq!(with_default.check(&plan), []);
    let plan = plan_of(vec![
        PlanStep::new("rm", "remove").tool("danger"),
        PlanStep::new("mk", "make").tool("make"),
    ]);
    assert_eq!(
        with_default.check(&plan),
        [unknown_tool("mk", "helper", "make")]
    );
}

#[test]
fn an_agent_with_unknown_tools_may_name_any_tool() {
    let catalogue = Catalogue::new().agent(AgentInfo::new("free"));
    let plan = plan_of(vec![PlanStep::new("a", "anything")
        .agent("free")
        .tool("whatever")]);
    assert_eq!(catalogue.check(&plan), []);
    // ...but its compensations must still be found somewhere.
    let plan = plan_of(vec![PlanStep::new("a", "anything")
        .agent("free")
        .compensate("undo", json!({}))]);
    assert_eq!(
        catalogue.check(&plan),
        [PlanProblem::UnknownCompensatingTool {
            step: "a".into(),
            tool: "undo".into()
        }]
    );
}

#[test]
fn arguments_are_checked_only_when_strict_and_references_pass() {
    let plan = plan_of(vec![
        PlanStep::new("first", "read")
            .agent("reader")
            .tool("read")
            .args(json!({"path": "a"})),
        PlanStep::new("make", "make")
            .agent("reader")
            .tool("make")
            .args(json!({"name": 3, "size": "{{steps.first.result}}"}))
            .depends_on(["first"]),
    ]);
    assert_eq!(reader_catalogue().check(&plan), []);
    let problems = reader_catalogue().strict_args(true).check(&plan);
    assert_eq!(problems.len(), 1, "{problems:?}");
    let PlanProblem::InvalidArgs {
        step, tool, path, ..
    } = &problems[0]
    else {
        panic!("{problems:?}")
    };
    assert_eq!(
        (step.as_str(), tool.as_str(), path.as_str()),
        ("make", "make", "name")
    );
    assert!(
        problems[0]
            .to_string()
            .starts_with("step `make`: arguments for `make`: `name`: "),
        "{}",
        problems[0]
    );

    // Text around a placeholder that is not a reference is checked like any text.
    let plan = plan_of(vec![PlanStep::new("make", "make")
        .agent("reader")
        .tool("make")
        .args(json!({"name": "x", "size": "{{ size }}"}))]);
    assert_eq!(reader_catalogue().strict_args(true).check(&plan).len(), 1);
}

#[test]
fn structural_problems_come_first_and_match_validate() {
    let plan = plan_of(vec![
        PlanStep::new("a", "a").agent("ghost").depends_on(["b"]),
        PlanStep::new("b", "b").agent("reader").depends_on(["a"]),
    ]);
    let structural = plan.validate().unwrap_err().problems().to_vec();
    let mut expected = structural.clone();
    expected.push(PlanProblem::UnknownAgent {
        step: "a".into(),
        agent: "ghost".into(),
    });
    assert!(!structural.is_empty());
    assert_eq!(reader_catalogue().check(&plan), expected);
}

#[test]
fn a_registry_makes_a_catalogue_of_its_agents() {
    let (agent, _) = tool_agent("reader", tools![read]);
    let mut registry = AgentRegistry::new();
    registry.register(agent).unwrap();
    registry.register(FnAgent::echo("echo")).unwrap();
    let catalogue = Catalogue::from(&registry);
    let names: Vec<&str> = catalogue.agents().iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["reader", "echo"]);
    assert_eq!(catalogue.agents()[0].tool_names(), Some(vec!["read"]));
    assert_eq!(catalogue.agents()[1].tool_names(), None);
}

#[tokio::test]
async fn the_orchestrator_refuses_a_step_that_reaches_past_its_agents_tools() {
    let log = Log::default();
    let (reader, lm) = tool_agent("reader", tools![read]);
    let mut registry = AgentRegistry::new();
    registry.register(reader).unwrap();
    let orchestrator = Orchestrator::new(registry).tools(ToolSet::new().with(logging_tool(
        "danger",
        &log,
        json!("gone"),
    )));
    let mut plan = approved(
        "sneak",
        vec![PlanStep::new("rm", "remove")
            .agent("reader")
            .tool("danger")
            .args(json!({}))],
    );
    let err = orchestrator.execute(&mut plan).await.unwrap_err();
    assert_eq!(
        err,
        OrchestratorError::InvalidPlan(PlanError::Invalid(vec![unknown_tool(
            "rm", "reader", "danger"
        )]))
    );
    assert!(log.entries().is_empty(), "{:?}", log.entries());
    assert!(lm.requests().is_empty());
    assert_eq!(orchestrator.catalogue().check(&plan).len(), 1);
}
