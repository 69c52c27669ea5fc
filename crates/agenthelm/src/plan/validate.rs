//! Structural checks of a plan: ids, dependencies, cycles, argument shapes, result references.

use std::collections::{HashMap, HashSet};

use super::graph::Graph;
use super::references_in;
use super::{Plan, PlanProblem, Reference};

/// Every structural problem of `plan`, and its dependency graph.
pub(crate) fn analyze(plan: &Plan) -> (Vec<PlanProblem>, Graph) {
    let mut problems = Vec::new();
    if plan.steps.is_empty() {
        problems.push(PlanProblem::NoSteps);
    }
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
    let graph = Graph::build(plan, &index);
    problems.extend(cycles(plan, &graph));
    problems.extend(bad_references(plan, &graph, &index));
    (problems, graph)
}

/// Finds dependency cycles: Kahn's algorithm removes every step not caught in a cycle, then each
/// cycle is traced among what remains and reported once.
fn cycles(plan: &Plan, graph: &Graph) -> Vec<PlanProblem> {
    let n = plan.steps.len();
    let mut waiting: Vec<usize> = (0..n).map(|i| graph.deps(i).len()).collect();
    let mut queue: Vec<usize> = (0..n).filter(|&i| waiting[i] == 0).collect();
    let mut done = vec![false; n];
    while let Some(i) = queue.pop() {
        done[i] = true;
        for &j in graph.dependents(i) {
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
        // A step left over has a dependency left over, so walking them must close a circle.
        let mut position: HashMap<usize, usize> = HashMap::new();
        let mut walk: Vec<usize> = Vec::new();
        let mut at = start;
        loop {
            if let Some(&p) = position.get(&at) {
                let cycle = &walk[p..];
                if !cycle.iter().any(|&i| in_reported_cycle[i]) {
                    for &i in cycle {
                        in_reported_cycle[i] = true;
                    }
                    problems.push(PlanProblem::Cycle {
                        steps: cycle.iter().map(|&i| plan.steps[i].id.clone()).collect(),
                    });
                }
                break;
            }
            position.insert(at, walk.len());
            walk.push(at);
            match graph.deps(at).iter().find(|&&d| !done[d]) {
                Some(&next) => at = next,
                None => break,
            }
        }
    }
    problems
}

/// `{{steps.<id>.result}}` must name a step that finishes before this one starts: one it depends
/// on, directly or through others.
fn bad_references(plan: &Plan, graph: &Graph, index: &HashMap<&str, usize>) -> Vec<PlanProblem> {
    let mut problems = Vec::new();
    for (i, step) in plan.steps.iter().enumerate() {
        let mut referenced = references_in(&step.args);
        if let Some(args) = &step.compensate_args {
            referenced.extend(references_in(args));
        }
        for target in referenced.iter().filter_map(Reference::step_id) {
            let known = index.get(target).copied();
            let before = known.is_some_and(|t| graph.is_ancestor(i, t));
            if !before {
                problems.push(PlanProblem::BadReference {
                    step: step.id.clone(),
                    reference: target.to_owned(),
                });
            }
        }
    }
    problems
}
