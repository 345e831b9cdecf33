//! End to end through the HTTP server with the workers running: what `make dev` serves.

use aws_sdk_dynamodb::types::AttributeValue;
use dotmac_domain::{Role, TenantId};
use dotmac_store::{Begin, IdempotencyKey, SavedResponse};
use dotmac_tests::{ADMIN_EMAIL, Answer, TestApp, assert_envelope, new_tenant_body};
use http::Method;
use serde_json::{Value, json};
use std::time::Duration;

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
    let unknown: Value = unknown.json().await.expect("json");
    assert_envelope(&unknown, "INVALID_CREDENTIALS");
    let wrong: Value = app.login(ADMIN_EMAIL, "not-the-password-either").await.json().await.expect("json");
    assert_eq!(unknown, wrong, "the same answer, word for word, so nothing tells which accounts exist");

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

    // The body limit is 64 KiB: one byte under it is read (and refused for its content, a
    // name far too long), one byte over it is refused for its size before it is parsed.
    let sized = |total: usize| {
        let frame =
            json!({ "name": "", "slug": "fine-slug", "plan": "usage", "contact_email": "a@b.example" });
        let padding = total - frame.to_string().len();
        let mut body = frame;
        body["name"] = json!("x".repeat(padding));
        let text = body.to_string();
        assert_eq!(text.len(), total);
        app.http
            .post(app.url("/v1/tenants"))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(text)
    };
    let under = Answer::of(sized(dotmac_http::router::MAX_BODY_BYTES - 1)).await;
    under.assert_error(422, "VALIDATION_FAILED");
    assert_eq!(under.json["error"]["details"]["field"], "name", "refused for its content, not its size");
    Answer::of(sized(dotmac_http::router::MAX_BODY_BYTES + 1)).await.assert_error(413, "PAYLOAD_TOO_LARGE");

    // Not JSON, not sent as JSON, a method the route does not take: each has its own code.
    let raw = |content_type: &str, body: &str| {
        app.http
            .post(app.url("/v1/tenants"))
            .bearer_auth(&token)
            .header("content-type", content_type)
            .body(body.to_owned())
    };
    Answer::of(raw("application/json", "{\"name\": ")).await.assert_error(400, "MALFORMED_REQUEST");
    let as_text = new_tenant_body("usage").to_string();
    Answer::of(raw("text/plain", &as_text)).await.assert_error(415, "UNSUPPORTED_MEDIA_TYPE");
    let (_, page) = app.get_json(&token, "/v1/tenants?limit=100").await;
    assert_eq!(page["items"].as_array().map(Vec::len), Some(0), "none of these created a tenant: {page}");
    for (method, path) in
        [(Method::DELETE, "/v1/tenants"), (Method::PUT, "/v1/tenants"), (Method::POST, "/health")]
    {
        let answer = Answer::of(app.http.request(method.clone(), app.url(path)).bearer_auth(&token)).await;
        answer.assert_error(405, "METHOD_NOT_ALLOWED");
    }
    app.shutdown().await;
}

/// A tenant's own admin sees its tenant and nothing else, and cannot onboard tenants.
#[tokio::test]
async fn a_tenant_token_never_reaches_another_tenant() {
    let app = TestApp::spawn().await;
    let admin = app.admin_token().await;
    let (mine, theirs) = (app.onboarded_tenant(&admin).await, app.onboarded_tenant(&admin).await);
    let token = app.user_token("admin@tenant-a.example", mine, Role::TenantAdmin).await;

    // Active, so the container and the secret exist and there is something to hide.
    let full = app
        .wait_for_tenant(&admin, &mine.to_string(), Duration::from_secs(60), |t| t["status"] == "active")
        .await;
    for internal in ["secret_arn", "version"] {
        assert!(full.get(internal).is_some(), "platform staff see {internal}: {full}");
    }
    for internal in ["cluster_arn", "task_arn", "task_definition_arn"] {
        assert!(full["container"].get(internal).is_some(), "platform staff see {internal}: {full}");
    }
    let answer = app.exchange(Method::GET, &format!("/v1/tenants/{mine}"), Some(&token), None).await;
    assert_eq!((answer.status, answer.json["id"].clone()), (200, json!(mine.to_string())), "{}", answer.text);
    let own = &answer.json;
    assert_eq!(own["status"], "active", "{own}");
    assert_eq!(own["container"]["task_size"], full["container"]["task_size"], "{own}");
    for internal in ["failure_reason", "version", "secret_arn"] {
        assert!(own.get(internal).is_none(), "{internal} hidden from the tenant's admin: {own}");
    }
    for internal in ["cluster_arn", "task_arn", "task_definition_arn", "endpoint"] {
        assert!(own["container"].get(internal).is_none(), "{internal} hidden from the tenant's admin: {own}");
    }
    // Nowhere in the raw text either: no ARN (they carry the account id) under another name.
    assert!(!answer.text.contains("arn:aws"), "{}", answer.text);
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
    Answer::of(app.http.post(app.url("/v1/tenants")).bearer_auth(&token).json(&new_tenant_body("usage")))
        .await
        .assert_error(403, "FORBIDDEN");
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
    // The reason says what failed and why: the ECS call, and the emulator's own refusal.
    let reason = failed["failure_reason"].as_str().expect("a failure reason");
    let why =
        reason.strip_prefix("ECS RunTask failed: ").unwrap_or_else(|| panic!("names the call: {reason}"));
    assert!(!why.trim().is_empty(), "and why it failed: {reason}");
    assert!(failed["container"].is_null(), "no container for a failed tenant: {failed}");
    // A tenant's own admin sees that it failed, not the infrastructure detail.
    let tenant = TenantId::parse(&id).expect("id");
    let tenant_admin = app.user_token("admin@failed.example", tenant, Role::TenantAdmin).await;
    let answer = app.exchange(Method::GET, &format!("/v1/tenants/{id}"), Some(&tenant_admin), None).await;
    assert_eq!((answer.status, answer.json["status"].clone()), (200, json!("failed")), "{}", answer.text);
    assert!(answer.json.get("failure_reason").is_none() && !answer.text.contains(why), "{}", answer.text);

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
    // The first request's work, done by the use case the handler calls, with nothing saved
    // after it: what a crash between onboarding and saving the answer leaves behind.
    let request: dotmac_tenants::CreateTenantRequest = serde_json::from_value(body.clone()).expect("request");
    let platform = &app.stack.platform;
    let admin = platform
        .store
        .get_user_by_email(&dotmac_domain::Email::parse(dotmac_tests::ADMIN_EMAIL).expect("e-mail"))
        .await
        .expect("read")
        .expect("the seeded admin")
        .caller();
    let onboarding = dotmac_tenants::Onboarding {
        store: platform.store.clone(),
        provisioning: platform.provisioning.clone(),
    };
    let request_ref = request.request_ref(&admin, "lost-1").expect("request ref");
    let first = onboarding
        .onboard(&admin, request.parse().expect("valid"), Some(&request_ref))
        .await
        .expect("onboarded");

    let send = || {
        app.http
            .post(app.url("/v1/tenants"))
            .bearer_auth(&token)
            .header("Idempotency-Key", "lost-1")
            .json(&body)
            .send()
    };
    let retry = send().await.expect("retry");
    assert_eq!(retry.status(), 202);
    let retry: Value = retry.json().await.expect("json");
    assert_eq!(retry["id"], first.id.to_string(), "the retry answers with the tenant the first request made");
    let (_, list) = app.get_json(&token, "/v1/tenants?limit=100").await;
    let same_slug =
        list["items"].as_array().expect("items").iter().filter(|t| t["slug"] == body["slug"]).count();
    assert_eq!(same_slug, 1, "no second tenant");
    // Without the key, the same body is a plain conflict.
    assert_eq!(app.create_tenant(&token, &body).await.status(), 409);
    app.shutdown().await;
}

/// While the first request with a key is still running, a retry with the same key and body
/// is a 409 `REQUEST_IN_PROGRESS` (it neither waits nor does the work twice); once the first
/// finishes, the retry gets its answer. The first request is held in flight the way the app
/// holds it between claiming the key and saving its answer: a pending record written with
/// the store's own idempotency API, under the fingerprint the app computed for that body.
#[tokio::test]
async fn a_retry_while_the_first_request_runs_is_a_409() {
    let app = TestApp::spawn().await;
    let token = app.admin_token().await;
    let body = new_tenant_body("usage");
    let send = |body: &Value| {
        Answer::of(
            app.http
                .post(app.url("/v1/tenants"))
                .bearer_auth(&token)
                .header("Idempotency-Key", "held-1")
                .json(body),
        )
    };
    let first = send(&body).await;
    assert_eq!(first.status, 202, "{}", first.text);

    // Take the finished record back to "in progress": the fingerprint is the app's own.
    let user_id = app.get_json(&token, "/v1/auth/me").await.1["id"].as_str().expect("id").to_owned();
    let scope = format!("tenants#{user_id}");
    let store = &app.stack.platform.store;
    let record_key = [
        ("PK", AttributeValue::S(format!("IDEMPOTENCY#{scope}#held-1"))),
        ("SK", AttributeValue::S("RESPONSE".into())),
    ];
    let mut get = store.client().get_item().table_name(store.table()).consistent_read(true);
    let mut delete = store.client().delete_item().table_name(store.table());
    for (name, value) in &record_key {
        get = get.key(*name, value.clone());
        delete = delete.key(*name, value.clone());
    }
    let record = get.send().await.expect("get").item.expect("the first request saved its answer");
    let fingerprint = record["fingerprint"].as_s().expect("fingerprint").clone();
    delete.send().await.expect("delete");
    let key = IdempotencyKey::parse("held-1").expect("key");
    let now = time::OffsetDateTime::now_utc();
    let Begin::Started(claim) = store.begin_idempotent(&scope, &key, &fingerprint, now).await.expect("claim")
    else {
        panic!("the key is free again, so the claim starts");
    };

    let held = send(&body).await;
    held.assert_error(409, "REQUEST_IN_PROGRESS");
    assert!(held.header("idempotent-replayed").is_none());
    // Another body under the held key is still a key reused.
    let mut other = body.clone();
    other["name"] = json!("Another Name");
    send(&other).await.assert_error(422, "IDEMPOTENCY_KEY_REUSED");

    // The first request finishes: the retry gets its answer, and there is still one tenant.
    let saved = SavedResponse { status: 202, body: first.text.clone() };
    store.complete_idempotent(&scope, &key, &claim, &saved).await.expect("complete");
    let replay = send(&body).await;
    assert_eq!(replay.status, 202, "{}", replay.text);
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(replay.json["id"], first.json["id"]);
    let (_, page) = app.get_json(&token, "/v1/tenants?limit=100").await;
    let with_slug =
        page["items"].as_array().map(|items| items.iter().filter(|t| t["slug"] == body["slug"]).count());
    assert_eq!(with_slug, Some(1), "one tenant, not two: {page}");
    app.shutdown().await;
}

/// Each health report replaces the one before: the API shows the newest, the store keeps one
/// item, and an older report delivered late does not overwrite a newer one.
#[tokio::test]
async fn only_the_newest_health_report_is_kept() {
    let app = TestApp::spawn().await;
    let admin = app.admin_token().await;
    let tenant = app.onboarded_tenant(&admin).await;
    let (machine, _) =
        app.stack.platform.keys.issue_machine(tenant, 600, time::OffsetDateTime::now_utc()).expect("token");
    let path = format!("/v1/tenants/{tenant}/health");
    for report in [
        json!({ "status": "healthy", "detail": "first report" }),
        json!({ "status": "degraded", "detail": "second report" }),
    ] {
        let (status, answer) = app.send(Method::POST, &path, Some(&machine), Some(&report)).await;
        assert_eq!(status, 204, "{answer}");
    }
    let answer = app.exchange(Method::GET, &path, Some(&admin), None).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.json["tenant_id"], json!(tenant));
    assert_eq!(answer.json["latest"]["status"], "degraded", "{}", answer.text);
    assert_eq!(answer.json["latest"]["detail"], "second report", "{}", answer.text);
    assert!(!answer.text.contains("first report"), "{}", answer.text);

    let store = &app.stack.platform.store;
    let stored = store
        .client()
        .query()
        .table_name(store.table())
        .key_condition_expression("PK = :pk AND begins_with(SK, :sk)")
        .expression_attribute_values(":pk", AttributeValue::S(format!("TENANT#{tenant}")))
        .expression_attribute_values(":sk", AttributeValue::S("HEARTBEAT".into()))
        .consistent_read(true)
        .send()
        .await
        .expect("query");
    assert_eq!(stored.count, 1, "one report kept: {:?}", stored.items);

    let late = dotmac_store::Heartbeat {
        status: dotmac_store::HealthStatus::Unhealthy,
        detail: Some("late report".into()),
        reported_at: time::OffsetDateTime::now_utc() - time::Duration::minutes(10),
    };
    store.record_heartbeat(tenant, &late).await.expect("a late report is taken in silence");
    let (_, health) = app.get_json(&admin, &path).await;
    assert_eq!(health["latest"]["detail"], "second report", "an older report never wins: {health}");
    app.shutdown().await;
}

/// The tenant list pages over HTTP: 20 a page by default, `limit` otherwise, each tenant once
/// across the pages `next_cursor` leads to, and no cursor after the last.
#[tokio::test]
async fn the_tenant_list_pages_by_cursor_with_a_default_of_twenty() {
    let app = TestApp::spawn().await;
    let token = app.admin_token().await;
    let store = &app.stack.platform.store;
    let mut expected = Vec::new();
    for i in 0..21 {
        // Written directly (no provisioning job): only the list is under test.
        let tenant = dotmac_domain::Tenant::onboard(
            dotmac_domain::NewTenant {
                name: dotmac_domain::TenantName::parse(&format!("Paged ISP {i}")).expect("name"),
                slug: dotmac_domain::TenantSlug::parse(&format!("paged-isp-{i}")).expect("slug"),
                plan: dotmac_domain::PlanId::parse("usage").expect("plan"),
                contact_email: dotmac_domain::Email::parse("ops@paged.example").expect("email"),
                partner_id: None,
            },
            time::OffsetDateTime::now_utc(),
        );
        store.create_tenant(&tenant).await.expect("create");
        expected.push(tenant.id.to_string());
    }
    expected.sort();

    for (first, pages) in [("/v1/tenants", vec![20, 1]), ("/v1/tenants?limit=8", vec![8, 8, 5])] {
        let (sizes, mut ids) = walk_tenant_pages(&app, &token, first).await;
        assert_eq!(sizes, pages, "{first}");
        ids.sort();
        assert_eq!(ids, expected, "{first}: every tenant once, no gaps, no repeats");
    }
    app.shutdown().await;
}

/// Follows `next_cursor` from `first` to the last page: each page's size, and every id seen.
async fn walk_tenant_pages(app: &TestApp, token: &str, first: &str) -> (Vec<usize>, Vec<String>) {
    let (mut sizes, mut ids) = (Vec::new(), Vec::new());
    let mut path = first.to_owned();
    loop {
        let (status, page) = app.get_json(token, &path).await;
        assert_eq!(status, 200, "{page}");
        let items = page["items"].as_array().expect("items");
        sizes.push(items.len());
        ids.extend(items.iter().map(|t| t["id"].as_str().expect("id").to_owned()));
        assert!(sizes.len() <= 5, "the pages never end: {sizes:?}");
        match page["next_cursor"].as_str() {
            Some(cursor) => path = dotmac_tests::with_query(first, "cursor", cursor),
            None => return (sizes, ids),
        }
    }
}
