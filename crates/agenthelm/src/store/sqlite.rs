//! The embedded SQLite run store.

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use super::claim::ClaimRecord;
use super::{
    Claim, Durability, EventFilter, Lease, Owner, RunStore, RunSummary, StoreError, StoredRun,
};
use crate::plan::Plan;
use crate::trace::Event;

/// Marks the file as ours (`PRAGMA application_id`): "AHLM".
const APPLICATION_ID: i64 = 0x4148_4C4D;

/// Schema migrations, in order; the database's `user_version` is how many have been applied.
const MIGRATIONS: &[&str] = &[
    r#"
    CREATE TABLE runs (
        run_id      TEXT PRIMARY KEY,
        goal        TEXT NOT NULL,
        steps       INTEGER NOT NULL,
        plan        TEXT NOT NULL,
        started_ms  INTEGER NOT NULL,
        finished_ms INTEGER,
        success     INTEGER,
        error       TEXT
    );
    CREATE TABLE events (
        id           INTEGER PRIMARY KEY,
        run_id       TEXT,
        timestamp_ms INTEGER NOT NULL,
        kind         TEXT NOT NULL,
        step_id      TEXT,
        agent        TEXT,
        tool         TEXT,
        success      INTEGER,
        duration_ms  REAL,
        body         TEXT NOT NULL
    );
    CREATE INDEX events_by_run ON events (run_id, id);
"#,
    r#"
    CREATE TABLE claims (
        run_id       TEXT PRIMARY KEY,
        host         TEXT NOT NULL,
        pid          INTEGER NOT NULL,
        token        TEXT NOT NULL,
        heartbeat_ms INTEGER NOT NULL
    );
"#,
];
// One index only: every extra index is another page written per event, and trace queries over
// time or tool scan fast enough at the sizes a workstation keeps.

/// How long a statement waits for another process holding the database (creating it, migrating
/// it, or writing its events) before it fails.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A run store in one SQLite database file (WAL mode, owner-only permissions).
///
/// Writes use `synchronous = NORMAL`: a committed event survives a crash of the process (the
/// case resume is for); an operating-system crash or power loss may lose the last events.
/// [`with_durability`](Self::with_durability)`(Durability::Full)` keeps them through a power
/// loss too.
///
/// ```
/// use agenthelm::store::{RunStore, SqliteStore};
/// use agenthelm::Plan;
///
/// let dir = std::env::temp_dir().join(format!("agenthelm-doc-{}", std::process::id()));
/// let store = SqliteStore::open(dir.join("runs.db"))?;
/// store.begin_run("run-1", &Plan::new("demo"))?;
/// assert_eq!(store.list_runs(10)?[0].goal, "demo");
/// # std::fs::remove_dir_all(&dir).ok();
/// # Ok::<(), agenthelm::store::StoreError>(())
/// ```
#[derive(Debug)]
pub struct SqliteStore {
    path: PathBuf,
    // Shared with the claims taken through this store, which release themselves when dropped.
    connection: Arc<Mutex<Connection>>,
}

impl SqliteStore {
    /// Opens the database at `path`, creating it (and its folder, owner-only) when missing and
    /// bringing its schema up to date.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        create_private(&path)?;
        let connection = Connection::open(&path).map_err(|e| io(&path, e))?;
        let store = SqliteStore {
            connection: Arc::new(Mutex::new(connection)),
            path,
        };
        store.prepare()?;
        Ok(store)
    }

    /// Sets how hard writes work to last (see [`Durability`]).
    pub fn with_durability(self, durability: Durability) -> Result<Self, StoreError> {
        let level = match durability {
            Durability::Normal => "NORMAL",
            Durability::Full => "FULL",
        };
        self.lock()
            .pragma_update(None, "synchronous", level)
            .map_err(|e| io(&self.path, e))?;
        Ok(self)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Checks the file is ours and brings its schema up to date. Several processes may open a
    /// fresh store at once: everything is read and written in one `BEGIN IMMEDIATE` transaction
    /// (the others wait for it, up to the busy timeout), so no one sees a half-made store or
    /// runs a migration twice.
    fn prepare(&self) -> Result<(), StoreError> {
        let mut db = self.lock();
        let path = &self.path;
        let corrupt = |e: rusqlite::Error| classify(path, e);
        // First: every statement below waits for a process creating the store, not fails.
        db.busy_timeout(BUSY_TIMEOUT).map_err(corrupt)?;
        let tx = db
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(corrupt)?;
        let version = checked_version(&tx, path)?;
        for migration in &MIGRATIONS[version as usize..] {
            tx.execute_batch(migration).map_err(corrupt)?;
        }
        tx.pragma_update(None, "application_id", APPLICATION_ID)
            .map_err(corrupt)?;
        tx.pragma_update(None, "user_version", MIGRATIONS.len() as i64)
            .map_err(corrupt)?;
        tx.commit().map_err(corrupt)?;
        // After the check: a database of another program is never switched to WAL.
        switch_to_wal(&db, path)?;
        db.pragma_update(None, "synchronous", "NORMAL")
            .map_err(corrupt)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        lock(&self.connection)
    }

    fn err(&self, e: impl std::fmt::Display) -> StoreError {
        io(&self.path, e)
    }
}

impl RunStore for SqliteStore {
    fn begin_run(&self, run_id: &str, plan: &Plan) -> Result<(), StoreError> {
        let body = serde_json::to_string(plan).map_err(|e| self.err(e))?;
        let inserted = self
            .lock()
            .execute(
                "INSERT OR IGNORE INTO runs (run_id, goal, steps, plan, started_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![run_id, plan.goal, plan.steps.len() as i64, body, crate::trace::now_ms() as i64],
            )
            .map_err(|e| self.err(e))?;
        if inserted == 0 {
            return Err(StoreError::DuplicateRun(run_id.to_owned()));
        }
        Ok(())
    }

    fn append(&self, event: &Event) -> Result<(), StoreError> {
        self.append_batch(std::slice::from_ref(event))
    }

    fn append_batch(&self, events: &[Event]) -> Result<(), StoreError> {
        let mut db = self.lock();
        let tx = db.transaction().map_err(|e| self.err(e))?;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO events (run_id, timestamp_ms, kind, step_id, agent, tool, success, duration_ms, body)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )
                .map_err(|e| self.err(e))?;
            for event in events {
                let body = serde_json::to_string(event).map_err(|e| self.err(e))?;
                let kind = &event.kind;
                insert
                    .execute(params![
                        event.run_id.as_deref(),
                        event.timestamp_ms as i64,
                        kind.name(),
                        event.step_id.as_deref(),
                        event.agent.as_deref(),
                        kind.tool(),
                        kind.succeeded(),
                        kind.duration_ms(),
                        body
                    ])
                    .map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }

    fn prune(&self, before_ms: u64, keep_failed: bool) -> Result<Vec<String>, StoreError> {
        let mut db = self.lock();
        let tx = db
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.err(e))?;
        let ids: Vec<String> = {
            let mut select = tx
                .prepare(
                    "SELECT run_id FROM runs WHERE finished_ms IS NOT NULL AND finished_ms < ?1
                     AND (success = 1 OR ?2 = 0)",
                )
                .map_err(|e| self.err(e))?;
            let rows = select
                .query_map(params![before_ms as i64, keep_failed], |r| r.get(0))
                .map_err(|e| self.err(e))?;
            rows.collect::<Result<_, _>>().map_err(|e| self.err(e))?
        };
        for id in &ids {
            for table in ["events", "claims", "runs"] {
                tx.execute(&format!("DELETE FROM {table} WHERE run_id = ?1"), [id])
                    .map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))?;
        if !ids.is_empty() {
            // Gives the freed pages back to the file system.
            db.execute_batch("VACUUM; PRAGMA wal_checkpoint(TRUNCATE);")
                .map_err(|e| self.err(e))?;
        }
        Ok(ids)
    }

    fn size_on_disk(&self) -> Option<u64> {
        let size = |path: &Path| std::fs::metadata(path).map_or(0, |m| m.len());
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        Some(size(&self.path) + size(Path::new(&wal)))
    }

    fn revise_plan(&self, run_id: &str, plan: &Plan) -> Result<(), StoreError> {
        let text = serde_json::to_string(plan).map_err(|e| self.err(e))?;
        let changed = self
            .lock()
            .execute(
                "UPDATE runs SET plan = ?2, goal = ?3, steps = ?4 WHERE run_id = ?1",
                params![run_id, text, plan.goal, plan.steps.len() as i64],
            )
            .map_err(|e| self.err(e))?;
        if changed == 0 {
            return Err(StoreError::UnknownRun(run_id.to_owned()));
        }
        Ok(())
    }

    fn finish_run(
        &self,
        run_id: &str,
        success: bool,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        self.lock()
            .execute(
                "UPDATE runs SET finished_ms = ?2, success = ?3, error = ?4 WHERE run_id = ?1",
                params![run_id, crate::trace::now_ms() as i64, success, error],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    fn load_run(&self, run_id: &str) -> Result<StoredRun, StoreError> {
        self.load(run_id, false)
    }

    fn load_run_outline(&self, run_id: &str) -> Result<StoredRun, StoreError> {
        self.load(run_id, true)
    }

    fn list_runs(&self, limit: usize) -> Result<Vec<RunSummary>, StoreError> {
        let db = self.lock();
        let mut select = db
            .prepare(
                "SELECT run_id, goal, steps, started_ms, finished_ms, success, error FROM runs
                 ORDER BY started_ms DESC, rowid DESC LIMIT ?1",
            )
            .map_err(|e| self.err(e))?;
        let rows = select
            .query_map([limit.min(i64::MAX as usize) as i64], |r| {
                summary_from(r.get(0)?, r, 1)
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    fn claim_run(&self, run_id: &str, owner: &Owner) -> Result<Claim, StoreError> {
        let record = ClaimRecord::new(owner);
        let mut db = self.lock();
        // Immediate: no other claimant reads the row between our check and our write.
        let tx = db
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.err(e))?;
        let held = tx
            .query_row(
                "SELECT host, pid, token, heartbeat_ms FROM claims WHERE run_id = ?1",
                [run_id],
                |r| {
                    Ok(ClaimRecord {
                        owner: Owner {
                            host: r.get(0)?,
                            pid: r.get(1)?,
                        },
                        token: r.get(2)?,
                        heartbeat_ms: r.get::<_, i64>(3)? as u64,
                    })
                },
            )
            .optional()
            .map_err(|e| self.err(e))?;
        ClaimRecord::may_take(held.as_ref(), run_id)?;
        tx.execute(
            "INSERT OR REPLACE INTO claims (run_id, host, pid, token, heartbeat_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![run_id, record.owner.host, record.owner.pid, record.token, record.heartbeat_ms as i64],
        )
        .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(Claim::new(SqliteLease {
            connection: Arc::clone(&self.connection),
            path: self.path.clone(),
            run_id: run_id.to_owned(),
            token: record.token,
        }))
    }

    fn query(&self, filter: &EventFilter) -> Result<Vec<Event>, StoreError> {
        // The indexed columns narrow the search; `matches` applies the whole filter.
        let db = self.lock();
        let mut select = db
            .prepare(
                "SELECT body FROM events
                 WHERE (?1 IS NULL OR run_id = ?1) AND (?2 IS NULL OR tool = ?2)
                   AND (?3 IS NULL OR timestamp_ms >= ?3) AND (?4 IS NULL OR timestamp_ms <= ?4)
                 ORDER BY id",
            )
            .map_err(|e| self.err(e))?;
        let rows = select
            .query_map(
                params![
                    filter.run_id.as_deref(),
                    filter.tool.as_deref(),
                    filter.since_ms.map(|t| t as i64),
                    filter.until_ms.map(|t| t as i64)
                ],
                |r| r.get::<_, String>(0),
            )
            .map_err(|e| self.err(e))?;
        let mut events = Vec::new();
        for body in rows {
            let body = body.map_err(|e| self.err(e))?;
            let event: Event =
                serde_json::from_str(&body).map_err(|e| self.damaged("(query)", e))?;
            if filter.matches(&event) {
                events.push(event);
            }
        }
        if let Some(limit) = filter.limit {
            let skip = events.len().saturating_sub(limit);
            events.drain(..skip);
        }
        Ok(events)
    }
}

impl SqliteStore {
    /// A run; with `outline`, each event without its payloads (see
    /// [`RunStore::load_run_outline`]), dropped row by row.
    fn load(&self, run_id: &str, outline: bool) -> Result<StoredRun, StoreError> {
        let db = self.lock();
        let row = db
            .query_row(
                "SELECT plan, goal, steps, started_ms, finished_ms, success, error FROM runs WHERE run_id = ?1",
                [run_id],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        summary_from(run_id.to_owned(), r, 1)?,
                    ))
                },
            )
            .optional()
            .map_err(|e| self.err(e))?;
        let Some((plan, summary)) = row else {
            return Err(StoreError::UnknownRun(run_id.to_owned()));
        };
        let plan: Plan = serde_json::from_str(&plan).map_err(|e| self.damaged(run_id, e))?;
        let mut select = db
            .prepare("SELECT body FROM events WHERE run_id = ?1 ORDER BY id")
            .map_err(|e| self.err(e))?;
        let mut rows = select.query([run_id]).map_err(|e| self.err(e))?;
        let mut events = Vec::new();
        while let Some(row) = rows.next().map_err(|e| self.err(e))? {
            // Parsed where SQLite holds it: a body of megabytes is not copied first.
            let body = row.get_ref(0).map_err(|e| self.err(e))?;
            let body = body.as_bytes().map_err(|e| self.damaged(run_id, e))?;
            let mut event: Event =
                serde_json::from_slice(body).map_err(|e| self.damaged(run_id, e))?;
            if outline {
                event.kind.strip_payloads();
            }
            events.push(event);
        }
        Ok(StoredRun {
            summary,
            plan,
            events,
        })
    }

    fn damaged(&self, run_id: &str, e: impl std::fmt::Display) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            message: format!("run `{run_id}` has a record that cannot be read: {e}"),
        }
    }
}

/// Puts the database in WAL mode (a no-op once it is). The switch upgrades a read lock to an
/// exclusive one; while another process opening the store holds its write lock, SQLite answers
/// "busy" at once instead of waiting (waiting could deadlock), so the switch is tried again until
/// the busy timeout.
fn switch_to_wal(db: &Connection, path: &Path) -> Result<(), StoreError> {
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        match db.pragma_update(None, "journal_mode", "WAL") {
            Ok(()) => return Ok(()),
            Err(e)
                if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy)
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(e) => return Err(classify(path, e)),
        }
    }
}

/// The schema version of a database that is ours (or empty); an error for a database of another
/// program or one made by a newer version.
fn checked_version(db: &Connection, path: &Path) -> Result<i64, StoreError> {
    let corrupt = |e: rusqlite::Error| classify(path, e);
    let read = |sql: &str| {
        db.query_row(sql, [], |r| r.get::<_, i64>(0))
            .map_err(corrupt)
    };
    let app_id = read("PRAGMA application_id")?;
    let version = read("PRAGMA user_version")?;
    let tables = read("SELECT count(*) FROM sqlite_master")?;
    if app_id != APPLICATION_ID && (app_id != 0 || tables > 0) {
        return Err(StoreError::Corrupt {
            path: path.to_path_buf(),
            message: "it is a SQLite database of another program".into(),
        });
    }
    let supported = MIGRATIONS.len() as i64;
    if version > supported {
        return Err(StoreError::TooNew {
            path: path.to_path_buf(),
            found: version,
            supported,
        });
    }
    Ok(version)
}

/// A claim row of this store; deleted when dropped.
struct SqliteLease {
    connection: Arc<Mutex<Connection>>,
    path: PathBuf,
    run_id: String,
    token: String,
}

impl Lease for SqliteLease {
    fn refresh(&self) -> Result<(), StoreError> {
        let updated = lock(&self.connection)
            .execute(
                "UPDATE claims SET heartbeat_ms = ?3 WHERE run_id = ?1 AND token = ?2",
                params![self.run_id, self.token, crate::trace::now_ms() as i64],
            )
            .map_err(|e| io(&self.path, e))?;
        match updated {
            0 => Err(StoreError::ClaimLost(self.run_id.clone())),
            _ => Ok(()),
        }
    }
}

impl Drop for SqliteLease {
    fn drop(&mut self) {
        // A row left behind (the store failed) names this process: once it has ended, the
        // next claimant takes the run over.
        let _ = lock(&self.connection).execute(
            "DELETE FROM claims WHERE run_id = ?1 AND token = ?2",
            params![self.run_id, self.token],
        );
    }
}

fn lock(connection: &Mutex<Connection>) -> std::sync::MutexGuard<'_, Connection> {
    connection.lock().unwrap_or_else(PoisonError::into_inner)
}

fn summary_from(
    run_id: String,
    r: &rusqlite::Row<'_>,
    from: usize,
) -> rusqlite::Result<RunSummary> {
    Ok(RunSummary {
        run_id,
        goal: r.get(from)?,
        steps: r.get::<_, i64>(from + 1)? as usize,
        started_ms: r.get::<_, i64>(from + 2)? as u64,
        finished_ms: r.get::<_, Option<i64>>(from + 3)?.map(|t| t as u64),
        success: r.get(from + 4)?,
        error: r.get(from + 5)?,
    })
}

fn io(path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// "file is not a database" and its kin mean damage, not a passing I/O problem.
fn classify(path: &Path, e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode;
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => StoreError::Corrupt {
            path: path.to_path_buf(),
            message: e.to_string(),
        },
        _ => io(path, e),
    }
}

/// Creates the folder (0700) and the file (0600) if missing, so runs are private from the start.
fn create_private(path: &Path) -> Result<(), StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            let mut builder = std::fs::DirBuilder::new();
            builder.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
            builder.create(dir).map_err(|e| io(dir, e))?;
        }
    }
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).map(drop).map_err(|e| io(path, e))
}
