//! init, show, config, completions, --version/--help, colours.

mod common;
use common::*;
use serde_json::Value;

#[test]
fn init_writes_a_workspace_that_runs_offline() {
    let dir = TempDir::new("cli-commands");
    let run = run(dir.path(), &["init", "ws"]);
    assert_eq!(run.code, 0, "{}", run.all());
    let ws = dir.path().join("ws");
    for file in ["agenthelm.yaml", "tools/notes.py", "plan.yaml"] {
        assert!(ws.join(file).is_file(), "{file}");
    }
    let run = common::run(&ws, &["execute", "plan.yaml", "--yes", "--json"]);
    assert_eq!(run.code, 0, "{}", run.all());
    let json: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(
        json["steps"][2]["result"],
        serde_json::json!(["shopping", "todo"])
    );
    assert_eq!(
        std::fs::read_to_string(ws.join("notes/todo.txt")).unwrap(),
        "call the bank"
    );
    // A second init does not overwrite; --force does.
    let run = common::run(dir.path(), &["init", "ws"]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(
        run.stderr.contains("already has agenthelm.yaml"),
        "{}",
        run.stderr
    );
    let run = common::run(dir.path(), &["init", "ws", "--force"]);
    assert_eq!(run.code, 0, "{}", run.all());
}

fn plan_dir() -> TempDir {
    let dir = TempDir::new("cli-commands");
    workspace(&dir, "");
    dir.write(
        "plan.yaml",
        "goal: two then one\nsteps:\n  - id: a\n    tool: echo\n  - id: b\n    tool: echo\n  - id: c\n    tool: echo\n    depends_on: [a, b]\n",
    );
    dir
}

#[test]
fn show_draws_the_plan_in_every_format() {
    let dir = plan_dir();
    let table = run(dir.path(), &["show", "plan.yaml"]);
    assert_eq!(table.code, 0, "{}", table.all());
    assert!(table.stdout.contains("Plan: two then one"));
    assert!(table.stdout.contains("wave 1 (in parallel): a, b"));
    assert!(table.stdout.contains("c ← a, b"));

    let yaml = run(dir.path(), &["show", "plan.yaml", "--format", "yaml"]);
    assert_eq!(yaml.code, 0);
    dir.write("again.yaml", &yaml.stdout);
    let again = run(dir.path(), &["show", "again.yaml", "-f", "json"]);
    let json: Value = serde_json::from_str(&again.stdout).unwrap();
    assert_eq!(
        json["steps"][2]["depends_on"],
        serde_json::json!(["a", "b"])
    );

    let mermaid = run(dir.path(), &["show", "plan.yaml", "--format", "mermaid"]);
    assert!(mermaid.stdout.starts_with("flowchart TD\n"));
    assert!(mermaid.stdout.contains("s0 --> s2") && mermaid.stdout.contains("s1 --> s2"));

    let dot = run(dir.path(), &["show", "plan.yaml", "--format", "dot"]);
    assert!(dot.stdout.starts_with("digraph plan {"));
    assert!(dot.stdout.contains("\"a\" -> \"c\";"), "{}", dot.stdout);
}

#[test]
fn show_checks_the_plan_against_the_workspace() {
    let dir = plan_dir();
    dir.write("bad.yaml", "goal: g\nsteps:\n  - id: a\n    tool: nope\n");
    let run = run(dir.path(), &["show", "bad.yaml"]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(
        run.stderr.contains("bad.yaml:4: `steps[0].tool`"),
        "{}",
        run.stderr
    );
}

#[test]
fn the_workspace_is_found_in_parents_and_beside_the_plan() {
    let dir = plan_dir();
    std::fs::create_dir_all(dir.path().join("sub/deeper")).unwrap();
    let run = run(&dir.path().join("sub/deeper"), &["show", "../../plan.yaml"]);
    assert_eq!(run.code, 0, "{}", run.all());
    let elsewhere = TempDir::new("cli-commands");
    let plan = dir.path().join("plan.yaml");
    let run = common::run(elsewhere.path(), &["show", plan.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.all());
    let config = dir.path().join("agenthelm.yaml");
    let run = common::run(
        elsewhere.path(),
        &[
            "--config",
            config.to_str().unwrap(),
            "show",
            plan.to_str().unwrap(),
        ],
    );
    assert_eq!(run.code, 0, "{}", run.all());
}

#[test]
fn config_set_show_and_path() {
    let dir = plan_dir();
    let path = run(dir.path(), &["config", "path"]);
    assert_eq!(path.code, 0);
    let expected = dir.path().join(".home/.agenthelm/config.yaml");
    assert_eq!(path.stdout.trim(), expected.to_str().unwrap());

    let set = run(dir.path(), &["config", "set", "model", "ollama/llama3.2"]);
    assert_eq!(set.code, 0, "{}", set.all());
    let set = run(dir.path(), &["config", "set", "max_parallel", "4"]);
    assert_eq!(set.code, 0, "{}", set.all());
    let saved = std::fs::read_to_string(&expected).unwrap();
    assert!(
        saved.contains("model: ollama/llama3.2") && saved.contains("max_parallel: 4"),
        "{saved}"
    );

    let show = run(dir.path(), &["config", "show"]);
    assert_eq!(show.code, 0, "{}", show.all());
    assert!(show.stdout.contains("model: ollama/llama3.2"));
    assert!(show.stdout.contains("agents: worker"));
    assert!(show
        .stdout
        .contains("tools: barrier, create, delete, echo, fail"));

    for (key, value, message) in [
        ("colour", "red", "unknown setting `colour`"),
        ("max_parallel", "0", "max_parallel must be a whole number"),
        ("model", "gpt4", "not a `provider/model` id"),
    ] {
        let bad = run(dir.path(), &["config", "set", key, value]);
        assert_eq!(bad.code, 2, "{}", bad.all());
        assert!(bad.stderr.contains(message), "{}", bad.stderr);
    }
}

#[test]
fn a_broken_user_config_names_its_file_and_key() {
    let dir = plan_dir();
    dir.write(
        ".home/.agenthelm/config.yaml",
        "model: a/b\nmax_parallel: lots\n",
    );
    let run = run(dir.path(), &["show", "plan.yaml"]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(
        run.stderr
            .contains("config.yaml:2: `max_parallel`: invalid type"),
        "{}",
        run.stderr
    );
}

#[test]
fn completions_for_each_shell() {
    let dir = TempDir::new("cli-commands");
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef agenthelm"),
        ("fish", "complete -c agenthelm"),
    ] {
        let run = run(dir.path(), &["completions", shell]);
        assert_eq!(run.code, 0, "{shell}: {}", run.all());
        assert!(run.stdout.contains(marker), "{shell}");
        assert!(run.stdout.contains("execute"), "{shell}");
    }
    assert_eq!(run(dir.path(), &["completions", "tcsh"]).code, 2);
}

#[test]
fn version_and_help_on_every_command() {
    let dir = TempDir::new("cli-commands");
    let version = run(dir.path(), &["--version"]);
    assert_eq!(version.code, 0);
    assert_eq!(
        version.stdout.trim(),
        format!("agenthelm {}", env!("CARGO_PKG_VERSION"))
    );
    for command in [
        "init",
        "run",
        "show",
        "execute",
        "chat",
        "config",
        "completions",
    ] {
        let help = run(dir.path(), &[command, "--help"]);
        assert_eq!(help.code, 0, "{command}");
        assert!(
            help.stdout.contains("Usage: agenthelm"),
            "{command}: {}",
            help.stdout
        );
        let version = run(dir.path(), &[command, "--version"]);
        assert_eq!(version.code, 0, "{command}");
    }
    let help = run(dir.path(), &["execute", "--help"]);
    for flag in [
        "--dry-run",
        "--yes",
        "--max-parallel",
        "--no-rollback",
        "--json",
        "--approve-tools",
    ] {
        assert!(help.stdout.contains(flag), "{flag}");
    }
}

#[test]
fn no_colours_off_a_terminal_or_with_no_color() {
    let dir = plan_dir();
    let run = run(dir.path(), &["execute", "plan.yaml", "--yes"]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(!run.all().contains('\u{1b}'), "escape codes off a terminal");
    // At a terminal colours are on, unless NO_COLOR is set.
    let coloured = run_in_pty(
        dir.path(),
        &["execute", "plan.yaml", "--yes"],
        "never",
        &[],
        &[],
    );
    assert_eq!(coloured.code, 0, "{}", coloured.all());
    assert!(coloured.stdout.contains("\u{1b}["), "{}", coloured.stdout);
    let plain = run_in_pty(
        dir.path(),
        &["execute", "plan.yaml", "--yes"],
        "never",
        &[],
        &[("NO_COLOR", "1")],
    );
    assert_eq!(plain.code, 0, "{}", plain.all());
    assert!(!plain.stdout.contains("\u{1b}["), "{}", plain.stdout);
}

#[test]
fn verbose_and_rust_log_are_accepted() {
    let dir = plan_dir();
    let run = run(dir.path(), &["-vv", "show", "plan.yaml"]);
    assert_eq!(run.code, 0, "{}", run.all());
    let out = agenthelm(dir.path())
        .env("RUST_LOG", "debug")
        .args(["show", "plan.yaml"])
        .output()
        .unwrap();
    assert!(out.status.success());
}
