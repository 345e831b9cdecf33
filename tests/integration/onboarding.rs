//! End to end through the HTTP server with the workers running: what `make dev` serves.

use dotmac_domain::{Role, TenantId};
use dotmac_tests::{ADMIN_EMAIL, TestApp, new_tenant_body};
use serde_json::{Value, json};
use std::time::Duration;

fn assert_envelope(body: &Value, code: &str) {
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
    assert!(body["error"]["details"].is_object(), "{body}");
}

#[tokio::test]
async fn an_admin_onboards_an_isp_and_its_container_comes_up() {
    let app = TestApp::spawn().await;

    let health: Value =
        app.http.get(app.url("/health")).send().await.expect("health").json().await.expect("json");
    assert_eq!(health, json!({ "status": "ok" }));
    let ready = app.http.get(app.url("/ready")).send().await.expect("ready");
    assert_eq!(ready.status(), 200);

    let token = app.admin_token().await;
    let body = new_tenant_body("usage");
    let response = app.create_tenant(&token, &body).await;
    assert_eq!(response.status(), 202);
    let created: Value = response.json().await.expect("json");
    assert_eq!(created["status"], "provisioning");
    assert_eq!(created["slug"], body["slug"]);
    let id = created["id"].as_str().expect("id").to_owned();

    let active = app.wait_for_tenant(&token, &id, Duration::from_secs(60), |t| t["status"] == "active").await;
    let container = &active["container"];
    assert!(container["cluster_arn"].as_str().is_some_and(|a| a.contains(":cluster/")), "{active}");
    assert!(container["task_arn"].as_str().is_some_and(|a| a.contains(":task/")), "{active}");
    assert_eq!(container["task_size"], json!({ "cpu": 256, "memory_mib": 512 }));

    // The same slug again is a conflict.
    let again = app.create_tenant(&token, &body).await;
    assert_eq!(again.status(), 409);
    assert_envelope(&again.json().await.expect("json"), "SLUG_TAKEN");

    // The list shows it.
    let (status, page) = app.get_json(&token, "/v1/tenants?limit=10").await;
    assert_eq!(status, 200);
    assert!(
        page["items"].as_array().is_some_and(|items| items.iter().any(|t| t["id"] == id.as_str())),
        "{page}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_retried_post_with_an_idempotency_key_returns_the_same_tenant() {
    let app = TestApp::spawn().await;
    let token = app.admin_token().await;
    let body = new_tenant_body("enterprise");
    let send = |key: &'static str, body: Value| {
        app.http
            .post(app.url("/v1/tenants"))
            .bearer_auth(&token)
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
    };
    let first = send("onboard-1", body.clone()).await.expect("first");
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.expect("json");
    let retry = send("onboard-1", body.clone()).await.expect("retry");
    assert_eq!(retry.status(), 202);
    assert_eq!(retry.headers().get("idempotent-replayed").map(|v| v.as_bytes()), Some(&b"true"[..]));
    let retry: Value = retry.json().await.expect("json");
    assert_eq!(retry["id"], first["id"]);

    let mut other = body.clone();
    other["name"] = json!("Another Name");
    let reused = send("onboard-1", other).await.expect("reuse");
    assert_eq!(reused.status(), 422);
    assert_envelope(&reused.json().await.expect("json"), "IDEMPOTENCY_KEY_REUSED");

    let (_, page) = app.get_json(&token, "/v1/tenants?limit=100").await;
    let with_slug =
        page["items"].as_array().map(|items| items.iter().filter(|t| t["slug"] == body["slug"]).count());
    assert_eq!(with_slug, Some(1), "one tenant, not two");
    app.shutdown().await;
}

#[tokio::test]
async fn bad_input_and_missing_credentials_get_the_envelope() {
    let app = TestApp::spawn().await;
    let token = app.admin_token().await;

    let wrong = app.login(ADMIN_EMAIL, "not-the-password").await;
    assert_eq!(wrong.status(), 401);
    assert_envelope(&wrong.json().await.expect("json"), "INVALID_CREDENTIALS");
    let unknown = app.login("nobody@dotmac.test", "whatever-it-is").await;
    assert_eq!(unknown.status(), 401, "unknown accounts answer exactly like wrong passwords");
    assert_envelope(&unknown.json().await.expect("json"), "INVALID_CREDENTIALS");

    let anonymous =
        app.http.post(app.url("/v1/tenants")).json(&new_tenant_body("usage")).send().await.expect("post");
    assert_eq!(anonymous.status(), 401);
    assert_envelope(&anonymous.json().await.expect("json"), "UNAUTHENTICATED");

    let cases = [
        (
            "slug",
            json!({ "name": "A", "slug": "Not A Slug", "plan": "usage", "contact_email": "a@b.example" }),
        ),
        (
            "name",
            json!({ "name": "  ", "slug": "fine-slug", "plan": "usage", "contact_email": "a@b.example" }),
        ),
        (
            "contact_email",
            json!({ "name": "A", "slug": "fine-slug", "plan": "usage", "contact_email": "nope" }),
        ),
        ("plan", json!({ "name": "A", "slug": "fine-slug", "plan": "gold", "contact_email": "a@b.example" })),
        ("slug", json!({ "name": "A", "plan": "usage", "contact_email": "a@b.example" })),
        // Mass assignment: the platform sets status, never the client.
        (
            "status",
            json!({ "name": "A", "slug": "fine-slug", "plan": "usage", "contact_email": "a@b.example", "status": "active" }),
        ),
    ];
    for (field, body) in cases {
        let response = app.create_tenant(&token, &body).await;
        assert_eq!(response.status(), 422, "{body}");
        let error: Value = response.json().await.expect("json");
        assert_envelope(&error, "VALIDATION_FAILED");
        assert_eq!(error["error"]["details"]["field"], field, "{error}");
    }
    let (status, error) = app.get_json(&token, "/v1/tenants/not-a-uuid").await;
    assert_eq!(status, 422);
    assert_eq!(error["error"]["details"]["field"], "id");
    let (status, error) = app.get_json(&token, &format!("/v1/tenants/{}", TenantId::generate())).await;
    assert_eq!(status, 404);
    assert_envelope(&error, "TENANT_NOT_FOUND");
    let (status, error) = app.get_json(&token, "/v1/tenants?limit=0").await;
    assert_eq!((status, error["error"]["details"]["field"].clone()), (422, json!("limit")));
    let (status, error) = app.get_json(&token, "/v1/tenants?cursor=bogus").await;
    assert_eq!((status, error["error"]["details"]["field"].clone()), (422, json!("cursor")));
    let (status, error) = app.get_json(&token, "/v1/no-such-route").await;
    assert_eq!(status, 404);
    assert_envelope(&error, "NOT_FOUND");
    let too_big = app
        .http
        .post(app.url("/v1/tenants"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(format!("{{\"name\":\"{}\"}}", "x".repeat(100 * 1024)))
        .send()
        .await
        .expect("post");
    assert_eq!(too_big.status(), 413);
    app.shutdown().await;
}

/// A tenant's own admin sees its tenant and nothing else, and cannot onboard tenants.
#[tokio::test]
async fn a_tenant_token_never_reaches_another_tenant() {
    let app = TestApp::spawn().await;
    let admin = app.admin_token().await;
    let (mine, theirs) = (app.onboarded_tenant(&admin).await, app.onboarded_tenant(&admin).await);
    let token = app.user_token("admin@tenant-a.example", mine, Role::TenantAdmin).await;

    let (status, own) = app.get_json(&token, &format!("/v1/tenants/{mine}")).await;
    assert_eq!((status, own["id"].clone()), (200, json!(mine.to_string())));
    assert!(
        own.get("failure_reason").is_none() && own.get("version").is_none(),
        "platform internals hidden: {own}"
    );
    let (status, error) = app.get_json(&token, &format!("/v1/tenants/{theirs}")).await;
    assert_eq!(status, 403, "{error}");
    assert_envelope(&error, "FORBIDDEN");
    let (status, page) = app.get_json(&token, "/v1/tenants").await;
    assert_eq!(status, 200);
    let listed: Vec<_> = page["items"]
        .as_array()
        .map(|items| items.iter().map(|t| t["id"].clone()).collect())
        .unwrap_or_default();
    assert_eq!(listed, vec![json!(mine.to_string())]);
    let create = app.create_tenant(&token, &new_tenant_body("usage")).await;
    assert_eq!(create.status(), 403);
    app.shutdown().await;
}

/// A job that keeps failing ends in the DLQ, with the tenant `failed` and the reason kept.
#[tokio::test]
async fn a_failing_provisioning_job_ends_in_the_dlq_with_the_tenant_failed() {
    let app = TestApp::spawn_with(&[
        ("DOTMAC_ECS_SUBNETS", "subnet-does-not-exist"),
        ("DOTMAC_PROVISIONING_MAX_RECEIVE_COUNT", "2"),
    ])
    .await;
    let token = app.admin_token().await;
    let created: Value =
        app.create_tenant(&token, &new_tenant_body("usage")).await.json().await.expect("json");
    let id = created["id"].as_str().expect("id").to_owned();
    let failed = app.wait_for_tenant(&token, &id, Duration::from_secs(60), |t| t["status"] == "failed").await;
    assert!(failed["failure_reason"].as_str().is_some_and(|r| r.contains("RunTask")), "{failed}");

    let dlq = app.stack.provisioning_dlq().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let messages = dlq.receive(10, 1).await.expect("receive");
        if let Some(message) = messages.first() {
            assert!(message.body.contains(&id), "{}", message.body);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the job never reached the DLQ");
    }
    app.shutdown().await;
}

/// The first request created the tenant but died before its response was saved: the retry
/// with the same key gets that tenant, not a 409 for its own slug.
#[tokio::test]
async fn a_retry_after_a_lost_response_still_gets_its_tenant() {
    let app = TestApp::spawn().await;
    let token = app.admin_token().await;
    let body = new_tenant_body("usage");
    let send = || {
        app.http
            .post(app.url("/v1/tenants"))
            .bearer_auth(&token)
            .header("Idempotency-Key", "lost-1")
            .json(&body)
            .send()
    };
    let first: Value = send().await.expect("first").json().await.expect("json");
    // Forget the saved response, as a crash between the write and the save would.
    let (_, me) = app.get_json(&token, "/v1/auth/me").await;
    let user_id = me["id"].as_str().expect("id");
    let store = &app.stack.platform.store;
    store
        .client()
        .delete_item()
        .table_name(store.table())
        .key(
            "PK",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("IDEMPOTENCY#tenants#{user_id}#lost-1")),
        )
        .key("SK", aws_sdk_dynamodb::types::AttributeValue::S("RESPONSE".into()))
        .send()
        .await
        .expect("forget the response");
    let retry = send().await.expect("retry");
    assert_eq!(retry.status(), 202);
    let retry: Value = retry.json().await.expect("json");
    assert_eq!(retry["id"], first["id"]);
    // Without the key, the same body is a plain conflict.
    assert_eq!(app.create_tenant(&token, &body).await.status(), 409);
    app.shutdown().await;
}
