use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Method, header};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::error::{ApiError, ErrorCode};

/// The largest request body any endpoint takes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(ErrorCode::MethodNotAllowed, "this route does not take that method")
}

/// What every function's router gets: envelope answers for unknown routes and methods, the
/// body size limit, and CORS for the configured browser origins only.
pub fn with_defaults(router: Router, cors_allowed_origins: &[String]) -> Router {
    let router = router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES));
    let origins: Vec<HeaderValue> =
        cors_allowed_origins.iter().filter_map(|origin| HeaderValue::from_str(origin).ok()).collect();
    if origins.is_empty() {
        return router;
    }
    router.layer(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("idempotency-key"),
            ])
            .max_age(std::time::Duration::from_secs(600)),
    )
}

/// Who may call a route, as declared where the route is added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No token needed (health, sign-in, the JWKS).
    Public,
    /// A bearer token; the handler asks the policy about the object.
    Authenticated,
    /// A bearer token, acting only on the caller's own session or account (sign-out, "who
    /// am I"): every role may call it, and it never reaches another user.
    SelfService,
}

/// One entry of the route inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    pub method: axum::http::Method,
    pub path: &'static str,
    pub access: Access,
}

/// A router that keeps the list of its routes: functions add routes only through it, so the
/// inventory the security tests walk is the router itself and no route can be missed.
pub struct Routes<S> {
    router: Router<S>,
    inventory: Vec<RouteSpec>,
}

impl<S: Clone + Send + Sync + 'static> Default for Routes<S> {
    fn default() -> Self {
        Self { router: Router::new(), inventory: Vec::new() }
    }
}

impl<S: Clone + Send + Sync + 'static> Routes<S> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn route<H, T>(
        mut self,
        method: axum::http::Method,
        path: &'static str,
        access: Access,
        handler: H,
    ) -> Self
    where
        H: axum::handler::Handler<T, S>,
        T: 'static,
    {
        let filter =
            axum::routing::MethodFilter::try_from(method.clone()).unwrap_or(axum::routing::MethodFilter::GET);
        self.router = self.router.route(path, axum::routing::on(filter, handler));
        self.inventory.push(RouteSpec { method, path, access });
        self
    }

    pub fn with_state(self, state: S) -> ApiRoutes {
        ApiRoutes { router: self.router.with_state(state), inventory: self.inventory }
    }
}

/// A function's finished routes: the axum router and its inventory.
pub struct ApiRoutes {
    pub router: Router,
    pub inventory: Vec<RouteSpec>,
}

impl ApiRoutes {
    pub fn merge(mut self, other: ApiRoutes) -> ApiRoutes {
        self.router = self.router.merge(other.router);
        self.inventory.extend(other.inventory);
        self
    }
}
