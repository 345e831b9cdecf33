//! `axum::extract::Path` whose rejections (a segment that is not UTF-8 once decoded, say
//! `/v1/tenants/%FF`) answer with the error envelope, like every other refusal.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, ErrorCode};

pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(rejection) => Err(ApiError::new(ErrorCode::ValidationFailed, rejection.body_text())
                .with_details(serde_json::json!({ "field": "path", "reason": rejection.body_text() }))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::response::IntoResponse;
    use axum::routing::get;
    use tower::ServiceExt;

    #[tokio::test]
    async fn a_segment_that_is_not_utf8_is_refused_in_the_envelope() {
        let router =
            axum::Router::new().route("/things/{id}", get(|Path(id): Path<String>| async move { id }));
        let request = axum::http::Request::get("/things/%FF").body(Body::empty()).expect("request");
        let response = router.oneshot(request).await.expect("answer").into_response();
        assert_eq!(response.status(), axum::http::StatusCode::UNPROCESSABLE_ENTITY);
        let body = axum::body::to_bytes(response.into_body(), 4096).await.expect("body");
        let body: serde_json::Value = serde_json::from_slice(&body).expect("the envelope");
        assert_eq!(body["error"]["code"], "VALIDATION_FAILED");
        assert_eq!(body["error"]["details"]["field"], "path");
    }
}
