//! Property tests: random plans survive YAML and JSON exactly, and validation finds a cycle
//! exactly when the dependency graph has one.

use agenthelm::plan::PlanProblem;
use agenthelm::prelude::*;
use agenthelm::PlanError;
use proptest::prelude::*;
use serde_json::{Map, Value};

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        // Words YAML likes to read as something else.
        prop::sample::select(vec![
            "",
            "yes",
            "no",
            "null",
            "~",
            "true",
            "1",
            "0x10",
            "1e3",
            "-",
            ": x",
            "# c",
            "- item",
            "{{steps.a.result}}",
            "'quoted'",
            "\"dq\"",
            " lead",
            "trail ",
            "a\nb",
            "tab\tin",
            "\u{85}nel",
            "\u{2028}",
            "\u{feff}bom",
            "é ü 中文 🚀",
        ])
        .prop_map(str::to_owned),
        any::<String>(),
        "[a-z0-9_ .:-]{0,12}",
    ]
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(Value::from),
        (-1000i32..1000, 0u32..4).prop_map(|(m, e)| Value::from(m as f64 / 10f64.powi(e as i32))),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((text(), inner), 0..4)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
}

fn json_object() -> impl Strategy<Value = Value> {
    prop::collection::vec((text(), json_value()), 0..4)
        .prop_map(|entries| Value::Object(entries.into_iter().collect::<Map<_, _>>()))
}

fn status() -> impl Strategy<Value = StepStatus> {
    prop::sample::select(vec![
        StepStatus::Pending,
        StepStatus::Running,
        StepStatus::Completed,
        StepStatus::Failed,
        StepStatus::Skipped,
        StepStatus::Compensated,
    ])
}

prop_compose! {
    fn plan_step(index: usize)(
        id in text(),
        description in text(),
        agent in prop::option::of(text()),
        tool in prop::option::of(text()),
        args in json_object(),
        // Edges only to earlier steps: a random DAG.
        deps in prop::collection::vec(0..index.max(1), 0..3),
        compensate in prop::option::of((text(), prop::option::of(json_object()))),
        status in status(),
        result in prop::option::of(json_value()),
        error in prop::option::of(text()),
    ) -> PlanStep {
        let mut step = PlanStep::new(format!("s{index}-{id}"), description).args(args);
        step.agent_name = agent;
        step.tool_name = tool;
        if index > 0 {
            step.depends_on = deps.into_iter().map(|d| format!("s{d}-")).collect();
        }
        if let Some((tool, args)) = compensate {
            step.compensate_tool = Some(tool);
            step.compensate_args = args;
        }
        step.status = status;
        step.result = result;
        step.error = error;
        step
    }
}

fn plan() -> impl Strategy<Value = Plan> {
    (0usize..6)
        .prop_flat_map(|n| {
            let steps: Vec<_> = (0..n).map(plan_step).collect();
            (text(), text(), any::<bool>(), steps)
        })
        .prop_map(|(goal, reasoning, approved, mut steps)| {
            // Point dependencies at the real ids of earlier steps.
            let ids: Vec<String> = steps.iter().map(|s| s.id.clone()).collect();
            for step in &mut steps {
                for dep in &mut step.depends_on {
                    let index: usize = dep[1..dep.len() - 1].parse().unwrap();
                    *dep = ids[index].clone();
                }
            }
            let mut plan = Plan::new(goal);
            plan.reasoning = reasoning;
            plan.approved = approved;
            plan.steps = steps;
            plan
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn yaml_round_trip_is_exact(plan in plan()) {
        let yaml = plan.to_yaml().unwrap();
        let back = Plan::from_yaml(&yaml);
        prop_assert_eq!(back.as_ref(), Ok(&plan), "YAML was:\n{}", yaml);
        // Generated text may hold `{{steps.a.result}}`, which no step of these plans produces.
        let problems = back.unwrap().validate().err().map(|e| e.problems().to_vec()).unwrap_or_default();
        prop_assert!(
            problems.iter().all(|p| match p {
                PlanProblem::BadReference { .. } => true,
                // A plan with no steps is a problem of its own (issue 14).
                PlanProblem::NoSteps => plan.steps.is_empty(),
                _ => false,
            }),
            "{:?}", problems
        );
    }

    #[test]
    fn json_round_trip_is_exact(plan in plan()) {
        let text = plan.to_json().unwrap();
        let back = Plan::from_json(&text);
        prop_assert_eq!(back.as_ref(), Ok(&plan), "JSON was:\n{}", text);
    }

    #[test]
    fn yaml_and_json_agree(plan in plan()) {
        let via_yaml = Plan::from_yaml(&plan.to_yaml().unwrap()).unwrap();
        let via_json = Plan::from_json(&via_yaml.to_json().unwrap()).unwrap();
        prop_assert_eq!(via_json, plan);
    }
}

/// Reference check: depth-first search with colours.
fn has_cycle(deps: &[Vec<usize>]) -> bool {
    fn visit(i: usize, deps: &[Vec<usize>], colour: &mut [u8]) -> bool {
        colour[i] = 1;
        for &d in &deps[i] {
            if colour[d] == 1 || (colour[d] == 0 && visit(d, deps, colour)) {
                return true;
            }
        }
        colour[i] = 2;
        false
    }
    let mut colour = vec![0u8; deps.len()];
    (0..deps.len()).any(|i| colour[i] == 0 && visit(i, deps, &mut colour))
}

fn graph() -> impl Strategy<Value = (Vec<Vec<usize>>, Vec<usize>)> {
    (1usize..9).prop_flat_map(|n| {
        (
            prop::collection::vec(prop::collection::vec(0..n, 0..3), n),
            // Steps that also depend on an id no step has.
            prop::collection::vec(0..n, 0..2),
        )
    })
}

fn graph_plan(deps: &[Vec<usize>], unknown: &[usize]) -> Plan {
    let mut plan = Plan::new("graph");
    for (i, ds) in deps.iter().enumerate() {
        let mut ids: Vec<String> = ds.iter().map(|d| format!("n{d}")).collect();
        if unknown.contains(&i) {
            ids.push(format!("missing{i}"));
        }
        plan.steps
            .push(PlanStep::new(format!("n{i}"), "").depends_on(ids));
    }
    plan
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn a_cycle_is_reported_iff_the_graph_has_one((deps, unknown) in graph()) {
        let plan = graph_plan(&deps, &unknown);
        let problems = match plan.validate() {
            Ok(()) => Vec::new(),
            Err(PlanError::Invalid(problems)) => problems,
            Err(other) => panic!("{other}"),
        };
        let cycles: Vec<&Vec<String>> = problems
            .iter()
            .filter_map(|p| match p { PlanProblem::Cycle { steps } => Some(steps), _ => None })
            .collect();
        prop_assert_eq!(!cycles.is_empty(), has_cycle(&deps), "{:?}", problems);

        // Every reported cycle is real: each step depends on the next, the last on the first,
        // and no step appears in two reported cycles.
        let mut seen = std::collections::HashSet::new();
        for cycle in &cycles {
            prop_assert!(!cycle.is_empty());
            for (i, id) in cycle.iter().enumerate() {
                prop_assert!(seen.insert(id.clone()), "{} in two cycles: {:?}", id, cycles);
                let next = &cycle[(i + 1) % cycle.len()];
                prop_assert!(plan.get_step(id).unwrap().depends_on.contains(next));
            }
        }

        // Unknown dependencies are all reported, and nothing else is wrong with these plans.
        let unknown_reported = problems
            .iter()
            .filter(|p| matches!(p, PlanProblem::UnknownDependency { .. }))
            .count();
        prop_assert_eq!(unknown_reported, unknown.iter().collect::<std::collections::HashSet<_>>().len());
        prop_assert_eq!(problems.len(), cycles.len() + unknown_reported);
    }

    #[test]
    fn duplicates_are_reported_iff_ids_repeat(ids in prop::collection::vec("[a-c]", 0..6)) {
        let mut plan = Plan::new("dups");
        plan.steps = ids.iter().map(|id| PlanStep::new(id.clone(), "")).collect();
        let mut expected: Vec<&String> = ids
            .iter()
            .enumerate()
            .filter(|(i, id)| ids[..*i].contains(id))
            .map(|(_, id)| id)
            .collect();
        expected.sort();
        expected.dedup();
        let reported: Vec<String> = plan
            .validate()
            .err()
            .map(|e| e.problems().to_vec())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|p| match p {
                PlanProblem::DuplicateId { id } => Some(id),
                PlanProblem::NoSteps if ids.is_empty() => None,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        let mut reported_sorted = reported.clone();
        reported_sorted.sort();
        prop_assert_eq!(reported_sorted.iter().collect::<Vec<_>>(), expected);
    }
}
