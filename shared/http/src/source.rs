//! Where a request came from, for per-source limits: API Gateway's own record of the
//! client address in Lambda (never a client-supplied header), the socket peer locally.

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use lambda_http::request::RequestContext;
use std::convert::Infallible;
use std::net::SocketAddr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceIp(pub String);

impl<S: Send + Sync> FromRequestParts<S> for SourceIp {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let from_gateway = parts.extensions.get::<RequestContext>().and_then(|context| match context {
            RequestContext::ApiGatewayV2(v2) => v2.http.source_ip.clone(),
            RequestContext::ApiGatewayV1(v1) => v1.identity.source_ip.clone(),
            _ => None,
        });
        let from_socket =
            || parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip().to_string());
        Ok(SourceIp(from_gateway.or_else(from_socket).unwrap_or_else(|| "unknown".to_owned())))
    }
}
