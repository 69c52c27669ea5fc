//! A throwaway PostgreSQL server for the PostgreSQL run store's tests: its own data folder under
//! the temp dir, a free loopback port, `fsync` on (what durability tests need), stopped when
//! dropped or when the test process ends.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The database user the server is made with (trusted on loopback: no password).
const USER: &str = "agenthelm";

/// A PostgreSQL server in a temp folder, on a free loopback port; stopped and removed when
/// dropped.
#[derive(Debug)]
pub struct PgServer {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    server: Child,
}

impl PgServer {
    /// Starts a server, or says why it cannot (no PostgreSQL binaries): the caller skips.
    pub fn start() -> Result<PgServer, String> {
        let bin = find_bin().ok_or_else(|| {
            "PostgreSQL is not installed (no initdb on PATH or in /usr/lib/postgresql/*/bin); \
             scripts/test installs it"
                .to_owned()
        })?;
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "agenthelm-pg-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the server's folder");
        // PostgreSQL refuses to run as root: as root, the folder and server belong to `postgres`.
        let as_postgres = is_root();
        if as_postgres {
            run(Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir));
        }
        let data = dir.join("data");
        let mut initdb = command(&bin, "initdb", as_postgres);
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", USER, "--auth=trust", "-E", "UTF8", "--no-sync"]);
        run(&mut initdb);
        let port = free_port();
        let server = spawn_server(&bin, &dir, port);
        let pg = PgServer {
            bin,
            dir,
            port,
            server,
        };
        pg.wait_ready();
        Ok(pg)
    }

    /// One server for the whole test binary, started on first use (tests that stop or kill a
    /// server start their own).
    pub fn shared() -> Result<&'static PgServer, String> {
        static SHARED: OnceLock<Result<PgServer, String>> = OnceLock::new();
        SHARED
            .get_or_init(PgServer::start)
            .as_ref()
            .map_err(Clone::clone)
    }

    /// A new empty database on this server; returns its URL.
    pub fn database(&self) -> String {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "t{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let mut createdb = command(&self.bin, "createdb", false);
        createdb.args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            USER,
            &name,
        ]);
        run(&mut createdb);
        self.url(&name)
    }

    /// The URL of database `name` on this server.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{name}", self.port)
    }

    /// Runs `sql` in database `name` with `psql` (stops the test when it fails).
    pub fn psql(&self, name: &str, sql: &str) {
        let mut psql = command(&self.bin, "psql", false);
        psql.args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", USER])
            .args(["-v", "ON_ERROR_STOP=1", "-q", "-d", name, "-c", sql]);
        run(&mut psql);
    }

    /// The port it listens on (loopback).
    pub fn port(&self) -> u16 {
        self.port
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let answer = command(&self.bin, "pg_isready", false)
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", USER])
                .output();
            if answer.as_ref().is_ok_and(|o| o.status.success()) {
                return;
            }
            let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
            assert!(
                Instant::now() < deadline,
                "postgres did not start ({answer:?}):\n{log}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl PgServer {
    /// Stops the server (a fast shutdown: connections are cut), keeping its data.
    pub fn stop(&mut self) {
        // SIGINT: a fast shutdown (the postmaster's children end too), then the hard way.
        let _ = Command::new("kill")
            .args(["-INT", &self.server.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.server.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.server.kill();
        let _ = self.server.wait();
    }

    /// Starts the stopped server again, on the same port with the same data.
    pub fn restart(&mut self) {
        self.server = spawn_server(&self.bin, &self.dir, self.port);
        self.wait_ready();
    }
}

/// The postmaster on `port`, data and socket in `dir`, log in `dir/server.log`.
fn spawn_server(bin: &Path, dir: &Path, port: u16) -> Child {
    let mut postgres = command(bin, "postgres", is_root());
    postgres
        .arg("-D")
        .arg(dir.join("data"))
        .args(["-p", &port.to_string(), "-k"])
        .arg(dir)
        .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=on"])
        .stdout(Stdio::null())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join("server.log"))
                .map(Stdio::from)
                .unwrap_or_else(|_| Stdio::null()),
        );
    let server = postgres.spawn().expect("start postgres");
    stop_with_this_process(server.id(), dir);
    server
}

/// `initdb`, `postgres`, ... from PATH or Debian's /usr/lib/postgresql/*/bin (newest first).
fn find_bin() -> Option<PathBuf> {
    // A PATH entry may be a link into the real folder (which also has createdb, psql, ...).
    let complete = |dir: &Path| {
        ["initdb", "postgres", "pg_isready", "createdb", "psql"]
            .iter()
            .all(|p| dir.join(p).is_file())
    };
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .filter_map(|dir| std::fs::canonicalize(dir.join("initdb")).ok())
            .filter_map(|initdb| initdb.parent().map(Path::to_path_buf))
            .find(|dir| complete(dir))
    });
    on_path.or_else(|| {
        let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|bin| complete(bin))
            .collect();
        versions.sort_by_key(|bin| {
            bin.parent()
                .and_then(Path::file_name)
                .and_then(|v| v.to_str()?.parse::<u32>().ok())
                .unwrap_or(0)
        });
        versions.pop()
    })
}

/// `program` from `bin`, run as the `postgres` user when `as_postgres` (`setpriv` execs it, so
/// the child's pid is the program's).
fn command(bin: &Path, program: &str, as_postgres: bool) -> Command {
    if as_postgres {
        let mut command = Command::new("setpriv");
        command
            .args([
                "--reuid=postgres",
                "--regid=postgres",
                "--init-groups",
                "--",
            ])
            .arg(bin.join(program));
        command
    } else {
        Command::new(bin.join(program))
    }
}

fn run(command: &mut Command) {
    let output = command.output().expect("run a PostgreSQL program");
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A shared server is a static, never dropped: a watchdog stops it once this process ends.
pub(crate) fn stop_with_this_process(server: u32, dir: &Path) {
    let script = format!(
        "while kill -0 {} 2>/dev/null; do sleep 0.5; done; kill -INT {server} 2>/dev/null; \
         while kill -0 {server} 2>/dev/null; do sleep 0.2; done; rm -rf '{}'",
        std::process::id(),
        dir.display()
    );
    let _ = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}
