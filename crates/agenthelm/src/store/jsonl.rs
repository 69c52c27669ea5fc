//! The JSON-lines run store: one file per run, one JSON object per line.

use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use super::claim::ClaimRecord;
use super::{
    Claim, Durability, EventFilter, Lease, Owner, RunStore, RunSummary, StoreError, StoredRun,
};
use crate::plan::Plan;
use crate::trace::{now_ms, Event};

/// A run store in a folder: `<run_id>.jsonl` per run. The first line holds the plan, each later
/// line an event or the run's end. Easy to read with any tool; queries scan the files. A run's
/// claim (see [`RunStore::claim_run`]) is `<run_id>.claim`, its owner as JSON, read and written
/// only under an exclusive lock of `.claims.lock`.
///
/// ```
/// use agenthelm::store::{JsonlStore, RunStore};
/// use agenthelm::Plan;
///
/// let dir = std::env::temp_dir().join(format!("agenthelm-jsonl-doc-{}", std::process::id()));
/// let store = JsonlStore::open(&dir)?;
/// store.begin_run("run-1", &Plan::new("demo"))?;
/// assert_eq!(store.load_run("run-1")?.plan.goal, "demo");
/// # std::fs::remove_dir_all(&dir).ok();
/// # Ok::<(), agenthelm::store::StoreError>(())
/// ```
#[derive(Debug)]
pub struct JsonlStore {
    dir: PathBuf,
    // One writer at a time keeps lines whole.
    write: Mutex<()>,
    durability: Durability,
}

/// A line as read.
#[derive(Deserialize)]
#[serde(tag = "record", rename_all = "snake_case")]
enum Line {
    Run {
        run_id: String,
        started_ms: u64,
        plan: Plan,
    },
    Event {
        #[serde(flatten)]
        event: Event,
    },
    Finished {
        finished_ms: u64,
        success: bool,
        #[serde(default)]
        error: Option<String>,
    },
}

/// A line to write, borrowing what it holds (an event may hold megabytes).
#[derive(Serialize)]
#[serde(tag = "record", rename_all = "snake_case")]
enum LineOut<'a> {
    Run {
        run_id: &'a str,
        started_ms: u64,
        plan: &'a Plan,
    },
    Event {
        #[serde(flatten)]
        event: &'a Event,
    },
    Finished {
        finished_ms: u64,
        success: bool,
        error: Option<&'a str>,
    },
}

/// How far from its end a run file is searched for its last line when runs are listed.
const TAIL: u64 = 1 << 20;

impl JsonlStore {
    /// Uses `dir` (created owner-only when missing).
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        let dir = dir.as_ref().to_path_buf();
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(&dir).map_err(|e| io(&dir, e))?;
        Ok(JsonlStore {
            dir,
            write: Mutex::new(()),
            durability: Durability::Normal,
        })
    }

    /// Sets how hard writes work to last: with [`Durability::Full`] each write is `fsync`ed.
    pub fn with_durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    fn file(&self, run_id: &str) -> Result<PathBuf, StoreError> {
        let safe = !run_id.is_empty()
            && run_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && !run_id.starts_with('.');
        if !safe {
            return Err(StoreError::Backend(format!(
                "run id `{run_id}` cannot be a file name (letters, digits, - _ . only)"
            )));
        }
        Ok(self.dir.join(format!("{run_id}.jsonl")))
    }

    fn claim_file(&self, run_id: &str) -> Result<PathBuf, StoreError> {
        Ok(self.file(run_id)?.with_extension("claim"))
    }

    fn write_line(&self, path: &Path, line: &LineOut, create: bool) -> Result<(), StoreError> {
        self.write_lines(path, std::slice::from_ref(line), create)
    }

    fn write_lines(&self, path: &Path, lines: &[LineOut], create: bool) -> Result<(), StoreError> {
        let mut text = String::new();
        for line in lines {
            text.push_str(&serde_json::to_string(line).map_err(|e| io(path, e))?);
            text.push('\n');
        }
        let _one_writer = self.write.lock().unwrap_or_else(PoisonError::into_inner);
        let mut options = OpenOptions::new();
        options.append(true);
        if create {
            options.create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        }
        let mut file = options.open(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => StoreError::DuplicateRun(stem(path)),
            std::io::ErrorKind::NotFound => StoreError::UnknownRun(stem(path)),
            _ => io(path, e),
        })?;
        // One write call per batch: appends of whole lines do not interleave.
        file.write_all(text.as_bytes()).map_err(|e| io(path, e))?;
        if self.durability == Durability::Full {
            file.sync_data().map_err(|e| io(path, e))?;
        }
        Ok(())
    }

    /// The whole run in `path`; with `outline`, each event without its payloads (see
    /// [`RunStore::load_run_outline`]), dropped line by line.
    fn read(
        &self,
        path: &Path,
        outline: bool,
    ) -> Result<(RunSummary, Plan, Vec<Event>), StoreError> {
        let file = File::open(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => StoreError::UnknownRun(stem(path)),
            _ => io(path, e),
        })?;
        let mut header: Option<(RunSummary, Plan)> = None;
        let mut events = Vec::new();
        for (n, line) in BufReader::new(file).lines().enumerate() {
            let line = line.map_err(|e| io(path, e))?;
            if line.trim().is_empty() {
                continue;
            }
            let parsed: Line = match serde_json::from_str(&line) {
                Ok(parsed) => parsed,
                // A crash can cut the last line short; everything before it is intact.
                Err(e) if e.is_eof() => break,
                Err(e) => {
                    return Err(StoreError::Corrupt {
                        path: path.to_path_buf(),
                        message: format!("line {}: {e}", n + 1),
                    })
                }
            };
            match (parsed, &mut header) {
                (
                    Line::Run {
                        run_id,
                        started_ms,
                        plan,
                    },
                    None,
                ) => {
                    let summary = RunSummary {
                        run_id,
                        goal: plan.goal.clone(),
                        steps: plan.steps.len(),
                        started_ms,
                        finished_ms: None,
                        success: None,
                        error: None,
                    };
                    header = Some((summary, plan));
                }
                (Line::Event { mut event }, Some(_)) => {
                    if outline {
                        event.kind.strip_payloads();
                    }
                    events.push(event);
                }
                (
                    Line::Finished {
                        finished_ms,
                        success,
                        error,
                    },
                    Some((summary, _)),
                ) => {
                    summary.finished_ms = Some(finished_ms);
                    summary.success = Some(success);
                    summary.error = error;
                }
                _ => {
                    return Err(StoreError::Corrupt {
                        path: path.to_path_buf(),
                        message: format!(
                            "line {}: out of place (the first line must hold the run)",
                            n + 1
                        ),
                    })
                }
            }
        }
        let (summary, plan) = header.ok_or_else(|| StoreError::Corrupt {
            path: path.to_path_buf(),
            message: "empty run file".into(),
        })?;
        Ok((summary, plan, events))
    }

    /// The summary of the run in `path`, from its first line and its last: a listing does not
    /// read the events between.
    fn summary(&self, path: &Path) -> Result<RunSummary, StoreError> {
        let mut file = File::open(path).map_err(|e| io(path, e))?;
        let mut first = String::new();
        BufReader::new(&mut file)
            .read_line(&mut first)
            .map_err(|e| io(path, e))?;
        let mut summary = match serde_json::from_str(&first) {
            Ok(Line::Run {
                run_id,
                started_ms,
                plan,
            }) => RunSummary {
                run_id,
                goal: plan.goal,
                steps: plan.steps.len(),
                started_ms,
                finished_ms: None,
                success: None,
                error: None,
            },
            // Not a run's first line: the full read names what is wrong.
            _ => return self.read(path, true).map(|(summary, ..)| summary),
        };
        let Some(last) = last_line(&mut file).map_err(|e| io(path, e))? else {
            // The last line is longer than the tail searched: only the full read can tell.
            return self.read(path, true).map(|(summary, ..)| summary);
        };
        if let Ok(Line::Finished {
            finished_ms,
            success,
            error,
        }) = serde_json::from_str(&last)
        {
            summary.finished_ms = Some(finished_ms);
            summary.success = Some(success);
            summary.error = error;
        }
        Ok(summary)
    }

    fn run_files(&self) -> Result<Vec<PathBuf>, StoreError> {
        let entries = std::fs::read_dir(&self.dir).map_err(|e| io(&self.dir, e))?;
        let mut files = Vec::new();
        for entry in entries {
            let path = entry.map_err(|e| io(&self.dir, e))?.path();
            if path.extension().is_some_and(|x| x == "jsonl") {
                files.push(path);
            }
        }
        Ok(files)
    }
}

impl RunStore for JsonlStore {
    fn begin_run(&self, run_id: &str, plan: &Plan) -> Result<(), StoreError> {
        let path = self.file(run_id)?;
        let line = LineOut::Run {
            run_id,
            started_ms: now_ms(),
            plan,
        };
        self.write_line(&path, &line, true)
    }

    fn append(&self, event: &Event) -> Result<(), StoreError> {
        self.append_batch(std::slice::from_ref(event))
    }

    fn append_batch(&self, events: &[Event]) -> Result<(), StoreError> {
        // Events of one batch may belong to different runs: one write per run file.
        let mut by_run: Vec<(&str, Vec<LineOut>)> = Vec::new();
        for event in events {
            let run_id = event.run_id.as_deref().ok_or_else(|| {
                StoreError::Backend("the JSON-lines store keeps only events of a run".into())
            })?;
            let line = LineOut::Event { event };
            match by_run.iter_mut().find(|(id, _)| *id == run_id) {
                Some((_, lines)) => lines.push(line),
                None => by_run.push((run_id, vec![line])),
            }
        }
        for (run_id, lines) in by_run {
            self.write_lines(&self.file(run_id)?, &lines, false)?;
        }
        Ok(())
    }

    fn prune(&self, before_ms: u64, keep_failed: bool) -> Result<Vec<String>, StoreError> {
        let mut ids = Vec::new();
        for path in self.run_files()? {
            let summary = self.summary(&path)?;
            let old = summary.finished_ms.is_some_and(|at| at < before_ms);
            let removable = summary.success == Some(true) || !keep_failed;
            if old && removable {
                std::fs::remove_file(&path).map_err(|e| io(&path, e))?;
                let _ = std::fs::remove_file(path.with_extension("claim"));
                ids.push(summary.run_id);
            }
        }
        Ok(ids)
    }

    fn size_on_disk(&self) -> Option<u64> {
        let entries = std::fs::read_dir(&self.dir).ok()?;
        Some(
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum(),
        )
    }

    fn revise_plan(&self, run_id: &str, plan: &Plan) -> Result<(), StoreError> {
        // The plan is the file's first line: the file is written anew beside the old one and
        // renamed over it, so a crash leaves one or the other, whole.
        let path = self.file(run_id)?;
        let text = std::fs::read_to_string(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => StoreError::UnknownRun(run_id.to_owned()),
            _ => io(&path, e),
        })?;
        let (first, rest) = text.split_once('\n').unwrap_or((&text, ""));
        let started_ms = match serde_json::from_str(first) {
            Ok(Line::Run { started_ms, .. }) => started_ms,
            _ => {
                return Err(StoreError::Corrupt {
                    path,
                    message: "line 1: not the run's first line".into(),
                })
            }
        };
        let header = LineOut::Run {
            run_id,
            started_ms,
            plan,
        };
        let mut new = serde_json::to_string(&header).map_err(|e| io(&path, e))?;
        new.push('\n');
        new.push_str(rest);
        let _one_writer = self.write.lock().unwrap_or_else(PoisonError::into_inner);
        let temporary = path.with_extension("jsonl.new");
        let mut options = OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&temporary).map_err(|e| io(&temporary, e))?;
        file.write_all(new.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| io(&temporary, e))?;
        std::fs::rename(&temporary, &path).map_err(|e| io(&path, e))
    }

    fn finish_run(
        &self,
        run_id: &str,
        success: bool,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        let path = self.file(run_id)?;
        let line = LineOut::Finished {
            finished_ms: now_ms(),
            success,
            error,
        };
        self.write_line(&path, &line, false)
    }

    fn load_run(&self, run_id: &str) -> Result<StoredRun, StoreError> {
        let (summary, plan, events) = self.read(&self.file(run_id)?, false)?;
        Ok(StoredRun {
            summary,
            plan,
            events,
        })
    }

    fn load_run_outline(&self, run_id: &str) -> Result<StoredRun, StoreError> {
        let (summary, plan, events) = self.read(&self.file(run_id)?, true)?;
        Ok(StoredRun {
            summary,
            plan,
            events,
        })
    }

    fn list_runs(&self, limit: usize) -> Result<Vec<RunSummary>, StoreError> {
        let mut runs = Vec::new();
        for path in self.run_files()? {
            runs.push(self.summary(&path)?);
        }
        runs.sort_by(|a, b| {
            b.started_ms
                .cmp(&a.started_ms)
                .then(b.run_id.cmp(&a.run_id))
        });
        runs.truncate(limit);
        Ok(runs)
    }

    fn claim_run(&self, run_id: &str, owner: &Owner) -> Result<Claim, StoreError> {
        let lease = JsonlLease {
            guard: self.dir.join(CLAIMS_LOCK),
            file: self.claim_file(run_id)?,
            run_id: run_id.to_owned(),
            token: ClaimRecord::new(owner).token,
        };
        lease.exclusively(|held| {
            ClaimRecord::may_take(held.as_ref(), run_id)?;
            let record = ClaimRecord {
                owner: owner.clone(),
                token: lease.token.clone(),
                heartbeat_ms: now_ms(),
            };
            lease.write(&record)
        })?;
        Ok(Claim::new(lease))
    }

    fn query(&self, filter: &EventFilter) -> Result<Vec<Event>, StoreError> {
        let files = match &filter.run_id {
            Some(run_id) => vec![self.file(run_id)?],
            None => self.run_files()?,
        };
        let mut events = Vec::new();
        for path in files {
            let (_, _, run_events) = self.read(&path, false)?;
            events.extend(run_events.into_iter().filter(|e| filter.matches(e)));
        }
        events.sort_by_key(|e| e.timestamp_ms);
        if let Some(limit) = filter.limit {
            let skip = events.len().saturating_sub(limit);
            events.drain(..skip);
        }
        Ok(events)
    }
}

/// The file whose exclusive lock makes reading and writing a claim one step.
const CLAIMS_LOCK: &str = ".claims.lock";

/// A claim file of this store; removed when dropped.
struct JsonlLease {
    guard: PathBuf,
    file: PathBuf,
    run_id: String,
    token: String,
}

impl JsonlLease {
    /// Runs `f` with the claim file's record (`None` when missing or unreadable, as a claim
    /// cut short by a crash is) while holding the lock of the claims guard file.
    fn exclusively<T>(
        &self,
        f: impl FnOnce(Option<ClaimRecord>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut options = OpenOptions::new();
        options.create(true).truncate(false).write(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let guard = options.open(&self.guard).map_err(|e| io(&self.guard, e))?;
        lock_exclusive(&guard).map_err(|e| io(&self.guard, e))?;
        let held = std::fs::read(&self.file)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok());
        f(held)
    }

    fn write(&self, record: &ClaimRecord) -> Result<(), StoreError> {
        let text = serde_json::to_vec(record).map_err(|e| io(&self.file, e))?;
        let mut options = OpenOptions::new();
        options.create(true).truncate(true).write(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&self.file).map_err(|e| io(&self.file, e))?;
        file.write_all(&text).map_err(|e| io(&self.file, e))
    }

    fn is_mine(&self, held: Option<&ClaimRecord>) -> bool {
        held.is_some_and(|held| held.token == self.token)
    }
}

impl Lease for JsonlLease {
    fn refresh(&self) -> Result<(), StoreError> {
        self.exclusively(|held| match held {
            Some(mut record) if self.is_mine(Some(&record)) => {
                record.heartbeat_ms = now_ms();
                self.write(&record)
            }
            _ => Err(StoreError::ClaimLost(self.run_id.clone())),
        })
    }
}

impl Drop for JsonlLease {
    fn drop(&mut self) {
        // Only our own claim: after a takeover the file is someone else's.
        let _ = self.exclusively(|held| match self.is_mine(held.as_ref()) {
            true => std::fs::remove_file(&self.file).map_err(|e| io(&self.file, e)),
            false => Ok(()),
        });
    }
}

/// Waits for the exclusive lock of `file`, which other claimants (in this process or others)
/// take too; the lock goes with the file, also when the process dies. (`File::lock` would do,
/// but needs Rust 1.89.)
#[cfg(unix)]
fn lock_exclusive(file: &File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    loop {
        // SAFETY: `flock` only takes the descriptor, which `file` keeps open during the call.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
            return Ok(());
        }
        let error = std::io::Error::last_os_error();
        if error.kind() != std::io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

/// Elsewhere the check and the write of a claim are not guarded against other processes.
#[cfg(not(unix))]
fn lock_exclusive(_file: &File) -> std::io::Result<()> {
    Ok(())
}

/// The last non-empty line of `file`, read from its end; `None` when it is longer than
/// [`TAIL`].
fn last_line(file: &mut File) -> std::io::Result<Option<String>> {
    use std::io::{Read, Seek, SeekFrom};
    let len = file.seek(SeekFrom::End(0))?;
    let from = len.saturating_sub(TAIL);
    file.seek(SeekFrom::Start(from))?;
    let mut tail = Vec::with_capacity((len - from) as usize);
    file.read_to_end(&mut tail)?;
    let text = String::from_utf8_lossy(&tail);
    let text = text.trim_end();
    match text.rfind('\n') {
        Some(at) => Ok(Some(text[at + 1..].to_owned())),
        None if from == 0 => Ok(Some(text.to_owned())),
        None => Ok(None),
    }
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn io(path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}
