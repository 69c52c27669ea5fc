//! Helpers shared by the orchestrator, rollback and approval tests: deterministic agents and
//! tools that record what happened to them.
#![allow(dead_code)]

use agenthelm::prelude::*;
use futures::future::BoxFuture;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

type Work = dyn Fn(String) -> BoxFuture<'static, AgentResult> + Send + Sync;

/// An agent with no model: it answers with whatever its closure makes of the task text, and
/// remembers every task it was given.
#[derive(Clone)]
pub struct FnAgent {
    name: String,
    work: Arc<Work>,
    pub tasks: Arc<Mutex<Vec<String>>>,
}

impl FnAgent {
    pub fn new<F, Fut>(name: &str, work: F) -> Self
    where
        F: Fn(String) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = AgentResult> + Send + 'static,
    {
        FnAgent {
            name: name.to_owned(),
            work: Arc::new(move |task| Box::pin(work(task))),
            tasks: Arc::default(),
        }
    }

    /// An agent that answers `<name> did <first line of the task>`.
    pub fn echo(name: &str) -> Self {
        let me = name.to_owned();
        Self::new(name, move |task| {
            let first = task.lines().next().unwrap_or_default().to_owned();
            let answer = format!("{me} did {first}");
            async move { AgentResult::ok(answer) }
        })
    }

    pub fn calls(&self) -> usize {
        self.tasks.lock().unwrap().len()
    }
}

#[agenthelm::async_trait]
impl Agent for FnAgent {
    fn name(&self) -> &str {
        &self.name
    }

    async fn run(&self, task: &str) -> AgentResult {
        self.tasks.lock().unwrap().push(task.to_owned());
        (self.work)(task.to_owned()).await
    }
}

/// A shared, ordered log of what tools did.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    pub fn push(&self, entry: impl Into<String>) {
        self.0.lock().unwrap().push(entry.into());
    }
    pub fn entries(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
    pub fn count(&self, prefix: &str) -> usize {
        self.entries()
            .iter()
            .filter(|e| e.starts_with(prefix))
            .count()
    }
}

/// A tool taking any object that logs `name <args>` and returns `output`.
pub fn logging_tool(name: &str, log: &Log, output: Value) -> FnTool {
    let (log, me) = (log.clone(), name.to_owned());
    FnTool::new(
        name,
        format!("{name} (test tool)"),
        json!({"type": "object"}),
        move |args, _| {
            log.push(format!("{me} {args}"));
            let output = output.clone();
            async move { Ok(output) }
        },
    )
    .unwrap()
}

/// A tool that always fails, logging each attempt.
/// `create`: logs `create <name>` and returns `{"id": "<name>-id"}`; undone by `delete`.
pub fn creating_tool(log: &Log) -> FnTool {
    let log = log.clone();
    FnTool::new(
        "create",
        "create a thing",
        json!({"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}),
        move |args, _| {
            let name = args["name"].as_str().unwrap_or("?").to_owned();
            log.push(format!("create {name}"));
            async move { Ok(json!({"id": format!("{name}-id")})) }
        },
    )
    .unwrap()
    .compensating_tool("delete")
}

pub fn failing_tool(name: &str, log: &Log, message: &str) -> FnTool {
    let (log, me, message) = (log.clone(), name.to_owned(), message.to_owned());
    FnTool::new(
        name,
        format!("{name} (always fails)"),
        json!({"type": "object"}),
        move |args, _| {
            log.push(format!("{me} {args}"));
            let message = message.clone();
            async move { Err(ToolError::new(message)) }
        },
    )
    .unwrap()
}

/// A counter of calls.
#[derive(Clone, Default)]
pub struct Counter(Arc<AtomicUsize>);

impl Counter {
    pub fn hit(&self) -> usize {
        self.0.fetch_add(1, Ordering::SeqCst) + 1
    }
    pub fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

pub fn approved(goal: &str, steps: Vec<PlanStep>) -> Plan {
    let mut plan = Plan::new(goal);
    plan.steps = steps;
    plan.approved = true;
    plan
}

pub fn status(plan: &Plan, id: &str) -> StepStatus {
    plan.get_step(id).unwrap().status
}

/// The `type` names of the events, in order.
pub fn kinds(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            serde_json::to_value(e).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

/// A ToolAgent whose model must never be asked (its script is empty).
pub fn tool_agent(name: &str, tools: ToolSet) -> (ToolAgent, Arc<ScriptedLm>) {
    let lm = Arc::new(ScriptedLm::new(vec![]));
    let agent = ToolAgent::new(name, Lm::from_arc(lm.clone()), tools);
    (agent, lm)
}
