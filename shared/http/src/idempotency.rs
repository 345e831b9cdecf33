use aws_lc_rs::digest;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use dotmac_store::{Begin, IdempotencyKey, SavedResponse, Store};
use std::future::Future;
use time::OffsetDateTime;

use crate::error::{ApiError, ErrorCode};

pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// Identifies a request's content, so a key reused with another body is caught.
pub fn request_fingerprint(method: &str, path: &str, body: &[u8]) -> String {
    let mut context = digest::Context::new(&digest::SHA256);
    for part in [method.as_bytes(), b"\n", path.as_bytes(), b"\n", body] {
        context.update(part);
    }
    URL_SAFE_NO_PAD.encode(context.finish().as_ref())
}

/// Runs `work` at most once per `Idempotency-Key` (scoped to the caller): a retry with the
/// same key and body replays the first success; a key reused with another body is a 422; a
/// retry while the first is still running is a 409. Failures free the key so a retry can
/// succeed.
pub async fn idempotent<Fut>(
    store: &Store,
    scope: &str,
    headers: &HeaderMap,
    fingerprint: &str,
    work: impl FnOnce() -> Fut,
) -> Result<Response, ApiError>
where
    Fut: Future<Output = Result<(StatusCode, serde_json::Value), ApiError>>,
{
    let Some(raw) = headers.get(IDEMPOTENCY_KEY_HEADER) else {
        return work().await.map(|(status, body)| (status, axum::Json(body)).into_response());
    };
    let key = IdempotencyKey::parse(raw.to_str().unwrap_or_default())?;
    let claim = match store.begin_idempotent(scope, &key, fingerprint, OffsetDateTime::now_utc()).await? {
        Begin::Started(claim) => claim,
        Begin::Replay(saved) => {
            let status = StatusCode::from_u16(saved.status).map_err(ApiError::internal)?;
            let body: serde_json::Value = serde_json::from_str(&saved.body).map_err(ApiError::internal)?;
            let mut response = (status, axum::Json(body)).into_response();
            response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
            return Ok(response);
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
            let saved = SavedResponse { status: status.as_u16(), body: body.to_string() };
            if let Err(error) = store.complete_idempotent(scope, &key, &claim, &saved).await {
                // The work is done; the client still gets its answer. A retry after the lock
                // expires would redo it, so say so loudly.
                tracing::error!(%error, "idempotent response not saved");
            }
            Ok((status, axum::Json(body)).into_response())
        }
        Err(error) => {
            if let Err(release) = store.abandon_idempotent(scope, &key, &claim).await {
                tracing::warn!(error = %release, "idempotency key not released; it frees itself when its lock expires");
            }
            Err(error)
        }
    }
}
