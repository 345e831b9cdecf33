use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, ErrorCode};

/// `axum::Json` whose rejections answer with the error envelope and name the field.
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(Json(value)),
            Err(rejection) => Err(rejection_to_error(rejection)),
        }
    }
}

fn rejection_to_error(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::JsonDataError(error) => {
            // serde says e.g. "missing field `slug` at line 1 column 9"; keep the field name.
            let text = std::error::Error::source(&error)
                .map(ToString::to_string)
                .unwrap_or_else(|| error.body_text());
            match text.split('`').nth(1) {
                Some(field) => ApiError::invalid_field(field, text.clone()),
                None => ApiError::new(ErrorCode::ValidationFailed, text),
            }
        }
        JsonRejection::JsonSyntaxError(error) => ApiError::new(
            ErrorCode::MalformedRequest,
            format!("the body is not valid JSON: {}", error.body_text()),
        ),
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::new(ErrorCode::UnsupportedMediaType, "send the body as application/json")
        }
        JsonRejection::BytesRejection(error) if error.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(ErrorCode::PayloadTooLarge, "the body is too large")
        }
        other => ApiError::new(ErrorCode::MalformedRequest, other.body_text()),
    }
}
