//! `/ready` names the dependency that does not answer.

use dotmac_platform::Platform;
use dotmac_tests::TestStack;
use serde_json::Value;
use tower::ServiceExt;

async fn ready(platform: &Platform) -> (u16, Value) {
    let request = http::Request::get("/ready").body(axum::body::Body::empty()).expect("request");
    let response = platform.health_router().oneshot(request).await.expect("answer");
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.expect("body");
    (status, serde_json::from_slice(&bytes).expect("json"))
}

#[tokio::test]
async fn ready_when_every_dependency_answers() {
    let stack = TestStack::new(&[]).await;
    let (status, body) = ready(&stack.platform).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["checks"]["dynamodb"], "ok");
}

#[tokio::test]
async fn not_ready_names_the_failing_dependencies() {
    let stack = TestStack::new(&[]).await;
    let mut config = stack.config().clone();
    config.ecs.cluster = "no-such-cluster".into();
    config.table_name = format!("{}-missing", config.table_name);
    let broken = Platform::with_sdk_config(config, &stack.sdk).expect("platform");
    let (status, body) = ready(&broken).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "DEPENDENCY_UNAVAILABLE");
    assert_eq!(body["error"]["details"]["failing"], serde_json::json!(["dynamodb", "ecs"]));
    assert_eq!(body["error"]["details"]["checks"]["sqs"], "ok");
}
