//! The PostgreSQL store for tests that run on every backend.

use agenthelm::store::RunStore;
use std::sync::Arc;

/// A store in a fresh database of the test binary's PostgreSQL server, when PostgreSQL is
/// installed (the skip is said).
#[cfg(feature = "postgres")]
pub fn postgres_store() -> Option<Arc<dyn RunStore>> {
    match agenthelm_test_support::PgServer::shared() {
        Ok(pg) => Some(Arc::new(
            agenthelm::store::PostgresStore::open(&pg.database()).unwrap(),
        )),
        Err(why) => {
            eprintln!("PostgreSQL store skipped: {why}");
            None
        }
    }
}

#[cfg(not(feature = "postgres"))]
pub fn postgres_store() -> Option<Arc<dyn RunStore>> {
    None
}
