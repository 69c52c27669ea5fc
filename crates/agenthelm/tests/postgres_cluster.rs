//! The cluster's side of the PostgreSQL store (DESIGN.md §10): run leases and fencing, work
//! dispatched once per key, attempts that supersede each other, first-writer-wins outcomes, the
//! reconciler's and the takeover's queries, and migration 1 → 2. Runs against a real server;
//! skipped (and said) when PostgreSQL is not installed.
#![cfg(feature = "postgres")]

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use agenthelm::store::{
    AttemptStart, Dispatched, PostgresStore, RunLease, RunStore, StoreError, Work, WorkOutcome,
};
use agenthelm::trace::{Event, EventKind};
use agenthelm::Plan;
use agenthelm_test_support::PgServer;
use serde_json::json;

const LONG: Duration = Duration::from_secs(60);

/// The test binary's server, or `None` with the reason printed.
fn server() -> Option<&'static PgServer> {
    PgServer::shared()
        .map_err(|why| eprintln!("PostgreSQL cluster store skipped: {why}"))
        .ok()
}

/// A store in a fresh database, with run `run` begun.
fn store_with_run(pg: &PgServer, run: &str) -> PostgresStore {
    let store = PostgresStore::open(&pg.database()).unwrap();
    store.begin_run(run, &Plan::new(run)).unwrap();
    store
}

fn database_name(url: &str) -> &str {
    url.rsplit('/').next().unwrap()
}

/// A lease that has run out by the time this returns (a zero time to live, then a pause for the
/// database's clock to pass it).
fn expired_lease(store: &PostgresStore, run: &str, holder: &str) -> RunLease {
    let lease = store.lease_run(run, holder, Duration::ZERO).unwrap();
    std::thread::sleep(Duration::from_millis(5));
    lease
}

fn note(run: &str, message: &str) -> Event {
    let mut event = Event::new(EventKind::Note {
        message: message.into(),
    });
    event.run_id = Some(run.into());
    event
}

/// The messages of the notes among `events`, in order.
fn notes(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Note { message } => Some(message.clone()),
            _ => None,
        })
        .collect()
}

fn work(run: &str, key: &str) -> Work {
    Work {
        key: key.into(),
        run_id: run.into(),
        step_id: format!("step-of-{key}"),
        pool: "default".into(),
        payload: json!({"tool": "echo", "args": {"key": key}}),
    }
}

/// Dispatches `key` under `lease` and starts its first attempt for `worker-1`.
fn started(store: &PostgresStore, lease: &RunLease, key: &str) -> i64 {
    let w = work(&lease.run_id, key);
    assert_eq!(store.dispatch_work(lease, &w).unwrap(), Dispatched::New);
    match store.start_attempt(key, "worker-1").unwrap() {
        AttemptStart::Run { attempt, .. } => attempt,
        other => panic!("{other:?}"),
    }
}

#[test]
fn two_holders_racing_for_one_lease_get_one_winner() {
    let Some(pg) = server() else { return };
    let url = pg.database();
    let stores = [
        Arc::new(PostgresStore::open(&url).unwrap()),
        Arc::new(PostgresStore::open(&url).unwrap()),
    ];
    for round in 0..10 {
        let run = format!("run-{round}");
        let barrier = Arc::new(Barrier::new(2));
        let racers: Vec<_> = stores
            .iter()
            .enumerate()
            .map(|(i, store)| {
                let (store, barrier, run) = (Arc::clone(store), Arc::clone(&barrier), run.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    store.lease_run(&run, &format!("coordinator-{i}"), LONG)
                })
            })
            .collect();
        let answers: Vec<_> = racers.into_iter().map(|r| r.join().unwrap()).collect();
        let winners: Vec<&RunLease> = answers.iter().filter_map(|a| a.as_ref().ok()).collect();
        assert_eq!(winners.len(), 1, "{answers:?}");
        assert_eq!(winners[0].epoch, 1);
        let loser = answers.iter().find_map(|a| a.as_ref().err()).unwrap();
        match loser {
            StoreError::Leased {
                run_id,
                holder,
                expires_ms,
            } => {
                assert_eq!(run_id, &run);
                assert_eq!(holder, &winners[0].holder);
                assert!(*expires_ms > 0);
            }
            other => panic!("{other:?}"),
        }
        assert!(loser
            .to_string()
            .contains(&format!("is leased by `{}`", winners[0].holder)));
    }
}

#[test]
fn an_expired_lease_is_taken_at_the_next_epoch_and_fences_the_old_holder() {
    let Some(pg) = server() else { return };
    let store = store_with_run(pg, "run");
    let old = expired_lease(&store, "run", "old");
    assert_eq!(old.epoch, 1);
    let old_view = store.fenced(old.clone());
    // Ran out but not yet taken: the old holder still writes (the epoch is what fences).
    old_view.append(&note("run", "old, before")).unwrap();

    let new = store.lease_run("run", "new", LONG).unwrap();
    assert_eq!(new.epoch, 2);
    let err = store.renew_lease(&old, LONG).unwrap_err();
    assert_eq!(
        err,
        StoreError::Fenced {
            run_id: "run".into(),
            epoch: 1
        }
    );
    assert!(err
        .to_string()
        .contains("another coordinator took run `run` over"));
    for refused in [
        old_view.append(&note("run", "old, late")),
        old_view.append_batch(&[note("run", "old, late batch")]),
        old_view.revise_plan("run", &Plan::new("old's plan")),
        old_view.finish_run("run", false, Some("old gave up")),
    ] {
        assert!(
            matches!(refused, Err(StoreError::Fenced { epoch: 1, .. })),
            "{refused:?}"
        );
    }
    // Releasing a lease that is no longer ours leaves the new holder's alone.
    store.release_lease(&old).unwrap();
    assert!(matches!(
        store.lease_run("run", "third", LONG),
        Err(StoreError::Leased { holder, .. }) if holder == "new"
    ));

    let new_view = store.fenced(new.clone());
    new_view.append(&note("run", "new")).unwrap();
    store.renew_lease(&new, LONG).unwrap();
    new_view.finish_run("run", true, None).unwrap();
    let run = store.load_run("run").unwrap();
    assert_eq!(notes(&run.events), ["old, before", "new"]);
    assert_eq!(run.summary.success, Some(true));
    assert_eq!(
        run.plan.goal, "run",
        "the old holder's revised plan was not kept"
    );

    // A fenced view writes only its own run.
    let err = new_view.append(&note("other", "elsewhere")).unwrap_err();
    assert!(
        err.to_string().contains("cannot write to run `other`"),
        "{err}"
    );
    // Released, the run can be taken at once.
    store.release_lease(&new).unwrap();
    assert_eq!(store.lease_run("run", "third", LONG).unwrap().epoch, 3);
}

#[test]
fn no_write_of_the_old_holder_lands_after_a_takeover_racing_it() {
    let Some(pg) = server() else { return };
    let url = pg.database();
    let store = PostgresStore::open(&url).unwrap();
    store.begin_run("run", &Plan::new("run")).unwrap();
    let old = expired_lease(&store, "run", "old");
    // The old holder writes on its own connection as fast as it can while the run is taken.
    let (first_answer, answered) = std::sync::mpsc::channel();
    let writer = {
        let view = PostgresStore::open(&url).unwrap().fenced(old);
        std::thread::spawn(move || {
            let mut answers = Vec::new();
            let mut refusals = 0;
            while refusals < 5 && answers.len() < 2000 {
                let answer = view.append(&note("run", &format!("old {}", answers.len())));
                refusals += usize::from(answer.is_err());
                answers.push(answer);
                let _ = first_answer.send(());
            }
            answers
        })
    };
    answered.recv().unwrap();
    std::thread::sleep(Duration::from_millis(10));
    let new = store.lease_run("run", "new", LONG).unwrap();
    store.fenced(new).append(&note("run", "new")).unwrap();
    let answers = writer.join().unwrap();

    // Once refused, always refused; and every accepted write is before the new holder's first.
    let accepted = answers.iter().take_while(|a| a.is_ok()).count();
    assert!(
        accepted > 0 && accepted < answers.len(),
        "{accepted} of {}",
        answers.len()
    );
    assert!(answers[accepted..]
        .iter()
        .all(|a| matches!(a, Err(StoreError::Fenced { epoch: 1, .. }))));
    let journal = notes(&store.load_run("run").unwrap().events);
    assert_eq!(journal.len(), accepted + 1);
    assert_eq!(journal.last().map(String::as_str), Some("new"));
}

#[test]
fn dispatching_a_key_twice_is_new_then_pending_then_finished() {
    let Some(pg) = server() else { return };
    let store = store_with_run(pg, "run");
    let lease = store.lease_run("run", "coordinator", LONG).unwrap();
    let w = work("run", "run/step-1/1");
    assert_eq!(store.dispatch_work(&lease, &w).unwrap(), Dispatched::New);
    assert_eq!(
        store.dispatch_work(&lease, &w).unwrap(),
        Dispatched::Pending
    );
    let AttemptStart::Run {
        attempt,
        work: got,
        earlier,
    } = store.start_attempt(&w.key, "worker-1").unwrap()
    else {
        panic!("not started")
    };
    assert_eq!((attempt, earlier), (1, 0));
    assert_eq!(got, w);
    assert_eq!(
        store.dispatch_work(&lease, &w).unwrap(),
        Dispatched::Pending
    );
    assert_eq!(store.work_outcome(&w.key).unwrap(), None);

    let outcome = WorkOutcome::succeeded(json!({"echo": 1}), 1);
    store.finish_attempt(&w.key, 1, &outcome).unwrap();
    assert_eq!(
        store.dispatch_work(&lease, &w).unwrap(),
        Dispatched::Finished(outcome.clone())
    );
    assert_eq!(store.work_outcome(&w.key).unwrap(), Some(outcome));

    // A dispatch under a lease taken over is refused, and records nothing.
    store.release_lease(&lease).unwrap();
    store.lease_run("run", "successor", LONG).unwrap();
    let late = work("run", "run/step-2/1");
    assert!(matches!(
        store.dispatch_work(&lease, &late),
        Err(StoreError::Fenced { .. })
    ));
    assert_eq!(
        store.start_attempt(&late.key, "worker-1").unwrap(),
        AttemptStart::Unknown
    );
}

#[test]
fn a_later_attempt_supersedes_an_earlier_one() {
    let Some(pg) = server() else { return };
    let store = store_with_run(pg, "run");
    let lease = store.lease_run("run", "coordinator", LONG).unwrap();
    let key = "run/step-1/1";
    assert_eq!(started(&store, &lease, key), 1);
    let first = store.attempt_journal(key, 1);
    first.append(&note("run", "attempt 1, early")).unwrap();
    // The first worker seems lost: the message is delivered again.
    let AttemptStart::Run {
        attempt, earlier, ..
    } = store.start_attempt(key, "worker-2").unwrap()
    else {
        panic!("not started")
    };
    assert_eq!((attempt, earlier), (2, 1));
    let second = store.attempt_journal(key, 2);

    let superseded = StoreError::Superseded {
        key: key.into(),
        attempt: 1,
    };
    assert_eq!(
        first.append(&note("run", "attempt 1, late")).unwrap_err(),
        superseded
    );
    assert!(superseded
        .to_string()
        .contains("a later attempt of work `run/step-1/1` took it over"));
    assert_eq!(
        store
            .finish_attempt(key, 1, &WorkOutcome::succeeded(json!(1), 1))
            .unwrap_err(),
        superseded
    );
    second.append(&note("run", "attempt 2")).unwrap();
    let outcome = WorkOutcome::succeeded(json!(2), 2);
    store.finish_attempt(key, 2, &outcome).unwrap();

    assert_eq!(
        store.start_attempt(key, "worker-3").unwrap(),
        AttemptStart::Finished(outcome.clone())
    );
    // Finished: even the winning attempt writes no more.
    assert!(matches!(
        second.append(&note("run", "after the end")),
        Err(StoreError::Superseded { attempt: 2, .. })
    ));
    assert_eq!(
        notes(&store.work_events("run", key).unwrap()),
        ["attempt 1, early", "attempt 2"]
    );
    assert_eq!(
        store.start_attempt("no-such-work", "worker-1").unwrap(),
        AttemptStart::Unknown
    );
    assert_eq!(
        store
            .attempt_journal("no-such-work", 1)
            .append(&note("run", "x")),
        Err(StoreError::UnknownWork("no-such-work".into()))
    );
}

#[test]
fn finishing_is_first_writer_wins_and_idempotent() {
    let Some(pg) = server() else { return };
    let store = store_with_run(pg, "run");
    let lease = store.lease_run("run", "coordinator", LONG).unwrap();
    let key = "run/step-1/1";
    let attempt = started(&store, &lease, key);
    let first = WorkOutcome::succeeded(json!({"answer": 42, "ratio": 0.1}), attempt);
    store.finish_attempt(key, attempt, &first).unwrap();
    // The same outcome again (its commit's answer was lost): fine.
    store.finish_attempt(key, attempt, &first).unwrap();
    // Another outcome of the same attempt: the first one stays.
    let other = WorkOutcome::failed("changed my mind", attempt);
    assert!(matches!(
        store.finish_attempt(key, attempt, &other),
        Err(StoreError::Superseded { .. })
    ));
    assert_eq!(store.work_outcome(key).unwrap(), Some(first));
    // An outcome that names another attempt than the one finishing is a caller's mistake.
    let err = store
        .finish_attempt(key, attempt, &WorkOutcome::succeeded(json!(0), 7))
        .unwrap_err();
    assert!(err.to_string().contains("names attempt 7"), "{err}");
    assert_eq!(
        store.finish_attempt("no-such-work", 1, &WorkOutcome::succeeded(json!(0), 1)),
        Err(StoreError::UnknownWork("no-such-work".into()))
    );
}

#[test]
fn failing_work_does_not_override_a_finished_one() {
    let Some(pg) = server() else { return };
    let store = store_with_run(pg, "run");
    let lease = store.lease_run("run", "coordinator", LONG).unwrap();

    // Never started (every delivery was lost): given up with the reason.
    let never = work("run", "never");
    store.dispatch_work(&lease, &never).unwrap();
    assert!(store.fail_work("never", "deliveries ran out").unwrap());
    let failed = WorkOutcome::failed("deliveries ran out", 0);
    assert_eq!(store.work_outcome("never").unwrap(), Some(failed.clone()));
    assert_eq!(
        store.start_attempt("never", "worker-1").unwrap(),
        AttemptStart::Finished(failed.clone())
    );
    assert_eq!(
        store.dispatch_work(&lease, &never).unwrap(),
        Dispatched::Finished(failed)
    );

    // Running: given up, and its worker's late finish is refused.
    let attempt = started(&store, &lease, "running");
    assert!(store.fail_work("running", "worker vanished").unwrap());
    assert!(matches!(
        store.finish_attempt(
            "running",
            attempt,
            &WorkOutcome::succeeded(json!(1), attempt)
        ),
        Err(StoreError::Superseded { .. })
    ));
    assert_eq!(
        store.work_outcome("running").unwrap(),
        Some(WorkOutcome::failed("worker vanished", 1))
    );

    // Done: stays done.
    let attempt = started(&store, &lease, "done");
    let done = WorkOutcome::succeeded(json!("ok"), attempt);
    store.finish_attempt("done", attempt, &done).unwrap();
    assert!(!store.fail_work("done", "too late").unwrap());
    assert_eq!(store.work_outcome("done").unwrap(), Some(done));
    assert!(!store.fail_work("no-such-work", "whatever").unwrap());
}

#[test]
fn unpublished_work_is_dispatched_work_not_published_for_long_enough() {
    let Some(pg) = server() else { return };
    let store = store_with_run(pg, "run");
    let lease = store.lease_run("run", "coordinator", LONG).unwrap();
    for key in ["lost", "published", "running"] {
        store.dispatch_work(&lease, &work("run", key)).unwrap();
    }
    store.mark_published("published").unwrap();
    assert!(matches!(
        store.start_attempt("running", "worker-1").unwrap(),
        AttemptStart::Run { .. }
    ));
    std::thread::sleep(Duration::from_millis(60));
    store.dispatch_work(&lease, &work("run", "fresh")).unwrap();
    std::thread::sleep(Duration::from_millis(5));

    let keys = |older_than, limit| -> Vec<String> {
        store
            .unpublished_work(older_than, limit)
            .unwrap()
            .into_iter()
            .map(|w| w.key)
            .collect()
    };
    assert_eq!(keys(Duration::from_millis(30), 10), ["lost"]);
    assert_eq!(keys(Duration::ZERO, 10).len(), 2, "the fresh one too");
    assert_eq!(keys(Duration::ZERO, 1), ["lost"], "oldest first");
    assert!(keys(LONG, 10).is_empty());
    assert_eq!(
        store
            .unpublished_work(Duration::from_millis(30), 10)
            .unwrap(),
        [work("run", "lost")]
    );
    assert_eq!(
        store.mark_published("no-such-work"),
        Err(StoreError::UnknownWork("no-such-work".into()))
    );
}

#[test]
fn orphaned_runs_are_unfinished_runs_whose_lease_ran_out() {
    let Some(pg) = server() else { return };
    let url = pg.database();
    let store = PostgresStore::open(&url).unwrap();
    let runs = [
        "expired",
        "finished",
        "live",
        "released",
        "work-no-lease",
        "never-leased",
    ];
    for run in runs {
        store.begin_run(run, &Plan::new(run)).unwrap();
        // Distinct start times: the answer is oldest first.
        std::thread::sleep(Duration::from_millis(3));
    }
    expired_lease(&store, "expired", "dead");
    expired_lease(&store, "finished", "done");
    store.finish_run("finished", true, None).unwrap();
    store.lease_run("live", "alive", LONG).unwrap();
    let released = store.lease_run("released", "polite", LONG).unwrap();
    store.release_lease(&released).unwrap();
    let lease = store.lease_run("work-no-lease", "gone", LONG).unwrap();
    store
        .dispatch_work(&lease, &work("work-no-lease", "w"))
        .unwrap();
    // The lease row is gone (deleted by hand): the work still makes it a run to take over.
    pg.psql(
        database_name(&url),
        "DELETE FROM agenthelm_leases WHERE run_id = 'work-no-lease'",
    );
    std::thread::sleep(Duration::from_millis(5));

    assert_eq!(
        store.orphaned_runs(10).unwrap(),
        ["expired", "released", "work-no-lease"]
    );
    assert_eq!(store.orphaned_runs(1).unwrap(), ["expired"]);
    // Taken over: no longer an orphan.
    assert_eq!(store.lease_run("expired", "heir", LONG).unwrap().epoch, 2);
    assert_eq!(
        store.orphaned_runs(10).unwrap(),
        ["released", "work-no-lease"]
    );
    assert_eq!(
        store
            .lease_run("work-no-lease", "heir", LONG)
            .unwrap()
            .epoch,
        1
    );
}

/// Migration 1 as the store before the cluster wrote it.
const SCHEMA_1: &str = r#"
    CREATE TABLE agenthelm_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE agenthelm_runs (
        run_id      TEXT PRIMARY KEY,
        goal        TEXT NOT NULL,
        steps       BIGINT NOT NULL,
        plan        TEXT NOT NULL,
        started_ms  BIGINT NOT NULL,
        finished_ms BIGINT,
        success     BOOLEAN,
        error       TEXT
    );
    CREATE INDEX agenthelm_runs_by_start ON agenthelm_runs (started_ms DESC);
    CREATE TABLE agenthelm_events (
        id           BIGSERIAL PRIMARY KEY,
        run_id       TEXT,
        timestamp_ms BIGINT NOT NULL,
        kind         TEXT NOT NULL,
        step_id      TEXT,
        agent        TEXT,
        tool         TEXT,
        success      BOOLEAN,
        duration_ms  DOUBLE PRECISION,
        body         TEXT NOT NULL
    );
    CREATE INDEX agenthelm_events_by_run ON agenthelm_events (run_id, id);
    CREATE INDEX agenthelm_events_by_time ON agenthelm_events (timestamp_ms);
    CREATE TABLE agenthelm_claims (
        run_id       TEXT PRIMARY KEY,
        host         TEXT NOT NULL,
        pid          BIGINT NOT NULL,
        token        TEXT NOT NULL,
        heartbeat_ms BIGINT NOT NULL
    );
    INSERT INTO agenthelm_meta VALUES ('schema_version', '1');
"#;

#[test]
fn a_schema_1_database_migrates_to_2_and_keeps_its_runs() {
    let Some(pg) = server() else { return };
    let url = pg.database();
    let name = database_name(&url);
    let quoted = |value: &str| value.replace('\'', "''");
    let plan = serde_json::to_string(&Plan::new("from version 1")).unwrap();
    let event = serde_json::to_string(&note("old", "written by version 1")).unwrap();
    pg.psql(name, SCHEMA_1);
    pg.psql(
        name,
        &format!(
            "INSERT INTO agenthelm_runs (run_id, goal, steps, plan, started_ms)
             VALUES ('old', 'from version 1', 0, '{}', 1000);
             INSERT INTO agenthelm_events (run_id, timestamp_ms, kind, body)
             VALUES ('old', 1001, 'note', '{}');",
            quoted(&plan),
            quoted(&event)
        ),
    );

    let store = PostgresStore::open(&url).unwrap();
    pg.psql(
        name,
        "DO $$ BEGIN IF (SELECT value FROM agenthelm_meta WHERE key = 'schema_version') <> '2'
         THEN RAISE 'not migrated'; END IF; END $$",
    );
    let run = store.load_run("old").unwrap();
    assert_eq!(run.summary.goal, "from version 1");
    assert_eq!(notes(&run.events), ["written by version 1"]);
    // The old run carries on in the cluster: leased, its work journaled.
    let lease = store.lease_run("old", "coordinator", LONG).unwrap();
    let attempt = started(&store, &lease, "old/step/1");
    store
        .attempt_journal("old/step/1", attempt)
        .append(&note("old", "written by a worker"))
        .unwrap();
    assert_eq!(
        notes(&store.load_run("old").unwrap().events),
        ["written by version 1", "written by a worker"]
    );
    drop(store);
    // Opening again changes nothing.
    let again = PostgresStore::open(&url).unwrap();
    assert_eq!(again.list_runs(10).unwrap().len(), 1);
}

#[test]
fn worker_events_show_up_in_the_run_in_journal_order() {
    let Some(pg) = server() else { return };
    let store = store_with_run(pg, "run");
    let lease = store.lease_run("run", "coordinator", LONG).unwrap();
    let coordinator = store.fenced(lease.clone());
    let attempt = started(&store, &lease, "run/a/1");
    let worker: Arc<dyn RunStore> = Arc::new(store.attempt_journal("run/a/1", attempt));

    coordinator.append(&note("run", "c1")).unwrap();
    worker.append(&note("run", "w1")).unwrap();
    coordinator.append(&note("run", "c2")).unwrap();
    worker
        .append_batch(&[note("run", "w2"), note("run", "w3")])
        .unwrap();
    coordinator.append(&note("run", "c3")).unwrap();

    let order = ["c1", "w1", "c2", "w2", "w3", "c3"];
    assert_eq!(notes(&store.load_run("run").unwrap().events), order);
    assert_eq!(notes(&store.load_run_outline("run").unwrap().events), order);
    assert_eq!(notes(&worker.load_run("run").unwrap().events), order);
    let filter = agenthelm::store::EventFilter {
        run_id: Some("run".into()),
        ..Default::default()
    };
    assert_eq!(notes(&store.query(&filter).unwrap()), order);
    assert_eq!(
        notes(&store.work_events("run", "run/a/1").unwrap()),
        ["w1", "w2", "w3"]
    );

    // A worker's journal only appends events of its work's run.
    let err = worker.append(&note("other", "elsewhere")).unwrap_err();
    assert!(
        err.to_string().contains("cannot write to run `other`"),
        "{err}"
    );
    let err = worker.finish_run("run", true, None).unwrap_err();
    assert!(err.to_string().contains("only appends events"), "{err}");
    assert_eq!(store.load_run("run").unwrap().summary.finished_ms, None);
}

/// Not a timed assertion: prints what one work's round trip through the store costs, in all
/// and per call.
#[test]
fn measure_a_dispatch_attempt_finish_cycle() {
    let Some(pg) = server() else { return };
    let store = store_with_run(pg, "run");
    let lease = store.lease_run("run", "coordinator", LONG).unwrap();
    // Per round: dispatch, start, append, finish, and the whole cycle.
    let mut took: [Vec<Duration>; 5] = Default::default();
    for round in 0..300 {
        let key = format!("run/step/{round}");
        let cycle = Instant::now();
        let mut lap = Instant::now();
        let mut split = |i: usize| {
            took[i].push(lap.elapsed());
            lap = Instant::now();
        };
        assert_eq!(
            store.dispatch_work(&lease, &work("run", &key)).unwrap(),
            Dispatched::New
        );
        split(0);
        let AttemptStart::Run { attempt, .. } = store.start_attempt(&key, "worker").unwrap() else {
            panic!("not started")
        };
        split(1);
        store
            .attempt_journal(&key, attempt)
            .append(&note("run", "done"))
            .unwrap();
        split(2);
        store
            .finish_attempt(
                &key,
                attempt,
                &WorkOutcome::succeeded(json!(round), attempt),
            )
            .unwrap();
        split(3);
        took[4].push(cycle.elapsed());
    }
    for (name, times) in ["dispatch", "start", "append", "finish", "cycle"]
        .iter()
        .zip(took.iter_mut())
    {
        times.sort();
        let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
        println!(
            "{name:>8} over {} rounds (fsync on): p50 {:?}, p99 {:?}",
            times.len(),
            at(0.50),
            at(0.99)
        );
    }
}

#[test]
fn a_coordinator_is_handed_each_worker_event_once_whether_it_loaded_it_or_not() {
    let Some(pg) = server() else { return };
    let store = store_with_run(pg, "r-fresh");
    let lease = store.lease_run("r-fresh", "c1", LONG).unwrap();
    let attempt = started(&store, &lease, "k");
    let journal = store.attempt_journal("k", attempt);
    journal.append(&note("r-fresh", "before the load")).unwrap();
    // A coordinator taking the run over loads the journal with the first event in it...
    let fenced = store.fenced(lease.clone());
    assert_eq!(
        notes(&fenced.load_run("r-fresh").unwrap().events),
        ["before the load"]
    );
    journal.append(&note("r-fresh", "after the load")).unwrap();
    // ...so only the second is fresh, and nothing is fresh twice.
    assert_eq!(
        notes(&fenced.fresh_work_events("k").unwrap()),
        ["after the load"]
    );
    assert!(fenced.fresh_work_events("k").unwrap().is_empty());
    // The lease is the claim: a live process's claim does not keep the run from its taker.
    let owner = agenthelm::store::Owner::this_process();
    let _held = store.claim_run("r-fresh", &owner).unwrap();
    assert!(fenced.claim_run("r-fresh", &owner).is_ok());
}

#[test]
fn batched_dispatches_starts_and_finishes_answer_each_work_as_one_call_would() {
    let Some(pg) = server() else { return };
    let store = store_with_run(pg, "run");
    let lease = store.lease_run("run", "coordinator", LONG).unwrap();
    let (a, b, c) = (work("run", "a"), work("run", "b"), work("run", "c"));
    assert_eq!(
        store
            .dispatch_works(&lease, &[c.clone(), a.clone()])
            .unwrap(),
        [Dispatched::New, Dispatched::New]
    );
    // Answers in the order asked, whatever order the rows are locked in.
    let keys = ["c".to_owned(), "b".to_owned(), "a".to_owned()];
    let started = store.start_attempts(&keys, "worker-1").unwrap();
    assert!(matches!(&started[0], AttemptStart::Run { attempt: 1, work, .. } if *work == c));
    assert_eq!(started[1], AttemptStart::Unknown);
    assert!(matches!(&started[2], AttemptStart::Run { attempt: 1, work, .. } if *work == a));
    // A later attempt of `a` supersedes the first: its finish is refused, `c`'s is kept.
    store.start_attempt("a", "worker-2").unwrap();
    let (done_c, late_a) = (
        WorkOutcome::succeeded(json!("c"), 1),
        WorkOutcome::succeeded(json!("a"), 1),
    );
    let answers = store
        .finish_attempts(&[
            ("c".to_owned(), 1, done_c.clone()),
            ("a".to_owned(), 1, late_a),
        ])
        .unwrap();
    assert!(answers[0].is_ok());
    assert!(matches!(answers[1], Err(StoreError::Superseded { .. })));
    assert_eq!(
        store.dispatch_works(&lease, &[c, b]).unwrap(),
        [Dispatched::Finished(done_c), Dispatched::New]
    );
    // A batch under a lease taken over records none of its work.
    store.release_lease(&lease).unwrap();
    store.lease_run("run", "successor", LONG).unwrap();
    assert!(matches!(
        store.dispatch_works(&lease, &[work("run", "d"), work("run", "e")]),
        Err(StoreError::Fenced { .. })
    ));
    assert_eq!(
        store
            .start_attempts(&["d".to_owned(), "e".to_owned()], "worker-1")
            .unwrap(),
        [AttemptStart::Unknown, AttemptStart::Unknown]
    );
}

#[test]
fn published_work_marked_in_a_batch_is_left_to_no_reconciler() {
    let Some(pg) = server() else { return };
    let store = store_with_run(pg, "run");
    let lease = store.lease_run("run", "coordinator", LONG).unwrap();
    for key in ["p1", "p2", "left"] {
        store.dispatch_work(&lease, &work("run", key)).unwrap();
    }
    store
        .mark_all_published(&["p1".to_owned(), "p2".to_owned(), "no-such-work".to_owned()])
        .unwrap();
    let unpublished = store.unpublished_work(Duration::ZERO, 10).unwrap();
    let keys: Vec<&str> = unpublished.iter().map(|w| w.key.as_str()).collect();
    assert_eq!(keys, ["left"]);
}

#[test]
fn finished_work_gives_the_outcome_and_the_fresh_events_once_it_ended() {
    let Some(pg) = server() else { return };
    let store = store_with_run(pg, "run");
    let lease = store.lease_run("run", "coordinator", LONG).unwrap();
    let fenced = store.fenced(lease.clone());
    let attempt = started(&store, &lease, "k");
    store
        .attempt_journal("k", attempt)
        .append(&note("run", "did it"))
        .unwrap();
    // Not finished: nothing, and its events are not handed out yet.
    assert_eq!(fenced.finished_work("k").unwrap(), None);
    let outcome = WorkOutcome::succeeded(json!(1), attempt);
    store.finish_attempt("k", attempt, &outcome).unwrap();
    let (got, events) = fenced.finished_work("k").unwrap().unwrap();
    assert_eq!(
        (got, notes(&events)),
        (outcome.clone(), vec!["did it".to_owned()])
    );
    let (_, again) = fenced.finished_work("k").unwrap().unwrap();
    assert!(again.is_empty());
    assert_eq!(fenced.finished_work("no-such-work").unwrap(), None);
}
