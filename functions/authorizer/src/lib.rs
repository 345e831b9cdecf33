//! API Gateway's Lambda authorizer (HTTP API, simple responses). It runs the very check the
//! functions run (`dotmac_http::auth::check_bearer`): signature, pinned algorithm, claims,
//! token type and the sign-out deny-list. Requests without a valid token stop at the gateway;
//! the functions still check again and apply the policy, so the authorizer only ever narrows.

use aws_lambda_events::event::apigw::{
    ApiGatewayV2CustomAuthorizerSimpleResponse, ApiGatewayV2CustomAuthorizerV2Request,
};
use dotmac_http::auth::check_bearer;
use dotmac_store::Store;
use dotmac_tokens::JwtKeys;
use serde_json::{Value, json};
use std::sync::Arc;

#[derive(Clone)]
pub struct Authorizer {
    pub store: Store,
    pub keys: Arc<JwtKeys>,
}

impl Authorizer {
    pub async fn decide(
        &self,
        request: &ApiGatewayV2CustomAuthorizerV2Request,
    ) -> ApiGatewayV2CustomAuthorizerSimpleResponse {
        let header = request
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .or_else(|| request.identity_source.as_ref().and_then(|s| s.first()).map(String::as_str));
        let mut response = ApiGatewayV2CustomAuthorizerSimpleResponse::default();
        match check_bearer(header, &self.keys, &self.store).await {
            Ok(claims) => {
                response.is_authorized = true;
                // Context values must be scalars; the functions re-read the token anyway.
                let roles: Vec<&str> = claims.roles.iter().map(|r| r.as_str()).collect();
                response.context = json!({
                    "sub": claims.sub,
                    "tenant_id": claims.tid.map(|t| t.to_string()).unwrap_or_default(),
                    "partner_id": claims.pid.map(String::from).unwrap_or_default(),
                    "roles": roles.join(" "),
                });
            }
            Err(error) => {
                tracing::info!(code = error.code.as_str(), route = ?request.route_key, "gateway refused the request");
                response.is_authorized = false;
                response.context = Value::Object(Default::default());
            }
        }
        response
    }
}
