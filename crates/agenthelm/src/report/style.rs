//! Colours and the page's style sheet. Everything is inline: the page loads nothing.

use crate::plan::StepStatus;

/// Fill colour of a step in the graph and the timeline.
pub(crate) fn status_colour(status: StepStatus) -> &'static str {
    match status {
        StepStatus::Completed => "#2f9e5a",
        StepStatus::Failed => "#d64541",
        StepStatus::Skipped => "#a3a9b1",
        StepStatus::Compensated => "#8957d6",
        StepStatus::Pending => "#e4e7eb",
        StepStatus::Running => "#e5a11c",
    }
}

/// Text colour that reads on [`status_colour`].
pub(crate) fn status_text_colour(status: StepStatus) -> &'static str {
    match status {
        StepStatus::Pending | StepStatus::Skipped => "#1f2933",
        _ => "#ffffff",
    }
}

/// Colour of a call bar: LLM calls blue, tool calls teal, failures red whatever they were.
pub(crate) const LLM_COLOUR: &str = "#3a7bd5";
pub(crate) const TOOL_COLOUR: &str = "#137c86";
pub(crate) const FAILED_CALL_COLOUR: &str = "#b3261e";
pub(crate) const COMPENSATION_COLOUR: &str = "#8957d6";

pub(crate) const ALL_STATUSES: [StepStatus; 6] = [
    StepStatus::Completed,
    StepStatus::Failed,
    StepStatus::Skipped,
    StepStatus::Compensated,
    StepStatus::Running,
    StepStatus::Pending,
];

pub(crate) const CSS: &str = r#"
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  color: #1f2933; background: #f5f7fa; }
main { max-width: 1280px; margin: 0 auto; padding: 24px 28px 48px; }
header { background: #ffffff; border: 1px solid #dde2e8; border-radius: 8px; padding: 18px 22px; }
h1 { font-size: 21px; margin: 0 0 4px; overflow-wrap: anywhere; }
h2 { font-size: 16px; margin: 28px 0 10px; }
.sub { color: #616e7c; font-size: 12px; font-family: ui-monospace, SFMono-Regular, Menlo, monospace; }
dl.facts { display: grid; grid-template-columns: repeat(auto-fill, minmax(170px, 1fr)); gap: 10px 20px;
  margin: 14px 0 0; }
dl.facts div { min-width: 0; }
dt { color: #616e7c; font-size: 11px; text-transform: uppercase; letter-spacing: .04em; }
dd { margin: 0; font-weight: 600; overflow-wrap: anywhere; }
.badge { display: inline-block; padding: 1px 9px; border-radius: 10px; color: #fff; font-size: 12px;
  font-weight: 600; }
.panel { background: #ffffff; border: 1px solid #dde2e8; border-radius: 8px; padding: 12px;
  overflow: auto; }
.panel svg { display: block; }
.legend { display: flex; flex-wrap: wrap; gap: 6px 16px; margin: 0 0 8px; font-size: 12px; color: #3e4c59; }
.legend span::before { content: ""; display: inline-block; width: 11px; height: 11px; border-radius: 2px;
  margin-right: 5px; vertical-align: -1px; background: var(--c); }
.note { color: #616e7c; font-size: 12px; margin: 6px 0 0; }
table { border-collapse: collapse; width: 100%; background: #fff; font-size: 13px; }
th, td { text-align: left; padding: 5px 10px; border-bottom: 1px solid #e4e7eb; vertical-align: top; }
th { background: #f0f3f7; font-weight: 600; position: sticky; top: 0; }
td.id { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; overflow-wrap: anywhere; }
td.err { color: #b3261e; white-space: pre-wrap; overflow-wrap: anywhere; max-width: 520px; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.ok { color: #2f9e5a; font-weight: 600; }
.bad { color: #b3261e; font-weight: 600; }
svg text { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
svg .mono { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; }
"#;
