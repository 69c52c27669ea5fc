//! The timeline (Gantt chart): one row per step on a shared time axis. A step's bar spans its
//! run; its LLM and tool calls are thinner bars inside it, and its compensation a bar of its own
//! further right. Calls outside any step (a planner's, say) go on a first row, "run".
//!
//! Rows are ordered by start time. At most [`MAX_ROWS`] rows are drawn (the table lists every
//! step); rows get thinner past [`COMPACT_ABOVE`] steps.

use std::fmt::Write;

use super::escape::{escape, truncate};
use super::run_view::{Bar, BarKind, RunView};
use super::style::{
    status_colour, COMPENSATION_COLOUR, FAILED_CALL_COLOUR, LLM_COLOUR, TOOL_COLOUR,
};
use super::time_format::duration;

/// Most rows drawn.
pub(crate) const MAX_ROWS: usize = 300;
/// Above this many rows, rows are half as tall.
const COMPACT_ABOVE: usize = 60;
const LABEL_W: f64 = 170.0;
const PLOT_W: f64 = 980.0;
const AXIS_H: f64 = 26.0;
/// Bars shorter than this many pixels are widened to it, so instant calls stay visible.
const MIN_BAR_PX: f64 = 3.0;

/// Row order: `None` (the run's row) first when it has bars, then steps by start time; steps
/// that never started are left out.
fn rows(view: &RunView<'_>) -> Vec<Option<usize>> {
    let mut started: Vec<(f64, usize)> = view
        .steps
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.start_ms.map(|t| (t, i)))
        .collect();
    // Steps with calls or compensations but no start event (a resumed run's record) still get a
    // row.
    for bar in &view.bars {
        if let Some(i) = bar.step {
            if !started.iter().any(|&(_, j)| j == i) {
                started.push((bar.start_ms, i));
            }
        }
    }
    started.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let mut rows: Vec<Option<usize>> = Vec::new();
    if view.bars.iter().any(|b| b.step.is_none()) {
        rows.push(None);
    }
    rows.extend(started.into_iter().map(|(_, i)| Some(i)));
    rows
}

/// The timeline as an `<svg>` element, or a note when nothing ran.
pub(crate) fn render(view: &RunView<'_>, out: &mut String) {
    let all_rows = rows(view);
    if all_rows.is_empty() {
        out.push_str(r#"<p class="note" id="timeline-empty">Nothing ran: no step started.</p>"#);
        return;
    }
    let shown = &all_rows[..all_rows.len().min(MAX_ROWS)];
    let row_h = if shown.len() > COMPACT_ABOVE {
        12.0
    } else {
        24.0
    };
    let font = if shown.len() > COMPACT_ABOVE {
        9.0
    } else {
        12.0
    };
    let span = view.span_ms.max(1.0);
    let x_of = |ms: f64| LABEL_W + (ms / span).clamp(0.0, 1.0) * PLOT_W;
    let width = LABEL_W + PLOT_W + 20.0;
    let height = AXIS_H + shown.len() as f64 * row_h + 8.0;
    let _ = write!(
        out,
        r#"<svg id="timeline" xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" role="img" aria-label="timeline">"#
    );
    axis(out, span, &x_of, height);
    for (r, row) in shown.iter().enumerate() {
        let y = AXIS_H + r as f64 * row_h;
        if r % 2 == 1 {
            let _ = write!(
                out,
                r##"<rect x="0" y="{y:.1}" width="{width:.0}" height="{row_h}" fill="#f5f7fa"/>"##
            );
        }
        let label = match row {
            Some(i) => truncate(&view.steps[*i].step.id, 24),
            None => "run".to_owned(),
        };
        let _ = write!(
            out,
            r##"<text x="{:.1}" y="{:.1}" font-size="{font}" text-anchor="end" fill="#3e4c59" class="mono">{}</text>"##,
            LABEL_W - 8.0,
            y + row_h / 2.0 + font / 3.0,
            escape(&label)
        );
        let mut bars: Vec<&Bar> = view.bars.iter().filter(|b| b.step == *row).collect();
        // Step bars first, so call bars are drawn on top of them.
        bars.sort_by_key(|b| !matches!(b.kind, BarKind::Step(_)));
        for bar in bars {
            draw_bar(out, bar, y, row_h, &x_of);
        }
    }
    out.push_str("</svg>");
    if all_rows.len() > shown.len() {
        let _ = write!(
            out,
            r#"<p class="note" id="timeline-capped">Showing the first {} of {} rows by start time; the table below lists every step.</p>"#,
            shown.len(),
            all_rows.len()
        );
    }
}

fn draw_bar(out: &mut String, bar: &Bar, y: f64, row_h: f64, x_of: &impl Fn(f64) -> f64) {
    let (fill, top, h, class) = match &bar.kind {
        BarKind::Step(status) => (status_colour(*status), 0.12, 0.76, "step"),
        BarKind::Llm { ok } => (
            if *ok { LLM_COLOUR } else { FAILED_CALL_COLOUR },
            0.34,
            0.32,
            "llm",
        ),
        BarKind::Tool { ok } => (
            if *ok { TOOL_COLOUR } else { FAILED_CALL_COLOUR },
            0.34,
            0.32,
            "tool",
        ),
        BarKind::Compensation { ok } => (
            if *ok {
                COMPENSATION_COLOUR
            } else {
                FAILED_CALL_COLOUR
            },
            0.12,
            0.76,
            "compensation",
        ),
    };
    let x = x_of(bar.start_ms);
    let w = (x_of(bar.end_ms) - x).max(MIN_BAR_PX);
    // A step's bar is a light band edged in its status colour, so the solid call bars inside it
    // stand out; a compensation is dashed.
    let stroke = match bar.kind {
        BarKind::Step(_) => format!(r#" fill-opacity="0.28" stroke="{fill}" stroke-width="1.5""#),
        BarKind::Compensation { .. } => {
            r##" stroke="#4b2a8a" stroke-width="1" stroke-dasharray="3 2""##.to_owned()
        }
        _ => String::new(),
    };
    let _ = write!(
        out,
        r#"<rect class="bar {class}" x="{x:.1}" y="{:.1}" width="{w:.1}" height="{:.1}" rx="2" fill="{fill}"{stroke}><title>{}</title></rect>"#,
        y + row_h * top,
        row_h * h,
        escape(&bar.title)
    );
}

/// Tick marks at a round step (1, 2 or 5 times a power of ten ms) giving about 8 ticks.
fn axis(out: &mut String, span: f64, x_of: &impl Fn(f64) -> f64, height: f64) {
    let raw = span / 8.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude)
        .max(f64::MIN_POSITIVE);
    let mut t = 0.0;
    while t <= span + step * 1e-9 {
        let x = x_of(t);
        let _ = write!(
            out,
            r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{height:.1}" stroke="#e4e7eb"/><text x="{x:.1}" y="14" font-size="11" text-anchor="middle" fill="#616e7c">{}</text>"##,
            AXIS_H - 6.0,
            tick_label(t),
        );
        t += step;
    }
}

fn tick_label(ms: f64) -> String {
    if ms == 0.0 {
        "0".to_owned()
    } else {
        duration(ms).replace(".0 ms", " ms")
    }
}
