//! HTTP plumbing shared by every function: the error envelope, a JSON extractor whose
//! rejections use it, bearer-token authentication, idempotency keys and router defaults.

pub mod auth;
pub mod error;
pub mod idempotency;
pub mod json;
pub mod router;
pub mod source;

pub use auth::{Authenticated, SignedIn, check_bearer, resolve_caller};
pub use error::{ApiError, ErrorCode};
pub use idempotency::{idempotent, request_fingerprint};
pub use json::Json;
pub use router::{Access, ApiRoutes, RouteSpec, Routes, with_defaults};
pub use source::SourceIp;
