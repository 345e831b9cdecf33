//! The OpenAPI 3.1 document, built from the route inventory: each handler's own
//! `#[utoipa::path]` (path, parameters, bodies, its specific answers), plus what follows from
//! how the route is registered and so is written once here: the bearer requirement of every
//! non-public route and the error answers every route of its kind can give.

use utoipa::openapi::path::{HttpMethod, Operation};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, Header, InfoBuilder, ObjectBuilder, OpenApi, OpenApiBuilder, Ref,
    RefOr, Response, ResponseBuilder, Type,
};
use utoipa::{PartialSchema, ToSchema};

use crate::error::{ErrorCode, ErrorEnvelope};
use crate::router::{Access, Catalog, RouteSpec};

/// The name of the bearer security scheme in the document.
pub const BEARER_SCHEME: &str = "bearer";

/// The whole API's document.
pub fn document(catalog: &Catalog) -> OpenApi {
    let mut openapi = OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("DotMac Platform API")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "The control plane of a container-per-tenant SaaS for ISPs. Every error is \
                     `{\"error\":{\"code\",\"message\",\"details\"}}` with a stable `code` \
                     (the `ErrorCode` schema lists them all). Routes without a security \
                     requirement are public; every other route takes `Authorization: Bearer \
                     <access token>` from `POST /v1/auth/login`.",
                ))
                .build(),
        )
        .build();
    for route in &catalog.routes {
        let Some(operation) = &route.operation else { continue };
        let Some(method) = http_method(&route.method) else { continue };
        openapi.paths.add_path_operation(&route.path, vec![method], complete(route, operation.clone()));
    }
    let mut schemas = catalog.schemas.clone();
    <ErrorEnvelope as ToSchema>::schemas(&mut schemas);
    schemas.push((ErrorEnvelope::name().into_owned(), ErrorEnvelope::schema()));
    let bearer = HttpBuilder::new()
        .scheme(HttpAuthScheme::Bearer)
        .bearer_format("JWT")
        .description(Some(
            "An access token (`typ: at+jwt`, EdDSA) from `POST /v1/auth/login` or `/v1/auth/refresh`.",
        ))
        .build();
    openapi.components = Some(
        ComponentsBuilder::new()
            .schemas_from_iter(schemas)
            .security_scheme(BEARER_SCHEME, SecurityScheme::Http(bearer))
            .build(),
    );
    openapi
}

/// Names the catalogue gives to two different schemas. The document keeps one schema per
/// name, so a route would be documented with another's shape (two crates' `PriceVersionView`
/// once did exactly that, and only schemathesis noticed).
pub fn conflicting_schema_names(catalog: &Catalog) -> Vec<String> {
    let mut seen: std::collections::BTreeMap<&str, String> = std::collections::BTreeMap::new();
    let mut conflicts = std::collections::BTreeSet::new();
    for (name, schema) in &catalog.schemas {
        let shape = serde_json::to_string(schema).unwrap_or_default();
        match seen.get(name.as_str()) {
            Some(first) if *first != shape => {
                conflicts.insert(name.clone());
            }
            Some(_) => {}
            None => {
                seen.insert(name, shape);
            }
        }
    }
    conflicts.into_iter().collect()
}

fn http_method(method: &axum::http::Method) -> Option<HttpMethod> {
    use axum::http::Method;
    Some(match *method {
        Method::GET => HttpMethod::Get,
        Method::POST => HttpMethod::Post,
        Method::PUT => HttpMethod::Put,
        Method::PATCH => HttpMethod::Patch,
        Method::DELETE => HttpMethod::Delete,
        Method::HEAD => HttpMethod::Head,
        Method::OPTIONS => HttpMethod::Options,
        Method::TRACE => HttpMethod::Trace,
        _ => return None,
    })
}

/// The handler's operation with what its registration implies: security and the shared
/// error answers. An answer the handler documents itself keeps its own description.
fn complete(route: &RouteSpec, mut operation: Operation) -> Operation {
    if route.access != Access::Public {
        operation.security = Some(vec![SecurityRequirement::new(BEARER_SCHEME, Vec::<String>::new())]);
    }
    for (status, codes) in shared_errors(route.access, &operation) {
        operation
            .responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| RefOr::T(error_response(&codes)));
    }
    // Every 429 says when to come back, whoever documented it.
    if let Some(RefOr::T(limited)) = operation.responses.responses.get_mut("429") {
        limited.headers.entry("Retry-After".to_owned()).or_insert_with(|| RefOr::T(retry_after_header()));
    }
    operation
}

/// The error answers a route can give because of how it is reached, whatever it does.
fn shared_errors(access: Access, operation: &Operation) -> Vec<(&'static str, Vec<ErrorCode>)> {
    use ErrorCode::*;
    let mut errors = vec![("500", vec![Internal]), ("503", vec![DependencyUnavailable])];
    if access != Access::Public {
        errors.push(("401", vec![Unauthenticated, InvalidToken]));
    }
    if access == Access::Authenticated {
        errors.push(("403", vec![Forbidden]));
    }
    let has_parameters = operation.parameters.as_ref().is_some_and(|p| !p.is_empty());
    if operation.request_body.is_some() {
        errors.push(("400", vec![MalformedRequest]));
        errors.push(("413", vec![PayloadTooLarge]));
        errors.push(("415", vec![UnsupportedMediaType]));
        errors.push(("422", vec![ValidationFailed]));
    } else if has_parameters {
        errors.push(("422", vec![ValidationFailed]));
    }
    errors
}

/// An error answer in the envelope, naming the codes it may carry.
pub fn error_response(codes: &[ErrorCode]) -> Response {
    let names: Vec<&str> = codes.iter().map(|code| code.as_str()).collect();
    ResponseBuilder::new()
        .description(format!("`{}`", names.join("`, `")))
        .content(
            "application/json",
            ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorEnvelope"))).build(),
        )
        .build()
}

fn retry_after_header() -> Header {
    let mut header = Header::new(ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(1)));
    header.description = Some("Seconds before a retry can succeed.".to_owned());
    header
}
