use axum::Router;
use axum::extract::DefaultBodyLimit;

use crate::error::{ApiError, ErrorCode};

/// The largest request body any endpoint takes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(ErrorCode::MethodNotAllowed, "this route does not take that method")
}

/// What every function's router gets: envelope answers for unknown routes and methods, and
/// the body size limit.
pub fn with_defaults(router: Router) -> Router {
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
}
