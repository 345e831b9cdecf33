//! Signing keys from Secrets Manager: running instances pick up a rotation by themselves, a
//! rotation signs nobody out, and a retired key's tokens are refused once the overlap ends.

use dotmac_secrets::{RotationOutcome, RotationPolicy};
use dotmac_tests::{ADMIN_EMAIL, ADMIN_PASSWORD, TestApp};
use serde_json::Value;
use std::time::Duration;

fn authorizer_event(token: &str) -> aws_lambda_events::event::apigw::ApiGatewayV2CustomAuthorizerV2Request {
    let raw = include_str!("../../events/apigw-authorizer.json").replace("REPLACE_WITH_TOKEN", token);
    serde_json::from_str(&raw).expect("authorizer event")
}

fn kid(token: &str) -> String {
    let header = jsonwebtoken::decode_header(token).expect("header");
    header.kid.expect("kid")
}

async fn jwks_kids(app: &TestApp) -> Vec<String> {
    let jwks: Value = app
        .http
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .expect("jwks")
        .json()
        .await
        .expect("json");
    jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter_map(|k| k["kid"].as_str().map(str::to_owned))
        .collect()
}

/// Long enough for the server to reload and the old token to be tried under a loaded CI.
const OVERLAP: i64 = 15;

#[tokio::test]
async fn a_rotation_reaches_running_instances_and_a_retired_key_stops_verifying() {
    // Reload every second so the test sees what production sees every five minutes.
    let app = TestApp::spawn_with(&[("DOTMAC_JWT_KEY_RELOAD_SECONDS", "1")]).await;
    let secret = app.stack.platform.key_set_secret().expect("keys come from Secrets Manager");
    let before = app.token_for(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let old_kid = kid(&before);
    let published_before = jwks_kids(&app).await;
    assert_eq!(published_before.len(), 2, "the signing key and the next one are published");

    // Not due: the default policy leaves a fresh set alone (and so do duplicate runs).
    let not_due = app.stack.platform.rotate_signing_keys().await.expect("rotation run");
    assert!(matches!(not_due, RotationOutcome::NotDue { .. }), "{not_due:?}");

    // Withdraw the pre-published next key, so the rotation below makes the only new one.
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let (mut set, _) = secret.load().await.expect("key set");
    set.keys.retain(|key| key.not_before <= now);
    aws_sdk_secretsmanager::Client::new(&app.stack.sdk)
        .put_secret_value()
        .secret_id(secret.secret_id())
        .secret_string(serde_json::to_string(&set).expect("json"))
        .send()
        .await
        .expect("put");

    // Rotate now, with a short overlap so the old key retires within the test.
    let policy =
        RotationPolicy { publish_lead_seconds: 0, overlap_seconds: OVERLAP, rotate_after_seconds: 0 };
    let public_id = app.stack.config().jwt.public_key_set_secret.clone().expect("a public key set secret");
    let public =
        dotmac_secrets::KeySetSecret::new(aws_sdk_secretsmanager::Client::new(&app.stack.sdk), public_id);
    let outcome = secret.rotate(now, policy, Some(&public)).await.expect("rotated");
    assert!(matches!(outcome, RotationOutcome::Rotated { keys: 2, .. }), "{outcome:?}");

    // The running server reloads by itself: new sign-ins use the new key, old tokens still work.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let after = loop {
        let token = app.token_for(ADMIN_EMAIL, ADMIN_PASSWORD).await;
        if kid(&token) != old_kid {
            break token;
        }
        assert!(tokio::time::Instant::now() < deadline, "the server never picked up the rotation");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let (status, _) = app.get_json(&before, "/v1/auth/me").await;
    assert_eq!(status, 200, "a rotation signs nobody out");

    // A function that only verifies loads the public set: no private key, same decisions.
    let mut config = app.stack.config().clone();
    config.jwt.key_set_secret = None;
    let verifier =
        dotmac_platform::Platform::with_sdk_config(config, &app.stack.sdk).await.expect("verifier");
    let (public_set, _) = public.load().await.expect("public set");
    assert!(public_set.keys.iter().all(|key| key.private_key.is_none()), "no private key in the public set");
    assert!(verifier.keys.verify(&after, dotmac_tokens::TokenKind::Access).is_ok());
    assert!(verifier.keys.verify(&before, dotmac_tokens::TokenKind::Access).is_ok());
    assert!(
        verifier
            .keys
            .issue_machine(dotmac_domain::TenantId::generate(), 60, time::OffsetDateTime::now_utc())
            .is_err()
    );
    assert!(verifier.authorizer().decide(&authorizer_event(&after)).await.is_authorized);
    assert!(jwks_kids(&app).await.contains(&kid(&after)));

    // Past the overlap, the retired key's tokens are refused and it leaves the JWKS.
    let until_retired = now + OVERLAP + 2 - time::OffsetDateTime::now_utc().unix_timestamp();
    tokio::time::sleep(Duration::from_secs(u64::try_from(until_retired).unwrap_or(0))).await;
    let (status, _) = app.get_json(&before, "/v1/auth/me").await;
    assert_eq!(status, 401, "a token of a retired key is refused");
    let (status, _) = app.get_json(&after, "/v1/auth/me").await;
    assert_eq!(status, 200);
    let published = jwks_kids(&app).await;
    assert!(!published.contains(&old_kid), "{published:?}");
    verifier.key_set_secret().expect("public secret").reload_into(&verifier.keys).await.expect("reload");
    assert!(
        verifier.keys.verify(&before, dotmac_tokens::TokenKind::Access).is_err(),
        "retired for verifiers too"
    );
    assert!(verifier.keys.verify(&after, dotmac_tokens::TokenKind::Access).is_ok());
    let (set, _) = secret.load().await.expect("key set");
    assert_eq!(set.keys.len(), 2, "the retired key stays in the secret until the next rotation drops it");
    app.shutdown().await;
}

#[tokio::test]
async fn the_first_run_creates_the_key_set_and_an_empty_secret_is_filled() {
    let app = TestApp::spawn().await;
    let client = aws_sdk_secretsmanager::Client::new(&app.stack.sdk);
    let policy =
        RotationPolicy { publish_lead_seconds: 600, overlap_seconds: 3600, rotate_after_seconds: 86_400 };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();

    let fresh =
        dotmac_secrets::KeySetSecret::new(client.clone(), format!("{}-fresh-keys", app.stack.local.prefix));
    let outcome = fresh.rotate(now, policy, None).await.expect("first run");
    assert_eq!(outcome, RotationOutcome::Rotated { keys: 2, signs_from: now }, "the first key signs at once");
    let (set, _) = fresh.load().await.expect("set");
    assert_eq!(set.newest_not_before(), Some(now + policy.rotate_after_seconds), "and the next is published");
    assert!(matches!(
        fresh.rotate(now + 60, policy, None).await.expect("again"),
        RotationOutcome::NotDue { .. }
    ));

    // Created bare, with no value at all: the first run writes the first version.
    let bare = format!("{}-bare-keys", app.stack.local.prefix);
    client.create_secret().name(&bare).send().await.expect("bare secret");
    let bare = dotmac_secrets::KeySetSecret::new(client.clone(), bare);
    assert!(matches!(
        bare.rotate(now, policy, None).await.expect("filled"),
        RotationOutcome::Rotated { keys: 2, .. }
    ));
    assert_eq!(bare.load().await.expect("set").0.keys.len(), 2);

    let name = format!("{}-empty-keys", app.stack.local.prefix);
    client.create_secret().name(&name).secret_string(r#"{"keys":[]}"#).send().await.expect("empty secret");
    let empty = dotmac_secrets::KeySetSecret::new(client, name);
    assert!(matches!(
        empty.rotate(now, policy, None).await.expect("filled"),
        RotationOutcome::Rotated { keys: 2, .. }
    ));
    let (set, _) = empty.load().await.expect("set");
    assert_eq!(set.keys.len(), 2);
    app.shutdown().await;
}
