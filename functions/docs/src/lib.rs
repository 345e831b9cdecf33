//! The docs function: the OpenAPI 3.1 document of every route (`GET /v1/openapi.json`) and a
//! reference page rendering it (`GET /docs`, Swagger UI with its assets inside the binary, so
//! it works with no internet). Both are built on first request, so they cost no cold start.

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use dotmac_http::{Access, ApiError, ApiRoutes, Catalog, Routes, routes};
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
