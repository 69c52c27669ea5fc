//! Plans: builders, validation, ready steps, run state, and the YAML/JSON forms.

use agenthelm::plan::PlanProblem;
use agenthelm::prelude::*;
use agenthelm::PlanError;
use serde_json::json;

fn step(id: &str) -> PlanStep {
    PlanStep::new(id, format!("do {id}"))
}

fn plan_of(steps: Vec<PlanStep>) -> Plan {
    let mut plan = Plan::new("goal");
    plan.steps = steps;
    plan
}

fn problems(plan: &Plan) -> Vec<PlanProblem> {
    match plan.validate() {
        Err(PlanError::Invalid(problems)) => problems,
        other => panic!("expected an invalid plan, got {other:?}"),
    }
}

#[test]
fn builders_fill_public_fields() {
    let s = PlanStep::new("create", "Create the report")
        .agent("writer")
        .tool("create_report")
        .args(json!({"title": "Q3"}))
        .depends_on(["research", "outline"])
        .compensate("delete_report", json!({"id": "{{result}}"}));
    assert_eq!(s.id, "create");
    assert_eq!(s.description, "Create the report");
    assert_eq!(s.agent_name.as_deref(), Some("writer"));
    assert_eq!(s.tool_name.as_deref(), Some("create_report"));
    assert_eq!(s.args, json!({"title": "Q3"}));
    assert_eq!(s.depends_on, ["research", "outline"]);
    assert_eq!(s.compensate_tool.as_deref(), Some("delete_report"));
    assert_eq!(s.compensate_args, Some(json!({"id": "{{result}}"})));
    assert_eq!(s.status, StepStatus::Pending);
    assert_eq!(s.result, None);
    assert_eq!(s.error, None);

    let bare = PlanStep::new("x", "");
    assert_eq!(bare.args, json!({}));
    assert!(bare.depends_on.is_empty());
    assert!(bare.agent_name.is_none() && bare.tool_name.is_none());

    let dependencies: Vec<String> = vec!["a".into()];
    assert_eq!(step("y").depends_on(dependencies).depends_on, ["a"]);

    let plan = Plan::new("ship it");
    assert_eq!(plan.goal, "ship it");
    assert_eq!(plan.reasoning, "");
    assert!(plan.steps.is_empty());
    assert!(!plan.approved);
}

#[test]
fn step_status_serializes_lowercase() {
    let all = [
        (StepStatus::Pending, "pending"),
        (StepStatus::Running, "running"),
        (StepStatus::Completed, "completed"),
        (StepStatus::Failed, "failed"),
        (StepStatus::Skipped, "skipped"),
        (StepStatus::Compensated, "compensated"),
    ];
    for (status, name) in all {
        assert_eq!(serde_json::to_value(status).unwrap(), json!(name));
        assert_eq!(
            serde_json::from_value::<StepStatus>(json!(name)).unwrap(),
            status
        );
        assert_eq!(status.to_string(), name);
    }
    assert!(serde_json::from_value::<StepStatus>(json!("Done")).is_err());
}

#[test]
fn valid_plan_validates() {
    let plan = plan_of(vec![step("a"), step("b"), step("c").depends_on(["a", "b"])]);
    assert_eq!(plan.validate(), Ok(()));
    // A plan with no steps would "succeed" doing nothing (issue 14).
    assert_eq!(
        plan_of(vec![]).validate(),
        Err(PlanError::Invalid(vec![PlanProblem::NoSteps]))
    );
}

#[test]
fn validate_reports_every_problem_at_once() {
    let plan = plan_of(vec![
        step(""),
        step("a").depends_on(["ghost"]),
        step("a"),
        step("b").args(json!([1, 2])),
        step("c").compensate("undo", json!("not an object")),
        step("d").depends_on(["d"]),
        step("e").depends_on(["f"]),
        step("f").depends_on(["e"]),
    ]);
    let found = problems(&plan);
    let expected = [
        PlanProblem::EmptyId { index: 0 },
        PlanProblem::DuplicateId { id: "a".into() },
        PlanProblem::UnknownDependency {
            step: "a".into(),
            dependency: "ghost".into(),
        },
        PlanProblem::ArgsNotObject {
            step: "b".into(),
            field: "args",
        },
        PlanProblem::ArgsNotObject {
            step: "c".into(),
            field: "compensate_args",
        },
        PlanProblem::Cycle {
            steps: vec!["d".into()],
        },
    ];
    for problem in &expected {
        assert!(found.contains(problem), "missing {problem:?} in {found:?}");
    }
    let cycles: Vec<&PlanProblem> = found
        .iter()
        .filter(|p| matches!(p, PlanProblem::Cycle { .. }))
        .collect();
    assert_eq!(cycles.len(), 2, "{found:?}");

    let text = plan.validate().unwrap_err().to_string();
    for needle in [
        "step #1 has an empty id",
        "`a` is used more than once",
        "depends on `ghost`",
        "`args` must be a JSON object",
        "`compensate_args` must be a JSON object",
        "d -> d",
    ] {
        assert!(text.contains(needle), "`{needle}` not in: {text}");
    }
    assert!(
        text.contains("e -> f -> e") || text.contains("f -> e -> f"),
        "{text}"
    );
}

#[test]
fn duplicate_id_is_reported_once() {
    let plan = plan_of(vec![step("a"), step("a"), step("a")]);
    assert_eq!(
        problems(&plan),
        [PlanProblem::DuplicateId { id: "a".into() }]
    );
}

#[test]
fn cycle_is_named_as_a_path() {
    let plan = plan_of(vec![
        step("a").depends_on(["b"]),
        step("b").depends_on(["a"]),
    ]);
    assert_eq!(
        problems(&plan),
        [PlanProblem::Cycle {
            steps: vec!["a".into(), "b".into()]
        }]
    );
    assert_eq!(
        plan.validate().unwrap_err().to_string(),
        "invalid plan: dependency cycle: a -> b -> a"
    );
}

#[test]
fn long_cycle_behind_a_valid_prefix_is_found() {
    let plan = plan_of(vec![
        step("start"),
        step("x").depends_on(["start", "z"]),
        step("y").depends_on(["x"]),
        step("z").depends_on(["y"]),
        step("after").depends_on(["z"]),
    ]);
    let found = problems(&plan);
    assert_eq!(found.len(), 1, "{found:?}");
    let PlanProblem::Cycle { steps } = &found[0] else {
        panic!("{found:?}")
    };
    let mut sorted = steps.clone();
    sorted.sort();
    assert_eq!(sorted, ["x", "y", "z"]);
    // Each step in the reported cycle depends on the next one.
    for (i, id) in steps.iter().enumerate() {
        let next = &steps[(i + 1) % steps.len()];
        assert!(plan.get_step(id).unwrap().depends_on.contains(next));
    }
}

#[test]
fn ready_steps_follow_dependencies() {
    let mut plan = plan_of(vec![
        step("a"),
        step("b"),
        step("c").depends_on(["a", "b"]),
        step("d").depends_on(["c"]),
    ]);
    let ids = |plan: &Plan| -> Vec<String> {
        plan.get_ready_steps()
            .iter()
            .map(|s| s.id.clone())
            .collect()
    };
    assert_eq!(ids(&plan), ["a", "b"]);
    plan.mark_completed("a", json!("A")).unwrap();
    assert_eq!(ids(&plan), ["b"]);
    plan.mark_completed("b", json!("B")).unwrap();
    assert_eq!(ids(&plan), ["c"]);
    plan.mark_failed("c", "boom").unwrap();
    assert!(
        ids(&plan).is_empty(),
        "a failed dependency never makes d ready"
    );
}

#[test]
fn the_seed_names_agree_with_the_idiomatic_ones() {
    let mut plan = plan_of(vec![step("a"), step("b").depends_on(["a"])]);
    let ids =
        |steps: Vec<&PlanStep>| -> Vec<String> { steps.iter().map(|s| s.id.clone()).collect() };
    assert_eq!(ids(plan.ready_steps()), ["a"]);
    assert_eq!(ids(plan.get_ready_steps()), ids(plan.ready_steps()));
    assert_eq!(plan.step("b"), plan.get_step("b"));
    assert_eq!(
        plan.step("b").map(|s| s.depends_on.clone()),
        Some(vec!["a".into()])
    );
    assert!(plan.step("nope").is_none());

    plan.step_mut("a").unwrap().description = "changed".into();
    assert_eq!(plan.get_step("a").unwrap().description, "changed");
    plan.get_step_mut("a").unwrap().status = StepStatus::Completed;
    assert_eq!(ids(plan.ready_steps()), ["b"]);
    assert!(plan.step_mut("nope").is_none());
}

#[test]
fn mark_completed_and_failed_update_state() {
    let mut plan = plan_of(vec![step("a"), step("b")]);
    assert!(!plan.is_complete());
    assert!(!plan.success());

    plan.mark_failed("a", "first try failed").unwrap();
    let a = plan.get_step("a").unwrap();
    assert_eq!(a.status, StepStatus::Failed);
    assert_eq!(a.error.as_deref(), Some("first try failed"));

    plan.mark_completed("a", json!({"id": 7})).unwrap();
    let a = plan.get_step("a").unwrap();
    assert_eq!(a.status, StepStatus::Completed);
    assert_eq!(a.result, Some(json!({"id": 7})));
    assert_eq!(a.error, None, "completing clears the old error");
    assert!(!plan.is_complete());

    plan.mark_completed("b", json!("done")).unwrap();
    assert!(plan.is_complete());
    assert!(plan.success());

    plan.mark_failed("b", String::from("late failure")).unwrap();
    assert!(plan.is_complete());
    assert!(!plan.success());
}

#[test]
fn marking_an_unknown_step_is_an_error() {
    let mut plan = plan_of(vec![step("a")]);
    let err = plan.mark_completed("nope", json!(1)).unwrap_err();
    assert_eq!(err, PlanError::UnknownStep("nope".into()));
    assert!(err.to_string().contains("`nope`"));
    assert!(plan.mark_failed("ghost", "x").is_err());
    assert_eq!(plan.get_step("a").unwrap().status, StepStatus::Pending);
    assert!(plan.get_step("nope").is_none());
}

#[test]
fn is_complete_counts_every_final_state() {
    let mut plan = plan_of(vec![step("a"), step("b"), step("c"), step("d")]);
    plan.steps[0].status = StepStatus::Completed;
    plan.steps[1].status = StepStatus::Skipped;
    plan.steps[2].status = StepStatus::Compensated;
    plan.steps[3].status = StepStatus::Running;
    assert!(!plan.is_complete());
    plan.steps[3].status = StepStatus::Failed;
    assert!(plan.is_complete());
    assert!(!plan.success());
}

fn full_plan() -> Plan {
    let mut plan = Plan::new("Publish the quarterly report");
    plan.reasoning = "Research first,\nthen write: two lines".into();
    plan.approved = true;
    plan.steps = vec![
        PlanStep::new("research", "Find numbers")
            .agent("researcher")
            .args(json!({"query": "q3 revenue", "limit": 5, "deep": {"x": [1, 2.5, null, true]}})),
        PlanStep::new("write", "Write it")
            .agent("writer")
            .tool("create_report")
            .args(json!({"body": "{{steps.research.result}}"}))
            .depends_on(["research"])
            .compensate("delete_report", json!({"id": "{{result.id}}"})),
        PlanStep::new("send", "Send it").tool("send_email"),
    ];
    plan.steps[0].status = StepStatus::Completed;
    plan.steps[0].result = Some(json!({"rows": [1, 2, 3], "note": "ok"}));
    plan.steps[1].status = StepStatus::Compensated;
    plan.steps[1].result = Some(json!("report-17"));
    plan.steps[2].status = StepStatus::Failed;
    plan.steps[2].error = Some("smtp: 550 mailbox \"full\"".into());
    plan
}

#[test]
fn yaml_round_trip_is_lossless() {
    let plan = full_plan();
    let yaml = plan.to_yaml().unwrap();
    assert_eq!(Plan::from_yaml(&yaml).unwrap(), plan, "{yaml}");
    assert!(yaml.contains("status: compensated"), "{yaml}");
}

#[test]
fn json_round_trip_is_lossless() {
    let plan = full_plan();
    let text = plan.to_json().unwrap();
    assert_eq!(Plan::from_json(&text).unwrap(), plan, "{text}");
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(value["steps"][2]["status"], "failed");
    assert_eq!(value["steps"][1]["agent_name"], "writer");
}

#[test]
fn reads_plans_written_by_the_python_library() {
    let yaml = r#"
goal: Research AI trends
reasoning: two searches then a summary
approved: false
steps:
  - id: a
    agent: researcher
    tool: search
    description: Search topic A
    args:
      query: AI trends
    depends_on: null
  - id: b
    agent_name: writer
    description: Summarize
    args: null
    depends_on:
      - a
    status: pending
    result: null
    error: null
    compensate_tool: null
    compensate_args: null
"#;
    let plan = Plan::from_yaml(yaml).unwrap();
    assert_eq!(plan.goal, "Research AI trends");
    let a = plan.get_step("a").unwrap();
    assert_eq!(a.agent_name.as_deref(), Some("researcher"));
    assert_eq!(a.tool_name.as_deref(), Some("search"));
    assert!(a.depends_on.is_empty());
    assert_eq!(a.args, json!({"query": "AI trends"}));
    let b = plan.get_step("b").unwrap();
    assert_eq!(b.args, json!({}));
    assert_eq!(b.depends_on, ["a"]);
    // `result: null` is kept as a JSON null result (see `null_result_and_floats_survive`).
    assert_eq!(b.result, Some(serde_json::Value::Null));
    assert_eq!(a.result, None);
    plan.validate().unwrap();

    let json = r#"{"goal": "g", "steps": [{"id": "a", "agent": "x", "tool": "t", "depends_on": null, "args": null}]}"#;
    let plan = Plan::from_json(json).unwrap();
    assert_eq!(plan.steps[0].agent_name.as_deref(), Some("x"));
    assert_eq!(plan.steps[0].tool_name.as_deref(), Some("t"));
    assert_eq!(plan.steps[0].args, json!({}));
}

fn parse_error(err: PlanError) -> (Option<usize>, Option<String>, String) {
    let text = err.to_string();
    match err {
        PlanError::Parse { line, path, .. } => (line, path, text),
        other => panic!("expected a parse error, got {other:?}"),
    }
}

#[test]
fn wrong_field_type_in_yaml_names_line_and_field() {
    let yaml = "goal: g\nsteps:\n  - id: a\n  - id: b\n    depends_on: 5\n";
    let (line, path, text) = parse_error(Plan::from_yaml(yaml).unwrap_err());
    assert_eq!(path.as_deref(), Some("steps[1].depends_on"), "{text}");
    assert_eq!(line, Some(5), "{text}");
    assert!(text.contains("line 5"), "{text}");
    assert!(text.contains("steps[1].depends_on"), "{text}");
    assert!(text.starts_with("YAML plan"), "{text}");
}

#[test]
fn wrong_field_type_in_json_names_line_and_field() {
    let json = "{\n  \"goal\": \"g\",\n  \"steps\": [\n    {\"id\": \"a\"},\n    {\"id\": \"b\", \"status\": \"done\"}\n  ]\n}";
    let (line, path, text) = parse_error(Plan::from_json(json).unwrap_err());
    assert_eq!(path.as_deref(), Some("steps[1].status"), "{text}");
    assert_eq!(line, Some(5), "{text}");
    assert!(
        text.contains("steps[1].status") && text.contains("line 5"),
        "{text}"
    );
}

#[test]
fn unknown_keys_are_rejected_not_dropped() {
    // A typo must not silently drop the dependency.
    let yaml = "goal: g\nsteps:\n  - id: a\n  - id: b\n    depend_on: [a]\n";
    let (line, path, text) = parse_error(Plan::from_yaml(yaml).unwrap_err());
    assert!(text.contains("depend_on"), "{text}");
    assert_eq!(line, Some(5), "{text}");
    assert!(path.is_some_and(|p| p.starts_with("steps[1]")), "{text}");

    let err = Plan::from_json(r#"{"goal": "g", "aproved": true}"#).unwrap_err();
    assert!(err.to_string().contains("aproved"), "{err}");
}

#[test]
fn malformed_text_is_an_error_with_a_line() {
    let broken_yaml = "goal: g\nsteps:\n  - id: a\n    args: {unclosed: [1, 2\n";
    let (line, _, text) = parse_error(Plan::from_yaml(broken_yaml).unwrap_err());
    assert!(line.is_some(), "{text}");
    assert!(text.contains("line"), "{text}");

    let (line, _, text) =
        parse_error(Plan::from_json("{\"goal\": \"g\",\n \"steps\": [}").unwrap_err());
    assert_eq!(line, Some(2), "{text}");

    // Trailing garbage after a valid JSON plan is not ignored.
    assert!(Plan::from_json(r#"{"goal": "g"} {"goal": "h"}"#).is_err());
    // A missing required field is named.
    let text = Plan::from_yaml("steps: []\n").unwrap_err().to_string();
    assert!(text.contains("goal"), "{text}");
    let text = Plan::from_yaml("goal: g\nsteps:\n  - description: no id\n")
        .unwrap_err()
        .to_string();
    assert!(text.contains("id"), "{text}");
    for bad in ["", "- just\n- a list\n", "goal: [1, 2]\n"] {
        assert!(Plan::from_yaml(bad).is_err(), "{bad:?} parsed");
    }
}

#[test]
fn null_result_and_floats_survive_round_trips() {
    // Found by the property tests: a completed step whose result is JSON null came back with no
    // result, and floats like 8.066223948995002e-238 came back one unit off through JSON.
    let mut plan = plan_of(vec![step("a"), step("b")]);
    plan.mark_completed("a", serde_json::Value::Null).unwrap();
    plan.mark_completed("b", json!([8.066223948995002e-238, 0.1, -30.6, 1e300]))
        .unwrap();
    assert_eq!(Plan::from_yaml(&plan.to_yaml().unwrap()).unwrap(), plan);
    assert_eq!(Plan::from_json(&plan.to_json().unwrap()).unwrap(), plan);
    assert_eq!(
        Plan::from_json(&plan.to_json().unwrap()).unwrap().steps[0].result,
        Some(serde_json::Value::Null)
    );
}

#[test]
fn parse_errors_say_each_thing_once() {
    // The parsers repeat the location and field in their own message; the error shows each once.
    let yaml = "goal: g\nsteps:\n  - id: a\n    status: done\n";
    assert_eq!(
        Plan::from_yaml(yaml).unwrap_err().to_string(),
        "YAML plan at line 4, column 13, field `steps[0].status`: unknown variant `done`, \
         expected one of `pending`, `running`, `completed`, `failed`, `skipped`, `compensated`"
    );
    let text = Plan::from_yaml("goal: g\n\tsteps: []\n")
        .unwrap_err()
        .to_string();
    assert_eq!(text.matches("line 2").count(), 1, "{text}");
    assert!(text.contains("tab character"), "{text}");
    let json = "{\"goal\": \"g\",\n \"approved\": \"yes\"}";
    assert_eq!(
        Plan::from_json(json).unwrap_err().to_string(),
        "JSON plan at line 2, column 18, field `approved`: invalid type: string \"yes\", expected a boolean"
    );
}

#[test]
fn hostile_documents_are_errors_not_crashes() {
    // Alias expansion ("billion laughs").
    let mut yaml = String::from(
        "goal: g\nsteps:\n  - id: x\n    args:\n      a: &a [x, x, x, x, x, x, x, x, x]\n",
    );
    let mut previous = "a".to_owned();
    for i in 0..9 {
        let name = format!("b{i}");
        let refs = vec![format!("*{previous}"); 9].join(", ");
        yaml.push_str(&format!("      {name}: &{name} [{refs}]\n"));
        previous = name;
    }
    let text = Plan::from_yaml(&yaml).unwrap_err().to_string();
    assert!(text.contains("repetition limit"), "{text}");
    // Deep nesting.
    let deep = format!(
        "goal: g\nsteps:\n  - id: x\n    args: {{a: {}1{}}}\n",
        "[".repeat(5000),
        "]".repeat(5000)
    );
    assert!(Plan::from_yaml(&deep).is_err());
    let deep = format!(
        "{{\"goal\":\"g\",\"steps\":[{{\"id\":\"x\",\"args\":{{\"a\":{}1{}}}}}]}}",
        "[".repeat(5000),
        "]".repeat(5000)
    );
    assert!(Plan::from_json(&deep).is_err());
    // Duplicate keys.
    let text = Plan::from_yaml("goal: a\ngoal: b\n")
        .unwrap_err()
        .to_string();
    assert!(text.contains("duplicate field `goal`"), "{text}");
}
