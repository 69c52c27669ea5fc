//! What redaction costs per event: a typical redactor (a provider key, two `redact.env`
//! variables, a pattern and the three presets) over typical events (a tool call with arguments
//! and output of a few hundred bytes, a model call, a step's end), with nothing to hide and
//! with an e-mail address to hide, against no redactor at all.
//!
//! ```text
//! cargo run --release -p agenthelm --example redact_cost [EVENTS]
//! ```

use agenthelm::lm::TokenUsage;
use agenthelm::redact::{Preset, Redactor};
use agenthelm::trace::CallPurpose;
use agenthelm::{Event, EventKind, StepStatus};
use serde_json::json;
use std::hint::black_box;
use std::time::Instant;

fn events(to: &str) -> Vec<Event> {
    let tool_call = EventKind::ToolCall {
        call_id: "send#1".into(),
        tool: "send_mail".into(),
        args: json!({"to": to, "subject": "Quarterly report", "body": "Please find the figures for Q3 attached; revenue grew 4% over the quarter and churn fell.", "cc": ["finance-team", "ops-team"], "priority": 2}),
        output: Some(
            json!({"status": "queued", "id": "msg-20251201-000042", "queue": "outbound", "note": format!("queued for {to} at 10:42, delivery expected within five minutes")}),
        ),
        error: None,
        attempts: 1,
        duration_ms: 12.5,
        purpose: CallPurpose::Execute,
    };
    let llm_call = EventKind::LlmCall {
        model: "openai/gpt-4o-mini".into(),
        usage: TokenUsage::default(),
        cost_usd: Some(0.0002),
        latency_ms: 840.0,
        tool_calls: 1,
        error: None,
        exchange: None,
    };
    let step_finished = EventKind::StepFinished {
        status: StepStatus::Completed,
        result: Some(json!(format!(
            "Drafted the note for {to}; it is ready for review."
        ))),
        result_call: None,
        duration_ms: 900.0,
        error: None,
    };
    [tool_call, llm_call, step_finished]
        .into_iter()
        .map(|kind| {
            let mut event = Event::new(kind);
            event.run_id = Some("run-19a2b3c4d5e-1a2b3c4d".into());
            event.step_id = Some("send".into());
            event
        })
        .collect()
}

/// Nanoseconds per event for `redactor` over `events`, `rounds` times each.
fn ns_per_event(redactor: Option<&Redactor>, events: &[Event], rounds: usize) -> f64 {
    let started = Instant::now();
    for _ in 0..rounds {
        for event in events {
            match redactor {
                Some(redactor) => drop(black_box(event.redacted(redactor))),
                None => drop(black_box(event.clone())),
            }
        }
    }
    started.elapsed().as_nanos() as f64 / (rounds * events.len()) as f64
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rounds: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(30_000);
    let redactor = Redactor::new()
        .secret(
            "OPENAI_API_KEY",
            "sk-proj-0123456789abcdefghijklmnopqrstuvwxyz",
        )
        .env_value("CRM_TOKEN", Some("crm-token-5f1e2d3c4b5a".into()))
        .env_value("DB_PASSWORD", Some("correct-horse-battery".into()))
        .pattern("ticket", r"TCK-\d+")?
        .preset(Preset::Email)
        .preset(Preset::Card)
        .preset(Preset::Iban);
    let clean = events("finance-team");
    let dirty = events("ana.maria@example.com");
    // Warm up, then measure.
    ns_per_event(Some(&redactor), &dirty, rounds / 10 + 1);
    let baseline = ns_per_event(None, &clean, rounds);
    let nothing_to_hide = ns_per_event(Some(&redactor), &clean, rounds);
    let something_to_hide = ns_per_event(Some(&redactor), &dirty, rounds);
    println!(
        "{}",
        json!({
            "events": rounds * clean.len(),
            "clone_only_us": baseline / 1e3,
            "redact_nothing_found_us": nothing_to_hide / 1e3,
            "redact_email_found_us": something_to_hide / 1e3,
        })
    );
    Ok(())
}
