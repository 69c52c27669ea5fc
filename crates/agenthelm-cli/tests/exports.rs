//! Files the CLI writes with run data (`traces export`, `runs report`) and how a failed run ends
//! (issue 14): CSV cells cannot become formulas, the files are owner-only like the store, a path
//! that cannot be written is bad input, and the run's error is said once.

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;

/// Names that are formulas: the agent, the tool, the step id (in [`PLAN`]), and a tool that
/// fails with a formula in its error.
const WORKSPACE: &str = r#"
default_agent: "@agent"
agents:
  "@agent":
    tools: ["+formula"]
tools:
  "+formula":
    command: [python3, -c, "import sys; sys.stderr.write('=HYPERLINK(\"http://evil\")'); sys.exit(1)"]
"#;

const PLAN: &str = r#"
goal: formulas
steps:
  - id: "=1+1"
    tool: "+formula"
"#;

/// A workspace with one failed run of [`PLAN`]; returns it with the run's `execute` output.
fn failed_run() -> (TempDir, Run) {
    let dir = TempDir::new("cli-exports");
    dir.write("agenthelm.yaml", WORKSPACE);
    dir.write("plan.yaml", PLAN);
    let execute = run(dir.path(), &["execute", "plan.yaml", "--yes"]);
    assert_eq!(execute.code, 1, "{}", execute.all());
    (dir, execute)
}

fn mode(dir: &TempDir, file: &str) -> u32 {
    std::fs::metadata(dir.path().join(file))
        .unwrap()
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn csv_cells_that_look_like_formulas_are_defused() {
    let (dir, _) = failed_run();
    let export = run(
        dir.path(),
        &["traces", "export", "-o", "t.csv", "-f", "csv"],
    );
    assert_eq!(export.code, 0, "{}", export.all());
    let csv = dir.read("t.csv");
    let row = csv.lines().nth(1).expect("a trace row");
    for defused in [",'=1+1,", ",'@agent,", ",'+formula,"] {
        assert!(row.contains(defused), "{defused} in {row}");
    }
    for cell in row.split(',') {
        assert!(!cell.starts_with(['=', '+', '-', '@']), "{cell} in {row}");
    }
}

#[test]
fn reports_and_exports_are_owner_only_even_over_an_existing_file() {
    let (dir, _) = failed_run();
    dir.write("old.json", "readable by all");
    std::fs::set_permissions(
        dir.path().join("old.json"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    for format in ["json", "csv", "md"] {
        let file = format!("t.{format}");
        let export = run(dir.path(), &["traces", "export", "-o", &file, "-f", format]);
        assert_eq!(export.code, 0, "{}", export.all());
        assert_eq!(mode(&dir, &file), 0o600, "{file}");
    }
    let export = run(dir.path(), &["traces", "export", "-o", "old.json"]);
    assert_eq!(export.code, 0, "{}", export.all());
    assert_eq!(mode(&dir, "old.json"), 0o600);

    let list = run(dir.path(), &["runs", "list", "--json"]);
    let runs: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    let run_id = runs[0]["run_id"].as_str().unwrap();
    let report = run(dir.path(), &["runs", "report", run_id, "-o", "r.html"]);
    assert_eq!(report.code, 0, "{}", report.all());
    assert_eq!(mode(&dir, "r.html"), 0o600);
}

#[test]
fn a_path_that_cannot_be_written_is_bad_input() {
    let (dir, _) = failed_run();
    for args in [
        &["traces", "export", "-o", "no/such/dir/t.csv", "-f", "csv"][..],
        &["traces", "export", "-o", "."],
    ] {
        let export = run(dir.path(), args);
        assert_eq!(export.code, 2, "{args:?}: {}", export.all());
        assert!(export.stderr.contains("cannot write"), "{}", export.stderr);
    }
}

#[test]
fn the_error_of_a_failed_run_is_said_once() {
    let (_dir, execute) = failed_run();
    let all = execute.all();
    assert_eq!(all.matches("step `=1+1` failed").count(), 1, "{all}");
    let last = execute.stderr.trim_end().lines().last().unwrap();
    assert!(
        last.starts_with("error: plan failed: step `=1+1` failed"),
        "{last}"
    );
}
