//! The server under load: `RUNS` runs of `STEPS` no-op steps submitted at once through the
//! HTTP API of an in-process server (SQLite store, loopback), each watched through its event
//! stream while `GET /api/runs/{id}` is polled.
//!
//! Every run is submitted for review and its stream opened first; then all are approved at
//! once. Prints JSON: runs per second (the approvals to the last `run_finished`), p50/p99 latency of
//! `GET /api/runs/{id}`, and p50/p99/max of the delay from an event's journal time to its
//! delivery on the stream.
//!
//! ```text
//! cargo run --release -p agenthelm-bench --bin serve_bench -- [RUNS [STEPS [MAX_RUNS]]]
//! ```

use agenthelm::prelude::*;
use agenthelm::store::{RunStore, SqliteStore};
use agenthelm::tool::FnTool;
use agenthelm_server::{Server, Users};
use futures::StreamExt;
use serde_json::{json, Value};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const TOKEN: &str = "bench-token-0123456789abcdef";

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at.min(sorted.len() - 1)]
}

fn plan(steps: usize) -> String {
    let mut text = String::from("goal: bench\nsteps:\n");
    for i in 0..steps {
        text.push_str(&format!("  - {{id: s{i}, tool: noop, args: {{}}"));
        if i > 0 {
            text.push_str(&format!(", depends_on: [s{}]", i - 1));
        }
        text.push_str("}\n");
    }
    text
}

/// Opens run `id`'s stream and reads it to its end; returns each live event's delay (ms) from
/// its journal time to its arrival. `ready` is sent once the history (the submission) is in.
async fn watch(
    http: reqwest::Client,
    base: String,
    id: String,
    ready: tokio::sync::mpsc::Sender<()>,
) -> Result<Vec<f64>, String> {
    let response = http
        .get(format!("{base}/api/runs/{id}/events"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let mut stream = response.bytes_stream();
    let mut buffer = String::new();
    let mut delays = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        let received = now_ms();
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(at) = buffer.find("\n\n") {
            let block: String = buffer.drain(..at + 2).collect();
            let Some(data) = block.lines().find_map(|l| l.strip_prefix("data:")) else {
                continue;
            };
            let event: Value = serde_json::from_str(data.trim()).map_err(|e| e.to_string())?;
            match event["type"].as_str() {
                Some("plan_submitted") => {
                    let _ = ready.send(()).await;
                }
                // Recorded before the stream could see it live.
                Some("plan_reviewed") => {}
                _ => {
                    if let Some(at) = event["timestamp_ms"].as_f64() {
                        delays.push((received - at).max(0.0));
                    }
                }
            }
            if event["type"] == "run_finished" {
                return Ok(delays);
            }
        }
    }
    Err(format!("the stream of {id} ended before the run"))
}

async fn bench(runs: usize, steps: usize, max_runs: usize) -> Result<Value, String> {
    let scratch =
        std::env::temp_dir().join(format!("agenthelm-serve-bench-{}", std::process::id()));
    let store: Arc<dyn RunStore> =
        Arc::new(SqliteStore::open(scratch.join("runs.db")).map_err(|e| e.to_string())?);
    let noop = FnTool::new(
        "noop",
        "Does nothing",
        json!({"type": "object"}),
        |_, _| async { Ok(json!(null)) },
    )
    .map_err(|e| e.to_string())?;
    let orchestrator = Orchestrator::new(AgentRegistry::new()).tools(ToolSet::new().with(noop));
    let users = Users::from_pairs([("bench".to_owned(), TOKEN.to_owned())]);
    let server = Server::builder(orchestrator, store, users)
        .max_runs(max_runs)
        .build();
    // The server gets a runtime of its own: the clients below do not queue behind its runs
    // on the same worker threads.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let base = format!(
        "http://{}",
        listener.local_addr().map_err(|e| e.to_string())?
    );
    std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        runtime.block_on(async move {
            if let Ok(listener) = tokio::net::TcpListener::from_std(listener) {
                let _ = server.serve(listener, std::future::pending()).await;
            }
        });
    });
    let http = reqwest::Client::new();
    let plan = plan(steps);

    // Submitted for review first, so that every stream is open before its run starts.
    let mut ids = Vec::new();
    let submissions = futures::future::join_all((0..runs).map(|_| {
        http.post(format!("{base}/api/runs"))
            .bearer_auth(TOKEN)
            .json(&json!({"plan": plan, "approve": false}))
            .send()
    }))
    .await;
    for response in submissions {
        let body: Value = response
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        let id = body["run_id"]
            .as_str()
            .ok_or(format!("not submitted: {body}"))?;
        ids.push(id.to_owned());
    }
    let (ready, mut opened) = tokio::sync::mpsc::channel(runs);
    let watchers: Vec<_> = ids
        .iter()
        .map(|id| tokio::spawn(watch(http.clone(), base.clone(), id.clone(), ready.clone())))
        .collect();
    for _ in 0..runs {
        opened.recv().await.ok_or("a stream did not open")?;
    }
    let started = Instant::now();
    let approvals = futures::future::join_all(ids.iter().map(|id| {
        http.post(format!("{base}/api/runs/{id}/approve"))
            .bearer_auth(TOKEN)
            .send()
    }))
    .await;
    for approval in approvals {
        let status = approval.map_err(|e| e.to_string())?.status();
        if !status.is_success() {
            return Err(format!("approve answered {status}"));
        }
    }
    let watchers = futures::future::join_all(watchers);
    // Polls the run model while the runs go on.
    let poller = {
        let (http, base, ids) = (http.clone(), base.clone(), ids.clone());
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(120);
            'outer: while Instant::now() < deadline {
                for id in &ids {
                    let asked = Instant::now();
                    let Ok(response) = http
                        .get(format!("{base}/api/runs/{id}"))
                        .bearer_auth(TOKEN)
                        .send()
                        .await
                    else {
                        break 'outer;
                    };
                    let run: Value = response.json().await.unwrap_or(Value::Null);
                    latencies.push(asked.elapsed().as_secs_f64() * 1e3);
                    if latencies.len() >= 2000
                        || run["state"] == "succeeded" && latencies.len() >= 200
                    {
                        break 'outer;
                    }
                }
            }
            latencies
        })
    };
    let watched = watchers.await;
    let wall = started.elapsed().as_secs_f64();
    let mut delays = Vec::new();
    for result in watched {
        delays.extend(result.map_err(|e| e.to_string())??);
    }
    let mut latencies = poller.await.map_err(|e| e.to_string())?;
    let _ = std::fs::remove_dir_all(&scratch);
    delays.sort_by(f64::total_cmp);
    latencies.sort_by(f64::total_cmp);
    Ok(json!({
        "runs": runs,
        "steps_per_run": steps,
        "max_runs": max_runs,
        "wall_s": wall,
        "runs_per_s": runs as f64 / wall,
        "get_run_ms": {"p50": percentile(&latencies, 0.5), "p99": percentile(&latencies, 0.99), "samples": latencies.len()},
        "event_delivery_ms": {"p50": percentile(&delays, 0.5), "p99": percentile(&delays, 0.99), "max": delays.last(), "events": delays.len()},
    }))
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let runs = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let steps = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);
    let max_runs = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(agenthelm_server::DEFAULT_MAX_RUNS as usize);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("serve_bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(bench(runs, steps, max_runs)) {
        Ok(report) => {
            println!("{report:#}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("serve_bench: {e}");
            ExitCode::FAILURE
        }
    }
}
