use std::time::Duration;

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
    for _ in 0..400 {
        if !is_running(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
