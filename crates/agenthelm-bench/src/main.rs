//! `agenthelm-bench`: runs a synthetic plan through the real `Orchestrator` and prints one JSON
//! line with the wall time, the scheduler's overhead per step, and peak memory.
//!
//! ```text
//! agenthelm-bench --shape chain|wide|layered --steps N [--step-ms MS] [--width W]
//!                 [--max-concurrency C] [--runtime multi|current]
//! ```
//!
//! - `chain`: each step depends on the one before (no parallelism possible).
//! - `wide`: no step depends on another (everything in parallel).
//! - `layered`: layers of `--width` steps; each step depends on two steps of the layer before.
//!
//! Agents sleep `--step-ms` milliseconds (or return at once with 0).

use agenthelm::prelude::*;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Shape {
    Chain,
    Wide,
    Layered,
}

#[derive(Debug)]
struct Options {
    shape: Shape,
    steps: usize,
    step_ms: u64,
    width: usize,
    max_concurrency: Option<usize>,
    multi_thread: bool,
}

const USAGE: &str = "usage: agenthelm-bench --shape chain|wide|layered --steps N [--step-ms MS] \
                     [--width W] [--max-concurrency C] [--runtime multi|current]";

fn parse(args: impl IntoIterator<Item = String>) -> Result<Options, String> {
    let mut options = Options {
        shape: Shape::Chain,
        steps: 1000,
        step_ms: 0,
        width: 10,
        max_concurrency: None,
        multi_thread: true,
    };
    let mut args = args.into_iter();
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--shape" => {
                options.shape = match value()?.as_str() {
                    "chain" => Shape::Chain,
                    "wide" => Shape::Wide,
                    "layered" => Shape::Layered,
                    other => return Err(format!("unknown shape `{other}`\n{USAGE}")),
                }
            }
            "--steps" => options.steps = number(&flag, &value()?)?,
            "--step-ms" => options.step_ms = number(&flag, &value()?)?,
            "--width" => options.width = number::<usize>(&flag, &value()?)?.max(1),
            "--max-concurrency" => options.max_concurrency = Some(number(&flag, &value()?)?),
            "--runtime" => {
                options.multi_thread = match value()?.as_str() {
                    "multi" => true,
                    "current" => false,
                    other => return Err(format!("unknown runtime `{other}`\n{USAGE}")),
                }
            }
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument `{other}`\n{USAGE}")),
        }
    }
    if options.steps == 0 {
        return Err("--steps must be at least 1".to_owned());
    }
    Ok(options)
}

fn number<T: std::str::FromStr>(flag: &str, text: &str) -> Result<T, String> {
    text.parse()
        .map_err(|_| format!("{flag} takes a whole number, got `{text}`"))
}

/// An agent that waits a fixed time and succeeds.
struct SleepAgent {
    delay: Duration,
}

#[agenthelm::async_trait]
impl Agent for SleepAgent {
    fn name(&self) -> &str {
        "worker"
    }

    async fn run(&self, _task: &str) -> AgentResult {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        AgentResult::ok("done")
    }
}

/// The plan, and how many steps its longest dependency path has.
fn build_plan(options: &Options) -> (Plan, usize) {
    let mut plan = Plan::new(format!("{:?} benchmark", options.shape));
    let id = |i: usize| format!("s{i}");
    let width = options.width;
    for i in 0..options.steps {
        let mut step = PlanStep::new(id(i), "work").agent("worker");
        step.depends_on = match options.shape {
            Shape::Chain if i > 0 => vec![id(i - 1)],
            Shape::Layered if i >= width => {
                let layer_start = (i / width - 1) * width;
                let a = layer_start + i % width;
                let b = layer_start + (i + 1) % width;
                let mut deps = vec![id(a)];
                if b != a {
                    deps.push(id(b));
                }
                deps
            }
            _ => Vec::new(),
        };
        plan.steps.push(step);
    }
    plan.approved = true;
    let depth = match options.shape {
        Shape::Chain => options.steps,
        Shape::Wide => 1,
        Shape::Layered => options.steps.div_ceil(width),
    };
    (plan, depth)
}

/// Peak resident memory of this process, from the kernel's accounting.
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

async fn bench(options: &Options) -> Result<serde_json::Value, String> {
    let (mut plan, depth) = build_plan(options);
    let mut registry = AgentRegistry::new();
    registry
        .register(SleepAgent {
            delay: Duration::from_millis(options.step_ms),
        })
        .map_err(|e| e.to_string())?;
    let mut orchestrator = Orchestrator::new(registry);
    if let Some(limit) = options.max_concurrency {
        orchestrator = orchestrator.max_concurrency(limit);
    }
    let started = Instant::now();
    let result = orchestrator
        .execute(&mut plan)
        .await
        .map_err(|e| e.to_string())?;
    let wall = started.elapsed().as_secs_f64();
    if !result.success {
        return Err(format!("the benchmark plan failed: {:?}", result.error));
    }
    let critical_path = depth as f64 * options.step_ms as f64 / 1e3;
    let steps = options.steps as f64;
    Ok(serde_json::json!({
        "impl": "rust",
        "shape": format!("{:?}", options.shape).to_lowercase(),
        "steps": options.steps,
        "step_ms": options.step_ms,
        "width": options.width,
        "runtime": if options.multi_thread { "multi_thread" } else { "current_thread" },
        "wall_s": wall,
        "us_per_step": wall * 1e6 / steps,
        "critical_path_s": critical_path,
        "overhead_us_per_step": (wall - critical_path).max(0.0) * 1e6 / steps,
        "events": result.events.len(),
        "events_per_s": result.events.len() as f64 / wall,
        "peak_rss_mb": peak_rss_mb(),
    }))
}

fn main() -> ExitCode {
    let options = match parse(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let runtime = if options.multi_thread {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(bench(&options)) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("{message}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(shape: Shape, steps: usize, width: usize) -> Options {
        Options {
            shape,
            steps,
            step_ms: 0,
            width,
            max_concurrency: None,
            multi_thread: false,
        }
    }

    #[test]
    fn shapes_have_the_expected_dependencies_and_depth() {
        let (chain, depth) = build_plan(&options(Shape::Chain, 5, 3));
        assert_eq!(depth, 5);
        assert_eq!(chain.steps[4].depends_on, ["s3"]);
        let (wide, depth) = build_plan(&options(Shape::Wide, 5, 3));
        assert_eq!(depth, 1);
        assert!(wide.steps.iter().all(|s| s.depends_on.is_empty()));
        let (layered, depth) = build_plan(&options(Shape::Layered, 7, 3));
        assert_eq!(depth, 3);
        assert_eq!(layered.steps[3].depends_on, ["s0", "s1"]);
        assert_eq!(layered.steps[5].depends_on, ["s2", "s0"]);
        assert_eq!(layered.steps[6].depends_on, ["s3", "s4"]);
        for (plan, _) in [(chain, 0), (wide, 0), (layered, 0)] {
            plan.validate().unwrap();
        }
    }

    #[test]
    fn bad_arguments_are_refused_with_the_flag_named() {
        let err = parse(["--steps".to_owned(), "many".to_owned()]).unwrap_err();
        assert!(err.contains("--steps takes a whole number"), "{err}");
        let err = parse(["--shape".to_owned(), "star".to_owned()]).unwrap_err();
        assert!(err.contains("unknown shape `star`"), "{err}");
        let err = parse(["--steps".to_owned()]).unwrap_err();
        assert!(err.contains("--steps needs a value"), "{err}");
    }

    #[tokio::test]
    async fn a_small_run_reports_every_field() {
        let line = bench(&options(Shape::Layered, 20, 4)).await.unwrap();
        for key in [
            "impl",
            "shape",
            "steps",
            "step_ms",
            "wall_s",
            "us_per_step",
            "critical_path_s",
            "peak_rss_mb",
        ] {
            assert!(line.get(key).is_some(), "missing {key} in {line}");
        }
        assert_eq!(line["steps"], 20);
        // RunStarted + RunFinished + StepStarted/StepFinished per step.
        assert_eq!(line["events"], 2 + 2 * 20);
    }
}
