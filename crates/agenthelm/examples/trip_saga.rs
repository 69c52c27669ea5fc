//! A trip booking that fails at payment and is undone: the Saga pattern in one run.
//!
//! Flight, hotel and car are booked at the same time (they do not depend on each other); the
//! payment waits for all three and fails; the orchestrator then cancels the bookings with their
//! compensating tools (each cancellation takes 100-300 ms, like a real booking service): newest
//! first one at a time by default, or all at once with `parallel`, which the printed rollback
//! makespan shows. No model or network is needed: every step names its tool and arguments, so
//! the orchestrator calls the tools directly.
//!
//! Run it with `cargo run -p agenthelm --example trip_saga [sequential|parallel]`.

use agenthelm::prelude::*;
use serde_json::json;
use std::time::Duration;

/// Book a seat on a flight; returns the booking reference.
#[tool(compensating_tool = "cancel_flight", side_effects = ["booking"])]
async fn book_flight(flight: String) -> String {
    tokio::time::sleep(Duration::from_millis(300)).await;
    format!("FL-{flight}")
}

/// Cancel a flight booking.
#[tool]
async fn cancel_flight(flight: String) -> String {
    tokio::time::sleep(Duration::from_millis(300)).await;
    format!("cancelled flight {flight}")
}

/// Book a hotel room; returns the booking reference.
#[tool(compensating_tool = "cancel_hotel", side_effects = ["booking"])]
async fn book_hotel(hotel: String, nights: u32) -> String {
    tokio::time::sleep(Duration::from_millis(300)).await;
    format!("HT-{hotel}-{nights}")
}

/// Cancel a hotel booking.
#[tool]
async fn cancel_hotel(hotel: String, nights: u32) -> String {
    tokio::time::sleep(Duration::from_millis(200)).await;
    format!("cancelled {nights} nights at {hotel}")
}

/// Rent a car; returns the rental reference.
#[tool(compensating_tool = "cancel_car", side_effects = ["booking"])]
async fn rent_car(city: String) -> String {
    tokio::time::sleep(Duration::from_millis(300)).await;
    format!("CR-{city}")
}

/// Cancel a car rental.
#[tool]
async fn cancel_car(city: String) -> String {
    tokio::time::sleep(Duration::from_millis(100)).await;
    format!("cancelled car in {city}")
}

/// Charge the traveller's card.
#[tool(retries = 1)]
async fn charge_card(amount_eur: u32) -> Result<String, ToolError> {
    Err(ToolError::new(format!(
        "card declined for {amount_eur} EUR"
    )))
}

fn print_event(event: &Event) {
    let step = event.step_id.as_deref().unwrap_or("-");
    match &event.kind {
        EventKind::StepStarted { direct_tool } => {
            let how = direct_tool
                .as_deref()
                .map(|t| format!("calls `{t}`"))
                .unwrap_or_default();
            println!("  start   {step:<8} {how}");
        }
        EventKind::StepFinished {
            status,
            duration_ms,
            error,
            ..
        } => {
            let error = error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default();
            println!("  {status:<9} {step:<8} {duration_ms:>6.0} ms{error}");
        }
        EventKind::RollbackStarted { steps } => println!("  rollback of {}", steps.join(", ")),
        EventKind::CompensationFinished { tool, success, .. } => {
            println!(
                "  undo    {step:<8} `{tool}` {}",
                if *success { "ok" } else { "FAILED" }
            );
        }
        _ => {}
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The steps name their tools, so the agent's model is never asked.
    let lm = Lm::from_model(ScriptedLm::new(vec![]));
    let mut registry = AgentRegistry::new();
    registry.register(ToolAgent::new(
        "travel",
        lm.clone(),
        tools![
            book_flight,
            cancel_flight,
            book_hotel,
            cancel_hotel,
            rent_car,
            cancel_car
        ],
    ))?;
    registry.register(ToolAgent::new("billing", lm, tools![charge_card]))?;

    let mut plan = Plan::new("Book a trip to Lisbon");
    plan.steps = vec![
        PlanStep::new("flight", "Book the flight")
            .agent("travel")
            .tool("book_flight")
            .args(json!({"flight": "TP123"})),
        PlanStep::new("hotel", "Book the hotel")
            .agent("travel")
            .tool("book_hotel")
            .args(json!({"hotel": "Alfama", "nights": 3})),
        PlanStep::new("car", "Rent a car")
            .agent("travel")
            .tool("rent_car")
            .args(json!({"city": "Lisbon"})),
        PlanStep::new("pay", "Pay for everything")
            .agent("billing")
            .tool("charge_card")
            .args(json!({"amount_eur": 840}))
            .depends_on(["flight", "hotel", "car"]),
    ];
    println!("{}", plan.to_yaml()?);
    plan.approved = true;

    let mode = match std::env::args().nth(1).as_deref() {
        Some("parallel") => RollbackMode::Parallel,
        _ => RollbackMode::Sequential,
    };
    let orchestrator = Orchestrator::new(registry)
        .rollback_mode(mode)
        .retry_policy(RetryPolicy {
            initial: Duration::from_millis(50),
            ..RetryPolicy::default()
        })
        .on_event(print_event);
    let result = orchestrator.execute(&mut plan).await?;

    println!("\nsuccess: {}", result.success);
    if let Some(error) = &result.error {
        println!("error:   {error}");
    }
    for step in &plan.steps {
        println!("  {:<8} {}", step.id, step.status);
    }
    if let Some(ms) = rollback_makespan(&result.events) {
        println!("rollback makespan ({mode:?}): {ms} ms");
    }
    Ok(())
}

/// From the rollback's start to the end of its last compensation.
fn rollback_makespan(events: &[Event]) -> Option<u64> {
    let start = events
        .iter()
        .find(|e| matches!(e.kind, EventKind::RollbackStarted { .. }))?
        .timestamp_ms;
    let end = events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::CompensationFinished { .. }))
        .map(|e| e.timestamp_ms)
        .max()?;
    Some(end.saturating_sub(start))
}
