//! The HTTP API: JSON in and out under `/api`, a bearer token on every route but health.

use agenthelm::agent::PlannerAgent;
use agenthelm::budget::Budget;
use agenthelm::orchestrate::{ReplayOptions, ReplayReport};
use agenthelm::trace::RunPhase;
use agenthelm::{Plan, PlanError, RunState};
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::Stream;
use serde::Deserialize;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::Users;
use crate::error::{ApiError, Problem};
use crate::hub::Numbered;
use crate::runs::{CallDecision, Runs};
use crate::session;
use crate::view::{RunLine, RunView};

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The runs.
    pub runs: Arc<Runs>,
    /// Who may sign in.
    pub users: Arc<Users>,
    /// Writes plans from goals, when the workspace has a model for it.
    pub planner: Option<Arc<PlannerAgent>>,
}

/// The signed-in user of a request.
#[derive(Debug, Clone)]
pub struct User(pub String);

/// The API's routes (the caller adds `state` to the router; the token check needs it too).
pub fn routes(state: &AppState) -> Router<AppState> {
    let protected = Router::new()
        .route("/api/runs", post(submit).get(list))
        .route("/api/runs/{id}", get(show))
        .route("/api/runs/{id}/approve", post(approve))
        .route("/api/runs/{id}/reject", post(reject))
        .route("/api/runs/{id}/cancel", post(cancel))
        .route("/api/runs/{id}/replay", post(replay))
        .route("/api/runs/{id}/events", get(events))
        .route("/api/runs/{id}/report", get(report))
        .route("/api/approvals", get(approvals))
        .route("/api/approvals/{id}", post(decide))
        .route("/api/plans/check", post(check_plan))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token,
        ));
    Router::new()
        .route("/api/health", get(health))
        .merge(protected)
}

/// The bearer token of a request, if it sent one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

async fn require_token(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let user = signed_in(&state, &request)?;
    request.extensions_mut().insert(User(user));
    Ok(next.run(request).await)
}

/// The user of a request, by its bearer token or, from the web UI, its session cookie. A
/// cookie-signed request that changes something must come from the server's own pages (403
/// otherwise): a cross-site form cannot borrow the cookie. Bearer requests are not checked
/// for that (a browser never adds the header by itself).
fn signed_in(state: &AppState, request: &Request) -> Result<String, ApiError> {
    let headers = request.headers();
    if let Some(token) = bearer(headers) {
        return state
            .users
            .who(token)
            .map(str::to_owned)
            .ok_or_else(ApiError::unauthorized);
    }
    let token = session::token(headers).ok_or_else(ApiError::unauthorized)?;
    let user = state.users.who(&token).ok_or_else(ApiError::unauthorized)?;
    if !request.method().is_safe() && !session::same_origin(headers) {
        return Err(ApiError::forbidden(
            "a signed-in browser may change things from this server's own pages only",
        ));
    }
    Ok(user.to_owned())
}

async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// 404 for anything no route takes.
pub async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

/// A JSON body whose problems are API errors (400), not axum's plain-text answers.
pub struct Body<T>(pub T);

impl<T, S> FromRequest<S> for Body<T>
where
    Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(Body(value)),
            Err(rejection) => Err(ApiError::malformed(format!(
                "the request body is not what this route takes: {}",
                rejection.body_text()
            ))),
        }
    }
}

/// An optional JSON body: none, or an empty one, is the default.
pub struct OptionalBody<T>(pub T);

impl<T, S> FromRequest<S> for OptionalBody<T>
where
    T: Default + serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(request, state)
            .await
            .map_err(|e| ApiError::malformed(e.body_text()))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalBody(T::default()));
        }
        serde_json::from_slice(&bytes)
            .map(OptionalBody)
            .map_err(|e| ApiError::malformed(format!("the request body is not valid: {e}")))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Submission {
    plan: Option<Value>,
    goal: Option<String>,
    #[serde(default)]
    approve: bool,
    /// Limits for this run, beside the plan's and the workspace's (the tightest applies).
    budget: Option<Budget>,
}

async fn submit(
    State(state): State<AppState>,
    axum::Extension(User(user)): axum::Extension<User>,
    Body(submission): Body<Submission>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let plan = match (submission.plan, submission.goal) {
        (Some(plan), None) => plan_of(&plan)?,
        (None, Some(goal)) => write_plan(&state, &goal).await?,
        _ => {
            return Err(ApiError::malformed(
                "send either `plan` (a plan object or YAML text) or `goal`",
            ))
        }
    };
    let mut plan = plan;
    if let Some(budget) = submission.budget {
        plan.budget = Some(budget.tightened_by(plan.budget.as_ref()));
    }
    let (run_id, phase) = state.runs.submit(plan, submission.approve, &user)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"run_id": run_id, "state": phase})),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckPlan {
    plan: Value,
}

/// Checks a plan without submitting it: 200 `{"ok": true}`, or the problems, each with its
/// field, as [`submit`] would answer them.
async fn check_plan(
    State(state): State<AppState>,
    Body(body): Body<CheckPlan>,
) -> Result<Json<Value>, ApiError> {
    let plan = plan_of(&body.plan)?;
    state.runs.check(&plan)?;
    Ok(Json(json!({"ok": true})))
}

/// A plan sent as an object or as YAML (or JSON) text.
pub fn plan_of(value: &Value) -> Result<Plan, ApiError> {
    let parsed = match value {
        Value::String(text) => Plan::from_yaml(text),
        Value::Object(_) => Plan::from_json(&value.to_string()),
        _ => {
            return Err(ApiError::malformed(
                "`plan` must be a plan object or its YAML text",
            ))
        }
    };
    parsed.map_err(|e| match e {
        PlanError::Parse {
            line,
            path,
            message,
            ..
        } => {
            let field = path.unwrap_or_else(|| "plan".to_owned());
            let message = match line {
                Some(line) => format!("line {line}: {message}"),
                None => message,
            };
            ApiError::malformed("the plan cannot be read")
                .with_problems(vec![Problem::at(field, message)])
        }
        other => ApiError::malformed(other.to_string()),
    })
}

async fn write_plan(state: &AppState, goal: &str) -> Result<Plan, ApiError> {
    let Some(planner) = &state.planner else {
        return Err(ApiError::unprocessable(
            "this workspace has no model for a planner: send a `plan` instead",
            vec![Problem::at("goal", "no planner")],
        ));
    };
    planner
        .plan(goal)
        .await
        .map_err(|e| ApiError::unprocessable(format!("the planner failed: {e}"), Vec::new()))
}

#[derive(Deserialize)]
struct ListQuery {
    state: Option<String>,
    limit: Option<usize>,
}

async fn list(
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Vec<RunLine>>, ApiError> {
    let wanted = match &query.state {
        Some(name) => Some(name.parse::<RunPhase>().map_err(|e| {
            ApiError::malformed("unknown state").with_problems(vec![Problem::at("state", e)])
        })?),
        None => None,
    };
    let listed = state.runs.list(wanted, query.limit.unwrap_or(100))?;
    let lines = listed
        .iter()
        .map(|(summary, run)| RunLine::of(summary, run.phase()))
        .collect();
    Ok(Json(lines))
}

async fn show(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let run = state.runs.store().load_run(&id)?;
    let run_state = RunState::replay(&run.plan, &run.events);
    Ok(Json(RunView::of(&run, &run_state)).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Approve {
    plan: Option<Value>,
}

async fn approve(
    State(state): State<AppState>,
    axum::Extension(User(user)): axum::Extension<User>,
    Path(id): Path<String>,
    OptionalBody(body): OptionalBody<Approve>,
) -> Result<Json<Value>, ApiError> {
    let edited = body.plan.as_ref().map(plan_of).transpose()?;
    state.runs.approve_plan(&id, edited, &user).await?;
    Ok(Json(json!({"run_id": id, "state": RunPhase::Running})))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Reject {
    reason: Option<String>,
}

async fn reject(
    State(state): State<AppState>,
    axum::Extension(User(user)): axum::Extension<User>,
    Path(id): Path<String>,
    OptionalBody(body): OptionalBody<Reject>,
) -> Result<Json<Value>, ApiError> {
    state.runs.reject_plan(&id, body.reason, &user).await?;
    Ok(Json(json!({"run_id": id, "state": RunPhase::Rejected})))
}

async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    state.runs.cancel(&id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"run_id": id, "cancelling": true})),
    ))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Replay {
    #[serde(default)]
    live_tools: bool,
    #[serde(default)]
    live_models: bool,
}

async fn replay(
    State(state): State<AppState>,
    Path(id): Path<String>,
    OptionalBody(body): OptionalBody<Replay>,
) -> Result<Json<ReplayReport>, ApiError> {
    let options = ReplayOptions {
        live_tools: body.live_tools,
        live_models: body.live_models,
    };
    Ok(Json(state.runs.replay(&id, options).await?))
}

async fn approvals(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!(state.runs.pending_approvals()?)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Decision {
    decision: String,
    args: Option<Value>,
    reason: Option<String>,
}

async fn decide(
    State(state): State<AppState>,
    axum::Extension(User(user)): axum::Extension<User>,
    Path(id): Path<String>,
    Body(body): Body<Decision>,
) -> Result<Json<Value>, ApiError> {
    let decision = match (body.decision.as_str(), body.args) {
        ("approve", None) => CallDecision::Approve,
        ("deny", None) => CallDecision::Deny,
        ("edit", Some(args)) => CallDecision::Edit(args),
        ("edit", None) => {
            return Err(ApiError::malformed("`edit` needs the edited `args`")
                .with_problems(vec![Problem::at("args", "missing")]))
        }
        ("approve" | "deny", Some(_)) => {
            return Err(ApiError::malformed("`args` go with `edit` only")
                .with_problems(vec![Problem::at("args", "only with `edit`")]))
        }
        (other, _) => {
            return Err(ApiError::malformed(format!(
                "unknown decision `{other}`: approve, deny or edit"
            ))
            .with_problems(vec![Problem::at("decision", "approve, deny or edit")]))
        }
    };
    state.runs.decide(&id, decision, body.reason, &user).await?;
    Ok(Json(json!({"id": id, "decided": true})))
}

async fn report(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Html<String>, ApiError> {
    let run = state.runs.store().load_run(&id)?;
    Ok(Html(agenthelm::report::render_html(&run)))
}

/// The run's journal as Server-Sent Events: each event as JSON with its position as `id:`,
/// history first (after `Last-Event-ID`), then live ones; the stream ends when the run does.
async fn events(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let after: usize = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    // Subscribed before the history is read: nothing falls between the two.
    let subscription = state.runs.hub().subscribe(&id);
    let run = state.runs.store().load_run(&id)?;
    let finished = RunState::replay(&run.plan, &run.events).phase().is_final();
    let history: Vec<Numbered> = run
        .events
        .into_iter()
        .enumerate()
        .map(|(i, event)| (i + 1, Arc::new(event)))
        .collect();
    let stream = async_stream(after, history, subscription, finished);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

fn sse_event((seq, event): &Numbered) -> SseEvent {
    let data = serde_json::to_string(event.as_ref()).unwrap_or_else(|_| "{}".to_owned());
    SseEvent::default()
        .id(seq.to_string())
        .event(event.kind.name())
        .data(data)
}

fn async_stream(
    after: usize,
    history: Vec<Numbered>,
    subscription: Option<crate::hub::Subscription>,
    finished: bool,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    use futures::StreamExt;
    let mut sent = after;
    let mut first: Vec<SseEvent> = Vec::new();
    for numbered in history.iter().chain(
        subscription
            .as_ref()
            .map(|s| s.recent.as_slice())
            .unwrap_or_default(),
    ) {
        if numbered.0 > sent {
            sent = numbered.0;
            first.push(sse_event(numbered));
        }
    }
    let live = match subscription {
        Some(subscription) if !finished => Some(subscription.live),
        _ => None,
    };
    let rest = futures::stream::unfold((live, sent), |(live, sent)| async move {
        let mut receiver = live?;
        loop {
            match receiver.recv().await {
                Ok(numbered) if numbered.0 > sent => {
                    let event = sse_event(&numbered);
                    let ends = numbered.1.kind.name() == "run_finished";
                    let next = if ends { None } else { Some(receiver) };
                    return Some((event, (next, numbered.0)));
                }
                Ok(_) => continue,
                // A slow reader missed events: it reconnects with Last-Event-ID.
                Err(_) => return None,
            }
        }
    });
    futures::stream::iter(first).chain(rest).map(Ok)
}
