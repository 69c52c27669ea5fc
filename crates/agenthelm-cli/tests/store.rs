//! The run store from the command line: `store:` settings, stores that cannot be used (the run
//! refuses to start, naming the file), a store that fails in the middle of a run (it stops and
//! can be resumed), the JSON-lines backend, and `runs` / `traces`.

mod common;
use agenthelm::store::{RunStore, SqliteStore};
use agenthelm::EventKind;
use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

const FAILING: &str = r#"goal: make a chain, then fail
steps:
  - {id: a, tool: make, args: {name: a}}
  - {id: b, tool: make, args: {name: b}, depends_on: [a]}
  - {id: c, tool: make, args: {name: c}, depends_on: [b]}
  - {id: d, tool: make, args: {name: d, fail: true}, depends_on: [c]}
"#;

fn bench(store: &str) -> TempDir {
    let dir = TempDir::new("cli-store");
    dir.write("agenthelm.yaml", &format!("{LOGGING_WORKSPACE}{store}"));
    dir.write("tool.py", LOGGING_TOOL);
    dir.write("plan.yaml", FAILING);
    dir
}

fn calls(dir: &TempDir) -> usize {
    std::fs::read_to_string(dir.path().join("calls.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("begin "))
        .count()
}

fn json(run: &Run) -> Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", run.all()))
}

/// Runs `plan.yaml` and checks that it was refused: exit 2, the store's file named, no tool run.
fn assert_refused(dir: &TempDir, file: &Path, why: &str) -> String {
    let run = run(dir.path(), &["execute", "plan.yaml", "--yes"]);
    assert_eq!(run.code, 2, "{}", run.all());
    let shown = file.display().to_string();
    assert!(
        run.stderr.contains(&shown),
        "{shown} not named: {}",
        run.stderr
    );
    assert!(run.stderr.contains(why), "{why} not said: {}", run.stderr);
    assert_eq!(calls(dir), 0, "a tool ran untraced");
    run.stderr
}

#[test]
fn a_corrupted_database_file_is_refused_and_left_alone() {
    let dir = bench("");
    let db = dir.write(
        ".agenthelm/agenthelm.db",
        &"garbage that is not sqlite\n".repeat(300),
    );
    let before = std::fs::read(&db).unwrap();
    let stderr = assert_refused(&dir, &db, "is not an AgentHelm store or is damaged");
    assert!(stderr.contains("choose another with `store:`"), "{stderr}");
    assert_eq!(std::fs::read(&db).unwrap(), before);
}

#[test]
fn a_sqlite_file_of_another_program_is_refused_and_left_alone() {
    let dir = bench("store: other.db\n");
    let db = dir.path().join("other.db");
    let made = Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); \
             c.execute('create table contacts(name text)'); \
             c.execute(\"insert into contacts values ('ada')\"); c.commit()",
        ])
        .arg(&db)
        .status()
        .unwrap();
    assert!(made.success());
    let before = std::fs::read(&db).unwrap();
    let stderr = assert_refused(&dir, &db, "another program");
    assert!(stderr.contains("`store:` in"), "{stderr}");
    assert_eq!(std::fs::read(&db).unwrap(), before);
}

#[test]
fn a_store_in_a_read_only_directory_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = bench("");
    let locked = dir.path().join("locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o500)).unwrap();
    // The superuser writes through permission bits; /proc/self is read-only for everyone.
    let writable = std::fs::write(locked.join("probe"), "x").is_ok();
    let target = if writable {
        Path::new("/proc/self").to_path_buf()
    } else {
        locked.clone()
    };
    let db = target.join("runs.db");
    dir.write(
        "agenthelm.yaml",
        &format!("{LOGGING_WORKSPACE}store: {}\n", db.display()),
    );
    assert_refused(&dir, &db, "cannot use the run store");
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o700)).unwrap();
}

/// `agenthelm execute plan.yaml --yes` with a file-size limit (as on a full disk): writes past
/// `blocks` × 512 bytes fail with EFBIG instead of killing the process.
fn execute_on_a_small_disk(dir: &TempDir, blocks: u32) -> Run {
    let script = format!("trap '' XFSZ; ulimit -f {blocks}; exec \"$0\" execute plan.yaml --yes");
    // The same environment as the binary's own tests, with a shell in front to set the limit.
    let template = agenthelm(dir.path());
    let mut shell = Command::new("sh");
    shell
        .current_dir(dir.path())
        .env_remove("RUST_LOG")
        .envs(
            template
                .get_envs()
                .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned()))),
        )
        .env("TOOL_SLEEP", "0")
        .args(["-c", &script, bin()])
        .stdin(std::process::Stdio::null());
    output(shell.output().unwrap())
}

#[test]
fn a_store_that_cannot_write_refuses_to_start() {
    let dir = bench("");
    // Create the store first, so only the run's own writes meet the limit.
    assert_eq!(run(dir.path(), &["runs", "list"]).code, 0);
    let run = execute_on_a_small_disk(&dir, 16);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(run.stderr.contains("agenthelm.db"), "{}", run.stderr);
    assert_eq!(calls(&dir), 0, "a tool ran untraced");
}

#[test]
fn a_store_that_fails_mid_run_stops_the_run_and_resume_finishes_it() {
    let dir = bench("");
    let mut plan = String::from("goal: a long chain\nsteps:\n");
    for i in 1..=12 {
        plan.push_str(&format!("  - {{id: s{i}, tool: make, args: {{name: s{i}}}"));
        if i > 1 {
            plan.push_str(&format!(", depends_on: [s{}]", i - 1));
        }
        plan.push_str("}\n");
    }
    dir.write("plan.yaml", &plan);
    assert_eq!(run(dir.path(), &["runs", "list"]).code, 0);
    let stopped = execute_on_a_small_disk(&dir, 80);
    assert_eq!(stopped.code, 1, "{}", stopped.all());
    let store = SqliteStore::open(dir.path().join(".agenthelm/agenthelm.db")).unwrap();
    let run_id = store.list_runs(1).unwrap()[0].run_id.clone();
    let message = stopped.stderr.trim_end().lines().last().unwrap().to_owned();
    assert!(message.contains("agenthelm.db"), "{message}");
    assert!(
        message.contains(&format!("agenthelm resume {run_id}")),
        "{message}"
    );
    // It stopped early, and every tool that ran had its step's start on record first.
    let ran = calls(&dir);
    assert!((1..12).contains(&ran), "{ran} steps ran: {}", stopped.all());
    let journal = store.load_run(&run_id).unwrap();
    let started = journal
        .events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::StepStarted { .. }))
        .count();
    assert!(
        ran <= started,
        "{ran} tools ran, {started} starts on record"
    );
    assert_eq!(journal.summary.success, None);
    drop(store);

    let resumed = run(dir.path(), &["resume", &run_id]);
    assert_eq!(resumed.code, 0, "{}", resumed.all());
    assert!(
        resumed.stdout.contains("Plan succeeded"),
        "{}",
        resumed.all()
    );
    let log = dir.read("calls.log");
    for i in 1..=12 {
        let effects = log
            .lines()
            .filter(|l| l.starts_with(&format!("effect s{i} ")))
            .count();
        assert_eq!(effects, 1, "s{i}: {log}");
    }
}

#[test]
fn the_jsonl_backend_keeps_runs_and_resumes_them() {
    let dir = bench("store:\n  backend: jsonl\n  path: journal\n");
    let killed = agenthelm(dir.path())
        .args(["execute", "plan.yaml", "--yes"])
        .env("KILL_AT", "do:c:after")
        .output()
        .unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&killed.status),
        Some(9)
    );
    // Run files only: the killed run's claim (`<run id>.claim`, `.claims.lock`) stays beside
    // them until the run is taken over.
    let files: Vec<_> = std::fs::read_dir(dir.path().join("journal"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".jsonl"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let run_id = files[0].strip_suffix(".jsonl").unwrap().to_owned();
    let listed = json(&run(dir.path(), &["runs", "list", "--json"]));
    assert_eq!(listed[0]["run_id"], run_id.as_str());
    assert_eq!(listed[0]["success"], Value::Null);
    let resumed = run(dir.path(), &["resume", &run_id, "--json"]);
    assert_eq!(resumed.code, 1, "{}", resumed.all());
    let result = json(&resumed);
    assert_eq!(
        result["rollback"]["compensated"],
        serde_json::json!(["c", "b", "a"])
    );
    let log = dir.read("calls.log");
    // c was running at the kill: it ran again with the same key and did its work once.
    assert_eq!(log.matches("begin do c ").count(), 2, "{log}");
    assert_eq!(log.matches("effect c ").count(), 1, "{log}");
    assert_eq!(log.matches("begin undo c ").count(), 1, "{log}");
}

#[test]
fn resume_names_what_is_wrong() {
    let dir = bench("");
    let unknown = run(dir.path(), &["resume", "run-nope"]);
    assert_eq!(unknown.code, 2, "{}", unknown.all());
    assert!(
        unknown.stderr.contains("no run `run-nope`"),
        "{}",
        unknown.stderr
    );
    let done = run(dir.path(), &["execute", "plan.yaml", "--yes", "--json"]);
    assert_eq!(done.code, 1);
    let id = json(&done)["run_id"].as_str().unwrap().to_owned();
    let again = run(dir.path(), &["resume", &id]);
    assert_eq!(again.code, 2, "{}", again.all());
    assert!(
        again.stderr.contains("already finished (failed)"),
        "{}",
        again.stderr
    );
}

#[test]
fn a_bad_store_setting_names_file_line_and_key() {
    let dir = bench("store:\n  backend: mysql\n");
    let run_ = run(dir.path(), &["execute", "plan.yaml", "--yes"]);
    assert_eq!(run_.code, 2, "{}", run_.all());
    assert!(
        run_.stderr.contains("agenthelm.yaml:")
            && run_
                .stderr
                .contains("`store.backend`: unknown variant `mysql`"),
        "{}",
        run_.stderr
    );
    // A path for a database named by URL (and the other way round): the key is named.
    let dir = bench("store:\n  backend: postgres\n  path: runs.db\n");
    let wrong = run(dir.path(), &["execute", "plan.yaml", "--yes"]);
    assert_eq!(wrong.code, 2, "{}", wrong.all());
    assert!(
        wrong.stderr.contains("agenthelm.yaml:")
            && wrong
                .stderr
                .contains("`store.path`: is for the sqlite and jsonl stores"),
        "{}",
        wrong.stderr
    );
}

#[test]
fn runs_list_and_show_tell_what_happened() {
    let dir = bench("");
    let first = run(dir.path(), &["execute", "plan.yaml", "--yes"]);
    assert_eq!(first.code, 1, "{}", first.all());
    assert!(first.stderr.contains("(kept in "), "{}", first.stderr);
    let id = first
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("Run id: "))
        .unwrap_or_else(|| panic!("no run id: {}", first.all()))
        .to_owned();
    let listed = json(&run(dir.path(), &["runs", "list", "--json"]));
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["run_id"], id.as_str());
    assert_eq!(listed[0]["success"], false);
    assert_eq!(listed[0]["steps"], 4);

    let shown = json(&run(dir.path(), &["runs", "show", &id, "--json"]));
    assert_eq!(shown["state"], "failed");
    let statuses: Vec<(&str, &str)> = shown["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["id"].as_str().unwrap(), s["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        statuses,
        [
            ("a", "compensated"),
            ("b", "compensated"),
            ("c", "compensated"),
            ("d", "failed")
        ]
    );
    assert!(shown["steps"][3]["error"]
        .as_str()
        .unwrap()
        .contains("failed on purpose"));
    assert_eq!(shown["rollback"].as_array().unwrap().len(), 3);
    assert!(shown["steps"][0]["duration_ms"].as_f64().unwrap() > 0.0);

    let text = run(dir.path(), &["runs", "show", &id]);
    assert_eq!(text.code, 0);
    for expected in [
        "failed",
        "Undone: c with unmake",
        "tokens: 0 in, 0 out",
        "failed on purpose",
    ] {
        assert!(
            text.stdout.contains(expected),
            "{expected}: {}",
            text.stdout
        );
    }
    let missing = run(dir.path(), &["runs", "show", "run-missing"]);
    assert_eq!(missing.code, 2);
    assert!(
        missing.stderr.contains("no run `run-missing`"),
        "{}",
        missing.stderr
    );
}

#[test]
fn traces_list_show_filter_and_export() {
    let dir = bench("");
    assert_eq!(run(dir.path(), &["execute", "plan.yaml", "--yes"]).code, 1);
    // 4 step calls and 3 compensations.
    let all = json(&run(dir.path(), &["traces", "list", "-n", "100", "--json"]));
    let all = all.as_array().unwrap();
    assert_eq!(all.len(), 7);
    let times: Vec<&str> = all.iter().map(|t| t["time"].as_str().unwrap()).collect();
    let mut newest_first = times.clone();
    newest_first.sort_by(|a, b| b.cmp(a));
    assert_eq!(times, newest_first);
    assert_eq!(all[0]["name"], "unmake");
    assert_eq!(all[0]["step_id"], "a");
    let three = json(&run(dir.path(), &["traces", "list", "-n", "3", "--json"]));
    assert_eq!(three.as_array().unwrap()[..], all[..3]);

    // Show: by the id the list gave, with the call's arguments.
    let failed = all.iter().find(|t| t["success"] == false).unwrap();
    let id = failed["id"].as_str().unwrap();
    let shown = run(dir.path(), &["traces", "show", id]);
    assert_eq!(shown.code, 0, "{}", shown.all());
    for expected in [
        id,
        "make",
        "failed",
        r#"{"fail":true,"name":"d"}"#,
        "failed on purpose",
    ] {
        assert!(
            shown.stdout.contains(expected),
            "{expected}: {}",
            shown.stdout
        );
    }
    for bad in [
        "nonsense",
        "run-x/1",
        &format!("{}/1", failed["run_id"].as_str().unwrap()),
    ] {
        let run = run(dir.path(), &["traces", "show", bad]);
        assert_eq!(run.code, 2, "{bad}: {}", run.all());
    }

    let count = |args: &[&str]| {
        let mut full = vec!["traces", "filter", "--json"];
        full.extend_from_slice(args);
        let run = run(dir.path(), &full);
        assert_eq!(run.code, 0, "{args:?}: {}", run.all());
        json(&run).as_array().unwrap().len()
    };
    assert_eq!(count(&["--tool", "unmake"]), 3);
    assert_eq!(count(&["--tool", "make", "--status", "success"]), 3);
    assert_eq!(count(&["--status", "failed"]), 1);
    assert_eq!(count(&["--run", failed["run_id"].as_str().unwrap()]), 7);
    assert_eq!(count(&["--agent", "nobody"]), 0);
    assert_eq!(count(&["--since", "1h"]), 7);
    assert_eq!(count(&["--until", "1h"]), 0);
    assert_eq!(
        count(&[
            "--since",
            "2000-01-01T00:00:00Z",
            "--until",
            "2000-01-02T00:00:00Z"
        ]),
        0
    );
    assert_eq!(count(&["--since", "2000-01-01T00:00:00+02:00"]), 7);
    assert_eq!(count(&["--min-time", "0", "--max-time", "600000"]), 7);
    assert_eq!(count(&["--min-time", "600000"]), 0);
    let bad = run(dir.path(), &["traces", "filter", "--since", "yesterday"]);
    assert_eq!(bad.code, 2);
    assert!(
        bad.stderr.contains("--since: `yesterday` is not a time"),
        "{}",
        bad.stderr
    );
    let bad = run(dir.path(), &["traces", "filter", "--status", "maybe"]);
    assert_eq!(bad.code, 2);

    for (format, file) in [("json", "t.json"), ("csv", "t.csv"), ("md", "t.md")] {
        let out = run(
            dir.path(),
            &[
                "traces", "export", "-o", file, "-f", format, "--tool", "make",
            ],
        );
        assert_eq!(out.code, 0, "{}", out.all());
        assert!(out.stderr.contains("Wrote 4 traces"), "{}", out.stderr);
    }
    let exported: Value = serde_json::from_str(&dir.read("t.json")).unwrap();
    assert_eq!(exported.as_array().unwrap().len(), 4);
    let csv = dir.read("t.csv");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "id,time,kind,name,run_id,step_id,agent,status,duration_ms,error,approval,approved_by"
    );
    assert_eq!(lines.len(), 5);
    assert!(
        csv.contains(",failed,") && csv.contains("failed on purpose"),
        "{csv}"
    );
    let md = dir.read("t.md");
    assert!(md.starts_with("| id | time | kind |"), "{md}");
    assert_eq!(md.lines().count(), 6);
    let unwritable = run(
        dir.path(),
        &["traces", "export", "-o", "no/such/dir/t.csv", "-f", "csv"],
    );
    assert_ne!(unwritable.code, 0);
    assert!(
        unwritable.stderr.contains("no/such/dir/t.csv"),
        "{}",
        unwritable.stderr
    );
}

/// `agenthelm ARGS` in `dir` (environment as [`agenthelm`] sets it), started by a shell that
/// first reads one byte from the FIFO `gate`: writing to the FIFO lets all such processes go at
/// the same moment.
fn gated(dir: &Path, args: &[&str]) -> std::process::Child {
    let template = agenthelm(dir);
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        r#"dd if=gate bs=1 count=1 2>/dev/null >&2 && exec "$0" "$@""#,
    ])
    .arg(template.get_program())
    .args(args)
    .current_dir(dir)
    .stdin(std::process::Stdio::null())
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped());
    for (key, value) in template.get_envs() {
        match value {
            Some(value) => cmd.env(key, value),
            None => cmd.env_remove(key),
        };
    }
    cmd.spawn().unwrap()
}

/// Issue 14: processes started together on a workspace whose store does not exist yet all
/// create, migrate and use it without an error.
#[test]
fn twenty_runs_started_together_on_a_fresh_store_all_work() {
    const RUNS: usize = 20;
    for _round in 0..3 {
        let dir = bench("");
        dir.write(
            "one.yaml",
            "goal: one\nsteps:\n  - {id: a, tool: make, args: {name: a}}\n",
        );
        assert!(Command::new("mkfifo")
            .arg(dir.path().join("gate"))
            .status()
            .unwrap()
            .success());
        let runs: Vec<_> = (0..RUNS)
            .map(|_| gated(dir.path(), &["execute", "one.yaml", "--yes"]))
            .collect();
        // Opened read-write: never blocks; one byte per waiting process.
        let mut gate = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(dir.path().join("gate"))
            .unwrap();
        std::io::Write::write_all(&mut gate, &[b'.'; RUNS]).unwrap();
        let failures: Vec<String> = runs
            .into_iter()
            .map(|child| output(child.wait_with_output().unwrap()))
            .filter(|run| run.code != 0)
            .map(|run| format!("exit {}: {}", run.code, run.stderr))
            .collect();
        assert!(failures.is_empty(), "{failures:#?}");
        let listed = json(&run(dir.path(), &["runs", "list", "-n", "100", "--json"]));
        assert_eq!(listed.as_array().map(Vec::len), Some(RUNS), "{listed}");
    }
}

#[test]
fn a_tool_output_is_stored_once_and_read_back_from_its_call() {
    // `blob` prints 100 KB and has a compensating tool, so its call is also an effect; the
    // step after it fails, so the run rolls back and `blob` is compensated.
    let dir = TempDir::new("cli-store");
    workspace(
        &dir,
        "  blob:\n    command: [python3, -c, \"print('{\\\"blob\\\": \\\"' + 'q' * 100000 + '\\\"}')\"]\n    compensating_tool: echo\n",
    );
    dir.write(
        "agenthelm.yaml",
        &format!(
            "{}store:\n  backend: jsonl\n  path: journal\n",
            dir.read("agenthelm.yaml")
                .replace("tools: [echo,", "tools: [blob, echo,")
        ),
    );
    dir.write(
        "plan.yaml",
        "goal: keep a big output once\nsteps:\n  - {id: big, tool: blob, args: {}, compensate_args: {undo: big}}\n  - {id: then, tool: fail, args: {}, depends_on: [big]}\n",
    );
    let done = run(dir.path(), &["execute", "plan.yaml", "--yes", "--json"]);
    assert_eq!(done.code, 1, "{}", done.all());
    let run_id = json(&done)["run_id"].as_str().unwrap().to_owned();
    let journal = dir.read(&format!("journal/{run_id}.jsonl"));
    let blob = "q".repeat(100_000);
    assert_eq!(
        journal.matches(&blob).count(),
        1,
        "the output is stored more than once"
    );
    assert!(
        journal.len() < 110_000,
        "journal of {} bytes",
        journal.len()
    );

    // Read back: the step's result comes from its call's output.
    let stored = agenthelm::store::JsonlStore::open(dir.path().join("journal"))
        .unwrap()
        .load_run(&run_id)
        .unwrap();
    let state = agenthelm::RunState::replay(&stored.plan, &stored.events);
    assert_eq!(&*state.steps()[0].id, "big");
    assert_eq!(state.result(0).unwrap()["blob"].as_str(), Some(&*blob));
    let shown = json(&run(dir.path(), &["runs", "show", &run_id, "--json"]));
    assert_eq!(shown["rollback"][0]["step"], "big", "{shown}");
    assert_eq!(shown["rollback"][0]["success"], true, "{shown}");
}

#[test]
fn runs_prune_deletes_old_runs_and_says_how_the_store_shrank() {
    let dir = bench("");
    let failed = run(dir.path(), &["execute", "plan.yaml", "--yes", "--json"]);
    assert_eq!(failed.code, 1, "{}", failed.all());
    dir.write(
        "ok.yaml",
        "goal: fine\nsteps:\n  - {id: a, tool: make, args: {name: a}}\n",
    );
    let ok = run(dir.path(), &["execute", "ok.yaml", "--yes", "--json"]);
    assert_eq!(ok.code, 0, "{}", ok.all());
    let ok_id = json(&ok)["run_id"].as_str().unwrap().to_owned();

    let bad = run(dir.path(), &["runs", "prune", "--older-than", "soon"]);
    assert_eq!(bad.code, 2, "{}", bad.all());
    assert!(
        bad.stderr.contains("`soon` is not a time"),
        "{}",
        bad.stderr
    );

    // "Older than 0 seconds": everything that has ended, failed runs kept.
    let pruned = run(
        dir.path(),
        &[
            "runs",
            "prune",
            "--older-than",
            "0s",
            "--keep-failed",
            "--json",
        ],
    );
    assert_eq!(pruned.code, 0, "{}", pruned.all());
    let report = json(&pruned);
    assert_eq!(report["deleted"], serde_json::json!([ok_id]));
    assert!(
        report["size_after"].as_u64() <= report["size_before"].as_u64(),
        "{report}"
    );
    let listed = json(&run(dir.path(), &["runs", "list", "--json"]));
    assert_eq!(
        listed.as_array().unwrap().len(),
        1,
        "the failed run is kept"
    );

    let text = run(dir.path(), &["runs", "prune", "--older-than", "0s"]);
    assert!(
        text.stdout
            .starts_with("Deleted 1 run(s) that ended before"),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains("the store went from"),
        "{}",
        text.stdout
    );
}

/// `store: {backend: postgres}` with the URL from AGENTHELM_STORE_URL: a killed run is listed,
/// traced and resumed from the shared database; another workspace on the same database sees
/// it. Skipped (and said) when PostgreSQL is not installed.
#[test]
fn the_postgres_backend_keeps_runs_traces_and_resumes_them() {
    let pg = match agenthelm_test_support::PgServer::shared() {
        Ok(pg) => pg,
        Err(why) => return eprintln!("PostgreSQL store skipped: {why}"),
    };
    let url = pg.database();
    let dir = bench("store: {backend: postgres}\n");
    let with_url = |args: &[&str]| {
        output(
            agenthelm(dir.path())
                .args(args)
                .env("AGENTHELM_STORE_URL", &url)
                .output()
                .unwrap(),
        )
    };
    // Without a URL anywhere: a clear error naming the setting and the variable.
    let missing = run(dir.path(), &["runs", "list"]);
    assert_ne!(missing.code, 0);
    assert!(
        missing
            .stderr
            .contains("`store.url` is not set and neither is AGENTHELM_STORE_URL"),
        "{}",
        missing.all()
    );
    let killed = agenthelm(dir.path())
        .args(["execute", "plan.yaml", "--yes"])
        .env("AGENTHELM_STORE_URL", &url)
        .env("KILL_AT", "do:c:after")
        .output()
        .unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&killed.status),
        Some(9)
    );
    let listed = json(&with_url(&["runs", "list", "--json"]));
    let run_id = listed[0]["run_id"].as_str().unwrap().to_owned();
    assert_eq!(listed[0]["success"], Value::Null);
    let traced = json(&with_url(&["traces", "list", "-n", "100", "--json"]));
    let steps: Vec<&str> = traced
        .as_array()
        .unwrap()
        .iter()
        .map(|call| call["step_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        ["b", "a"],
        "the tool calls recorded before the kill: {traced}"
    );
    let resumed = with_url(&["resume", &run_id, "--json"]);
    assert_eq!(resumed.code, 1, "{}", resumed.all());
    let result = json(&resumed);
    assert_eq!(
        result["rollback"]["compensated"],
        serde_json::json!(["c", "b", "a"])
    );
    let log = dir.read("calls.log");
    assert_eq!(log.matches("effect c ").count(), 1, "{log}");
    assert_eq!(log.matches("begin undo c ").count(), 1, "{log}");

    // Another user's workspace, naming the database in its file, sees the ended run.
    let other = TempDir::new("cli-store-pg-other");
    other.write(
        "agenthelm.yaml",
        &format!("{LOGGING_WORKSPACE}store: {{backend: postgres, url: \"{url}\"}}\n"),
    );
    let shown = json(&run(other.path(), &["runs", "show", &run_id, "--json"]));
    assert_eq!(shown["state"], "failed", "{shown}");
    assert_eq!(shown["run_id"], run_id.as_str(), "{shown}");
}
