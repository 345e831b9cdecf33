//! HTTP plumbing shared by every function: the error envelope, a JSON extractor whose
//! rejections use it, bearer-token authentication, idempotency keys, pages, the route
//! inventory and the OpenAPI document built from it.

pub mod auth;
pub mod error;
pub mod idempotency;
pub mod json;
pub mod openapi;
pub mod page;
pub mod path;
pub mod router;
pub mod schema;
pub mod source;

pub use auth::{
    Admitted, Authenticated, Bearer, ReadableInvoice, SignedIn, check_bearer, readable_invoice,
    tenant_in_reach, verify_bearer,
};
pub use error::{ApiError, ErrorCode};
pub use idempotency::{Idempotent, idempotency_key, idempotent, request_fingerprint};
pub use json::Json;
pub use page::{Page, PageQuery};
pub use path::Path;
pub use router::{Access, ApiRoutes, Catalog, Documented, RouteSpec, Routes, with_defaults};
pub use source::SourceIp;
pub use utoipa_axum::routes;
