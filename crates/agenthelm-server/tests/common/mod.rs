//! A server of a workspace with command tools, in-process on a loopback port, for the API and
//! UI tests.
#![allow(dead_code)]

use agenthelm::agent::PlannerAgent;
use agenthelm::lm::{Lm, ScriptedLm, ScriptedReply};
use agenthelm_server::{Server, Users};
use agenthelm_test_support::TempDir;
use agenthelm_workspace::{Assembly, UserConfig, Workspace};
use serde_json::Value;
use std::time::Duration;
use tokio::sync::oneshot;

/// The signed-in user's token.
pub const TOKEN: &str = "browser-test-token-0123456789";

/// The workspace: quick tools, a slow one, one that needs approval, one that fails, one that
/// can be undone and one whose output is markup.
pub const WORKSPACE: &str = r#"
tools:
  note:
    command: [sh, -c, "cat > /dev/null; echo '{\"ok\": true}'"]
  slow:
    command: [sh, -c, "cat > /dev/null; sleep 3; echo '\"slept\"'"]
  pay:
    command: [sh, -c, "cat >> paid.log; echo >> paid.log; echo '\"paid\"'"]
    parameters: {type: object, properties: {amount: {type: integer}}, required: [amount]}
    requires_approval: true
  fail:
    command: [sh, -c, "cat > /dev/null; echo boom >&2; exit 3"]
  make:
    command: [sh, -c, "cat > /dev/null; echo '{\"id\": 1}'"]
    compensating_tool: unmake
  unmake:
    command: [sh, -c, "cat > /dev/null; echo null"]
  markup:
    command: [sh, -c, "cat > /dev/null; echo '\"<script>window.pwned = 1</script><b>bold</b>\"'"]
"#;

/// A running server; stops when dropped.
pub struct TestServer {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The workspace folder (tools run there; the run store is in it).
    pub dir: TempDir,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Starts a server of [`WORKSPACE`] in a new temp folder labelled `label`, for user `alice`
/// with [`TOKEN`].
pub async fn start(label: &str) -> TestServer {
    start_with(label, WORKSPACE, &[("alice", TOKEN)], None).await
}

/// Starts a server of `workspace` (the text of its `agenthelm.yaml`) in a new temp folder, for
/// `users` (name, token); with `planner_reply`, goals are planned by a scripted model that
/// answers with it. A cancelled step is stopped after one second (not the default thirty).
pub async fn start_with(
    label: &str,
    workspace: &str,
    users: &[(&str, &str)],
    planner_reply: Option<Value>,
) -> TestServer {
    let dir = TempDir::new(label);
    let file = dir.write("agenthelm.yaml", workspace);
    // The assembly borrows the workspace for as long as the test runs.
    let workspace: &'static Workspace = Box::leak(Box::new(
        Workspace::load(&file).expect("load the workspace"),
    ));
    let assembly = Assembly::new(workspace, &UserConfig::default(), None);
    let store = agenthelm_workspace::open_store(workspace).expect("open the store");
    let orchestrator = assembly
        .orchestrator()
        .await
        .expect("the orchestrator")
        .grace_period(Duration::from_secs(1));
    let users = Users::from_pairs(users.iter().map(|(n, t)| (n.to_string(), t.to_string())));
    let mut builder = Server::builder(orchestrator, store.store.clone(), users)
        .tools(assembly.orchestrator_tools());
    if let Some(reply) = planner_reply {
        let lm = Lm::from_model(ScriptedLm::new(vec![ScriptedReply::text(
            reply.to_string(),
        )]));
        builder = builder.planner(PlannerAgent::new(
            "planner",
            lm,
            assembly.orchestrator_tools(),
        ));
    }
    let server = builder.build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(server.serve(listener, async move {
        let _ = stopped.await;
    }));
    TestServer {
        url,
        dir,
        stop: Some(stop),
    }
}
