//! Validation of a typical tool argument object against its tool's schema: a few fields, a
//! nested object and arrays. Prints JSON with the microseconds one validation takes: with the
//! schema compiled once (`compiled_us`), through a tool's spec as calls and plan checks do it
//! (`spec_us`: the compiled schema from its cache), and compiling the schema for every value
//! (`compile_each_time_us`, what [`schema::validate`] does).
//!
//! ```text
//! cargo run --release -p agenthelm-bench --bin schema_bench -- [ITERATIONS]
//! ```

use agenthelm::tool::schema::{self, Schema};
use agenthelm::ToolSpec;
use serde_json::{json, Value};
use std::hint::black_box;
use std::process::ExitCode;
use std::time::Instant;

/// A schema like the ones `#[tool]` and MCP servers give: typed fields, bounds, an enum, a
/// nested object and arrays.
fn parameters() -> Value {
    json!({
        "type": "object",
        "properties": {
            "to": {"type": "string", "minLength": 3},
            "subject": {"type": "string", "maxLength": 200},
            "priority": {"enum": ["low", "normal", "high"]},
            "retries": {"type": "integer", "minimum": 0, "maximum": 10},
            "recipient": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "age": {"type": ["integer", "null"], "minimum": 0}
                },
                "required": ["name"],
                "additionalProperties": false
            },
            "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 16},
            "attachments": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"path": {"type": "string"}, "size": {"type": "integer"}},
                    "required": ["path"]
                }
            }
        },
        "required": ["to", "subject", "recipient"]
    })
}

fn arguments() -> Value {
    json!({
        "to": "ada@example.com",
        "subject": "Quarterly report",
        "priority": "high",
        "retries": 2,
        "recipient": {"name": "Ada", "age": 36},
        "tags": ["report", "q3", "finance"],
        "attachments": [{"path": "/tmp/r.pdf", "size": 1024}, {"path": "/tmp/s.csv"}]
    })
}

/// Microseconds per call of `check` over `iterations` calls (after a warm-up).
fn time(iterations: u32, mut check: impl FnMut() -> usize) -> f64 {
    for _ in 0..iterations / 10 {
        black_box(check());
    }
    let start = Instant::now();
    for _ in 0..iterations {
        black_box(check());
    }
    start.elapsed().as_secs_f64() * 1e6 / f64::from(iterations)
}

fn main() -> ExitCode {
    let iterations = match std::env::args().nth(1).map(|n| n.parse::<u32>()) {
        None => 100_000,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("usage: schema_bench [ITERATIONS > 0]");
            return ExitCode::FAILURE;
        }
    };
    let (parameters, args) = (parameters(), arguments());
    let problems = schema::validate(&parameters, &args);
    if !problems.is_empty() {
        eprintln!("the benchmark's arguments do not fit: {problems:?}");
        return ExitCode::FAILURE;
    }
    let compiled = match Schema::compile(&parameters) {
        Ok(compiled) => compiled,
        Err(problems) => {
            eprintln!("the benchmark's schema does not compile: {problems:?}");
            return ExitCode::FAILURE;
        }
    };
    let spec = ToolSpec::new("mail", "Send a mail", parameters.clone());
    let report = json!({
        "iterations": iterations,
        "compiled_us": time(iterations, || compiled.validate(&args).len()),
        "spec_us": time(iterations, || spec.argument_problems(&args).len()),
        "compile_each_time_us": time(iterations / 100 + 1, || schema::validate(&parameters, &args).len()),
    });
    println!("{report}");
    ExitCode::SUCCESS
}
