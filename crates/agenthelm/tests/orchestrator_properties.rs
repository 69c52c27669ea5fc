//! Property test of the scheduler and rollback on random plans: dependencies are respected,
//! the concurrency limit holds, a failure skips what never started, and rollback undoes exactly
//! the completed steps in reverse order of completion.

use agenthelm::prelude::*;
use proptest::prelude::*;
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone)]
struct Case {
    /// deps[i]: the earlier steps step i depends on.
    deps: Vec<Vec<usize>>,
    /// The order the steps are written in the plan.
    order: Vec<usize>,
    /// How often each step yields to the scheduler before finishing.
    yields: Vec<u8>,
    failing: Option<usize>,
    limit: Option<usize>,
}

fn case() -> impl Strategy<Value = Case> {
    (1usize..12).prop_flat_map(|n| {
        let deps = (0..n)
            .map(|i| {
                prop::collection::vec(0..i.max(1), 0..3)
                    .prop_map(move |d| if i == 0 { vec![] } else { d })
            })
            .collect::<Vec<_>>();
        (
            deps,
            Just((0..n).collect::<Vec<_>>()).prop_shuffle(),
            prop::collection::vec(0u8..4, n),
            prop::option::of(0..n),
            prop::option::of(1usize..4),
        )
            .prop_map(|(deps, order, yields, failing, limit)| Case {
                deps,
                order,
                yields,
                failing,
                limit,
            })
    })
}

#[derive(Default)]
struct Record {
    log: Mutex<Vec<String>>,
    in_flight: AtomicUsize,
    peak: AtomicUsize,
}

fn tools(record: &Arc<Record>) -> ToolSet {
    let r = Arc::clone(record);
    let work = FnTool::new(
        "work",
        "does a step",
        json!({"type": "object"}),
        move |args, _| {
            let r = Arc::clone(&r);
            async move {
                let id = args["id"].as_str().unwrap().to_owned();
                let now = r.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                r.peak.fetch_max(now, Ordering::SeqCst);
                r.log.lock().unwrap().push(format!("start {id}"));
                for _ in 0..args["yields"].as_u64().unwrap() {
                    tokio::task::yield_now().await;
                }
                r.log.lock().unwrap().push(format!("end {id}"));
                r.in_flight.fetch_sub(1, Ordering::SeqCst);
                if args["fail"].as_bool().unwrap() {
                    Err(ToolError::new(format!("{id} failed")))
                } else {
                    Ok(json!(id))
                }
            }
        },
    )
    .unwrap()
    .compensating_tool("undo");
    let r = Arc::clone(record);
    let undo = FnTool::new(
        "undo",
        "undoes a step",
        json!({"type": "object"}),
        move |args, _| {
            r.log
                .lock()
                .unwrap()
                .push(format!("undo {}", args["id"].as_str().unwrap()));
            async { Ok(json!(null)) }
        },
    )
    .unwrap();
    ToolSet::new().with(work).with(undo)
}

fn id(i: usize) -> String {
    format!("s{i}")
}

fn run_case(case: &Case) -> Result<(), TestCaseError> {
    let record = Arc::new(Record::default());
    let mut orchestrator = Orchestrator::new(AgentRegistry::new()).tools(tools(&record));
    if let Some(limit) = case.limit {
        orchestrator = orchestrator.max_concurrency(limit);
    }
    let mut plan = Plan::new("random");
    plan.approved = true;
    for &i in &case.order {
        plan.steps.push(
            PlanStep::new(id(i), "")
                .tool("work")
                .args(
                    json!({"id": id(i), "yields": case.yields[i], "fail": case.failing == Some(i)}),
                )
                .depends_on(case.deps[i].iter().map(|&d| id(d))),
        );
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let result = runtime.block_on(orchestrator.execute(&mut plan)).unwrap();
    let log = record.log.lock().unwrap().clone();
    let position = |entry: &str| log.iter().position(|e| e == entry);

    // Dependencies finished before a step started; nothing ran twice.
    for (i, deps) in case.deps.iter().enumerate() {
        if let Some(start) = position(&format!("start {}", id(i))) {
            prop_assert_eq!(
                log.iter()
                    .filter(|e| **e == format!("start {}", id(i)))
                    .count(),
                1
            );
            for &d in deps {
                let end = position(&format!("end {}", id(d)));
                prop_assert!(
                    end.is_some_and(|end| end < start),
                    "{} started before {} ended: {:?}",
                    id(i),
                    id(d),
                    log
                );
            }
        }
    }
    if let Some(limit) = case.limit {
        prop_assert!(record.peak.load(Ordering::SeqCst) <= limit);
    }
    prop_assert!(plan.is_complete());

    let completed_order: Vec<String> = result
        .events
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::StepFinished {
                status: StepStatus::Completed,
                ..
            } => e.step_id.as_deref().map(str::to_owned),
            _ => None,
        })
        .collect();
    match case.failing {
        None => {
            prop_assert!(result.success);
            prop_assert!(plan.success());
            prop_assert_eq!(completed_order.len(), case.deps.len());
            prop_assert!(!log.iter().any(|e| e.starts_with("undo")));
        }
        Some(f) => {
            prop_assert!(!result.success);
            prop_assert_eq!(plan.get_step(&id(f)).unwrap().status, StepStatus::Failed);
            // Steps that never started are skipped, and the failed step's dependents never start.
            let statuses: HashMap<String, StepStatus> = plan
                .steps
                .iter()
                .map(|s| (s.id.clone(), s.status))
                .collect();
            for (i, _) in case.deps.iter().enumerate() {
                let started = position(&format!("start {}", id(i))).is_some();
                prop_assert_eq!(
                    started,
                    statuses[&id(i)] != StepStatus::Skipped,
                    "{}",
                    id(i)
                );
                if case.deps[i].contains(&f) {
                    prop_assert!(!started);
                }
            }
            // Rollback undid every completed step once, newest first.
            let undone: Vec<String> = log
                .iter()
                .filter_map(|e| e.strip_prefix("undo ").map(str::to_owned))
                .collect();
            let mut expected = completed_order.clone();
            expected.reverse();
            prop_assert_eq!(&undone, &expected);
            let compensated: HashSet<&String> = statuses
                .iter()
                .filter(|(_, s)| **s == StepStatus::Compensated)
                .map(|(id, _)| id)
                .collect();
            prop_assert_eq!(compensated, completed_order.iter().collect::<HashSet<_>>());
            prop_assert_eq!(result.rollback.unwrap().compensated, expected);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn random_plans_run_in_dependency_order_and_roll_back_in_reverse(case in case()) {
        run_case(&case)?;
    }
}
