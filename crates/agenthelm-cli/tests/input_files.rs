//! Input files that are not what they seem: devices, FIFOs, huge files, surprising numbers and
//! keys, workspace files others can write. Each is bad input: exit 2 at once, naming the file.

mod common;
use common::*;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// Waits for the child; one that is still running after a minute (a read that blocks forever)
/// is killed and fails the test instead of hanging the suite.
fn finish(mut child: Child) -> Run {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            panic!("still running after a minute: blocked on its input");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    output(child.wait_with_output().unwrap())
}

fn spawn(dir: &TempDir, args: &[&str]) -> Child {
    agenthelm(dir.path())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn assert_bad(run: &Run, needles: &[&str]) {
    assert_eq!(run.code, 2, "{}", run.all());
    let line = run.stderr.trim_end();
    assert!(
        line.starts_with("error: ") && !line.contains('\n'),
        "{line}"
    );
    for needle in needles {
        assert!(line.contains(needle), "`{needle}` not in: {line}");
    }
}

#[test]
fn a_device_is_not_a_plan_file() {
    let dir = TempDir::new("cli-input");
    workspace(&dir, "");
    let run = finish(spawn(&dir, &["show", "/dev/zero"]));
    assert_bad(&run, &["/dev/zero", "not a regular file", "a device"]);
}

#[test]
fn a_fifo_is_not_a_plan_file_nor_a_workspace_file() {
    let dir = TempDir::new("cli-input");
    workspace(&dir, "");
    let fifo = dir.path().join("plan.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let run = finish(spawn(&dir, &["show", "plan.fifo"]));
    assert_bad(&run, &["plan.fifo", "not a regular file", "a FIFO"]);
    let run = finish(spawn(&dir, &["--config", "plan.fifo", "runs", "list"]));
    assert_bad(&run, &["plan.fifo", "workspace file", "a FIFO"]);
}

#[test]
fn an_oversized_plan_file_is_refused() {
    let dir = TempDir::new("cli-input");
    workspace(&dir, "");
    let big = std::fs::File::create(dir.path().join("big.yaml")).unwrap();
    big.set_len(10 * 1024 * 1024 + 1).unwrap();
    let run = run(dir.path(), &["show", "big.yaml"]);
    assert_bad(
        &run,
        &[
            "big.yaml",
            "too large: 10485761 bytes, the limit is 10485760 bytes",
        ],
    );
}

/// A workspace in `dir`, with a plan in `dir/sub`, run from `sub`: the file is found in a parent.
#[cfg(unix)]
fn found_in_a_parent() -> (TempDir, std::path::PathBuf) {
    let dir = TempDir::new("cli-input");
    let file = workspace(&dir, "");
    dir.write(
        "sub/plan.yaml",
        "goal: g\nsteps:\n  - id: a\n    tool: echo\n",
    );
    (dir, file)
}

#[cfg(unix)]
#[test]
fn a_found_workspace_file_others_can_write_is_refused_unless_named() {
    use std::os::unix::fs::PermissionsExt;
    let (dir, file) = found_in_a_parent();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
    let sub = dir.path().join("sub");
    let refused = run(&sub, &["show", "plan.yaml"]);
    assert_bad(
        &refused,
        &[
            "agenthelm.yaml",
            "writable by others (mode 666)",
            "--config",
        ],
    );
    let config = file.to_str().unwrap();
    let named = run(&sub, &["--config", config, "show", "plan.yaml"]);
    assert_eq!(named.code, 0, "{}", named.all());
}

#[cfg(unix)]
#[test]
fn a_found_workspace_file_of_another_user_is_refused_unless_named() {
    use std::os::unix::fs::MetadataExt;
    let (dir, file) = found_in_a_parent();
    let me = std::fs::metadata(&file).unwrap().uid();
    if me != 0 {
        println!("not root: cannot give the file to another user, the owner check is not run");
        return;
    }
    std::os::unix::fs::chown(&file, Some(65534), None).unwrap();
    let sub = dir.path().join("sub");
    let refused = run(&sub, &["show", "plan.yaml"]);
    assert_bad(
        &refused,
        &[
            "agenthelm.yaml",
            "owned by user id 65534 (you are 0)",
            "--config",
        ],
    );
    let config = file.to_str().unwrap();
    let named = run(&sub, &["--config", config, "show", "plan.yaml"]);
    assert_eq!(named.code, 0, "{}", named.all());
}

#[test]
fn a_plan_with_no_steps_is_a_plan_problem() {
    let dir = TempDir::new("cli-input");
    workspace(&dir, "");
    for text in ["goal: g\n", "goal: g\nsteps: []\n"] {
        dir.write("empty.yaml", text);
        for args in [
            &["show", "empty.yaml"][..],
            &["execute", "empty.yaml", "--yes"],
        ] {
            let run = run(dir.path(), args);
            assert_bad(&run, &["empty.yaml", "`steps`: the plan has no steps"]);
        }
    }
}

#[test]
fn the_plan_table_names_the_default_agent() {
    let dir = TempDir::new("cli-input");
    workspace(&dir, "");
    dir.write(
        "plan.yaml",
        "goal: g\nsteps:\n  - id: a\n    tool: echo\n  - id: b\n    agent: worker\n    tool: echo\n",
    );
    let run = run(dir.path(), &["show", "plan.yaml"]);
    assert_eq!(run.code, 0, "{}", run.all());
    let row = |id: &str| {
        let row = run.stdout.lines().find(|l| l.contains(&format!(" {id} ")));
        row.unwrap_or_else(|| panic!("no row {id}: {}", run.stdout))
            .to_owned()
    };
    assert!(row("a").contains("worker (default)"), "{}", run.stdout);
    assert!(!row("b").contains("(default)"), "{}", run.stdout);
}

#[test]
fn a_timeout_below_a_millisecond_is_shown_in_microseconds() {
    let dir = TempDir::new("cli-input");
    workspace(
        &dir,
        "  hang:\n    command: [sleep, '5']\n    timeout: 0.0001\n",
    );
    dir.write("plan.yaml", "goal: g\nsteps:\n  - id: a\n    tool: hang\n");
    let config = dir
        .read("agenthelm.yaml")
        .replace("tools: [echo,", "tools: [hang, echo,");
    dir.write("agenthelm.yaml", &config);
    let run = run(dir.path(), &["execute", "plan.yaml", "--yes"]);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(run.all().contains("timed out after 100µs"), "{}", run.all());
    assert!(!run.all().contains("0.000s"), "{}", run.all());
}

/// Values the YAML parser would change in silence (issue 14): each an error naming file, line
/// and field, in plan files (YAML and JSON) and in the workspace file.
#[test]
fn numbers_tags_and_duplicate_keys_are_not_changed_in_silence() {
    let dir = TempDir::new("cli-input");
    workspace(&dir, "");
    let step = "goal: g\nsteps:\n  - id: a\n    tool: echo\n    args:\n";
    let cases = [
        (format!("{step}      n: 1e400\n"), "p.yaml:6: `steps[0].args.n`: number `1e400` is out of range"),
        (format!("{step}      n: .nan\n"), "p.yaml:6: `steps[0].args.n`: `.nan` is not a number"),
        (format!("{step}      n: -.inf\n"), "p.yaml:6: `steps[0].args.n`: `-.inf` is not a number"),
        (format!("{step}      n: 1\n      n: 2\n"), "p.yaml:7: `steps[0].args.n`: duplicate key `n`"),
        (
            format!("{step}      n: !!python/object:os.system x\n"),
            "p.yaml:6: `steps[0].args.n`: YAML tag `!!python/object:os.system` is not allowed",
        ),
        (
            "{\"goal\": \"g\",\n \"steps\": [{\"id\": \"a\", \"tool\": \"echo\",\n  \"args\": {\"n\": 1, \"n\": 2}}]}\n".to_owned(),
            "p.yaml:3: `steps[0].args.n`: duplicate key `n`",
        ),
    ];
    for (text, expected) in &cases {
        dir.write("p.yaml", text);
        for args in [&["show", "p.yaml"][..], &["execute", "p.yaml", "--dry-run"]] {
            assert_bad(&run(dir.path(), args), &[expected]);
        }
    }
    let config = dir.read("agenthelm.yaml");
    dir.write("p.yaml", "goal: g\nsteps:\n  - id: a\n    tool: echo\n");
    let tagged = config.replacen(
        "model: openai/test-model",
        "model: !!python/object:os.system openai/test-model",
        1,
    );
    dir.write("agenthelm.yaml", &tagged);
    let run_tagged = run(dir.path(), &["show", "p.yaml"]);
    assert_bad(
        &run_tagged,
        &["agenthelm.yaml:1: `model`: YAML tag `!!python/object:os.system`"],
    );
    let doubled = format!("{config}  echo2:\n    command: [x]\n    parameters: {{type: object, properties: {{a: {{type: string}}, a: {{type: number}}}}}}\n");
    dir.write("agenthelm.yaml", &doubled);
    let run_doubled = run(dir.path(), &["show", "p.yaml"]);
    assert_bad(
        &run_doubled,
        &[
            "agenthelm.yaml:",
            "`tools.echo2.parameters.properties.a`: duplicate key `a`",
        ],
    );
}

/// A timeout too large for a `Duration` used to panic (exit 101) in `show`, `--dry-run` and
/// `execute`; like `timeout: 0` it is bad input naming the line (issue 14).
#[test]
fn a_huge_timeout_is_bad_input_not_a_panic() {
    let dir = TempDir::new("cli-input");
    dir.write("plan.yaml", "goal: g\nsteps:\n  - id: a\n    tool: echo\n");
    for value in ["1.8e19", "18446744073709551616", "1e300", ".inf"] {
        workspace(
            &dir,
            &format!("  slow:\n    command: [x]\n    timeout: {value}\n"),
        );
        let line = dir
            .read("agenthelm.yaml")
            .lines()
            .position(|l| l.contains("timeout:"));
        let at = format!("agenthelm.yaml:{}: `tools.slow.timeout`", line.unwrap() + 1);
        for args in [
            &["show", "plan.yaml"][..],
            &["execute", "plan.yaml", "--dry-run"],
            &["execute", "plan.yaml", "--yes"],
        ] {
            assert_bad(&run(dir.path(), args), &[&at, "seconds"]);
        }
    }
    workspace(&dir, "");
    let config = dir.read("agenthelm.yaml");
    let mcp = "mcp_servers:\n  m:\n    command: [x]\n    startup_timeout: 1.8e19\n";
    dir.write("agenthelm.yaml", &format!("{config}{mcp}"));
    let run = run(dir.path(), &["show", "plan.yaml"]);
    assert_bad(&run, &["`mcp_servers.m.startup_timeout`", "up to 1e9"]);
}
