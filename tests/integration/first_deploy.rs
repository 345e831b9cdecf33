//! A fresh stack serves without a manual step: CloudFormation creates both key set secrets
//! empty, and the deploy-time custom resource (the rotation function) fills them before the
//! stack completes. `/health` answers before any key exists.

use aws_sdk_secretsmanager::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_secretsmanager::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_secretsmanager::error::BoxError;
use dotmac_platform::{Handler, Platform, custom_resource};
use dotmac_secrets::KeySetSecret;
use dotmac_tests::TestStack;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
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
async fn empty_key_sets(stack: &TestStack) -> dotmac_config::Config {
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

fn request(kind: &str, url: &str, physical_id: Option<&str>) -> Value {
    let mut event = json!({
        "RequestType": kind,
        "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:rotate",
        "ResponseURL": url,
        "StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/dotmac/guid",
        "RequestId": format!("request-{kind}"),
        "ResourceType": "Custom::SigningKeys",
        "LogicalResourceId": "InitialSigningKeys",
        "ResourceProperties": {"ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:rotate"}
    });
    if let Some(id) = physical_id {
        event["PhysicalResourceId"] = json!(id);
        event["OldResourceProperties"] = json!({});
    }
    event
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
    let http = custom_resource::http_client().expect("client");
    let create = custom_resource::parse(&request("Create", &url, None)).expect("a custom resource request");
    let answer = custom_resource::handle(&config, secrets.clone(), &http, create).await.expect("answered");
    let sent = answers.lock().expect("lock").clone();
    assert_eq!(sent.len(), 1, "one answer at the response URL");
    let (content_type, body) = &sent[0];
    assert_eq!(content_type, &None, "the presigned URL is signed for no content type");
    assert_eq!(body["Status"], "SUCCESS", "{body}");
    assert_eq!(body["RequestId"], "request-Create");
    assert_eq!(body["LogicalResourceId"], "InitialSigningKeys");
    assert_eq!(body["Data"]["Outcome"], "rotated");
    assert_eq!(body["PhysicalResourceId"], json!(answer.physical_resource_id));

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

    // A stack update runs it again (nothing due), and a stack deletion leaves the keys alone.
    let physical = answer.physical_resource_id.clone();
    let update = custom_resource::parse(&request("Update", &url, Some(&physical))).expect("update");
    let updated = custom_resource::handle(&config, secrets.clone(), &http, update).await.expect("answered");
    assert_eq!(updated.data.get("Outcome").map(String::as_str), Some("not_due"));
    assert_eq!(updated.physical_resource_id, physical, "same resource, never a replacement");
    let delete = custom_resource::parse(&request("Delete", &url, Some(&physical))).expect("delete");
    custom_resource::handle(&config, secrets, &http, delete).await.expect("answered");
    let sent = answers.lock().expect("lock").clone();
    assert_eq!(sent.iter().map(|(_, b)| b["Status"].clone()).collect::<Vec<_>>(), vec!["SUCCESS"; 3]);
    assert_eq!(private.load().await.expect("set").0, private_set, "untouched by the deletion");
}

#[tokio::test]
async fn a_failed_rotation_answers_failed_instead_of_leaving_the_deploy_waiting() {
    let stack = TestStack::new(&[]).await;
    let mut config = stack.config().clone();
    config.jwt.key_set_secret = None;
    let (url, answers) = response_url().await;
    let http = custom_resource::http_client().expect("client");
    let create = custom_resource::parse(&request("Create", &url, None)).expect("request");
    let secrets = aws_sdk_secretsmanager::Client::new(&stack.sdk);
    custom_resource::handle(&config, secrets, &http, create).await.expect("answered");
    let sent = answers.lock().expect("lock").clone();
    assert_eq!(sent[0].1["Status"], "FAILED");
    assert!(
        sent[0].1["Reason"].as_str().is_some_and(|r| r.contains("DOTMAC_JWT_KEY_SET_SECRET")),
        "{:?}",
        sent[0]
    );
}

#[test]
fn schedule_events_are_not_custom_resource_requests() {
    let schedule: Value =
        serde_json::from_str(include_str!("../../events/schedule-rotate-signing-keys.json")).expect("event");
    assert!(custom_resource::parse(&schedule).is_none());
}
