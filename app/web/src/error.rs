//! The one error shape of the API: `{"error": {"code", "message"}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use lanspread::{ErrorCode, HasCode};
use serde::Serialize;

/// An answer that is not a success.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code: the library's [`ErrorCode`] or one of the API's own.
    pub code: &'static str,
    /// For people.
    pub message: String,
}

impl ApiError {
    /// An error with `status`, `code` and `message`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into() }
    }

    /// A typed error of the library, with the status its code calls for.
    pub fn typed(e: &impl HasCode) -> Self {
        let code = e.code();
        ApiError::new(status_of(code), code.as_str(), e.to_string())
    }

    /// No or a wrong token.
    pub fn unauthorized() -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "a valid token is needed (open the URL lanspread printed)")
    }

    /// A `Host` this UI does not answer to (DNS rebinding).
    pub fn forbidden_host(host: &str) -> Self {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden_host", format!("this UI does not answer to host {host:?}"))
    }

    /// A state change requested by another origin.
    pub fn forbidden_origin(why: impl Into<String>) -> Self {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden_origin", why)
    }

    /// A state change whose body is not JSON.
    pub fn unsupported_media_type() -> Self {
        ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", "send the body as application/json")
    }

    /// A body over the limit.
    pub fn payload_too_large(limit: usize) -> Self {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", format!("request bodies are limited to {limit} bytes"))
    }

    /// A request that cannot be understood.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// No such route or game.
    pub fn not_found(what: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", what)
    }

    /// A route that exists, with another method.
    pub fn method_not_allowed() -> Self {
        ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this route does not take that method")
    }
}

/// The status of a refusal with `code`: an unknown game is 404, a game (or
/// runtime) that is busy is 409, and any other refusal is 422 (the request
/// was understood, but this state does not allow it).
pub fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::NotInCatalog => StatusCode::NOT_FOUND,
        ErrorCode::Busy | ErrorCode::ShuttingDown => StatusCode::CONFLICT,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: Detail<'a>,
}

#[derive(Serialize)]
struct Detail<'a> {
    code: &'a str,
    message: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body { error: Detail { code: self.code, message: &self.message } };
        (self.status, Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lanspread::{GameId, InstallError, OperationKind};

    #[test]
    fn typed_errors_keep_their_code_and_get_the_status_of_its_kind() {
        let id = GameId::new("arena").unwrap();
        let cases = [
            (InstallError::NotInCatalog(id.clone()), StatusCode::NOT_FOUND, "not_in_catalog"),
            (InstallError::Busy { id: id.clone(), running: OperationKind::Downloading }, StatusCode::CONFLICT, "busy"),
            (InstallError::ShuttingDown, StatusCode::CONFLICT, "shutting_down"),
            (InstallError::NotDownloaded(id.clone()), StatusCode::UNPROCESSABLE_ENTITY, "not_downloaded"),
        ];
        for (e, status, code) in cases {
            let api = ApiError::typed(&e);
            assert_eq!((api.status, api.code, api.message.as_str()), (status, code, e.to_string().as_str()));
        }
    }
}
