//! The PostgreSQL run store (issue 11): migrations, the same errors as SQLite for a foreign or
//! newer database, several processes sharing one database, claims between them, and a lost
//! server. Runs against a real server in a temp folder; skipped (and said) when PostgreSQL is not
//! installed.
#![cfg(feature = "postgres")]

use agenthelm::store::{Owner, PostgresStore, RunStore, StoreError};
use agenthelm::trace::{Event, EventKind};
use agenthelm::Plan;
use agenthelm_test_support::PgServer;

/// The test binary's server, or `None` with the reason printed.
fn server() -> Option<&'static PgServer> {
    PgServer::shared()
        .map_err(|why| eprintln!("PostgreSQL store skipped: {why}"))
        .ok()
}

fn database_name(url: &str) -> &str {
    url.rsplit('/').next().unwrap()
}

#[test]
fn a_fresh_database_is_migrated_and_reopening_it_changes_nothing() {
    let Some(pg) = server() else { return };
    let url = pg.database();
    let store = PostgresStore::open(&url).unwrap();
    store.begin_run("run-1", &Plan::new("first")).unwrap();
    drop(store);
    // Reopened (a second process, or a restart): the schema is current, the run is there.
    let again = PostgresStore::open(&url).unwrap();
    let runs = again.list_runs(10).unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].goal, "first");
    assert!(matches!(
        again.begin_run("run-1", &Plan::new("again")),
        Err(StoreError::DuplicateRun(id)) if id == "run-1"
    ));
}

#[test]
fn a_database_of_a_newer_agenthelm_is_refused_naming_both_versions() {
    let Some(pg) = server() else { return };
    let url = pg.database();
    drop(PostgresStore::open(&url).unwrap());
    pg.psql(
        database_name(&url),
        "UPDATE agenthelm_meta SET value = '99' WHERE key = 'schema_version'",
    );
    let err = PostgresStore::open(&url).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::TooNew {
                found: 99,
                supported: 2,
                ..
            }
        ),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains("schema version 99") && message.contains(&url),
        "{message}"
    );
}

#[test]
fn a_database_of_another_program_is_refused_and_left_alone() {
    let Some(pg) = server() else { return };
    let url = pg.database();
    let name = database_name(&url);
    pg.psql(name, "CREATE TABLE invoices (id INT PRIMARY KEY)");
    let err = PostgresStore::open(&url).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("is not an AgentHelm store or is damaged: it is a PostgreSQL database of another program"),
        "{err}"
    );
    // Nothing was created in it: the check comes before any change.
    pg.psql(
        name,
        "DO $$ BEGIN IF to_regclass('agenthelm_meta') IS NOT NULL THEN RAISE 'changed'; END IF; END $$",
    );
}

#[test]
fn passwords_never_show_in_errors() {
    let Some(pg) = server() else { return };
    // A database that does not exist: the connection is refused, and the error names the URL.
    let url = format!(
        "postgres://agenthelm:hunter2@127.0.0.1:{}/missing_db",
        pg.port()
    );
    let err = PostgresStore::open(&url).unwrap_err().to_string();
    assert!(!err.contains("hunter2"), "{err}");
    assert!(err.contains("agenthelm:***@127.0.0.1"), "{err}");
}

#[test]
fn two_processes_on_one_database_see_each_others_runs_and_claims() {
    let Some(pg) = server() else { return };
    let url = pg.database();
    let (one, two) = (
        PostgresStore::open(&url).unwrap(),
        PostgresStore::open(&url).unwrap(),
    );
    one.begin_run("from-one", &Plan::new("one's")).unwrap();
    let mut event = Event::new(EventKind::RunStarted {
        goal: "one's".into(),
        steps: 0,
        budget: None,
    });
    event.run_id = Some("from-one".into());
    one.append(&event).unwrap();
    one.finish_run("from-one", true, None).unwrap();
    two.begin_run("from-two", &Plan::new("two's")).unwrap();

    let seen: Vec<String> = two
        .list_runs(10)
        .unwrap()
        .into_iter()
        .map(|r| r.run_id)
        .collect();
    assert!(seen.contains(&"from-one".to_owned()) && seen.contains(&"from-two".to_owned()));
    let loaded = two.load_run("from-one").unwrap();
    assert_eq!(loaded.summary.success, Some(true));
    assert_eq!(loaded.events.len(), 1);

    // A run claimed through one store is refused through the other, until released.
    let me = Owner::this_process();
    let held = one.claim_run("from-two", &me).unwrap();
    assert!(matches!(
        two.claim_run("from-two", &me),
        Err(StoreError::Claimed { .. })
    ));
    drop(held);
    two.claim_run("from-two", &me).unwrap().refresh().unwrap();
}

#[test]
fn a_lost_server_fails_writes_clearly_and_a_restarted_one_is_used_again() {
    let Some(_) = server() else { return };
    let mut pg = PgServer::start().unwrap();
    let url = pg.database();
    let store = PostgresStore::open(&url).unwrap();
    store.begin_run("run-1", &Plan::new("before")).unwrap();
    // The server goes away: the write fails with an error naming the store, not a panic.
    pg.stop();
    let err = store
        .begin_run("run-2", &Plan::new("while away"))
        .unwrap_err();
    assert!(matches!(err, StoreError::Io { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains(&format!("127.0.0.1:{}", pg.port())),
        "{err}"
    );
    // Back again: the same store connects anew; what was committed is there, the failed
    // write is not.
    pg.restart();
    store.begin_run("run-3", &Plan::new("after")).unwrap();
    let ids: Vec<String> = store
        .list_runs(10)
        .unwrap()
        .into_iter()
        .map(|r| r.run_id)
        .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(ids.contains(&"run-1".to_owned()) && ids.contains(&"run-3".to_owned()));
}

#[test]
fn a_table_changed_under_the_store_is_an_error_not_a_panic() {
    let Some(pg) = server() else { return };
    let url = pg.database();
    let store = PostgresStore::open(&url).unwrap();
    store.begin_run("run-1", &Plan::new("first")).unwrap();
    // Someone else's migration turned a number into text.
    pg.psql(
        database_name(&url),
        "ALTER TABLE agenthelm_runs ALTER COLUMN steps TYPE TEXT",
    );
    let err = store.list_runs(10).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("a column does not hold what AgentHelm wrote there"),
        "{message}"
    );
    assert!(matches!(
        store.load_run("run-1"),
        Err(StoreError::Corrupt { .. })
    ));
}
