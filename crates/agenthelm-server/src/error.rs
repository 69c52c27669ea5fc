//! What the API answers when something is wrong: `{"error": "...", "problems": [...]}` with the
//! status code that says whose fault it is.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

/// One thing wrong with what was sent: where (a field path such as `steps[2].tool`, when known)
/// and what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The field, like `steps[2].depends_on` or `args.amount`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl Problem {
    /// A problem with `field`.
    pub fn at(field: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            field: Some(field.into()),
            message: message.into(),
        }
    }
}

/// An error answer of the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What went wrong, in a sentence.
    pub error: String,
    /// The details, each naming its field.
    pub problems: Vec<Problem>,
}

impl ApiError {
    fn new(status: StatusCode, error: impl Into<String>) -> Self {
        ApiError {
            status,
            error: error.into(),
            problems: Vec::new(),
        }
    }

    /// 400: the request cannot be read.
    pub fn malformed(error: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, error)
    }

    /// 401: no token, or not a known one.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "sign in: send `Authorization: Bearer <token>`",
        )
    }

    /// 403: refused although signed in (a cross-site form post).
    pub fn forbidden(error: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, error)
    }

    /// 404: no such thing.
    pub fn not_found(error: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, error)
    }

    /// 409: the thing is not in a state that allows this (already decided, already ended).
    pub fn conflict(error: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, error)
    }

    /// 422: readable, but it fails the checks; `problems` says where.
    pub fn unprocessable(error: impl Into<String>, problems: Vec<Problem>) -> Self {
        ApiError {
            problems,
            ..Self::new(StatusCode::UNPROCESSABLE_ENTITY, error)
        }
    }

    /// 503: the server cannot do it now (a run store that fails).
    pub fn unavailable(error: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, error)
    }

    /// 500: a fault of the server.
    pub fn internal(error: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, error)
    }

    /// With these problems.
    pub fn with_problems(mut self, problems: Vec<Problem>) -> Self {
        self.problems = problems;
        self
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    problems: &'a [Problem],
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body {
            error: &self.error,
            problems: &self.problems,
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<agenthelm::store::StoreError> for ApiError {
    fn from(error: agenthelm::store::StoreError) -> Self {
        use agenthelm::store::StoreError;
        match error {
            StoreError::UnknownRun(run) => ApiError::not_found(format!("no run `{run}`")),
            other => ApiError::unavailable(other.to_string()),
        }
    }
}
