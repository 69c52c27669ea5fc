//! Structural checks of a plan: ids, dependencies, cycles, argument shapes.

use std::collections::{HashMap, HashSet};

use super::{Plan, PlanProblem};

pub(super) fn structure(plan: &Plan) -> Vec<PlanProblem> {
    let mut problems = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::with_capacity(plan.steps.len());
    let mut reported: HashSet<&str> = HashSet::new();
    for (i, step) in plan.steps.iter().enumerate() {
        if step.id.trim().is_empty() {
            problems.push(PlanProblem::EmptyId { index: i });
        } else if index.insert(&step.id, i).is_some() && reported.insert(&step.id) {
            problems.push(PlanProblem::DuplicateId {
                id: step.id.clone(),
            });
        }
        if !step.args.is_object() {
            problems.push(PlanProblem::ArgsNotObject {
                step: step.id.clone(),
                field: "args",
            });
        }
        if step
            .compensate_args
            .as_ref()
            .is_some_and(|a| !a.is_object())
        {
            problems.push(PlanProblem::ArgsNotObject {
                step: step.id.clone(),
                field: "compensate_args",
            });
        }
    }
    for step in &plan.steps {
        for dependency in &step.depends_on {
            if !index.contains_key(dependency.as_str()) {
                problems.push(PlanProblem::UnknownDependency {
                    step: step.id.clone(),
                    dependency: dependency.clone(),
                });
            }
        }
    }
    problems.extend(cycles(plan, &index));
    problems
}

/// Finds dependency cycles: Kahn's algorithm removes every step not caught in a cycle, then each
/// cycle is traced among what remains and reported once.
fn cycles(plan: &Plan, index: &HashMap<&str, usize>) -> Vec<PlanProblem> {
    let n = plan.steps.len();
    let deps: Vec<Vec<usize>> = plan
        .steps
        .iter()
        .map(|s| {
            s.depends_on
                .iter()
                .filter_map(|d| index.get(d.as_str()).copied())
                .collect()
        })
        .collect();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut waiting: Vec<usize> = vec![0; n];
    for (i, ds) in deps.iter().enumerate() {
        waiting[i] = ds.len();
        for &d in ds {
            dependents[d].push(i);
        }
    }
    let mut queue: Vec<usize> = (0..n).filter(|&i| waiting[i] == 0).collect();
    let mut done = vec![false; n];
    while let Some(i) = queue.pop() {
        done[i] = true;
        for &j in &dependents[i] {
            waiting[j] -= 1;
            if waiting[j] == 0 {
                queue.push(j);
            }
        }
    }
    let mut problems = Vec::new();
    let mut in_reported_cycle = vec![false; n];
    for start in 0..n {
        if done[start] || in_reported_cycle[start] {
            continue;
        }
        // Walk dependencies among unfinished steps until a step repeats: that closes a cycle.
        let mut position: HashMap<usize, usize> = HashMap::new();
        let mut walk = Vec::new();
        let mut at = start;
        loop {
            if let Some(&p) = position.get(&at) {
                let cycle = &walk[p..];
                if !cycle.iter().any(|&i| in_reported_cycle[i]) {
                    for &i in cycle {
                        in_reported_cycle[i] = true;
                    }
                    problems.push(PlanProblem::Cycle {
                        steps: cycle
                            .iter()
                            .map(|&i: &usize| plan.steps[i].id.clone())
                            .collect(),
                    });
                }
                break;
            }
            position.insert(at, walk.len());
            walk.push(at);
            match deps[at].iter().find(|&&d| !done[d]) {
                Some(&next) => at = next,
                None => break,
            }
        }
    }
    problems
}
