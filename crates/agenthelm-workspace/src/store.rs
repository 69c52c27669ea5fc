//! The workspace's run store: opening the one the `store:` setting names (or the default SQLite
//! database beside the workspace file).

use agenthelm::store::{
    mask_password, JsonlStore, PostgresStore, RunStore, SqliteStore, StoreError,
};
use std::path::PathBuf;
use std::sync::Arc;

use crate::error::WorkspaceError;
use crate::workspace::{StoreBackend, Workspace};

/// An open run store and where it is.
#[derive(Clone)]
pub struct OpenStore {
    /// The store.
    pub store: Arc<dyn RunStore>,
    /// Its file (sqlite) or folder (jsonl), or its URL with the password masked (postgres).
    pub location: PathBuf,
    /// The same store when it is PostgreSQL: what a cluster's coordinators and workers use
    /// beyond the journal (leases, work, attempts).
    pub postgres: Option<Arc<PostgresStore>>,
}

impl std::fmt::Debug for OpenStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenStore")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

/// Opens the store the workspace names (or the default one beside the workspace file).
///
/// A store that cannot be opened is an error that names the file and says where the setting
/// comes from ([`WorkspaceError::Store`]), so that nothing runs untraced.
pub fn open_store(workspace: &Workspace) -> Result<OpenStore, WorkspaceError> {
    let config = workspace.store_config();
    let durability = config.durability;
    let location = config.location(&workspace.dir);
    let opened: Result<Arc<dyn RunStore>, StoreError> = match config.backend {
        StoreBackend::Sqlite => SqliteStore::open(&location)
            .and_then(|s| s.with_durability(durability))
            .map(|s| Arc::new(s) as _),
        StoreBackend::Jsonl => {
            JsonlStore::open(&location).map(|s| Arc::new(s.with_durability(durability)) as _)
        }
        // Commits are as durable as the server makes them (`synchronous_commit`).
        StoreBackend::Postgres => return open_postgres(workspace, config.url),
    };
    let store = opened.map_err(|error| WorkspaceError::Store {
        file: workspace.file.clone(),
        location: location.clone(),
        configured: workspace.config.store.is_some(),
        error,
    })?;
    tracing::info!(store = %location.display(), "run store opened");
    Ok(OpenStore {
        store,
        location,
        postgres: None,
    })
}

/// Opens the PostgreSQL store at `store.url`, or at `AGENTHELM_STORE_URL` when the file names
/// none. Errors and logs show the URL with its password masked.
fn open_postgres(workspace: &Workspace, url: Option<String>) -> Result<OpenStore, WorkspaceError> {
    let url = url.or_else(|| {
        std::env::var(crate::workspace::STORE_URL_ENV)
            .ok()
            .filter(|u| !u.trim().is_empty())
    });
    let fail = |location: PathBuf, error| WorkspaceError::Store {
        file: workspace.file.clone(),
        location,
        configured: true,
        error,
    };
    let Some(url) = url else {
        return Err(fail(
            PathBuf::from("postgres"),
            StoreError::Backend(format!(
                "`store.url` is not set and neither is {}",
                crate::workspace::STORE_URL_ENV
            )),
        ));
    };
    let location = PathBuf::from(mask_password(&url));
    let store = PostgresStore::open(&url).map_err(|error| fail(location.clone(), error))?;
    tracing::info!(store = %location.display(), "run store opened");
    let store = Arc::new(store);
    Ok(OpenStore {
        store: Arc::clone(&store) as _,
        location,
        postgres: Some(store),
    })
}
