//! `/ready` names the dependency that does not answer.

use dotmac_platform::Platform;
use dotmac_tests::TestStack;
use serde_json::Value;
use tower::ServiceExt;

async fn ready(platform: &Platform) -> (u16, Value) {
    let request = http::Request::get("/ready").body(axum::body::Body::empty()).expect("request");
    let response = platform
        .router(dotmac_platform::Handler::Health)
        .expect("health serves routes")
        .oneshot(request)
        .await
        .expect("answer");
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
    let broken = Platform::with_sdk_config(config, &stack.sdk).await.expect("platform");
    let (status, body) = ready(&broken).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "DEPENDENCY_UNAVAILABLE");
    assert_eq!(body["error"]["details"]["failing"], serde_json::json!(["dynamodb", "ecs"]));
    assert_eq!(body["error"]["details"]["checks"]["sqs"], "ok");
    assert_eq!(body["error"]["details"]["checks"]["ecs"], "unavailable", "reasons stay in the log");
}

/// If the job cannot be queued the tenant is taken back, so nothing sits in `provisioning`
/// without a job and the client's retry can use the slug.
#[tokio::test]
async fn a_tenant_whose_job_cannot_be_queued_is_taken_back() {
    let stack = TestStack::new(&[]).await;
    let mut config = stack.config().clone();
    config.provisioning_queue_url = format!("{}-missing", config.provisioning_queue_url);
    let broken = Platform::with_sdk_config(config, &stack.sdk).await.expect("platform");
    let token = stack.staff_token(&broken.keys).await;
    let body = dotmac_tests::new_tenant_body("usage");
    let request = http::Request::post("/v1/tenants")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body.to_string()))
        .expect("request");
    let response = broken
        .router(dotmac_platform::Handler::Tenants)
        .expect("tenants serves routes")
        .oneshot(request)
        .await
        .expect("answer");
    assert_eq!(response.status().as_u16(), 503);
    let slug = body["slug"].as_str().expect("slug");
    assert_eq!(stack.platform.store.tenant_id_for_slug(slug).await.expect("lookup"), None);
    let page = stack.platform.store.list_tenants(10, None).await.expect("list");
    assert!(page.items.is_empty(), "{page:?}");
}

/// Browsers get CORS answers for the configured origins only.
#[tokio::test]
async fn cors_allows_only_the_configured_origins() {
    let stack = TestStack::new(&[("DOTMAC_CORS_ALLOWED_ORIGINS", "https://console.dotmac.example")]).await;
    let preflight = |origin: &'static str| {
        http::Request::builder()
            .method("OPTIONS")
            .uri("/v1/tenants")
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization,content-type,idempotency-key")
            .body(axum::body::Body::empty())
            .expect("request")
    };
    let allowed = stack
        .platform
        .api_router()
        .oneshot(preflight("https://console.dotmac.example"))
        .await
        .expect("answer");
    assert_eq!(
        allowed.headers().get("access-control-allow-origin").map(|v| v.as_bytes()),
        Some(&b"https://console.dotmac.example"[..])
    );
    let refused =
        stack.platform.api_router().oneshot(preflight("https://evil.example")).await.expect("answer");
    assert!(refused.headers().get("access-control-allow-origin").is_none());

    // A real request, not only the preflight: the configured origin is named on the answer
    // (which is the route's own), another origin gets no CORS header at all.
    let real = |origin: &'static str| {
        http::Request::get("/health")
            .header("origin", origin)
            .body(axum::body::Body::empty())
            .expect("request")
    };
    let allowed =
        stack.platform.api_router().oneshot(real("https://console.dotmac.example")).await.expect("answer");
    assert_eq!(allowed.status(), 200);
    assert_eq!(
        allowed.headers().get("access-control-allow-origin").map(|v| v.as_bytes()),
        Some(&b"https://console.dotmac.example"[..])
    );
    let refused = stack.platform.api_router().oneshot(real("https://evil.example")).await.expect("answer");
    assert_eq!(refused.status(), 200, "CORS is the browser's check; the answer itself is the same");
    assert!(refused.headers().get("access-control-allow-origin").is_none(), "{:?}", refused.headers());

    // With no origins configured, nobody gets CORS answers.
    let closed = TestStack::new(&[]).await;
    let answer =
        closed.platform.api_router().oneshot(real("https://console.dotmac.example")).await.expect("answer");
    assert!(answer.headers().get("access-control-allow-origin").is_none(), "{:?}", answer.headers());
}
