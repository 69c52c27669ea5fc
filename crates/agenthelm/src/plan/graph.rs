//! The dependency graph of a plan, by step position, in compact adjacency lists.

use std::collections::HashMap;

use super::Plan;

/// For each step, the positions of the steps it depends on and of the steps that depend on it.
/// Unknown ids are left out (validation reports them).
#[derive(Debug, Clone, Default)]
pub(crate) struct Graph {
    deps: Adjacency,
    dependents: Adjacency,
}

impl Graph {
    /// Builds the graph; `index` maps each id to its (last) position.
    pub(crate) fn build(plan: &Plan, index: &HashMap<&str, usize>) -> Graph {
        let n = plan.steps.len();
        let mut deps = Adjacency::with_capacity(n);
        let mut incoming = vec![0u32; n];
        for step in &plan.steps {
            deps.push_row(
                step.depends_on
                    .iter()
                    .filter_map(|d| index.get(d.as_str()).copied()),
            );
        }
        for i in 0..n {
            for &d in deps.row(i) {
                incoming[d] += 1;
            }
        }
        // Fill the reverse lists in one pass using prefix sums of the counts.
        let mut offsets = Vec::with_capacity(n + 1);
        let mut total = 0usize;
        offsets.push(0);
        for &count in &incoming {
            total += count as usize;
            offsets.push(total);
        }
        let mut cursor = offsets.clone();
        let mut targets = vec![0usize; total];
        for i in 0..n {
            for &d in deps.row(i) {
                targets[cursor[d]] = i;
                cursor[d] += 1;
            }
        }
        Graph {
            deps,
            dependents: Adjacency { offsets, targets },
        }
    }

    /// How many steps.
    pub(crate) fn len(&self) -> usize {
        self.deps.offsets.len().saturating_sub(1)
    }

    /// The positions of the steps that step `i` depends on.
    pub(crate) fn deps(&self, i: usize) -> &[usize] {
        self.deps.row(i)
    }

    /// The positions of the steps that depend on step `i`.
    pub(crate) fn dependents(&self, i: usize) -> &[usize] {
        self.dependents.row(i)
    }

    /// Whether `ancestor` must finish before `step` can start.
    pub(crate) fn is_ancestor(&self, step: usize, ancestor: usize) -> bool {
        let mut seen = vec![false; self.len()];
        let mut stack = vec![step];
        while let Some(at) = stack.pop() {
            for &d in self.deps(at) {
                if d == ancestor {
                    return true;
                }
                if !std::mem::replace(&mut seen[d], true) {
                    stack.push(d);
                }
            }
        }
        false
    }
}

/// Rows of positions stored back to back: row `i` is `targets[offsets[i]..offsets[i + 1]]`.
#[derive(Debug, Clone)]
struct Adjacency {
    offsets: Vec<usize>,
    targets: Vec<usize>,
}

impl Default for Adjacency {
    fn default() -> Self {
        Adjacency::with_capacity(0)
    }
}

impl Adjacency {
    fn with_capacity(rows: usize) -> Self {
        let mut offsets = Vec::with_capacity(rows + 1);
        offsets.push(0);
        Adjacency {
            offsets,
            targets: Vec::with_capacity(rows),
        }
    }

    fn push_row(&mut self, row: impl Iterator<Item = usize>) {
        self.targets.extend(row);
        self.offsets.push(self.targets.len());
    }

    fn row(&self, i: usize) -> &[usize] {
        &self.targets[self.offsets[i]..self.offsets[i + 1]]
    }
}
