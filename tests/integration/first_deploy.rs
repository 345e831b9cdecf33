//! A fresh stack serves without a manual step: CloudFormation creates both key set secrets
//! empty, and the deploy-time custom resource (the rotation function) fills them before the
//! stack completes. `/health` answers before any key exists.

use aws_sdk_secretsmanager::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_secretsmanager::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_secretsmanager::error::BoxError;
use dotmac_config::Config;
use dotmac_platform::{Handler, Platform, custom_resource, rotation_function};
use dotmac_secrets::KeySetSecret;
use dotmac_tests::TestStack;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tower::ServiceExt;

/// Records the Secrets Manager operations a client sends (from `X-Amz-Target`), so the test
/// can say which ones the rotation needs, hence which ones its policy must grant.
#[derive(Debug, Default, Clone)]
struct Operations(Arc<Mutex<Vec<String>>>);

impl Intercept for Operations {
    fn name(&self) -> &'static str {
        "Operations"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(target) = context.request().headers().get("x-amz-target") {
            let operation = target.rsplit('.').next().unwrap_or(target).to_owned();
            self.0.lock().expect("lock").push(operation);
        }
        Ok(())
    }
}

/// The two secrets exactly as the template creates them: `{"keys":[]}`.
async fn empty_key_sets(stack: &TestStack) -> Config {
    let client = aws_sdk_secretsmanager::Client::new(&stack.sdk);
    let mut config = stack.config().clone();
    let mut ids = Vec::new();
    for name in ["jwt-key-set", "jwt-public-key-set"] {
        let id = format!("{}-fresh-{name}", stack.local.prefix);
        client.create_secret().name(&id).secret_string(r#"{"keys":[]}"#).send().await.expect("secret");
        ids.push(id);
    }
    config.jwt.key_set_secret = Some(ids[0].clone());
    config.jwt.public_key_set_secret = Some(ids[1].clone());
    config
}

async fn get(router: axum::Router, path: &str) -> u16 {
    let request = http::Request::get(path).body(axum::body::Body::empty()).expect("request");
    router.oneshot(request).await.expect("answer").status().as_u16()
}

/// The answers the response URL received: content type and JSON body.
type Answers = Arc<Mutex<Vec<(Option<String>, Value)>>>;

/// Stands in for CloudFormation's presigned S3 URL: records every PUT it receives.
async fn response_url() -> (String, Answers) {
    let seen: Answers = Arc::default();
    let record = seen.clone();
    let app = axum::Router::new().route(
        "/cfn-response",
        axum::routing::put(move |headers: http::HeaderMap, body: String| {
            let record = record.clone();
            async move {
                let content_type =
                    headers.get("content-type").and_then(|v| v.to_str().ok()).map(str::to_owned);
                record.lock().expect("lock").push((content_type, serde_json::from_str(&body).expect("JSON")));
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/cfn-response?X-Amz-Signature=test", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    (url, seen)
}

/// A sample CloudFormation request from `events/` (what the template's `InitialSigningKeys`
/// sends), answered at `url`, for the resource CloudFormation knows as `physical_id`.
fn request(kind: &str, url: &str, physical_id: Option<&str>) -> Value {
    let raw = match kind {
        "Create" => include_str!("../../events/cloudformation-signing-keys-create.json"),
        "Update" => include_str!("../../events/cloudformation-signing-keys-update.json"),
        "Delete" => include_str!("../../events/cloudformation-signing-keys-delete.json"),
        other => panic!("no sample {other} request"),
    };
    let mut event: Value =
        serde_json::from_str(&raw.replace("REPLACE_WITH_RESPONSE_URL", url)).expect("event");
    assert_eq!(event["RequestType"], kind);
    if let Some(id) = physical_id {
        event["PhysicalResourceId"] = json!(id);
    }
    event
}

/// The invocation's deadline as the Lambda context gives it: `left` from now.
fn deadline_in(left: Duration) -> tokio::time::Instant {
    tokio::time::Instant::now() + left
}

/// What the rotation function's entry point does with one event, with a minute to spare.
async fn invoke(config: &Config, secrets: &aws_sdk_secretsmanager::Client, event: Value) -> Value {
    let http = custom_resource::http_client().expect("client");
    rotation_function(config, secrets.clone(), &http, event, deadline_in(Duration::from_secs(60)))
        .await
        .expect("answered")
}

#[tokio::test]
async fn a_fresh_stack_with_no_keys_serves_after_the_deploy_time_rotation() {
    let stack = TestStack::new(&[]).await;
    let config = empty_key_sets(&stack).await;

    // Before the first rotation: the functions that hold keys cannot start, health can.
    for handler in [Handler::Auth, Handler::Tenants, Handler::Authorizer] {
        assert!(
            Platform::with_sdk_config_as(handler, config.clone(), &stack.sdk).await.is_err(),
            "{handler:?} starts on an empty key set"
        );
    }
    let health = Platform::with_sdk_config_as(Handler::Health, config.clone(), &stack.sdk)
        .await
        .expect("health starts with no keys");
    assert!(health.start_key_reload().is_none(), "and never reads a key set");
    let router = health.router(Handler::Health).expect("routes");
    assert_eq!(get(router.clone(), "/health").await, 200);
    assert_eq!(get(router, "/ready").await, 200);

    // CloudFormation creates the custom resource: the rotation function runs once.
    let operations = Operations::default();
    let secrets = aws_sdk_secretsmanager::Client::from_conf(
        aws_sdk_secretsmanager::config::Builder::from(&stack.sdk).interceptor(operations.clone()).build(),
    );
    let (url, answers) = response_url().await;
    let answer = invoke(&config, &secrets, request("Create", &url, None)).await;
    let sent = answers.lock().expect("lock").clone();
    assert_eq!(sent.len(), 1, "one answer at the response URL");
    let (content_type, body) = &sent[0];
    assert_eq!(content_type, &None, "the presigned URL is signed for no content type");
    assert_eq!(body["Status"], "SUCCESS", "{body}");
    assert_eq!(body["RequestId"], "7c0d1e2f-3a4b-4c5d-8e6f-7a8b9c0d1e2f");
    assert_eq!(body["LogicalResourceId"], "InitialSigningKeys");
    assert!(body["StackId"].as_str().is_some_and(|id| id.contains(":stack/dotmac-platform/")), "{body}");
    assert_eq!(body["Data"]["Outcome"], "rotated");
    let physical = body["PhysicalResourceId"].as_str().expect("a PhysicalResourceId").to_owned();
    assert!(physical.starts_with("InitialSigningKeys:"), "{physical}");
    assert_eq!(answer, *body, "the function returns what it answered");

    // Only reads and PutSecretValue: the policy needs no CreateSecret.
    let used = operations.0.lock().expect("lock").clone();
    assert!(!used.iter().any(|op| op == "CreateSecret"), "{used:?}");
    assert!(used.iter().all(|op| op == "GetSecretValue" || op == "PutSecretValue"), "{used:?}");

    let private = KeySetSecret::new(secrets.clone(), config.jwt.key_set_secret.clone().expect("id"));
    let public = KeySetSecret::new(secrets.clone(), config.jwt.public_key_set_secret.clone().expect("id"));
    let (private_set, _) = private.load().await.expect("private set");
    let (public_set, _) = public.load().await.expect("public set");
    assert_eq!(private_set.keys.len(), 2, "one key that signs and the next, published ahead");
    assert_eq!(public_set, private_set.public().expect("public half"), "the public set is its public half");
    assert!(public_set.keys.iter().all(|k| k.private_key.is_none()));

    // Now every function starts, and what the signer issues the verifiers accept.
    let auth =
        Platform::with_sdk_config_as(Handler::Auth, config.clone(), &stack.sdk).await.expect("auth starts");
    for handler in [Handler::Tenants, Handler::Users, Handler::Authorizer, Handler::Provisioner] {
        Platform::with_sdk_config_as(handler, config.clone(), &stack.sdk)
            .await
            .unwrap_or_else(|e| panic!("{handler:?} does not start: {e:#}"));
    }
    let tenants =
        Platform::with_sdk_config_as(Handler::Tenants, config.clone(), &stack.sdk).await.expect("tenants");
    let admin = dotmac_domain::Caller::new("admin", None, &[dotmac_domain::Role::PlatformAdmin]);
    let token = auth
        .keys
        .issue(
            &admin,
            &dotmac_tokens::SessionTerm { family: "test", ends_at: i64::MAX },
            time::OffsetDateTime::now_utc(),
        )
        .expect("issued")
        .pair
        .access_token;
    tenants.keys.verify(&token, dotmac_tokens::TokenKind::Access).expect("verified by a verifier");
    assert!(
        tenants
            .keys
            .issue(
                &admin,
                &dotmac_tokens::SessionTerm { family: "test", ends_at: i64::MAX },
                time::OffsetDateTime::now_utc()
            )
            .is_err(),
        "a verifier cannot sign"
    );

    // A stack update runs it again (nothing due, the same resource), and a stack deletion
    // answers without a single Secrets Manager call.
    let updated = invoke(&config, &secrets, request("Update", &url, Some(&physical))).await;
    assert_eq!(
        (updated["Status"].as_str(), updated["Data"]["Outcome"].as_str()),
        (Some("SUCCESS"), Some("not_due"))
    );
    assert_eq!(updated["PhysicalResourceId"], json!(physical), "same resource, never a replacement");
    let calls_before_delete = operations.0.lock().expect("lock").len();
    let deleted = invoke(&config, &secrets, request("Delete", &url, Some(&physical))).await;
    assert_eq!(deleted["Status"], "SUCCESS", "{deleted}");
    assert_eq!(deleted["PhysicalResourceId"], json!(physical));
    assert_eq!(operations.0.lock().expect("lock").len(), calls_before_delete, "a deletion touches no key");
    let sent = answers.lock().expect("lock").clone();
    assert_eq!(sent.iter().map(|(_, b)| b["Status"].clone()).collect::<Vec<_>>(), vec!["SUCCESS"; 3]);
    assert_eq!(private.load().await.expect("set").0, private_set, "untouched by the deletion");
}

/// The one answer the response URL got.
fn only_answer(answers: &Answers) -> Value {
    let sent = answers.lock().expect("lock").clone();
    assert_eq!(sent.len(), 1, "exactly one answer: {sent:?}");
    sent[0].1.clone()
}

#[tokio::test]
async fn a_failed_rotation_answers_failed_and_its_rollback_delete_succeeds() {
    let stack = TestStack::new(&[]).await;
    let mut config = stack.config().clone();
    config.jwt.key_set_secret = None;
    let secrets = aws_sdk_secretsmanager::Client::new(&stack.sdk);
    let (url, answers) = response_url().await;
    invoke(&config, &secrets, request("Create", &url, None)).await;
    let failed = only_answer(&answers);
    assert_eq!(failed["Status"], "FAILED");
    assert!(failed["Reason"].as_str().is_some_and(|r| r.contains("DOTMAC_JWT_KEY_SET_SECRET")), "{failed}");
    assert!(
        failed["PhysicalResourceId"].as_str().is_some_and(|id| !id.is_empty()),
        "CloudFormation needs one"
    );

    // The rollback deletes the resource it was told about; that must not fail too, or the
    // stack is stuck in ROLLBACK_FAILED.
    let (url, answers) = response_url().await;
    let physical = failed["PhysicalResourceId"].as_str().expect("id").to_owned();
    invoke(&config, &secrets, request("Delete", &url, Some(&physical))).await;
    assert_eq!(only_answer(&answers)["Status"], "SUCCESS");
}

#[tokio::test]
async fn a_request_it_cannot_read_is_answered_failed_not_run() {
    let stack = TestStack::new(&[]).await;
    let config = empty_key_sets(&stack).await;
    let operations = Operations::default();
    let secrets = aws_sdk_secretsmanager::Client::from_conf(
        aws_sdk_secretsmanager::config::Builder::from(&stack.sdk).interceptor(operations.clone()).build(),
    );
    let (url, answers) = response_url().await;
    let mut odd = request("Create", &url, None);
    odd["RequestType"] = json!("Import");
    invoke(&config, &secrets, odd).await;
    let answer = only_answer(&answers);
    assert_eq!(answer["Status"], "FAILED", "{answer}");
    assert!(answer["Reason"].as_str().is_some_and(|r| r.contains("Import")), "{answer}");
    assert_eq!(answer["RequestId"], "7c0d1e2f-3a4b-4c5d-8e6f-7a8b9c0d1e2f", "echoed from the raw event");
    assert_eq!(answer["LogicalResourceId"], "InitialSigningKeys");
    assert!(operations.0.lock().expect("lock").is_empty(), "nothing was rotated");
}

/// A Secrets Manager endpoint that accepts connections and never answers.
async fn silent_secrets_manager(stack: &TestStack) -> aws_sdk_secretsmanager::Client {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    aws_sdk_secretsmanager::Client::from_conf(
        aws_sdk_secretsmanager::config::Builder::from(&stack.sdk).endpoint_url(url).build(),
    )
}

#[tokio::test]
async fn a_rotation_still_running_near_the_deadline_is_answered_failed_before_it() {
    let stack = TestStack::new(&[]).await;
    let config = empty_key_sets(&stack).await;
    let secrets = silent_secrets_manager(&stack).await;
    let (url, answers) = response_url().await;
    let http = custom_resource::http_client().expect("client");
    let left = custom_resource::ANSWER_RESERVE + Duration::from_secs(2);
    let started = tokio::time::Instant::now();
    rotation_function(&config, secrets, &http, request("Create", &url, None), deadline_in(left))
        .await
        .expect("answered");
    let spent = started.elapsed();
    assert!(spent < left, "answered before the deadline ({spent:?} of {left:?})");
    let answer = only_answer(&answers);
    assert_eq!(answer["Status"], "FAILED", "{answer}");
    assert!(answer["Reason"].as_str().is_some_and(|r| r.contains("did not finish")), "{answer}");
}

#[tokio::test]
async fn a_scheduled_run_rotates_and_answers_no_one() {
    let stack = TestStack::new(&[]).await;
    let config = empty_key_sets(&stack).await;
    let secrets = aws_sdk_secretsmanager::Client::new(&stack.sdk);
    let schedule: Value =
        serde_json::from_str(include_str!("../../events/schedule-rotate-signing-keys.json")).expect("event");
    let outcome = invoke(&config, &secrets, schedule).await;
    assert_eq!(outcome["outcome"], "rotated", "{outcome}");
}
