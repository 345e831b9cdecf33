//! Machine tokens: each tenant's container gets one at provisioning, in the tenant's secret;
//! it reports health for its own tenant and reaches nothing else.

use dotmac_tests::TestApp;
use http::Method;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn a_provisioned_container_gets_a_token_for_its_own_tenant_only() {
    let app = TestApp::spawn().await;
    let admin = app.admin_token().await;
    let mine = app.onboarded_tenant(&admin).await;
    let other = app.onboarded_tenant(&admin).await;
    let active = app
        .wait_for_tenant(&admin, &mine.to_string(), Duration::from_secs(30), |t| t["status"] == "active")
        .await;
    let secret_arn = active["secret_arn"].as_str().expect("the tenant records its secret").to_owned();

    let secrets = app.stack.platform.tenant_secrets();
    let credentials = secrets.read(mine).await.expect("read").expect("the tenant has a secret");
    assert_eq!(credentials.tenant_id, mine);
    assert!(secret_arn.contains(&secrets.secret_name(mine)), "{secret_arn}");
    let token = credentials.machine_token.clone();

    // Its task runs the tenant's own task definition, which takes the token from the tenant's
    // secret (resolved by ECS at start): no task role ever needs to read a secret.
    let ecs = aws_sdk_ecs::Client::new(&app.stack.sdk);
    let definition_arn = active["container"]["task_definition_arn"].as_str().expect("task definition");
    let definition =
        ecs.describe_task_definition().task_definition(definition_arn).send().await.expect("describe");
    let definition = definition.task_definition().expect("definition");
    assert_eq!(definition.family(), Some(format!("{}-{mine}", app.stack.config().ecs.task_family).as_str()));
    let secrets_in = &definition.container_definitions()[0];
    assert!(
        secrets_in.secrets().iter().any(|s| s.name() == "DOTMAC_MACHINE_TOKEN"
            && s.value_from() == format!("{secret_arn}:machine_token::")),
        "{secrets_in:?}"
    );

    let report = json!({ "status": "degraded", "detail": "RADIUS latency high" });
    let (status, answer) =
        app.send(Method::POST, &format!("/v1/tenants/{mine}/health"), Some(&token), Some(&report)).await;
    assert_eq!(status, 204, "{answer}");
    let tenant_admin =
        app.user_token("admin@machine-a.example", mine, dotmac_domain::Role::TenantAdmin).await;
    let (status, health) = app.get_json(&tenant_admin, &format!("/v1/tenants/{mine}/health")).await;
    assert_eq!((status, health["latest"]["status"].clone()), (200, json!("degraded")), "{health}");

    // Nothing else: not another tenant's health, not its own tenant record, not users.
    let (status, _) =
        app.send(Method::POST, &format!("/v1/tenants/{other}/health"), Some(&token), Some(&report)).await;
    assert_eq!(status, 403);
    for path in [
        format!("/v1/tenants/{mine}"),
        format!("/v1/tenants/{mine}/health"),
        "/v1/users".to_owned(),
        "/v1/roles".to_owned(),
    ] {
        let (status, answer) = app.get_json(&token, &path).await;
        assert_eq!(status, 403, "GET {path} with a machine token: {answer}");
    }

    // Asked again (a re-delivered job), the secret keeps its token.
    let ensured = secrets
        .ensure_machine_token(mine, &app.stack.platform.keys, 3600, 60, time::OffsetDateTime::now_utc())
        .await
        .expect("ensure");
    assert_eq!((ensured.secret_arn, ensured.replaced), (secret_arn, None));
    let again = secrets.read(mine).await.expect("read").expect("secret");
    assert_eq!(again.token_id, credentials.token_id);
    app.shutdown().await;
}
