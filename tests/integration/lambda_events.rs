//! The handlers run in-process on the real-shaped Lambda events of `events/`, the way the
//! Lambda runtime feeds them.

use aws_lambda_events::event::sqs::SqsEvent;
use dotmac_queue::ProvisioningJob;
use dotmac_queue::lambda::handle_sqs_event;
use dotmac_tests::TestStack;
use http::HeaderValue;
use serde_json::Value;
use tower::ServiceExt;

async fn call(router: axum::Router, request: lambda_http::Request) -> (u16, Value) {
    let response = router.oneshot(request).await.expect("router answers");
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.expect("body");
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn event(raw: &str) -> lambda_http::Request {
    lambda_http::request::from_str(raw).expect("a valid API Gateway event")
}

#[tokio::test]
async fn api_gateway_events_reach_the_functions() {
    let stack = TestStack::new(&[
        ("DOTMAC_ADMIN_EMAIL", "admin@dotmac.local"),
        ("DOTMAC_ADMIN_PASSWORD", "dotmac-admin"),
    ])
    .await;
    let platform = &stack.platform;

    let (status, body) = call(
        platform.router(dotmac_platform::Handler::Health).expect("health serves routes"),
        event(include_str!("../../events/apigw-health.json")),
    )
    .await;
    assert_eq!((status, body), (200, serde_json::json!({ "status": "ok" })));

    let (status, tokens) = call(
        platform.router(dotmac_platform::Handler::Auth).expect("auth serves routes"),
        event(include_str!("../../events/apigw-login.json")),
    )
    .await;
    assert_eq!(status, 200, "{tokens}");
    let token = tokens["access_token"].as_str().expect("token");

    let mut create = event(include_str!("../../events/apigw-create-tenant.json"));
    create
        .headers_mut()
        .insert("authorization", HeaderValue::from_str(&format!("Bearer {token}")).expect("header"));
    let (status, tenant) =
        call(platform.router(dotmac_platform::Handler::Tenants).expect("tenants serves routes"), create)
            .await;
    assert_eq!(status, 202, "{tenant}");
    assert_eq!(tenant["slug"], "acme-fiber");
    assert_eq!(tenant["status"], "provisioning");

    // Without the token the same event is refused with the envelope.
    let (status, body) = call(
        platform.router(dotmac_platform::Handler::Tenants).expect("tenants serves routes"),
        event(include_str!("../../events/apigw-create-tenant.json")),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "INVALID_TOKEN");
}

#[tokio::test]
async fn sqs_events_report_only_the_failed_records() {
    let stack = TestStack::new(&[]).await;
    let mut event: SqsEvent =
        serde_json::from_str(include_str!("../../events/sqs-provision-tenant.json")).expect("SQS event");
    // A second record whose body is not a job: it must be reported, never dropped.
    let mut broken = event.records[0].clone();
    broken.message_id = Some("broken-record".into());
    broken.body = Some("{not json".into());
    event.records.push(broken);

    let provisioner = stack.platform.provisioner();
    let response = handle_sqs_event::<ProvisioningJob, _>(&provisioner, event, 5).await;
    let failed: Vec<_> = response.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
    // The sample's tenant does not exist: that job is discarded (acknowledged), not retried.
    assert_eq!(failed, vec!["broken-record"]);
}

/// API Gateway's `$default` route sends unmatched requests to the health function, whose
/// fallback answers with the envelope.
#[tokio::test]
async fn unmatched_requests_get_the_envelope_from_the_default_route() {
    let stack = TestStack::new(&[]).await;
    let mut raw: Value = serde_json::from_str(include_str!("../../events/apigw-health.json")).expect("event");
    raw["routeKey"] = "$default".into();
    raw["rawPath"] = "/v2/nothing-here".into();
    raw["requestContext"]["routeKey"] = "$default".into();
    raw["requestContext"]["http"]["path"] = "/v2/nothing-here".into();
    let (status, body) = call(
        stack.platform.router(dotmac_platform::Handler::Health).expect("health serves routes"),
        event(&raw.to_string()),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "NOT_FOUND");
}
