//! The workspace's run store: opening it from the `store:` setting, and telling a store that
//! cannot be used (bad input, exit 2) from one that broke during a run.

use agenthelm::store::{JsonlStore, RunStore, SqliteStore, StoreError};
use std::path::PathBuf;
use std::sync::Arc;

use crate::exit::BadInput;
use crate::workspace::{StoreBackend, StoreConfig, Workspace};

/// An open run store and where it is.
pub struct OpenStore {
    /// The store.
    pub store: Arc<dyn RunStore>,
    /// Its file (sqlite) or folder (jsonl).
    pub location: PathBuf,
}

/// Opens the store the workspace names (or the default one beside the workspace file).
///
/// A store that cannot be opened is bad input (exit 2): the message names the file and says
/// where the setting comes from, and nothing runs untraced.
pub fn open(workspace: &Workspace) -> anyhow::Result<OpenStore> {
    let config = workspace.config.store.clone().unwrap_or(StoreConfig {
        backend: StoreBackend::Sqlite,
        path: None,
    });
    let location = config.location(&workspace.dir);
    let opened: Result<Arc<dyn RunStore>, StoreError> = match config.backend {
        StoreBackend::Sqlite => SqliteStore::open(&location).map(|s| Arc::new(s) as _),
        StoreBackend::Jsonl => JsonlStore::open(&location).map(|s| Arc::new(s) as _),
    };
    let store = opened.map_err(|e| {
        let origin = match &workspace.config.store {
            Some(_) => format!("`store:` in {}", workspace.file.display()),
            None => format!(
                "the default store of {}; choose another with `store:`",
                workspace.file.display()
            ),
        };
        BadInput(format!("cannot use the run store: {e} ({origin})"))
    })?;
    tracing::info!(store = %location.display(), "run store opened");
    Ok(OpenStore { store, location })
}

/// A store error while reading (runs, traces, resume): an unknown run id is bad input, the rest
/// names the store.
pub fn read_error(error: StoreError) -> anyhow::Error {
    BadInput(error.to_string()).into()
}
