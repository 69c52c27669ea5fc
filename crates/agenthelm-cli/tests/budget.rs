//! Budgets end to end: a plan whose model calls would cross the workspace's `max_cost_usd`
//! stops before the call that would cross, rolls back, exits 1 with the budget message, and a
//! run killed half-way and resumed keeps what it had spent.

mod common;
use agenthelm::store::{RunStore, SqliteStore};
use common::*;
use std::path::Path;

/// `openai/gpt-4o-mini` costs $0.15 / $0.60 per million tokens: each answer below (100,000 in,
/// 10,000 out) costs $0.021, and the worst case of a call (4,096 output tokens) about $0.0025.
/// Two calls spend $0.042; a third could reach $0.0445, past $0.044.
fn workspace(dir: &TempDir, budget: &str) {
    dir.write("tool.py", LOGGING_TOOL);
    dir.write(
        "agenthelm.yaml",
        &format!(
            "model: openai/gpt-4o-mini\ndefault_agent: thinker\nagents:\n  thinker: {{role: thinks}}\n{budget}{LOGGING_WORKSPACE}"
        ),
    );
    dir.write(
        "plan.yaml",
        r#"goal: think between two changes
approved: true
steps:
  - {id: a, tool: make, args: {name: a}}
  - {id: t1, description: think about a, depends_on: [a]}
  - {id: b, tool: make, args: {name: b}, depends_on: [t1]}
  - {id: t2, description: think about b, depends_on: [b]}
  - {id: t3, description: think once more, depends_on: [t2]}
"#,
    );
}

fn llm() -> LlmServer {
    LlmServer::start(
        (0..3)
            .map(|_| text_reply("a thought", 100_000, 10_000))
            .collect(),
    )
}

fn execute(dir: &Path, server: &LlmServer, kill_at: Option<&str>) -> Run {
    let mut cmd = agenthelm(dir);
    cmd.env("OPENAI_BASE_URL", &server.base_url)
        .args(["execute", "plan.yaml", "--yes"]);
    if let Some(at) = kill_at {
        cmd.env("KILL_AT", at);
    }
    output(cmd.output().unwrap())
}

fn log(dir: &TempDir) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("calls.log")).unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("effect") || l.starts_with("undone"))
        .map(|l| l.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
        .collect()
}

const MESSAGE: &str = "cost budget exceeded: $0.042 spent of $0.044, and the next call to openai/gpt-4o-mini may cost up to $0.002";

#[test]
fn the_call_that_would_cross_the_cost_budget_is_not_made_and_the_run_rolls_back() {
    let dir = TempDir::new("budget-cli");
    workspace(&dir, "budget: {max_cost_usd: 0.044}\n");
    let server = llm();
    let run = execute(dir.path(), &server, None);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(run.all().contains(MESSAGE), "{}", run.all());
    assert_eq!(server.requests().len(), 2, "the third call is not made");
    assert_eq!(
        log(&dir),
        ["effect a", "effect b", "undone b", "undone a"],
        "{}",
        run.all()
    );
}

#[test]
fn a_plan_file_budget_tightens_the_workspace_budget() {
    let dir = TempDir::new("budget-plan");
    workspace(&dir, "budget: {max_cost_usd: 5, max_llm_calls: 40}\n");
    let plan = dir.read("plan.yaml");
    dir.write(
        "plan.yaml",
        &plan.replace(
            "approved: true\n",
            "approved: true\nbudget: {max_llm_calls: 1}\n",
        ),
    );
    let server = llm();
    let run = execute(dir.path(), &server, None);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.all()
            .contains("model call budget exceeded: 1 call made of 1 call"),
        "{}",
        run.all()
    );
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn a_bad_budget_is_bad_input_naming_the_field() {
    let dir = TempDir::new("budget-bad");
    workspace(
        &dir,
        "budget: {max_cost_usd: 0.5, max_duration: 10 minutes}\n",
    );
    let run = run(dir.path(), &["execute", "plan.yaml", "--yes"]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(run.stderr.contains("agenthelm.yaml"), "{}", run.stderr);
    assert!(run.stderr.contains("max_duration"), "{}", run.stderr);
}

#[test]
fn an_unpriced_model_under_a_cost_budget_is_refused_before_anything_runs() {
    let dir = TempDir::new("budget-unpriced");
    workspace(&dir, "budget: {max_cost_usd: 0.5}\n");
    let yaml = dir.read("agenthelm.yaml");
    dir.write(
        "agenthelm.yaml",
        &yaml.replace("openai/gpt-4o-mini", "openai/house-model"),
    );
    let server = llm();
    let run = execute(dir.path(), &server, None);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(
        run.stderr
            .contains("whose model `openai/house-model` has no price"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("budget.unpriced: allow"),
        "{}",
        run.stderr
    );
    assert!(log(&dir).is_empty(), "nothing ran");
    assert!(server.requests().is_empty());
}

#[test]
fn a_run_killed_half_way_keeps_what_it_spent_when_resumed() {
    let dir = TempDir::new("budget-kill");
    workspace(&dir, "budget: {max_cost_usd: 0.044}\n");
    let server = llm();
    // Killed (SIGKILL) right after `b` did its work: `t1`'s $0.021 is spent.
    let killed = execute(dir.path(), &server, Some("do:b:after"));
    assert_ne!(killed.code, 0, "{}", killed.all());
    assert_eq!(server.requests().len(), 1);
    let store = SqliteStore::open(dir.join(".agenthelm/agenthelm.db")).unwrap();
    let run_id = store.list_runs(1).unwrap()[0].run_id.clone();

    let mut cmd = agenthelm(dir.path());
    cmd.env("OPENAI_BASE_URL", &server.base_url)
        .args(["resume", &run_id]);
    let resumed = output(cmd.output().unwrap());
    assert_eq!(resumed.code, 1, "{}", resumed.all());
    // Had the spending before the kill been forgotten, `t3` would have been allowed.
    assert!(resumed.all().contains(MESSAGE), "{}", resumed.all());
    assert_eq!(server.requests().len(), 2);
    assert_eq!(log(&dir), ["effect a", "effect b", "undone b", "undone a"]);
}

#[test]
fn an_agents_max_tokens_is_sent_and_bounds_the_worst_case_of_its_calls() {
    let dir = TempDir::new("budget-max-tokens");
    workspace(&dir, "budget: {max_cost_usd: 0.044}\n");
    let yaml = dir.read("agenthelm.yaml");
    dir.write(
        "agenthelm.yaml",
        &yaml.replace("{role: thinks}", "{role: thinks, max_tokens: 100}"),
    );
    let server = llm();
    let run = execute(dir.path(), &server, None);
    // With answers of at most 100 tokens the third call's worst case fits ($0.042 + $0.0001),
    // so it is made; the $0.021 it really cost crosses the limit, and the run stops there.
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.all()
            .contains("cost budget exceeded: $0.063 spent of $0.044"),
        "{}",
        run.all()
    );
    let requests = server.requests();
    assert_eq!(requests.len(), 3);
    let body = &requests[0]["body"];
    let sent = body
        .get("max_tokens")
        .or_else(|| body.get("max_completion_tokens"));
    assert_eq!(sent, Some(&serde_json::json!(100)), "{body}");
}
