//! The command line's grammar.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// Plan a goal with an LLM, approve the plan, and execute it with parallel steps and rollback.
#[derive(Debug, Parser)]
#[command(name = "agenthelm", version, propagate_version = true)]
pub struct Cli {
    /// The workspace file (default: agenthelm.yaml in the current folder or a parent).
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Log more (-v info, -vv debug, -vvv trace); RUST_LOG works too.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a starter agenthelm.yaml and example tools that work offline.
    Init(InitArgs),
    /// Give one task to one agent; shows its tool calls, answer, tokens and cost.
    Run(RunArgs),
    /// Let the planner write a plan for a goal; show it, save it, or execute it.
    Plan(PlanArgs),
    /// Show a plan file, checked against the workspace, as a table or a graph.
    Show(ShowArgs),
    /// Check, show, confirm and execute a plan file with live progress.
    Execute(ExecuteArgs),
    /// Continue a run that was interrupted (killed, crashed, or stopped by its store).
    Resume(ResumeArgs),
    /// Run a stored run again from its journal (no model called, no tool run) and name the
    /// first point where it goes another way.
    Replay(ReplayArgs),
    /// Serve the workspace to a team: runs, plan review and tool-call approvals over HTTP.
    Serve(ServeArgs),
    /// Carry out steps sent by coordinators (`execute`, `serve`) of the workspace's cluster.
    Worker(WorkerArgs),
    /// Past runs kept in the workspace's store.
    Runs(RunsArgs),
    /// Tool calls and LLM calls kept in the workspace's store.
    Traces(TracesArgs),
    /// Talk with one agent; the conversation is kept for the session.
    Chat(ChatArgs),
    /// Use an MCP server's tools: list them, or give a task to an agent that has them.
    Mcp(McpArgs),
    /// Show or change user defaults (~/.agenthelm/config.yaml).
    Config(ConfigArgs),
    /// Print a shell completion script.
    Completions(CompletionsArgs),
}

/// `agenthelm init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Folder for the workspace (created if missing).
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Overwrite files that already exist.
    #[arg(long)]
    pub force: bool,
}

/// `agenthelm run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The task.
    pub task: String,
    /// The agent (default: the workspace's default_agent, or its only agent).
    #[arg(long, short)]
    pub agent: Option<String>,
    /// Model for this run, as provider/model (overrides the workspace).
    #[arg(long, short)]
    pub model: Option<String>,
    /// Let tools that require approval run without asking.
    #[arg(long)]
    pub approve_tools: bool,
}

/// `agenthelm plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// What the plan should achieve.
    pub goal: String,
    /// Save the plan to this file (YAML).
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Execute the plan right away (counts as the approval).
    #[arg(long)]
    pub approve: bool,
    /// Model for the planner and agents, as provider/model (overrides the workspace).
    #[arg(long, short)]
    pub model: Option<String>,
    /// With --approve: options of the execution.
    #[command(flatten)]
    pub execution: ExecutionArgs,
}

/// How a plan is executed.
#[derive(Debug, Args, Clone, Default)]
pub struct ExecutionArgs {
    /// Run at most N steps at the same time (default: 16, fewer when the open-files limit is low).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_parallel: Option<u32>,
    /// Do not undo finished steps when a step fails.
    #[arg(long)]
    pub no_rollback: bool,
    /// Let tools that require approval run without asking.
    #[arg(long)]
    pub approve_tools: bool,
    /// Print the result as JSON on stdout (progress goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// Send the run's spans to this OTLP/HTTP collector when it ends (default:
    /// OTEL_EXPORTER_OTLP_ENDPOINT, if set).
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
}

/// `agenthelm show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The plan file.
    pub plan: PathBuf,
    /// How to draw it.
    #[arg(long, short, value_enum, default_value_t = ShowFormat::Table)]
    pub format: ShowFormat,
}

/// Formats of `agenthelm show`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ShowFormat {
    /// A table and the dependency graph as text.
    Table,
    /// The plan file, normalized.
    Yaml,
    /// The plan as JSON.
    Json,
    /// A Mermaid flowchart.
    Mermaid,
    /// A Graphviz digraph.
    Dot,
}

/// `agenthelm execute`.
#[derive(Debug, Args)]
pub struct ExecuteArgs {
    /// The plan file.
    pub plan: PathBuf,
    /// Check and show the plan, but run nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation.
    #[arg(long, short)]
    pub yes: bool,
    /// Options of the execution.
    #[command(flatten)]
    pub execution: ExecutionArgs,
}

/// `agenthelm resume`.
#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// The run to continue (see `agenthelm runs list`).
    pub run_id: String,
    /// What to do with steps that were running when the run stopped: run them again (their
    /// tools see the same idempotency key) or mark them failed (which rolls the run back).
    #[arg(long, value_enum, default_value_t = Interrupted::Rerun)]
    pub interrupted: Interrupted,
    /// Options of the execution.
    #[command(flatten)]
    pub execution: ExecutionArgs,
}

/// `agenthelm replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The run to replay (see `agenthelm runs list`).
    pub run_id: String,
    /// Run the tools for real instead of taking their outputs from the journal.
    #[arg(long)]
    pub live_tools: bool,
    /// Call the models for real instead of taking their answers from the journal.
    #[arg(long)]
    pub live_models: bool,
    /// Replay this plan file instead of the run's own plan (its steps are compared with the
    /// recorded steps of the same ids).
    #[arg(long, value_name = "FILE")]
    pub plan: Option<PathBuf>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// The rule for interrupted steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Interrupted {
    /// Run them again.
    Rerun,
    /// Mark them failed.
    Fail,
}

/// `agenthelm serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (loopback by default: put a TLS proxy in front to share it).
    #[arg(long, default_value = agenthelm_server::DEFAULT_ADDR)]
    pub addr: std::net::SocketAddr,
    /// Runs carried on at once; more wait for a slot.
    #[arg(long, default_value_t = agenthelm_server::DEFAULT_MAX_RUNS, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_runs: u32,
}

/// `agenthelm worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Take the work of this pool (repeat for several; default: every pool of the workspace).
    #[arg(long = "pool", value_name = "NAME")]
    pub pools: Vec<String>,
    /// Carry out at most N pieces of work of each pool at a time.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency: u32,
    /// Let tools that require approval run without asking.
    #[arg(long)]
    pub approve_tools: bool,
}

/// `agenthelm runs`.
#[derive(Debug, Args)]
pub struct RunsArgs {
    /// What to show.
    #[command(subcommand)]
    pub action: RunsAction,
}

/// `agenthelm runs` actions.
#[derive(Debug, Subcommand)]
pub enum RunsAction {
    /// The most recent runs first.
    List {
        /// Show at most N runs.
        #[arg(short = 'n', long, default_value_t = 20)]
        limit: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// One run: its steps, statuses, durations, errors, rollback, tokens and cost.
    Show {
        /// The run's id.
        run_id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete runs that ended before a time (unfinished runs are always kept).
    Prune {
        /// An age (`30d`, `12h`) or an RFC 3339 time: runs that ended before it are deleted.
        #[arg(long, value_name = "AGE")]
        older_than: String,
        /// Keep failed runs (delete only those that succeeded).
        #[arg(long)]
        keep_failed: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write one self-contained HTML page with the run's dependency graph and timeline.
    Report {
        /// The run's id.
        run_id: String,
        /// The page to write.
        #[arg(short, long, value_name = "FILE", default_value = "run.html")]
        output: PathBuf,
    },
}

/// `agenthelm traces`.
#[derive(Debug, Args)]
pub struct TracesArgs {
    /// What to show.
    #[command(subcommand)]
    pub action: TracesAction,
}

/// `agenthelm traces` actions.
#[derive(Debug, Subcommand)]
pub enum TracesAction {
    /// The most recent traces (tool calls and LLM calls), newest first.
    List {
        /// Show at most N traces.
        #[arg(short = 'n', long, default_value_t = 20)]
        limit: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// One trace in full, by the id `traces list` shows.
    Show {
        /// The trace id, `RUN_ID/N`.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Traces that match every given condition, newest first.
    Filter {
        /// Which traces.
        #[command(flatten)]
        filter: TraceFilterArgs,
        /// Show at most N traces.
        #[arg(short = 'n', long)]
        limit: Option<usize>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write traces to a file (all of them, or those matching the conditions).
    Export {
        /// The file to write.
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
        /// Its format.
        #[arg(short, long, value_enum, default_value_t = ExportFormat::Json)]
        format: ExportFormat,
        /// Which traces.
        #[command(flatten)]
        filter: TraceFilterArgs,
    },
}

/// Conditions on traces.
#[derive(Debug, Args, Clone, Default)]
pub struct TraceFilterArgs {
    /// Only calls of this tool (or LLM calls of this model).
    #[arg(long)]
    pub tool: Option<String>,
    /// Only calls made by this agent.
    #[arg(long)]
    pub agent: Option<String>,
    /// Only calls of this run.
    #[arg(long, value_name = "RUN_ID")]
    pub run: Option<String>,
    /// Only tool calls whose approval (or denial) this person gave (`by` of the decision: a
    /// server user, or the OS user who answered at the terminal).
    #[arg(long, value_name = "NAME")]
    pub approved_by: Option<String>,
    /// Only successful or only failed calls.
    #[arg(long, value_enum)]
    pub status: Option<TraceStatus>,
    /// Not before this time: RFC 3339 (2026-11-27T10:00:00Z) or an age like 30s, 15m, 2h, 7d.
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Not after this time (same forms as --since).
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// At least this long, in milliseconds.
    #[arg(long, value_name = "MS")]
    pub min_time: Option<f64>,
    /// At most this long, in milliseconds.
    #[arg(long, value_name = "MS")]
    pub max_time: Option<f64>,
}

/// Outcome of a traced call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TraceStatus {
    /// It succeeded.
    Success,
    /// It failed.
    Failed,
}

/// Formats of `traces export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// A JSON array.
    Json,
    /// Comma-separated values with a header row.
    Csv,
    /// A Markdown table.
    Md,
}

/// `agenthelm chat`.
#[derive(Debug, Args)]
pub struct ChatArgs {
    /// The agent (default: the workspace's default_agent, or its only agent).
    #[arg(long, short)]
    pub agent: Option<String>,
    /// Model for this session, as provider/model (overrides the workspace).
    #[arg(long, short)]
    pub model: Option<String>,
    /// Let tools that require approval run without asking.
    #[arg(long)]
    pub approve_tools: bool,
}

/// `agenthelm config`.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// What to do with the settings.
    #[command(subcommand)]
    pub action: ConfigAction,
}

/// `agenthelm config` actions.
#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Print the user defaults and the workspace in effect.
    Show,
    /// Set a user default: `model` or `max_parallel`.
    Set {
        /// The setting.
        key: String,
        /// Its new value.
        value: String,
    },
    /// Print the path of the user defaults file.
    Path,
}

/// `agenthelm completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// Shells with completion scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    /// Bash.
    Bash,
    /// Zsh.
    Zsh,
    /// Fish.
    Fish,
}

/// `agenthelm mcp`.
#[derive(Debug, Args)]
pub struct McpArgs {
    /// What to do with the server.
    #[command(subcommand)]
    pub action: McpAction,
}

/// `agenthelm mcp` actions.
#[derive(Debug, Subcommand)]
pub enum McpAction {
    /// Start the server and list its tools: names, descriptions and parameters.
    ///
    /// Example: agenthelm mcp list-tools -- npx -y @modelcontextprotocol/server-everything
    ListTools(McpListArgs),
    /// Give a task to an agent whose tools are the server's tools.
    ///
    /// Example: agenthelm mcp run -t "What time is it in Tokyo?" -- uvx mcp-server-time
    Run(McpRunArgs),
}

/// Which MCP server: a command after `--`, a URL, or a server of the workspace file.
#[derive(Debug, Args)]
pub struct McpServerArgs {
    /// A server under `mcp_servers:` in the workspace file.
    #[arg(long, value_name = "NAME", conflicts_with_all = ["url", "command"])]
    pub server: Option<String>,
    /// A server reached over streamable HTTP, e.g. http://127.0.0.1:3001/mcp.
    #[arg(long, conflicts_with = "command")]
    pub url: Option<String>,
    /// Seconds the server may take to start and answer `initialize` (default 30).
    #[arg(long, value_name = "SECS")]
    pub startup_timeout: Option<f64>,
    /// The server's program and its arguments, after `--` (run without a shell).
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// `agenthelm mcp list-tools`.
#[derive(Debug, Args)]
pub struct McpListArgs {
    /// The server.
    #[command(flatten)]
    pub server: McpServerArgs,
    /// Print the tools as JSON (name, description, parameters schema).
    #[arg(long)]
    pub json: bool,
}

/// `agenthelm mcp run`.
#[derive(Debug, Args)]
pub struct McpRunArgs {
    /// The task.
    #[arg(long, short)]
    pub task: String,
    /// Model, as provider/model (default: the workspace's or the user's model).
    #[arg(long, short)]
    pub model: Option<String>,
    /// Let tools that require approval run without asking.
    #[arg(long)]
    pub approve_tools: bool,
    /// The server.
    #[command(flatten)]
    pub server: McpServerArgs,
}
