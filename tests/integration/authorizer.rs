//! API Gateway's Lambda authorizer, fed the sample event from `events/`: it lets valid access
//! tokens through with the caller as context and stops everything else, signed-out tokens too.

use aws_lambda_events::event::apigw::ApiGatewayV2CustomAuthorizerV2Request;
use dotmac_tests::{ADMIN_EMAIL, ADMIN_PASSWORD, TestApp};
use serde_json::Value;

fn event(token: &str) -> ApiGatewayV2CustomAuthorizerV2Request {
    let raw = include_str!("../../events/apigw-authorizer.json").replace("REPLACE_WITH_TOKEN", token);
    serde_json::from_str(&raw).expect("authorizer event")
}

#[tokio::test]
async fn the_gateway_lets_only_live_access_tokens_through() {
    let app = TestApp::spawn().await;
    let authorizer = app.stack.platform.authorizer();
    let pair: Value = app.login(ADMIN_EMAIL, ADMIN_PASSWORD).await.json().await.expect("json");
    let access = pair["access_token"].as_str().expect("access");
    let refresh = pair["refresh_token"].as_str().expect("refresh");

    let allowed = authorizer.decide(&event(access)).await;
    assert!(allowed.is_authorized);
    assert_eq!(allowed.context["roles"], "platform_admin");
    assert!(!allowed.context["sub"].as_str().unwrap_or_default().is_empty());

    for (what, token) in [("a refresh token", refresh), ("garbage", "not.a.token"), ("nothing", "")] {
        let refused = authorizer.decide(&event(token)).await;
        assert!(!refused.is_authorized, "{what} got through");
    }

    let tenant = app.onboarded_tenant(access).await;
    let machine =
        app.stack.platform.keys.issue_machine(tenant, 600, time::OffsetDateTime::now_utc()).expect("token").0;
    let decision = authorizer.decide(&event(&machine)).await;
    assert!(decision.is_authorized);
    assert_eq!(decision.context["tenant_id"], tenant.to_string());

    let response =
        app.http.post(app.url("/v1/auth/logout")).bearer_auth(access).send().await.expect("logout");
    assert_eq!(response.status(), 204);
    assert!(
        !authorizer.decide(&event(access)).await.is_authorized,
        "a signed-out token stops at the gateway"
    );
    app.shutdown().await;
}
