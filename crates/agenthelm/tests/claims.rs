//! A run is carried on by one process at a time: the run's claim in the store (issue 14).

mod pg_store;

use agenthelm::orchestrate::OrchestratorError;
use agenthelm::prelude::*;
use agenthelm::store::{JsonlStore, Owner, RunStore, SqliteStore, StoreError};
use agenthelm_test_support::TempDir;
use pg_store::postgres_store;
use serde_json::json;
use std::sync::{Arc, Mutex};

fn stores(dir: &TempDir) -> Vec<Arc<dyn RunStore>> {
    let mut stores: Vec<Arc<dyn RunStore>> = vec![
        Arc::new(SqliteStore::open(dir.join("runs.db")).unwrap()),
        Arc::new(JsonlStore::open(dir.join("runs")).unwrap()),
    ];
    stores.extend(postgres_store());
    stores
}

/// A process id that is surely gone: a child that has exited and been waited for.
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

fn refused_by(result: Result<agenthelm::store::Claim, StoreError>) -> Owner {
    match result {
        Err(StoreError::Claimed { owner, .. }) => owner,
        other => panic!("expected the claim to be refused, got {other:?}"),
    }
}

#[test]
fn a_live_claim_is_refused_naming_its_owner_and_released_when_dropped() {
    let dir = TempDir::new("claims-live");
    for store in stores(&dir) {
        let me = Owner::this_process();
        let held = store.claim_run("run-1", &me).unwrap();
        let owner = refused_by(store.claim_run("run-1", &me));
        assert_eq!(owner, me);
        let message = StoreError::Claimed {
            run_id: "run-1".into(),
            owner: owner.clone(),
        }
        .to_string();
        assert!(
            message.contains(&format!("process {} on {}", me.pid, me.host)),
            "{message}"
        );
        // Another run is not affected; another host's fresh claim is honoured too.
        drop(store.claim_run("run-2", &me).unwrap());
        let remote = Owner {
            host: "elsewhere.example".into(),
            pid: 1,
        };
        let _remote = store.claim_run("run-3", &remote).unwrap();
        assert_eq!(refused_by(store.claim_run("run-3", &me)), remote);

        drop(held);
        drop(store.claim_run("run-1", &me).unwrap());
    }
}

#[test]
fn a_claim_whose_owner_process_is_gone_is_taken_over() {
    let dir = TempDir::new("claims-dead");
    for store in stores(&dir) {
        let me = Owner::this_process();
        let dead = Owner {
            host: me.host.clone(),
            pid: dead_pid(),
        };
        let stale = store.claim_run("run-1", &dead).unwrap();
        let taken = store.claim_run("run-1", &me).unwrap();
        // The dead owner's claim, dropped late, does not release the new owner's.
        drop(stale);
        assert_eq!(refused_by(store.claim_run("run-1", &me)), me);
        taken.refresh().unwrap();
    }
}

#[tokio::test]
async fn a_run_held_by_another_owner_is_not_resumed() {
    let dir = TempDir::new("claims-resume");
    for store in stores(&dir) {
        let calls = Arc::new(Mutex::new(0));
        let counted = Arc::clone(&calls);
        let tool = FnTool::new("work", "works", json!({"type": "object"}), move |_, _| {
            *counted.lock().unwrap() += 1;
            async { Ok(json!("done")) }
        })
        .unwrap();
        let orchestrator = Orchestrator::new(AgentRegistry::new())
            .tools(ToolSet::new().with(tool))
            .store_shared(Arc::clone(&store));
        let mut plan = Plan::new("held");
        plan.steps = vec![PlanStep::new("a", "work").tool("work")];
        plan.approved = true;
        store.begin_run("run-held", &plan).unwrap();

        let other = Owner {
            host: "elsewhere.example".into(),
            pid: 7,
        };
        let held = store.claim_run("run-held", &other).unwrap();
        let refused = orchestrator.resume("run-held").await;
        match refused {
            Err(OrchestratorError::Claimed { run_id, owner }) => {
                assert_eq!((run_id.as_str(), &owner), ("run-held", &other));
            }
            other => panic!("expected Claimed, got {other:?}"),
        }
        assert_eq!(*calls.lock().unwrap(), 0, "nothing ran");

        drop(held);
        let (_, result) = orchestrator.resume("run-held").await.unwrap();
        assert!(result.success, "{result:?}");
        assert_eq!(*calls.lock().unwrap(), 1);
        // The finished run released its claim.
        drop(store.claim_run("run-held", &Owner::this_process()).unwrap());
    }
}

#[test]
fn a_store_made_before_claims_gets_them_on_open() {
    let dir = TempDir::new("claims-migrate");
    let path = dir.join("runs.db");
    drop(SqliteStore::open(&path).unwrap());
    // Back to the first schema version, as stores made before claims are.
    let downgraded = std::process::Command::new("python3")
        .args(["-c", &format!(
            "import sqlite3; c=sqlite3.connect('{}'); c.execute('DROP TABLE claims'); c.execute('PRAGMA user_version=1'); c.commit()",
            path.display()
        )])
        .status()
        .unwrap();
    assert!(downgraded.success());
    let store = SqliteStore::open(&path).unwrap();
    let me = Owner::this_process();
    let _held = store.claim_run("run-1", &me).unwrap();
    assert_eq!(refused_by(store.claim_run("run-1", &me)), me);
}
