//! The pages. Lists and plans are rendered here, escaped; a run's live parts are drawn by the
//! script from the API.

use agenthelm::trace::RunPhase;
use agenthelm::{Plan, RunState};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use std::fmt::Write;

use super::html::{escape, page};
use super::{token_link, user_of, ListQuery, SignedIn};
use crate::api::AppState;
use crate::runs::PendingCall;
use crate::view::RunLine;

/// What pages may load: this server's script and style only.
const POLICY: &str = "default-src 'self'; img-src 'self' data:; object-src 'none'; \
                      base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// How many runs the list shows.
const LIST_LIMIT: usize = 200;

fn html(status: StatusCode, text: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        text,
    )
        .into_response()
}

fn problem_page(user: &str, status: StatusCode, message: &str) -> Response {
    let body = format!("<p class=\"error\">{}</p>", escape(message));
    html(status, page("Problem", Some(user), &body))
}

/// `/`: the runs, newest first, filtered by `?state=`.
pub(super) async fn runs(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Query<ListQuery>,
) -> Response {
    if let Some(answer) = token_link(&state, &query) {
        return answer;
    }
    let Some(user) = user_of(&state, &headers) else {
        return Redirect::to("/login").into_response();
    };
    let wanted = match query.state.as_deref().filter(|s| !s.is_empty()) {
        Some(name) => match name.parse::<RunPhase>() {
            Ok(phase) => Some(phase),
            Err(e) => return problem_page(&user, StatusCode::BAD_REQUEST, &e.to_string()),
        },
        None => None,
    };
    match run_lines(&state, wanted) {
        Ok(lines) => html(
            StatusCode::OK,
            page("Runs", Some(&user), &runs_body(&lines, wanted)),
        ),
        Err(e) => problem_page(&user, StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

/// A line of the list with its cost.
struct Line {
    line: RunLine,
    cost_usd: f64,
    cost_complete: bool,
}

fn run_lines(
    state: &AppState,
    wanted: Option<RunPhase>,
) -> Result<Vec<Line>, agenthelm::store::StoreError> {
    let listed = state.runs.list(wanted, LIST_LIMIT)?;
    let lines = listed
        .iter()
        .map(|(summary, run)| {
            let usage = run.usage();
            Line {
                line: RunLine::of(summary, run.phase()),
                cost_usd: usage.cost_usd,
                cost_complete: !usage.cost_incomplete(),
            }
        })
        .collect();
    Ok(lines)
}

fn runs_body(lines: &[Line], wanted: Option<RunPhase>) -> String {
    let mut out = String::from("<h1>Runs</h1><nav class=\"filters\" id=\"filters\">");
    let current = wanted.map(RunPhase::name).unwrap_or("");
    let all =
        std::iter::once(("", "all")).chain(RunPhase::ALL.iter().map(|p| (p.name(), p.name())));
    for (value, label) in all {
        let class = if value == current {
            " class=\"active\""
        } else {
            ""
        };
        let href = if value.is_empty() {
            "/".to_owned()
        } else {
            format!("/?state={value}")
        };
        let _ = write!(
            out,
            "<a href=\"{href}\"{class}>{}</a>",
            label.replace('_', " ")
        );
    }
    out.push_str("</nav>");
    if lines.is_empty() {
        out.push_str(match wanted {
            Some(_) => "<p class=\"empty\">No run is in this state.</p>",
            None => "<p class=\"empty\">No runs yet. <a href=\"/submit\">Submit a plan</a>.</p>",
        });
        return out;
    }
    out.push_str(
        "<table class=\"runs\" id=\"runs\"><thead><tr><th>Goal</th><th>State</th><th>Started</th>\
         <th>Steps</th><th>Cost</th><th>Run</th></tr></thead><tbody>",
    );
    for Line {
        line,
        cost_usd,
        cost_complete,
    } in lines
    {
        let id = escape(&line.run_id);
        let _ = write!(
            out,
            "<tr data-run=\"{id}\"><td><a href=\"/runs/{id}\">{}</a></td>\
             <td><span class=\"badge state-{state}\">{label}</span></td><td>{}</td><td>{}</td>\
             <td>{}</td><td><code>{id}</code></td></tr>",
            escape(&line.goal),
            escape(&line.started),
            line.steps,
            cost(*cost_usd, *cost_complete),
            state = line.state.name(),
            label = line.state.name().replace('_', " "),
        );
    }
    out.push_str("</tbody></table>");
    out
}

fn cost(usd: f64, complete: bool) -> String {
    let more = if complete { "" } else { " +" };
    format!("${usd:.4}{more}")
}

/// `/runs/{id}` (and `/runs/{id}/review`): a run, with its plan review while it awaits one.
pub(super) async fn run(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    Path(id): Path<String>,
) -> Response {
    let run = match state.runs.store().load_run_outline(&id) {
        Ok(run) => run,
        Err(agenthelm::store::StoreError::UnknownRun(_)) => {
            return problem_page(&user, StatusCode::NOT_FOUND, &format!("No run `{id}`."))
        }
        Err(e) => return problem_page(&user, StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    };
    let phase = RunState::replay(&run.plan, &run.events).phase();
    let review = if phase == RunPhase::AwaitingApproval {
        review_section(&run.plan)
    } else {
        String::new()
    };
    let body = format!(
        "<section id=\"run\" data-run=\"{rid}\"><h1 id=\"goal\">{goal}</h1>\
         <p class=\"meta\"><span id=\"state\" class=\"badge\"></span> <span id=\"times\"></span> \
         <a href=\"/api/runs/{rid}/report\">report</a></p>\
         <div class=\"facts\" id=\"facts\"></div>{review}\
         <h2>Graph</h2><div id=\"graph\" class=\"graph\"></div>\
         <h2>Timeline</h2><div id=\"timeline\" class=\"timeline\"></div>\
         <h2>Steps</h2><table class=\"steps\"><thead><tr><th>Step</th><th>Description</th>\
         <th>Agent / tool</th><th>Status</th><th>Attempts</th><th>Result or error</th></tr>\
         </thead><tbody id=\"steps\"></tbody></table>\
         <div id=\"rollback-box\" hidden><h2>Rollback</h2><ol id=\"rollback\"></ol></div>\
         <div id=\"approvals-box\" hidden><h2>Tool-call approvals</h2><table class=\"approvals\">\
         <thead><tr><th>Tool</th><th>Step</th><th>Arguments</th><th>Decision</th><th>By</th>\
         <th>At</th><th>Reason</th></tr></thead><tbody id=\"approvals\"></tbody></table></div>\
         </section>",
        rid = escape(&id),
        goal = escape(&run.plan.goal),
    );
    html(StatusCode::OK, page(&run.plan.goal, Some(&user), &body))
}

fn review_section(plan: &Plan) -> String {
    let yaml = plan.to_yaml().unwrap_or_default();
    let mut rows = String::new();
    for (i, step) in plan.steps.iter().enumerate() {
        let doer = match (&step.agent_name, &step.tool_name) {
            (_, Some(tool)) => format!("tool {}", escape(tool)),
            (Some(agent), None) => format!("agent {}", escape(agent)),
            (None, None) => String::new(),
        };
        let _ = write!(
            rows,
            "<tr data-index=\"{i}\"><td><code>{}</code></td><td>{}</td><td>{doer}</td>\
             <td><code>{}</code></td><td>{}</td><td class=\"problem\"></td></tr>",
            escape(&step.id),
            escape(&step.description),
            escape(&step.args.to_string()),
            escape(&step.depends_on.join(", ")),
        );
    }
    format!(
        "<section id=\"review\" class=\"review\"><h2>Plan review</h2>\
         <p>This plan waits for approval. Edit its YAML, check it, then approve or reject.</p>\
         <table class=\"plan\" id=\"plan-table\"><thead><tr><th>Step</th><th>Description</th>\
         <th>Agent / tool</th><th>Arguments</th><th>Depends on</th><th>Problems</th></tr>\
         </thead><tbody>{rows}</tbody></table>\
         <label for=\"plan-yaml\">Plan (YAML)</label>\
         <textarea id=\"plan-yaml\" spellcheck=\"false\" rows=\"18\">{yaml}</textarea>\
         <ul id=\"problems\" class=\"problems\"></ul>\
         <div class=\"actions\"><button id=\"check\" type=\"button\">Check</button>\
         <button id=\"approve\" type=\"button\" class=\"primary\">Approve</button>\
         <input id=\"reason\" placeholder=\"Reason to reject\">\
         <button id=\"reject\" type=\"button\" class=\"danger\">Reject</button></div>\
         <p id=\"review-status\" class=\"status\"></p></section>",
        yaml = escape(&yaml),
    )
}

/// `/approvals`: the tool calls of every run waiting for a person.
pub(super) async fn approvals(State(state): State<AppState>, SignedIn(user): SignedIn) -> Response {
    match state.runs.pending_approvals() {
        Ok(calls) => html(
            StatusCode::OK,
            page("Approvals", Some(&user), &approvals_body(&calls)),
        ),
        Err(e) => problem_page(&user, e.status, &e.error),
    }
}

fn approvals_body(calls: &[PendingCall]) -> String {
    let mut out = String::from("<h1>Approvals</h1><div id=\"inbox\">");
    if calls.is_empty() {
        out.push_str("<p class=\"empty\" id=\"inbox-empty\">No tool call waits for a person.</p>");
    }
    for call in calls {
        let args = serde_json::to_string_pretty(&call.args).unwrap_or_default();
        let _ = write!(
            out,
            "<article class=\"call\" data-id=\"{id}\"><h3>Tool <code>{tool}</code></h3>\
             <p class=\"meta\">Run <a href=\"/runs/{run}\">{run}</a> · step <code>{step}</code> · \
             {purpose} · asked {at}</p><label>Arguments \
             <textarea class=\"args\" rows=\"6\" spellcheck=\"false\">{args}</textarea></label>\
             <ul class=\"problems\"></ul><div class=\"actions\">\
             <button type=\"button\" data-action=\"approve\" class=\"primary\">Approve</button>\
             <button type=\"button\" data-action=\"edit\">Approve with these arguments</button>\
             <input class=\"reason\" placeholder=\"Reason\">\
             <button type=\"button\" data-action=\"deny\" class=\"danger\">Deny</button></div>\
             </article>",
            id = escape(&call.id),
            tool = escape(&call.tool),
            run = escape(&call.run_id),
            step = escape(call.step_id.as_deref().unwrap_or("-")),
            purpose = escape(&format!("{:?}", call.purpose).to_lowercase()),
            at = escape(&call.asked_at),
            args = escape(&args),
        );
    }
    out.push_str("</div>");
    out
}

const EXAMPLE: &str = "goal: say hello\nsteps:\n  - id: hello\n    tool: note\n    description: say hello\n    args: {}\n";

/// `/submit`: a plan's YAML to submit.
pub(super) async fn submit(SignedIn(user): SignedIn) -> Response {
    let body = format!(
        "<h1>Submit a plan</h1><section class=\"submit\">\
         <label for=\"submit-yaml\">Plan (YAML)</label>\
         <textarea id=\"submit-yaml\" rows=\"20\" spellcheck=\"false\">{}</textarea>\
         <ul id=\"problems\" class=\"problems\"></ul><div class=\"actions\">\
         <label><input type=\"checkbox\" id=\"submit-approve\"> approve at once</label>\
         <button type=\"button\" id=\"submit\" class=\"primary\">Submit</button></div>\
         <p id=\"submit-status\" class=\"status\"></p></section>",
        escape(EXAMPLE)
    );
    html(StatusCode::OK, page("Submit a plan", Some(&user), &body))
}
