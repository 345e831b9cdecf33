use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Method, header};
use tower_http::cors::{AllowOrigin, CorsLayer};

use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::{RefOr, Schema};

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
#[derive(Clone)]
pub struct RouteSpec {
    pub method: Method,
    pub path: String,
    pub access: Access,
    /// What the OpenAPI document says of the route (from the handler's `#[utoipa::path]`);
    /// `None` for the pages of the docs UI, which are not part of the API.
    pub operation: Option<Operation>,
}

impl std::fmt::Debug for RouteSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} ({:?})", self.method, self.path, self.access)
    }
}

impl RouteSpec {
    /// Whether the route is part of the API's contract (in the OpenAPI document).
    pub fn documented(&self) -> bool {
        self.operation.is_some()
    }
}

/// The schemas the documented routes' bodies refer to.
pub type Schemas = Vec<(String, RefOr<Schema>)>;

/// What a set of routes declares of itself, with no state and no router: what the OpenAPI
/// document, the isolation walk and the infra consistency test read.
#[derive(Clone, Default)]
pub struct Catalog {
    pub routes: Vec<RouteSpec>,
    pub schemas: Schemas,
}

impl Catalog {
    pub fn merge(mut self, other: Catalog) -> Catalog {
        self.routes.extend(other.routes);
        self.schemas.extend(other.schemas);
        self
    }
}

/// A handler with its OpenAPI operation: what `routes!(handler)` gives for a handler that
/// carries `#[utoipa::path(...)]`.
pub type Documented<S> = utoipa_axum::router::UtoipaMethodRouter<S>;

/// A router that keeps the list of its routes: functions add routes only through it, so the
/// inventory the security tests walk, the OpenAPI document and the router are one
/// registration and no route can be missed by any of them.
pub struct Routes<S> {
    router: Router<S>,
    catalog: Catalog,
}

impl<S: Clone + Send + Sync + 'static> Default for Routes<S> {
    fn default() -> Self {
        Self { router: Router::new(), catalog: Catalog::default() }
    }
}

impl<S: Clone + Send + Sync + 'static> Routes<S> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one documented handler (`routes!(handler)`): its path and methods come from its
    /// `#[utoipa::path]`, so the router, the inventory and the document cannot disagree.
    ///
    /// # Panics
    /// At start-up, if `documented` is not exactly one handler on one path: a registration
    /// mistake every test would hit, never something a request can cause.
    pub fn route(mut self, access: Access, documented: Documented<S>) -> Self {
        let (schemas, paths, method_router) = documented;
        assert_eq!(paths.paths.len(), 1, "register one handler per Routes::route call");
        for (path, item) in paths.paths {
            for (method, operation) in operations(item) {
                self.catalog.routes.push(RouteSpec {
                    method,
                    path: path.clone(),
                    access,
                    operation: Some(operation),
                });
            }
            self.router = self.router.route(&path, method_router.clone());
        }
        self.catalog.schemas.extend(schemas);
        self
    }

    /// Adds a public `GET` page that is not part of the API's contract (the docs UI).
    pub fn page<H, T>(mut self, path: &'static str, handler: H) -> Self
    where
        H: axum::handler::Handler<T, S>,
        T: 'static,
    {
        self.router = self.router.route(path, axum::routing::get(handler));
        self.catalog.routes.push(RouteSpec {
            method: Method::GET,
            path: path.to_owned(),
            access: Access::Public,
            operation: None,
        });
        self
    }

    /// What these routes declare, without building a state for them.
    pub fn catalog(&self) -> Catalog {
        self.catalog.clone()
    }

    pub fn with_state(self, state: S) -> ApiRoutes {
        ApiRoutes {
            router: self.router.with_state(state),
            inventory: self.catalog.routes,
            schemas: self.catalog.schemas,
        }
    }
}

/// The operations of a path item, with their methods (the ones axum can route).
fn operations(item: PathItem) -> Vec<(Method, Operation)> {
    [
        (Method::GET, item.get),
        (Method::POST, item.post),
        (Method::PUT, item.put),
        (Method::PATCH, item.patch),
        (Method::DELETE, item.delete),
        (Method::HEAD, item.head),
        (Method::OPTIONS, item.options),
        (Method::TRACE, item.trace),
    ]
    .into_iter()
    .filter_map(|(method, operation)| operation.map(|operation| (method, operation)))
    .collect()
}

/// A function's finished routes: the axum router and its inventory.
pub struct ApiRoutes {
    pub router: Router,
    pub inventory: Vec<RouteSpec>,
    pub schemas: Schemas,
}

impl ApiRoutes {
    pub fn merge(mut self, other: ApiRoutes) -> ApiRoutes {
        self.router = self.router.merge(other.router);
        self.inventory.extend(other.inventory);
        self.schemas.extend(other.schemas);
        self
    }

    pub fn catalog(&self) -> Catalog {
        Catalog { routes: self.inventory.clone(), schemas: self.schemas.clone() }
    }
}
