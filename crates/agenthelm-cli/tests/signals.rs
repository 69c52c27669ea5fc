//! SIGTERM and SIGHUP (a service manager stopping the service, a closed terminal) suspend a run:
//! no new step starts, running steps get their grace period and are then stopped with their
//! process groups, nothing is rolled back, and `agenthelm resume` finishes the run.

mod common;
use agenthelm_test_support::stops_running;
use common::*;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// `slow` hangs on its first call (writing its pid to `slow.pid`) and answers at once on the
/// next; `mark` leaves a file behind, so the test sees whether it ran.
const WORKSPACE: &str = r#"
tools:
  slow:
    command: [sh, -c, "if [ -e slow.done ]; then echo '{\"slow\": true}'; else touch slow.done; echo $$ > slow.pid; exec sleep 1000; fi"]
  mark:
    command: [sh, -c, "touch marked; echo '{\"marked\": true}'"]
"#;

const PLAN: &str = r#"goal: a slow step, then a quick one
steps:
  - {id: a, tool: slow, args: {}}
  - {id: b, tool: mark, args: {}, depends_on: [a]}
"#;

/// Waits (generously) until `path` exists and returns its contents.
fn wait_for_file(path: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(text) = std::fs::read_to_string(path) {
            if text.ends_with('\n') {
                return text;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{} never appeared", path.display());
}

fn suspends_and_resumes(signal: libc::c_int, name: &str, code: i32) {
    let dir = TempDir::new("cli-signals");
    dir.write("agenthelm.yaml", WORKSPACE);
    dir.write("plan.yaml", PLAN);
    let child = agenthelm(dir.path())
        .args(["execute", "plan.yaml", "--yes"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let tool: u32 = wait_for_file(&dir.path().join("slow.pid"))
        .trim()
        .parse()
        .unwrap();
    let agenthelm_pid = i32::try_from(child.id()).unwrap();
    // SAFETY: kill(2) on our own child process.
    assert_eq!(unsafe { libc::kill(agenthelm_pid, signal) }, 0);
    let stopped = output(child.wait_with_output().unwrap());
    assert_eq!(stopped.code, code, "{}", stopped.all());
    assert!(stopped.stderr.contains(name), "{}", stopped.all());
    // The running tool was stopped with its group, and the next step never started.
    assert!(stops_running(tool), "tool {tool} still runs after {name}");
    assert!(!dir.path().join("marked").exists(), "{}", stopped.all());
    // The command says how to go on.
    let run_id = stopped
        .stderr
        .split("agenthelm resume ")
        .nth(1)
        .and_then(|rest| rest.split(['`', ' ', '\n']).next())
        .unwrap_or_else(|| panic!("no resume line: {}", stopped.all()))
        .to_owned();
    let listed = run(dir.path(), &["runs", "list"]);
    assert!(
        listed.stdout.contains(&run_id) && listed.stdout.contains("unfinished"),
        "{}",
        listed.all()
    );
    // Nothing was rolled back: resume runs the stopped step again, then the rest.
    let resumed = run(dir.path(), &["resume", &run_id]);
    assert_eq!(resumed.code, 0, "{}", resumed.all());
    assert!(dir.path().join("marked").exists(), "{}", resumed.all());
}

#[test]
fn sigterm_suspends_the_run_and_resume_finishes_it() {
    suspends_and_resumes(libc::SIGTERM, "SIGTERM", 143);
}

#[test]
fn sighup_suspends_the_run_and_resume_finishes_it() {
    suspends_and_resumes(libc::SIGHUP, "SIGHUP", 129);
}
