use std::time::{Duration, Instant};

/// The process id a test's tool wrote to `file` (surrounding whitespace ignored).
pub fn pid_in(file: impl AsRef<std::path::Path>) -> u32 {
    let file = file.as_ref();
    let text = std::fs::read_to_string(file)
        .unwrap_or_else(|e| panic!("cannot read the pid file {}: {e}", file.display()));
    text.trim()
        .parse()
        .unwrap_or_else(|e| panic!("{} holds `{text}`, not a pid: {e}", file.display()))
}

/// Whether process `pid` is running: it exists and is not a zombie (Linux `/proc`).
pub fn is_running(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the command name, which is in parentheses and may contain spaces.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    state.is_some_and(|s| s != "Z")
}

/// Whether process `pid` stops running within about ten seconds: a killed process takes the
/// kernel a moment to wind down. This bounds a wait; it is not a timing assertion.
pub fn stops_running(pid: u32) -> bool {
    stops_running_within(pid, Duration::from_secs(10))
}

/// Whether process `pid` stops running within `limit` (checked every 25 ms, and once more at
/// the end), for waits that need a more generous bound than [`stops_running`].
pub fn stops_running_within(pid: u32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if !is_running(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    !is_running(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pid_is_read_from_its_file() {
        let file = std::env::temp_dir().join(format!("agenthelm-pid-{}", std::process::id()));
        std::fs::write(&file, " 4242\n").unwrap();
        assert_eq!(pid_in(&file), 4242);
        std::fs::remove_file(file).unwrap();
    }

    #[test]
    fn a_killed_child_stops_running_and_this_process_runs() {
        assert!(is_running(std::process::id()));
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        assert!(is_running(child.id()));
        child.kill().unwrap();
        // Not reaped yet: a zombie counts as stopped.
        assert!(stops_running(child.id()));
        child.wait().unwrap();
        assert!(!is_running(child.id()));
    }

    #[test]
    fn a_running_process_does_not_stop_within_a_short_limit() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        assert!(!stops_running_within(
            child.id(),
            Duration::from_millis(100)
        ));
        child.kill().unwrap();
        assert!(stops_running_within(child.id(), Duration::from_secs(10)));
        child.wait().unwrap();
    }
}
