//! `agenthelm serve`: a workspace's runs, plan review and tool-call approvals over HTTP.
//!
//! One process serves a workspace to a team: a JSON API under `/api` (see `docs/server.md`),
//! the journal of each run as Server-Sent Events, and the HTML report. Waiting for a person is
//! a record in the run store, not a task: a plan under review and a tool call waiting for
//! approval hold nothing in memory, and a restart picks up every unfinished run from its
//! journal, so `kill -9` loses nothing and asks nothing twice.
//!
//! The pieces come from the workspace (its orchestrator, tools, store and planner); the
//! command line assembles them. To embed the server:
//!
//! ```no_run
//! use agenthelm_server::{auth::Users, Server};
//! use std::sync::Arc;
//!
//! # async fn run(orchestrator: agenthelm::Orchestrator, store: Arc<dyn agenthelm::store::RunStore>) -> std::io::Result<()> {
//! let users = Users::from_pairs([("al".to_owned(), "a-long-secret-token".to_owned())]);
//! let server = Server::builder(orchestrator, store, users).max_runs(8).build();
//! server.recover();
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:7878").await?;
//! server.serve(listener, std::future::pending()).await
//! # }
//! ```

pub mod api;
pub mod auth;
pub mod error;
pub mod hub;
pub mod runs;
pub mod session;
pub mod ui;
pub mod view;

use agenthelm::agent::PlannerAgent;
use agenthelm::store::RunStore;
use agenthelm::tool::ToolSet;
use agenthelm::Orchestrator;
use axum::Router;
use std::future::Future;
use std::sync::Arc;

pub use auth::Users;
pub use runs::Runs;

/// The default address: loopback only.
pub const DEFAULT_ADDR: &str = "127.0.0.1:7878";

/// The default number of runs carried on at once.
pub const DEFAULT_MAX_RUNS: u32 = 16;

/// A server for one workspace.
pub struct Server {
    state: api::AppState,
}

/// Builds a [`Server`]; see [`Server::builder`].
pub struct ServerBuilder {
    orchestrator: Orchestrator,
    store: Arc<dyn RunStore>,
    users: Users,
    tools: ToolSet,
    planner: Option<PlannerAgent>,
    preflight: Option<runs::Preflight>,
    max_runs: usize,
}

impl ServerBuilder {
    /// A check every plan passes before it is accepted or started, besides the plan's own
    /// checks: each problem it returns is a 422 (the command line passes one that finds
    /// command tools whose program is missing, before any step runs).
    pub fn preflight(
        mut self,
        check: impl Fn(&agenthelm::Plan) -> Vec<String> + Send + Sync + 'static,
    ) -> Self {
        self.preflight = Some(Arc::new(check));
        self
    }

    /// At most `max_runs` runs carried on at once; more wait for a slot (default 16).
    pub fn max_runs(mut self, max_runs: usize) -> Self {
        self.max_runs = max_runs;
        self
    }

    /// The tools runs can call, to check arguments a person edits before approving a call.
    pub fn tools(mut self, tools: ToolSet) -> Self {
        self.tools = tools;
        self
    }

    /// Writes plans from goals (`POST /api/runs` with `goal`).
    pub fn planner(mut self, planner: PlannerAgent) -> Self {
        self.planner = Some(planner);
        self
    }

    /// The server.
    pub fn build(self) -> Server {
        let runs = Runs::new(
            self.orchestrator,
            self.store,
            self.tools,
            self.max_runs,
            self.preflight,
        );
        Server {
            state: api::AppState {
                runs,
                users: Arc::new(self.users),
                planner: self.planner.map(Arc::new),
            },
        }
    }
}

impl Server {
    /// A server of `orchestrator`'s runs, kept in `store`, for `users`.
    pub fn builder(
        orchestrator: Orchestrator,
        store: Arc<dyn RunStore>,
        users: Users,
    ) -> ServerBuilder {
        ServerBuilder {
            orchestrator,
            store,
            users,
            tools: ToolSet::new(),
            planner: None,
            preflight: None,
            max_runs: DEFAULT_MAX_RUNS as usize,
        }
    }

    /// Picks up every unfinished run that does not wait for a person; returns how many.
    pub fn recover(&self) -> usize {
        match self.state.runs.recover() {
            Ok(started) => started,
            Err(e) => {
                tracing::error!(error = %e, "cannot list the runs to pick up");
                0
            }
        }
    }

    /// The runs.
    pub fn runs(&self) -> &Arc<Runs> {
        &self.state.runs
    }

    /// The HTTP routes: the API and the web UI.
    pub fn router(&self) -> Router {
        api::routes(&self.state)
            .merge(ui::routes())
            .fallback(api::not_found)
            .with_state(self.state.clone())
    }

    /// Serves on `listener` until `shutdown` resolves; then open event streams end, and
    /// requests under way are answered before it returns.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let hub = Arc::clone(self.state.runs.hub());
        let stop = async move {
            shutdown.await;
            hub.close_all();
        };
        axum::serve(listener, self.router())
            .with_graceful_shutdown(stop)
            .await
    }
}
