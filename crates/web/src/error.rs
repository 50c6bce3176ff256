//! Errors as the API answers them: `{"error": {"code", "message", "field"}}` with the
//! status that fits the error's kind.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use usersync_engine::{EngineError, ErrorKind, error_text};
use utoipa::ToSchema;

/// An error of a request.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
}

/// What every failed request answers.
#[derive(Serialize, ToSchema)]
#[schema(as = Error)]
pub(crate) struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize, ToSchema)]
#[schema(as = ErrorDetail)]
struct Inner<'a> {
    /// What went wrong, one of the codes [`CODES`] lists.
    #[schema(value_type = String)]
    code: &'a str,
    /// What went wrong and how to mend it, in words.
    #[schema(value_type = String)]
    message: &'a str,
    /// The request's field at fault (a body's field, a query parameter), when one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    field: Option<&'a str>,
}

/// Every error code with its status and meaning, for the API's description.
pub(crate) const CODES: &[(&str, u16, &str)] = &[
    (
        "invalid",
        422,
        "a field, parameter or body is not valid; `field` names it",
    ),
    (
        "unauthenticated",
        401,
        "no token, or a token that is unknown or revoked",
    ),
    (
        "forbidden",
        403,
        "the token's role may not make this change",
    ),
    (
        "not_found",
        404,
        "no such object, or one the token does not see",
    ),
    (
        "conflict",
        409,
        "the change clashes with what is there (a name taken, a run in progress)",
    ),
    (
        "unsupported_media_type",
        415,
        "the body is not sent as JSON",
    ),
    (
        "rate_limited",
        429,
        "too many attempts lately; wait and try again",
    ),
    (
        "tenant_refused",
        502,
        "the Microsoft 365 tenant refused: consent, permission or secret",
    ),
    (
        "unavailable",
        503,
        "the tenant or the database did not answer; try again later",
    ),
    ("corrupt", 500, "stored data could not be read"),
    (
        "internal",
        500,
        "anything else; the service's log says more",
    ),
];

impl ApiError {
    pub fn invalid(field: Option<&str>, message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "invalid",
            message: message.into(),
            field: field.map(str::to_string),
        }
    }

    pub fn unauthenticated() -> ApiError {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            code: "unauthenticated",
            message: "give a valid API token: Authorization: Bearer TOKEN (usersync token create)"
                .into(),
            field: None,
        }
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message: message.into(),
            field: None,
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> ApiError {
        let kind = error.kind();
        let (status, code) = match kind {
            ErrorKind::Invalid => (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
            ErrorKind::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ErrorKind::Conflict => (StatusCode::CONFLICT, "conflict"),
            ErrorKind::Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            ErrorKind::Forbidden => (StatusCode::FORBIDDEN, "forbidden"),
            ErrorKind::Consent => (StatusCode::BAD_GATEWAY, "tenant_refused"),
            ErrorKind::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ErrorKind::Limited => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ErrorKind::Corrupt => (StatusCode::INTERNAL_SERVER_ERROR, "corrupt"),
            ErrorKind::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        if status.is_server_error() {
            tracing::warn!(error = %error_text(&error), "API request failed");
        }
        ApiError {
            status,
            code,
            message: error_text(&error),
            field: error.field(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body {
            error: Inner {
                code: self.code,
                message: &self.message,
                field: self.field.as_deref(),
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
