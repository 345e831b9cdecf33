//! The docs function: the OpenAPI 3.1 document of every route (`GET /v1/openapi.json`) and a
//! reference page rendering it (`GET /docs`, Swagger UI with its assets inside the binary, so
//! it works with no internet). Both are built on first request, so they cost no cold start.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use dotmac_http::{Access, ApiError, ApiRoutes, Catalog, Path, Routes, routes};
use std::sync::{Arc, OnceLock};

/// Where the document is served.
pub const OPENAPI_PATH: &str = "/v1/openapi.json";

/// The reference page's entry point (the page loads its assets relative to it).
const DOCS_INDEX: &str = "/docs/index.html";

#[derive(Clone)]
pub struct DocsState {
    /// Every route of the platform: the document covers all functions, not just this one.
    catalog: fn() -> Catalog,
    document: Arc<OnceLock<Result<Vec<u8>, String>>>,
    ui: Arc<OnceLock<Arc<utoipa_swagger_ui::Config<'static>>>>,
}

impl DocsState {
    pub fn new(catalog: fn() -> Catalog) -> Self {
        DocsState { catalog, document: Arc::default(), ui: Arc::default() }
    }
}

pub fn routes() -> Routes<DocsState> {
    Routes::new()
        .route(Access::Public, routes!(openapi_document))
        .page("/docs", docs_entry)
        .page("/docs/{*file}", docs_file)
}

pub fn router(state: DocsState) -> ApiRoutes {
    routes().with_state(state)
}

/// The OpenAPI 3.1 document of every route: parameters, bodies, every answer (errors in the
/// envelope, with the `ErrorCode` enum), the bearer scheme and which routes are public.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "docs",
    operation_id = "openapi_document",
    responses((status = 200, description = "This document", content_type = "application/json", body = Object))
)]
async fn openapi_document(State(state): State<DocsState>) -> Result<Response, ApiError> {
    let document = state.document.get_or_init(|| {
        serde_json::to_vec(&dotmac_http::openapi::document(&(state.catalog)())).map_err(|e| e.to_string())
    });
    let body = document.as_ref().map_err(ApiError::internal)?.clone();
    Ok(([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response())
}

async fn docs_entry() -> Redirect {
    Redirect::permanent(DOCS_INDEX)
}

async fn docs_file(State(state): State<DocsState>, Path(file): Path<String>) -> Result<Response, ApiError> {
    let config = state.ui.get_or_init(|| Arc::new(utoipa_swagger_ui::Config::new([OPENAPI_PATH]))).clone();
    match utoipa_swagger_ui::serve(&file, config) {
        Ok(Some(asset)) => {
            let mut response = (StatusCode::OK, asset.bytes.into_owned()).into_response();
            if let Ok(content_type) = HeaderValue::from_str(&asset.content_type) {
                response.headers_mut().insert(header::CONTENT_TYPE, content_type);
            }
            if asset.gzpipped {
                response.headers_mut().insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            }
            Ok(response)
        }
        Ok(None) => Err(ApiError::new(dotmac_http::ErrorCode::NotFound, "no such page of the docs")),
        Err(error) => Err(ApiError::internal(error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use tower::ServiceExt;

    fn own_catalog() -> Catalog {
        routes().catalog()
    }

    async fn get(path: &str) -> (StatusCode, axum::http::HeaderMap, String) {
        let router = router(DocsState::new(own_catalog)).router;
        let request = axum::http::Request::get(path).body(Body::empty()).expect("request");
        let response = router.oneshot(request).await.expect("answer");
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, 8 * 1024 * 1024).await.expect("body");
        (parts.status, parts.headers, String::from_utf8_lossy(&bytes).into_owned())
    }

    #[tokio::test]
    async fn the_docs_page_is_served_from_the_binary_and_reads_our_document() {
        let (status, headers, _) = get("/docs").await;
        assert_eq!(status, StatusCode::PERMANENT_REDIRECT);
        assert_eq!(headers.get(header::LOCATION).and_then(|v| v.to_str().ok()), Some(DOCS_INDEX));
        let (status, _, index) = get(DOCS_INDEX).await;
        assert_eq!(status, StatusCode::OK);
        // Offline: every asset the page loads is its own, relative to it; no CDN.
        assert!(!index.contains("http://") && !index.contains("https://"), "{index}");
        for asset in ["swagger-ui-bundle.js", "swagger-ui.css", "swagger-initializer.js"] {
            assert!(index.contains(&format!("./{asset}")), "index.html loads {asset}");
            let (status, _, body) = get(&format!("/docs/{asset}")).await;
            assert_eq!(status, StatusCode::OK, "{asset}");
            assert!(!body.is_empty(), "{asset}");
        }
        let (_, _, initializer) = get("/docs/swagger-initializer.js").await;
        assert!(initializer.contains(OPENAPI_PATH), "the page renders our document: {initializer}");
        let (status, _, missing) = get("/docs/no-such-file.css").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(missing.contains("\"NOT_FOUND\""), "in the envelope: {missing}");
    }

    #[tokio::test]
    async fn the_document_is_json_and_describes_itself() {
        let (status, headers, body) = get(OPENAPI_PATH).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()), Some("application/json"));
        let document: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(document["openapi"], "3.1.0");
        assert!(document["paths"][OPENAPI_PATH]["get"].is_object());
        assert!(document["paths"][OPENAPI_PATH]["get"].get("security").is_none(), "public");
    }
}
