//! The cluster under load (DESIGN.md §10): a private PostgreSQL (`fsync=on`) and NATS
//! (`sync_interval: always`), an in-process `Coordinator` and in-process `Worker`s of pool
//! `default` (each worker on a runtime and a `PostgresStore` of its own, as a separate process
//! would have), plans of direct tool steps (no model).
//!
//! Measures, against the same PostgreSQL journal with and without the cluster:
//! 1. `chain`: a chain of no-op steps, run by one worker: the per-step latency (each step's
//!    `StepStarted`→`StepFinished` wall time, from `RunResult.steps`), p50/p99, and the wall
//!    time per step; remote vs local (the same orchestrator without `.remote`).
//! 2. `wide`: a plan of independent no-op steps with 1 and 2 workers, for each given
//!    `max_concurrency`: steps per second.
//! 3. `makespan`: 20 parallel steps that sleep 50 ms: the run's wall time.
//!
//! Every run has a database of its own; after it, the database's committed transactions per
//! step (`pg_stat_database.xact_commit`, read with `psql` once every connection is closed).
//! Prints JSON, with whether each target is met (p50 ≤ 10 ms per step, ≥ 200 steps/s with 2
//! workers, makespan ≤ 150 ms).
//!
//! ```text
//! AGENTHELM_NATS_SERVER=/path/to/nats-server \
//! cargo run --release -p agenthelm-bench --bin cluster_bench -- \
//!     [--chain STEPS] [--wide STEPS] [--concurrency 32,64,...] [--worker-concurrency N] \
//!     [--only chain,wide,makespan]
//! ```

use agenthelm::prelude::*;
use agenthelm::store::PostgresStore;
use agenthelm::tool::FnTool;
use agenthelm_cluster::{ClusterSettings, Coordinator, Worker, WorkerOptions, DEFAULT_POOL};
use agenthelm_test_support::{NatsServer, PgServer};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

const TARGET_P50_MS: f64 = 10.0;
const TARGET_STEPS_PER_S: f64 = 200.0;
const TARGET_MAKESPAN_MS: f64 = 150.0;
const MAKESPAN_STEPS: usize = 20;
const SLEEP_MS: u64 = 50;

/// What to run, from the command line.
struct Options {
    chain: usize,
    wide: usize,
    concurrency: Vec<usize>,
    worker_concurrency: usize,
    only: Vec<String>,
}

impl Options {
    fn parse() -> Result<Options, String> {
        let mut options = Options {
            chain: 1000,
            wide: 10_000,
            concurrency: vec![64],
            worker_concurrency: 32,
            only: vec!["chain".into(), "wide".into(), "makespan".into()],
        };
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            let value = args.next().ok_or(format!("{flag} needs a value"))?;
            let number = |v: &str| v.parse::<usize>().map_err(|e| format!("{flag} {v}: {e}"));
            match flag.as_str() {
                "--chain" => options.chain = number(&value)?,
                "--wide" => options.wide = number(&value)?,
                "--worker-concurrency" => options.worker_concurrency = number(&value)?,
                "--concurrency" => {
                    options.concurrency = value.split(',').map(number).collect::<Result<_, _>>()?
                }
                "--only" => options.only = value.split(',').map(str::to_owned).collect(),
                other => return Err(format!("unknown option {other}")),
            }
        }
        Ok(options)
    }

    fn runs(&self, part: &str) -> bool {
        self.only.iter().any(|p| p == part)
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at.min(sorted.len() - 1)]
}

fn tools() -> Result<ToolSet, String> {
    let noop = FnTool::new(
        "noop",
        "Does nothing",
        json!({"type": "object"}),
        |_, _| async { Ok(json!(null)) },
    )
    .map_err(|e| e.to_string())?;
    let sleep = FnTool::new(
        "sleep",
        "Sleeps 50 ms",
        json!({"type": "object"}),
        |_, _| async {
            tokio::time::sleep(Duration::from_millis(SLEEP_MS)).await;
            Ok(json!(null))
        },
    )
    .map_err(|e| e.to_string())?;
    Ok(ToolSet::new().with(noop).with(sleep))
}

fn orchestrator(max_concurrency: usize) -> Result<Orchestrator, String> {
    Ok(Orchestrator::new(AgentRegistry::new())
        .tools(tools()?)
        .max_concurrency(max_concurrency))
}

/// `steps` direct calls of `tool`, each after the one before when `chained`.
fn plan(steps: usize, tool: &str, chained: bool) -> Plan {
    let mut plan = Plan::new("bench");
    plan.approved = true;
    for i in 0..steps {
        let mut step = PlanStep::new(format!("s{i}"), "bench step").tool(tool);
        if chained && i > 0 {
            step = step.depends_on([format!("s{}", i - 1)]);
        }
        plan.steps.push(step);
    }
    plan
}

/// The servers every run uses, and a way to count a database's transactions.
struct Servers {
    pg: PgServer,
    nats: NatsServer,
    psql: Option<PathBuf>,
}

impl Servers {
    fn start() -> Result<Servers, String> {
        let pg = PgServer::start()?;
        let nats = NatsServer::start()?;
        let psql = std::fs::read_dir("/usr/lib/postgresql").ok().and_then(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path().join("bin/psql")))
                .find(|p| p.is_file())
        });
        Ok(Servers { pg, nats, psql })
    }

    /// A fresh database: its URL and name.
    fn database(&self) -> (String, String) {
        let url = self.pg.database();
        let name = url.rsplit('/').next().unwrap_or_default().to_owned();
        (url, name)
    }

    fn psql(&self, name: &str, sql: &str) -> Option<String> {
        let output = Command::new(self.psql.as_ref()?)
            .args(["-h", "127.0.0.1", "-p", &self.pg.port().to_string()])
            .args(["-U", "agenthelm", "-d", name, "-At", "-c", sql])
            .output()
            .ok()?;
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }

    /// Transactions committed in database `name`, once every other connection to it has
    /// closed (a backend reports its counts when it ends).
    fn commits(&self, name: &str) -> Option<i64> {
        let others = format!(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()"
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.psql(name, &others)? != "0" && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(300));
        self.psql(
            name,
            &format!("SELECT xact_commit FROM pg_stat_database WHERE datname = '{name}'"),
        )?
        .parse()
        .ok()
    }

    fn settings(&self) -> ClusterSettings {
        ClusterSettings::new(self.nats.url())
    }
}

/// Workers of pool `default`, each on a thread and runtime of its own with its own store.
struct Workers {
    stop: watch::Sender<bool>,
    threads: Vec<std::thread::JoinHandle<Result<(), String>>>,
}

impl Workers {
    fn start(
        url: &str,
        settings: &ClusterSettings,
        count: usize,
        concurrency: usize,
    ) -> Result<Workers, String> {
        let (stop, stopped) = watch::channel(false);
        let (ready, connected) = std::sync::mpsc::channel();
        let mut threads = Vec::new();
        for _ in 0..count {
            let (url, settings) = (url.to_owned(), settings.clone());
            let (stopped, ready) = (stopped.clone(), ready.clone());
            threads.push(std::thread::spawn(move || -> Result<(), String> {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?;
                runtime.block_on(async move {
                    let store = Arc::new(PostgresStore::open(&url).map_err(|e| e.to_string())?);
                    let worker = Worker::connect(store, settings, orchestrator(1)?)
                        .await
                        .map_err(|e| e.to_string())?;
                    let _ = ready.send(());
                    let options = WorkerOptions {
                        pools: vec![DEFAULT_POOL.to_owned()],
                        concurrency,
                    };
                    worker
                        .run(&options, stopped)
                        .await
                        .map_err(|e| e.to_string())
                })
            }));
        }
        let workers = Workers { stop, threads };
        for _ in 0..count {
            connected
                .recv_timeout(Duration::from_secs(30))
                .map_err(|_| "a worker did not connect".to_owned())?;
        }
        // Its pool's consumer is made as it starts running.
        std::thread::sleep(Duration::from_millis(300));
        Ok(workers)
    }

    fn stop(self) -> Result<(), String> {
        let _ = self.stop.send(true);
        for thread in self.threads {
            thread
                .join()
                .map_err(|_| "a worker thread panicked".to_owned())??;
        }
        Ok(())
    }
}

/// How one run went.
struct Measured {
    wall_s: f64,
    steps: usize,
    durations: Vec<f64>,
    commits: Option<i64>,
}

impl Measured {
    fn from(result: &RunResult, wall: Duration) -> Result<Measured, String> {
        if !result.success {
            return Err(format!("the run failed: {:?}", result.error));
        }
        let mut durations: Vec<f64> = result.steps.iter().map(|s| s.duration_ms).collect();
        durations.sort_by(f64::total_cmp);
        Ok(Measured {
            wall_s: wall.as_secs_f64(),
            steps: result.steps.len(),
            durations,
            commits: None,
        })
    }

    fn p50(&self) -> f64 {
        percentile(&self.durations, 0.5)
    }

    fn steps_per_s(&self) -> f64 {
        self.steps as f64 / self.wall_s
    }

    fn json(&self) -> Value {
        json!({
            "steps": self.steps,
            "wall_s": self.wall_s,
            "wall_ms_per_step": self.wall_s * 1e3 / self.steps as f64,
            "steps_per_s": self.steps_per_s(),
            "step_ms": {
                "p50": self.p50(),
                "p99": percentile(&self.durations, 0.99),
                "max": self.durations.last(),
            },
            "pg_commits_per_step": self.commits.map(|c| c as f64 / self.steps as f64),
        })
    }
}

/// Runs `plan` here, journaling to a fresh database.
async fn local(
    servers: &Servers,
    mut plan: Plan,
    max_concurrency: usize,
) -> Result<Measured, String> {
    let (url, name) = servers.database();
    let store = PostgresStore::open(&url).map_err(|e| e.to_string())?;
    let orchestrator = orchestrator(max_concurrency)?.store(store);
    let started = Instant::now();
    let result = orchestrator
        .execute(&mut plan)
        .await
        .map_err(|e| e.to_string())?;
    let mut measured = Measured::from(&result, started.elapsed())?;
    drop(orchestrator);
    measured.commits = servers.commits(&name);
    Ok(measured)
}

/// Runs `plan` on the cluster with `workers` workers, on a fresh database; with `warm_up`, a
/// run of the same plan first (not measured, not counted apart).
async fn remote(
    servers: &Servers,
    plan: &Plan,
    max_concurrency: usize,
    workers: usize,
    worker_concurrency: usize,
    warm_up: bool,
) -> Result<Measured, String> {
    let (url, name) = servers.database();
    let settings = servers.settings();
    let pool = Workers::start(&url, &settings, workers, worker_concurrency)?;
    let store = Arc::new(PostgresStore::open(&url).map_err(|e| e.to_string())?);
    let coordinator = Coordinator::connect(Arc::clone(&store), settings)
        .await
        .map_err(|e| e.to_string())?;
    let orchestrator = orchestrator(max_concurrency)?
        .store_shared(store)
        .remote_runs(Arc::new(coordinator));
    if warm_up {
        let mut first = plan.clone();
        orchestrator
            .execute(&mut first)
            .await
            .map_err(|e| e.to_string())?;
    }
    let mut plan = plan.clone();
    let started = Instant::now();
    let result = orchestrator
        .execute(&mut plan)
        .await
        .map_err(|e| e.to_string())?;
    let mut measured = Measured::from(&result, started.elapsed())?;
    drop(orchestrator);
    pool.stop()?;
    if !warm_up {
        measured.commits = servers.commits(&name);
    }
    Ok(measured)
}

async fn chain(servers: &Servers, options: &Options) -> Result<Value, String> {
    let plan = plan(options.chain, "noop", true);
    let local = local(servers, plan.clone(), 1).await?;
    eprintln!("chain local: {}", local.json());
    let remote = remote(servers, &plan, 1, 1, options.worker_concurrency, false).await?;
    eprintln!("chain remote: {}", remote.json());
    Ok(json!({
        "steps": options.chain,
        "local": local.json(),
        "remote_1_worker": remote.json(),
        "remote_overhead_ms_per_step": {
            "p50": remote.p50() - local.p50(),
            "wall": (remote.wall_s - local.wall_s) * 1e3 / options.chain as f64,
        },
        "target_p50_ms": TARGET_P50_MS,
        "target_met": remote.p50() <= TARGET_P50_MS,
    }))
}

async fn wide(servers: &Servers, options: &Options) -> Result<Value, String> {
    let plan = plan(options.wide, "noop", false);
    let mut runs = Vec::new();
    let mut best_two = 0.0f64;
    for &limit in &options.concurrency {
        let measured = local(servers, plan.clone(), limit).await?;
        eprintln!("wide local c={limit}: {}", measured.json());
        runs.push(json!({"workers": 0, "max_concurrency": limit, "run": measured.json()}));
        for workers in [1, 2] {
            let measured = remote(
                servers,
                &plan,
                limit,
                workers,
                options.worker_concurrency,
                false,
            )
            .await?;
            eprintln!(
                "wide remote c={limit} workers={workers}: {}",
                measured.json()
            );
            if workers == 2 {
                best_two = best_two.max(measured.steps_per_s());
            }
            runs.push(json!({
                "workers": workers,
                "worker_concurrency": options.worker_concurrency,
                "max_concurrency": limit,
                "run": measured.json(),
            }));
        }
    }
    Ok(json!({
        "steps": options.wide,
        "runs": runs,
        "note": "workers 0 = local run (no cluster)",
        "best_steps_per_s_2_workers": best_two,
        "target_steps_per_s": TARGET_STEPS_PER_S,
        "target_met": best_two >= TARGET_STEPS_PER_S,
    }))
}

async fn makespan(servers: &Servers, options: &Options) -> Result<Value, String> {
    let plan = plan(MAKESPAN_STEPS, "sleep", false);
    let local = local(servers, plan.clone(), MAKESPAN_STEPS).await?;
    let mut remote_ms = Vec::new();
    for workers in [1, 2] {
        let measured = remote(
            servers,
            &plan,
            MAKESPAN_STEPS,
            workers,
            options.worker_concurrency,
            true,
        )
        .await?;
        eprintln!("makespan workers={workers}: {}", measured.json());
        remote_ms.push(json!({"workers": workers, "makespan_ms": measured.wall_s * 1e3}));
    }
    let worst = remote_ms
        .iter()
        .filter_map(|r| r["makespan_ms"].as_f64())
        .fold(0.0f64, f64::max);
    Ok(json!({
        "steps": MAKESPAN_STEPS,
        "step_ms": SLEEP_MS,
        "local_makespan_ms": local.wall_s * 1e3,
        "remote": remote_ms,
        "target_ms": TARGET_MAKESPAN_MS,
        "target_met": worst <= TARGET_MAKESPAN_MS,
    }))
}

async fn bench(options: Options) -> Result<Value, String> {
    let servers = Servers::start()?;
    let mut report = json!({
        "postgres": "private server, fsync=on, synchronous_commit on",
        "nats": "private server, JetStream sync_interval: always",
        "worker_concurrency": options.worker_concurrency,
    });
    if options.runs("chain") {
        report["chain"] = chain(&servers, &options).await?;
    }
    if options.runs("wide") {
        report["wide"] = wide(&servers, &options).await?;
    }
    if options.runs("makespan") {
        report["makespan"] = makespan(&servers, &options).await?;
    }
    Ok(report)
}

fn main() -> ExitCode {
    let options = match Options::parse() {
        Ok(options) => options,
        Err(e) => {
            eprintln!("cluster_bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cluster_bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(bench(options)) {
        Ok(report) => {
            println!("{report:#}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cluster_bench: {e}");
            ExitCode::FAILURE
        }
    }
}
