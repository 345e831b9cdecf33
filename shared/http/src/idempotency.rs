use aws_lc_rs::digest;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use dotmac_store::{Begin, IdempotencyKey, SavedResponse, Store};
use serde::Serialize;
use std::future::Future;
use time::OffsetDateTime;

use crate::error::{ApiError, ErrorCode};

pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// The `Idempotency-Key` header, as the OpenAPI document describes it.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct IdempotencyKeyHeader {
    #[param(rename = "Idempotency-Key", schema_with = crate::schema::idempotency_key)]
    idempotency_key: Option<String>,
}

/// Identifies a request's content, so a key reused with another body is caught.
pub fn request_fingerprint(method: &str, path: &str, body: &[u8]) -> String {
    let mut context = digest::Context::new(&digest::SHA256);
    for part in [method.as_bytes(), b"\n", path.as_bytes(), b"\n", body] {
        context.update(part);
    }
    URL_SAFE_NO_PAD.encode(context.finish().as_ref())
}

/// The answer of a request that may carry an `Idempotency-Key`: the work's own typed body,
/// or the saved answer of the first request with that key.
pub enum Idempotent<T> {
    Fresh(StatusCode, T),
    Replayed(StatusCode, serde_json::Value),
}

impl<T: Serialize> IntoResponse for Idempotent<T> {
    fn into_response(self) -> Response {
        match self {
            Idempotent::Fresh(status, body) => (status, axum::Json(body)).into_response(),
            Idempotent::Replayed(status, body) => {
                let mut response = (status, axum::Json(body)).into_response();
                response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
                response
            }
        }
    }
}

/// The `Idempotency-Key` header's value, when one was sent.
pub fn idempotency_key(headers: &HeaderMap) -> Option<&str> {
    headers.get(IDEMPOTENCY_KEY_HEADER).map(|value| value.to_str().unwrap_or_default())
}

/// Runs `work` at most once per `Idempotency-Key` (scoped to the caller): a retry with the
/// same key and body replays the first success; a key reused with another body is a 422; a
/// retry while the first is still running is a 409. Failures free the key so a retry can
/// succeed.
pub async fn idempotent<T, Fut>(
    store: &Store,
    scope: &str,
    headers: &HeaderMap,
    fingerprint: &str,
    work: impl FnOnce() -> Fut,
) -> Result<Idempotent<T>, ApiError>
where
    T: Serialize,
    Fut: Future<Output = Result<(StatusCode, T), ApiError>>,
{
    let Some(raw) = idempotency_key(headers) else {
        return work().await.map(|(status, body)| Idempotent::Fresh(status, body));
    };
    let key = IdempotencyKey::parse(raw)?;
    let claim = match store.begin_idempotent(scope, &key, fingerprint, OffsetDateTime::now_utc()).await? {
        Begin::Started(claim) => claim,
        Begin::Replay(saved) => {
            let status = StatusCode::from_u16(saved.status).map_err(ApiError::internal)?;
            let body: serde_json::Value = serde_json::from_str(&saved.body).map_err(ApiError::internal)?;
            return Ok(Idempotent::Replayed(status, body));
        }
        Begin::InProgress => {
            return Err(ApiError::new(
                ErrorCode::RequestInProgress,
                "a request with this Idempotency-Key is still being processed; retry shortly",
            ));
        }
        Begin::Mismatch => {
            return Err(ApiError::new(
                ErrorCode::IdempotencyKeyReused,
                "this Idempotency-Key was used with a different request",
            )
            .with_details(serde_json::json!({ "field": "Idempotency-Key" })));
        }
    };
    match work().await {
        Ok((status, body)) => {
            let text = serde_json::to_string(&body).map_err(ApiError::internal)?;
            let saved = SavedResponse { status: status.as_u16(), body: text };
            if let Err(error) = store.complete_idempotent(scope, &key, &claim, &saved).await {
                // The work is done; the client still gets its answer. A retry after the lock
                // expires would redo it, so say so loudly.
                tracing::error!(%error, "idempotent response not saved");
            }
            Ok(Idempotent::Fresh(status, body))
        }
        Err(error) => {
            if let Err(release) = store.abandon_idempotent(scope, &key, &claim).await {
                tracing::warn!(error = %release, "idempotency key not released; it frees itself when its lock expires");
            }
            Err(error)
        }
    }
}
