//! The one mapping from errors to HTTP responses: [`ErrorKind::status`] decides the code,
//! the body is an [`ErrorBody`]. A 500 means a bug and is logged.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use pier_api::{ErrorBody, ErrorKind};
use pier_image::ImageError;

/// An error on its way to a client.
#[derive(Debug)]
pub struct ApiError {
    pub kind: ErrorKind,
    pub message: String,
    pub exit_code: Option<i32>,
}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ApiError {
            kind,
            message: message.into(),
            exit_code: None,
        }
    }
    /// Adds the exit code Docker would report for a container that could not start.
    pub fn with_exit_code(mut self, code: i32) -> Self {
        self.exit_code = Some(code);
        self
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidInput, message)
    }
}

impl From<ImageError> for ApiError {
    fn from(e: ImageError) -> Self {
        ApiError::new(e.kind(), e.chain())
    }
}

impl From<pier_store::StoreError> for ApiError {
    fn from(e: pier_store::StoreError) -> Self {
        ImageError::from(e).into()
    }
}

impl From<pier_engine::EngineError> for ApiError {
    fn from(e: pier_engine::EngineError) -> Self {
        ApiError {
            kind: e.kind(),
            message: e.message(),
            exit_code: e.exit_code(),
        }
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> Self {
        ApiError::new(ErrorKind::Internal, format!("an engine task failed: {e}"))
    }
}

impl From<axum::extract::rejection::JsonRejection> for ApiError {
    fn from(r: axum::extract::rejection::JsonRejection) -> Self {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return ApiError::new(ErrorKind::TooLarge, body_too_large());
        }
        ApiError::invalid(format!("invalid request body: {}", r.body_text()))
    }
}

/// Why a JSON body was refused for its size.
pub fn body_too_large() -> String {
    format!(
        "the request body is larger than the limit of {} MiB for JSON requests; archives, images and build contexts are streamed by their own endpoints",
        crate::http::JSON_BODY_LIMIT >> 20
    )
}

impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(r: axum::extract::rejection::QueryRejection) -> Self {
        ApiError::invalid(format!("invalid query: {}", r.body_text()))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // The request's log line (crate::requests::track) quotes the message.
        let status =
            StatusCode::from_u16(self.kind.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let note = crate::requests::ErrorNote(self.message.clone());
        let mut resp = (
            status,
            Json(ErrorBody {
                kind: self.kind,
                message: self.message,
                exit_code: self.exit_code,
            }),
        )
            .into_response();
        resp.extensions_mut().insert(note);
        resp
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
