//! The web UI: server-rendered pages with one small script and one style sheet, both built
//! into the binary (no Node build, no outside requests).
//!
//! Pages: `/` the runs (filter by state), `/runs/{id}` a run (graph, timeline and steps, live
//! from its event stream; its plan review while it awaits approval), `/approvals` the tool
//! calls waiting for a person, `/submit` a plan to run, `/login` and `/logout`. A browser signs
//! in with a token once (the form, or the `/?token=` link `agenthelm serve` prints); the token
//! is then kept in an `HttpOnly`, `SameSite=Strict` cookie, which the API takes as well as the
//! bearer header. Everything a run holds is shown as text.

mod html;
mod pages;

use axum::extract::{Form, FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

use crate::api::AppState;
use crate::session;

pub use html::escape;

const SCRIPT: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/app.css");

/// The UI's routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(pages::runs))
        .route("/login", get(login_page).post(login))
        .route("/logout", get(logout).post(logout))
        .route("/runs/{id}", get(pages::run))
        .route("/runs/{id}/review", get(pages::run))
        .route("/approvals", get(pages::approvals))
        .route("/submit", get(pages::submit))
        .route("/ui/app.js", get(script))
        .route("/ui/app.css", get(style))
}

/// The signed-in user of a page; a browser not signed in is sent to `/login`.
pub(crate) struct SignedIn(pub String);

impl FromRequestParts<AppState> for SignedIn {
    type Rejection = Redirect;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Redirect> {
        user_of(state, &parts.headers)
            .map(SignedIn)
            .ok_or_else(|| Redirect::to("/login"))
    }
}

/// The user the request's session cookie signs in, if any.
pub(crate) fn user_of(state: &AppState, headers: &HeaderMap) -> Option<String> {
    session::token(headers).and_then(|token| state.users.who(&token).map(str::to_owned))
}

/// Signs the browser in with `token` and sends it to `to`.
fn signed_in(token: &str, to: &str) -> Response {
    (
        [(header::SET_COOKIE, session::set_cookie(token))],
        Redirect::to(to),
    )
        .into_response()
}

fn login_form(failed: bool) -> String {
    let notice = if failed {
        "<p class=\"error\" id=\"login-error\">That token is not known here.</p>"
    } else {
        ""
    };
    let body = format!(
        "<section class=\"login\"><h1>Sign in</h1>{notice}\
         <form method=\"post\" action=\"/login\"><label>Token \
         <input type=\"password\" name=\"token\" id=\"token\" autocomplete=\"current-password\" \
         required autofocus></label><button type=\"submit\" id=\"sign-in\" class=\"primary\">Sign in</button>\
         </form><p class=\"hint\">The owner token is in <code>.agenthelm/server-token</code>; \
         <code>agenthelm serve</code> prints a sign-in link.</p></section>"
    );
    html::page("Sign in", None, &body)
}

async fn login_page() -> Html<String> {
    Html(login_form(false))
}

#[derive(Deserialize)]
struct Login {
    token: String,
}

async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<Login>,
) -> Response {
    // A browser always sends `Origin` with a form post: one from another site is refused.
    if headers.contains_key(header::ORIGIN) && !session::same_origin(&headers) {
        return (StatusCode::FORBIDDEN, "cross-site sign-in refused").into_response();
    }
    let token = form.token.trim();
    match state.users.who(token) {
        Some(_) => signed_in(token, "/"),
        None => (StatusCode::UNAUTHORIZED, Html(login_form(true))).into_response(),
    }
}

async fn logout() -> Response {
    (
        [(header::SET_COOKIE, session::clear_cookie())],
        Redirect::to("/login"),
    )
        .into_response()
}

#[derive(Deserialize)]
pub(crate) struct ListQuery {
    token: Option<String>,
    state: Option<String>,
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

fn asset(kind: &'static str, text: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        text,
    )
        .into_response()
}

/// The sign-in link (`/?token=...`): signs in and sends the browser on to `/` (so the token
/// leaves the address bar); an unknown token goes to the sign-in form.
pub(crate) fn token_link(state: &AppState, query: &Query<ListQuery>) -> Option<Response> {
    let token = query.token.as_deref()?;
    Some(match state.users.who(token) {
        Some(_) => signed_in(token, "/"),
        None => (StatusCode::UNAUTHORIZED, Html(login_form(true))).into_response(),
    })
}
