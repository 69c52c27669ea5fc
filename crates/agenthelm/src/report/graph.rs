//! The plan's dependency graph as inline SVG, laid out in layers from left to right.
//!
//! A step's layer is the length of the longest dependency chain leading to it, so every edge
//! points right. Within a layer, steps are ordered by the mean position of the steps they depend
//! on, which keeps most edges short and uncrossed. A layer taller than [`MAX_COLUMN`] nodes wraps
//! into several columns, so a wide plan grows sideways (the panel scrolls) instead of into a page
//! thousands of pixels tall.

use std::collections::HashMap;
use std::fmt::Write;

use super::escape::{escape, truncate};
use super::run_view::StepView;
use super::style::{status_colour, status_text_colour};

/// Plans with more steps than this are not drawn (the table still lists every step).
pub(crate) const MAX_GRAPH_STEPS: usize = 400;
/// Most nodes stacked in one column.
const MAX_COLUMN: usize = 24;
const NODE_W: f64 = 150.0;
const NODE_H: f64 = 34.0;
const GAP_X: f64 = 56.0;
const GAP_Y: f64 = 12.0;
const MARGIN: f64 = 10.0;

/// Where each step's node goes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Layout {
    /// Top-left corner of each step's node, in plan order.
    pub positions: Vec<(f64, f64)>,
    /// Layer of each step.
    pub layers: Vec<usize>,
    pub width: f64,
    pub height: f64,
}

/// The layer of each step: 0 for steps with no (known) dependency, else one more than the
/// deepest dependency. A cycle (a plan that never validated) is cut where it closes.
pub(crate) fn layers(steps: &[StepView<'_>]) -> Vec<usize> {
    let index: HashMap<&str, usize> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.step.id.as_str(), i))
        .collect();
    let deps: Vec<Vec<usize>> = steps
        .iter()
        .map(|s| {
            s.step
                .depends_on
                .iter()
                .filter_map(|d| index.get(d.as_str()).copied())
                .collect()
        })
        .collect();
    // Iterative depth-first search: plans of thousands of steps in a chain must not overflow
    // the stack.
    let mut layer: Vec<Option<usize>> = vec![None; steps.len()];
    let mut on_path = vec![false; steps.len()];
    for root in 0..steps.len() {
        let mut stack = vec![(root, 0usize)];
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if layer[node].is_some() {
                stack.pop();
                continue;
            }
            on_path[node] = true;
            if let Some(&dep) = deps[node].get(*next) {
                *next += 1;
                if layer[dep].is_none() && !on_path[dep] {
                    stack.push((dep, 0));
                }
                continue;
            }
            let depth = deps[node]
                .iter()
                .filter_map(|&d| layer[d])
                .map(|l| l + 1)
                .max()
                .unwrap_or(0);
            layer[node] = Some(depth);
            on_path[node] = false;
            stack.pop();
        }
    }
    layer.into_iter().map(|l| l.unwrap_or(0)).collect()
}

/// Positions of the nodes.
pub(crate) fn layout(steps: &[StepView<'_>]) -> Layout {
    let layers = layers(steps);
    let depth = layers.iter().copied().max().map_or(0, |m| m + 1);
    let mut by_layer: Vec<Vec<usize>> = vec![Vec::new(); depth];
    for (i, &l) in layers.iter().enumerate() {
        by_layer[l].push(i);
    }
    let index: HashMap<&str, usize> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.step.id.as_str(), i))
        .collect();
    let mut row = vec![0.0_f64; steps.len()];
    let mut positions = vec![(0.0, 0.0); steps.len()];
    let mut column = 0usize;
    let mut tallest = 0usize;
    for members in &mut by_layer {
        // Order by the mean row of the dependencies (barycentre), plan order breaking ties.
        let key = |i: usize| {
            let rows: Vec<f64> = steps[i]
                .step
                .depends_on
                .iter()
                .filter_map(|d| index.get(d.as_str()))
                .map(|&d| row[d])
                .collect();
            if rows.is_empty() {
                i as f64
            } else {
                rows.iter().sum::<f64>() / rows.len() as f64
            }
        };
        let mut keyed: Vec<(f64, usize)> = members.iter().map(|&i| (key(i), i)).collect();
        keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        *members = keyed.into_iter().map(|(_, i)| i).collect();
        for chunk in members.chunks(MAX_COLUMN) {
            tallest = tallest.max(chunk.len());
            for (r, &i) in chunk.iter().enumerate() {
                row[i] = r as f64;
                positions[i] = (
                    MARGIN + column as f64 * (NODE_W + GAP_X),
                    MARGIN + r as f64 * (NODE_H + GAP_Y),
                );
            }
            column += 1;
        }
    }
    // Centre short columns on the tallest one.
    let full = tallest as f64 * (NODE_H + GAP_Y) - GAP_Y;
    for members in &by_layer {
        for chunk in members.chunks(MAX_COLUMN) {
            let own = chunk.len() as f64 * (NODE_H + GAP_Y) - GAP_Y;
            for &i in chunk {
                positions[i].1 += (full - own) / 2.0;
            }
        }
    }
    Layout {
        positions,
        layers,
        width: 2.0 * MARGIN + column as f64 * (NODE_W + GAP_X) - GAP_X.min(column as f64 * GAP_X),
        height: 2.0 * MARGIN + full.max(0.0),
    }
}

/// The graph as an `<svg>` element.
pub(crate) fn render(steps: &[StepView<'_>], out: &mut String) {
    let layout = layout(steps);
    let index: HashMap<&str, usize> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.step.id.as_str(), i))
        .collect();
    let _ = write!(
        out,
        r##"<svg id="graph" xmlns="http://www.w3.org/2000/svg" width="{w:.0}" height="{h:.0}" viewBox="0 0 {w:.0} {h:.0}" role="img" aria-label="plan dependency graph"><defs><marker id="arrow" viewBox="0 0 8 8" refX="8" refY="4" markerWidth="7" markerHeight="7" orient="auto"><path d="M0,0 L8,4 L0,8 z" fill="#8d99a6"/></marker></defs>"##,
        w = layout.width,
        h = layout.height
    );
    out.push_str(r##"<g class="edges" fill="none" stroke="#8d99a6" stroke-width="1.3">"##);
    for (i, s) in steps.iter().enumerate() {
        let (x2, y2) = layout.positions[i];
        for dep in &s.step.depends_on {
            let Some(&d) = index.get(dep.as_str()) else {
                continue;
            };
            let (x1, y1) = layout.positions[d];
            let (sx, sy, ex, ey) = (x1 + NODE_W, y1 + NODE_H / 2.0, x2, y2 + NODE_H / 2.0);
            let bend = ((ex - sx) / 2.0).max(20.0);
            let _ = write!(
                out,
                r#"<path d="M{sx:.1},{sy:.1} C{:.1},{sy:.1} {:.1},{ey:.1} {ex:.1},{ey:.1}" marker-end="url(#arrow)"><title>{} → {}</title></path>"#,
                sx + bend,
                ex - bend,
                escape(dep),
                escape(&s.step.id),
            );
        }
    }
    out.push_str("</g>");
    for (i, s) in steps.iter().enumerate() {
        let (x, y) = layout.positions[i];
        let mut title = format!("{} · {}", s.step.id, s.status);
        if let Some(agent) = &s.agent {
            title.push_str(&format!("\nagent: {agent}"));
        }
        if let Some(tool) = &s.step.tool_name {
            title.push_str(&format!("\ntool: {tool}"));
        }
        if !s.step.description.is_empty() {
            title.push_str(&format!("\n{}", truncate(&s.step.description, 300)));
        }
        if let Some(error) = &s.error {
            title.push_str(&format!("\nerror: {}", truncate(error, 400)));
        }
        let _ = write!(
            out,
            r#"<g class="node" data-step="{id}" data-status="{status}"><title>{title}</title><rect x="{x:.1}" y="{y:.1}" width="{NODE_W}" height="{NODE_H}" rx="6" fill="{fill}" stroke="{stroke}" stroke-width="1"{dash}/><text x="{tx:.1}" y="{ty:.1}" text-anchor="middle" font-size="12" fill="{ink}" class="mono">{label}</text><text x="{tx:.1}" y="{sy:.1}" text-anchor="middle" font-size="9.5" fill="{ink}" opacity="0.85">{status}</text></g>"#,
            id = escape(&s.step.id),
            status = s.status,
            title = escape(&title),
            fill = status_colour(s.status),
            stroke = if s.status == crate::plan::StepStatus::Pending {
                "#8d99a6"
            } else {
                "rgba(0,0,0,0.15)"
            },
            dash = if s.status == crate::plan::StepStatus::Pending {
                r#" stroke-dasharray="4 3""#
            } else {
                ""
            },
            tx = x + NODE_W / 2.0,
            ty = y + 15.0,
            sy = y + 28.0,
            ink = status_text_colour(s.status),
            label = escape(&truncate(&s.step.id, 20)),
        );
    }
    out.push_str("</svg>");
}
