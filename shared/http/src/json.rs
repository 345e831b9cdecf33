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
        JsonRejection::JsonDataError(error) => data_error(&error),
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

/// Names the offending field: the path serde was at (`name`, `owner.email`), or, for a
/// missing or unknown field, the one its message quotes.
fn data_error(error: &(dyn std::error::Error + 'static)) -> ApiError {
    let mut source = error.source();
    while let Some(cause) = source {
        if let Some(path_error) = cause.downcast_ref::<serde_path_to_error::Error<serde_json::Error>>() {
            let path = path_error.path().to_string();
            let reason = path_error.inner().to_string();
            let quoted = reason.split('`').nth(1).map(str::to_owned);
            let field = if path.is_empty() || path == "." { quoted } else { Some(path) };
            return match field {
                Some(field) => ApiError::invalid_field(&field, reason),
                None => ApiError::new(ErrorCode::ValidationFailed, reason),
            };
        }
        source = cause.source();
    }
    ApiError::new(ErrorCode::ValidationFailed, error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct TwoFields {
        name: String,
        slug: String,
    }

    async fn field_of(body: &str) -> serde_json::Value {
        let request = axum::http::Request::post("/")
            .header("content-type", "application/json")
            .body(Body::from(body.to_owned()))
            .expect("request");
        match Json::<TwoFields>::from_request(request, &()).await {
            Ok(_) => serde_json::Value::Null,
            Err(error) => error.details["field"].clone(),
        }
    }

    #[tokio::test]
    async fn names_the_field_whatever_went_wrong() {
        assert_eq!(field_of(r#"{"name":5,"slug":"a"}"#).await, "name");
        assert_eq!(field_of(r#"{"name":"a","slug":true}"#).await, "slug");
        assert_eq!(field_of(r#"{"name":"a","slug":null}"#).await, "slug");
        assert_eq!(field_of(r#"{"name":"a"}"#).await, "slug");
        assert_eq!(field_of(r#"{"name":"a","slug":"b","status":"x"}"#).await, "status");
    }
}
