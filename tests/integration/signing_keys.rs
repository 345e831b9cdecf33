//! Signing keys from Secrets Manager: running instances pick up a rotation by themselves, a
//! rotation signs nobody out, and a retired key's tokens are refused once the overlap ends.

use dotmac_secrets::{RotationOutcome, RotationPolicy};
use dotmac_tests::{ADMIN_EMAIL, ADMIN_PASSWORD, TestApp, TestStack};
use dotmac_tokens::{KeySet, StoredKey, generate_signing_key};
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

/// Polls `condition` every 200 ms until it holds, or panics with `what` after `within`.
async fn eventually<Fut: std::future::Future<Output = bool>>(
    what: &str,
    within: Duration,
    mut condition: impl FnMut() -> Fut,
) {
    let deadline = tokio::time::Instant::now() + within;
    while !condition().await {
        assert!(tokio::time::Instant::now() < deadline, "{what} (waited {within:?})");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Writes `set` to the private secret and its public half to the public one, as a rotation
/// does: what the running server reloads.
async fn publish(app: &TestApp, set: &KeySet) {
    let client = aws_sdk_secretsmanager::Client::new(&app.stack.sdk);
    let jwt = &app.stack.config().jwt;
    let private = jwt.key_set_secret.clone().expect("a key set secret");
    let public = jwt.public_key_set_secret.clone().expect("a public key set secret");
    for (id, value) in [(private, set.clone()), (public, set.public().expect("public half"))] {
        client
            .put_secret_value()
            .secret_id(id)
            .secret_string(serde_json::to_string(&value).expect("json"))
            .send()
            .await
            .expect("put");
    }
}

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
    publish(&app, &set).await;

    // Rotate now, with an overlap far longer than the test: nothing below depends on how fast
    // it runs. The retirement is then brought forward in the secret itself.
    const OVERLAP: i64 = 3600;
    let policy =
        RotationPolicy { publish_lead_seconds: 0, overlap_seconds: OVERLAP, rotate_after_seconds: 0 };
    let public_id = app.stack.config().jwt.public_key_set_secret.clone().expect("a public key set secret");
    let public =
        dotmac_secrets::KeySetSecret::new(aws_sdk_secretsmanager::Client::new(&app.stack.sdk), public_id);
    let outcome = secret.rotate(now, policy, Some(&public)).await.expect("rotated");
    assert_eq!(outcome, RotationOutcome::Rotated { keys: 2, signs_from: now }, "{outcome:?}");
    let (rotated, _) = secret.load().await.expect("key set");
    assert_eq!(
        rotated.keys.iter().map(|k| (k.not_before, k.retire_at)).collect::<Vec<_>>(),
        vec![(set.keys[0].not_before, Some(now + OVERLAP)), (now, None)],
        "the old key retires one overlap after the new one starts signing"
    );

    // The running server reloads by itself: new sign-ins use the new key, old tokens still work.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let after = loop {
        let token = app.token_for(ADMIN_EMAIL, ADMIN_PASSWORD).await;
        if kid(&token) != old_kid {
            break token;
        }
        assert!(tokio::time::Instant::now() < deadline, "the server never picked up the rotation");
        tokio::time::sleep(Duration::from_millis(200)).await;
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
    assert_eq!(
        verifier
            .keys
            .issue_machine(dotmac_domain::TenantId::generate(), 60, time::OffsetDateTime::now_utc())
            .err(),
        Some(dotmac_tokens::TokenError::NoSigningKey),
        "a verifier cannot mint"
    );
    assert!(verifier.authorizer().decide(&authorizer_event(&after)).await.is_authorized);
    assert!(jwks_kids(&app).await.contains(&kid(&after)));

    // The overlap ends: the secret as it stands once the old key's `retire_at` has passed.
    let mut retired = rotated.clone();
    retired.keys[0].retire_at = Some(time::OffsetDateTime::now_utc().unix_timestamp());
    publish(&app, &retired).await;
    eventually("the server kept accepting a retired key's token", Duration::from_secs(30), || async {
        app.get_json(&before, "/v1/auth/me").await.0 == 401
    })
    .await;
    let (status, _) = app.get_json(&after, "/v1/auth/me").await;
    assert_eq!(status, 200);
    let published = jwks_kids(&app).await;
    assert!(!published.contains(&old_kid), "{published:?}");
    verifier.key_set_secret().expect("public secret").reload_into(&verifier.keys).await.expect("reload");
    let refusal = verifier.keys.verify(&before, dotmac_tokens::TokenKind::Access).err();
    assert!(
        matches!(
            refusal,
            Some(dotmac_tokens::TokenError::Rejected(
                dotmac_tokens::Refusal::RetiredKey | dotmac_tokens::Refusal::UnknownKey
            ))
        ),
        "retired for verifiers too: {refusal:?}"
    );
    assert!(verifier.keys.verify(&after, dotmac_tokens::TokenKind::Access).is_ok());
    let (set, _) = secret.load().await.expect("key set");
    assert_eq!(set.keys.len(), 2, "the retired key stays in the secret until the next rotation drops it");
    app.shutdown().await;
}

/// The schedule's policy comes from the configuration: the new key is published two reload
/// periods before it signs, and the old one verifies for the longest token lifetime (access,
/// refresh, machine or license) plus a minute.
#[tokio::test]
async fn the_schedule_rotates_by_the_policy_its_configuration_implies() {
    let stack = TestStack::new(&[
        ("DOTMAC_JWT_KEY_RELOAD_SECONDS", "7"),
        ("DOTMAC_JWT_ROTATE_AFTER_SECONDS", "0"),
        ("DOTMAC_ACCESS_TOKEN_TTL_SECONDS", "600"),
        ("DOTMAC_REFRESH_TOKEN_TTL_SECONDS", "86400"),
        ("DOTMAC_MACHINE_TOKEN_TTL_SECONDS", "172800"),
        ("DOTMAC_LICENSE_TTL_SECONDS", "3600"),
    ])
    .await;
    let policy = dotmac_platform::rotation_policy(stack.config());
    assert_eq!(
        policy,
        RotationPolicy { publish_lead_seconds: 14, overlap_seconds: 172_800 + 60, rotate_after_seconds: 0 }
    );
    let mut config = stack.config().clone();
    config.machine_token_ttl_seconds = 60;
    assert_eq!(dotmac_platform::rotation_policy(&config).overlap_seconds, 86_400 + 60, "refresh is longest");
    config.license_ttl_seconds = 90_000;
    assert_eq!(
        dotmac_platform::rotation_policy(&config).overlap_seconds,
        90_000 + 60,
        "the license is longest"
    );
    config.jwt.access_ttl_seconds = 100_000;
    assert_eq!(dotmac_platform::rotation_policy(&config).overlap_seconds, 100_000 + 60, "access is longest");

    // The scheduled run applies exactly that policy to the secret.
    // Only the signing key (the seeded next one starts later, so nothing would be due yet).
    let secret = stack.platform.key_set_secret().expect("keys come from Secrets Manager");
    let (mut before, _) = secret.load().await.expect("key set");
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    before.keys.retain(|key| key.not_before <= now);
    assert_eq!(before.keys.len(), 1, "{before:?}");
    aws_sdk_secretsmanager::Client::new(&stack.sdk)
        .put_secret_value()
        .secret_id(secret.secret_id())
        .secret_string(serde_json::to_string(&before).expect("json"))
        .send()
        .await
        .expect("put");
    let started = time::OffsetDateTime::now_utc().unix_timestamp();
    let outcome = stack.platform.rotate_signing_keys().await.expect("rotation run");
    let finished = time::OffsetDateTime::now_utc().unix_timestamp();
    let RotationOutcome::Rotated { signs_from, .. } = outcome else { panic!("due at once: {outcome:?}") };
    assert!((started + 14..=finished + 14).contains(&signs_from), "{signs_from} from {started}..{finished}");
    let (after, _) = secret.load().await.expect("key set");
    let added: Vec<_> = after
        .keys
        .iter()
        .filter(|key| !before.keys.iter().any(|old| old.private_key == key.private_key))
        .collect();
    assert_eq!(added.len(), 1, "{after:?}");
    assert_eq!((added[0].not_before, added[0].retire_at), (signs_from, None));
    for old in &before.keys {
        let now_stored = after.keys.iter().find(|key| key.private_key == old.private_key).expect("kept");
        if old.not_before <= signs_from {
            assert_eq!(now_stored.retire_at, Some(signs_from + policy.overlap_seconds), "{old:?}");
        } else {
            assert_eq!(now_stored.retire_at, None, "a key not yet signing is not retired: {old:?}");
        }
    }
}

/// Two schedule runs that read the same version cannot both add a key: the write names the
/// version it replaces. Whichever way the runs interleave, exactly one rotates (the other
/// fails its write, or reads the new set and finds nothing due) and the set gains one key.
#[tokio::test]
async fn two_concurrent_rotations_add_one_key() {
    let stack = TestStack::new(&[]).await;
    let client = aws_sdk_secretsmanager::Client::new(&stack.sdk);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let name = format!("{}-race-keys", stack.local.prefix);
    let old = KeySet { keys: vec![StoredKey::private(generate_signing_key().expect("key"), now - 7200)] };
    client
        .create_secret()
        .name(&name)
        .secret_string(serde_json::to_string(&old).expect("json"))
        .send()
        .await
        .expect("secret");
    let secret = dotmac_secrets::KeySetSecret::new(client, name);
    let policy =
        RotationPolicy { publish_lead_seconds: 60, overlap_seconds: 3600, rotate_after_seconds: 3600 };
    let (first, second) = tokio::join!(secret.rotate(now, policy, None), secret.rotate(now, policy, None));
    let rotated =
        [&first, &second].iter().filter(|r| matches!(r, Ok(RotationOutcome::Rotated { .. }))).count();
    assert_eq!(rotated, 1, "exactly one run rotates: {first:?} / {second:?}");
    let (set, _) = secret.load().await.expect("key set");
    assert_eq!(set.keys.len(), 2, "one key added: {set:?}");
    assert_eq!(set.keys[0].private_key, old.keys[0].private_key);
}

/// The signing key as a PEM document, for signing tokens by hand.
fn pem(key: &StoredKey) -> jsonwebtoken::EncodingKey {
    let der = key.private_key.as_deref().expect("a private key");
    let lines: Vec<String> =
        der.as_bytes().chunks(64).map(|c| String::from_utf8_lossy(c).into_owned()).collect();
    let pem = format!("-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n", lines.join("\n"));
    jsonwebtoken::EncodingKey::from_ed_pem(pem.as_bytes()).expect("an Ed25519 key")
}

/// `nbf` is checked: a token signed with our own key is refused until its `nbf` (past the
/// clock leeway), while the same token valid now is accepted. And a key published ahead of
/// its `not_before` already verifies (so instances know it before anyone signs with it),
/// though sign-ins do not use it yet.
#[tokio::test]
async fn not_before_is_checked_on_tokens_and_honoured_on_keys() {
    let app = TestApp::spawn().await;
    let token = app.admin_token().await;
    let (_, me) = app.get_json(&token, "/v1/auth/me").await;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let secret = app.stack.platform.key_set_secret().expect("keys come from Secrets Manager");
    let (set, _) = secret.load().await.expect("key set");
    let signing =
        set.keys.iter().filter(|k| k.not_before <= now).max_by_key(|k| k.not_before).expect("signing");
    let ahead = set.keys.iter().find(|k| k.not_before > now).expect("the next key, published ahead");
    let signing_kid = kid(&token);
    let kids = jwks_kids(&app).await;
    let ahead_kid = kids.iter().find(|k| **k != signing_kid).expect("the next key is in the JWKS").clone();

    let keys = &app.stack.platform.keys;
    // The hand-made tokens join the signed-in admin's session, as every person's token must.
    let signed_in = keys.verify(&token, dotmac_tokens::TokenKind::Access).expect("the admin's claims");
    let forge = |key: &StoredKey, kid: &str, nbf: i64| {
        let claims = dotmac_tokens::Claims {
            iss: keys.issuer().to_owned(),
            aud: keys.audience().to_owned(),
            sub: me["id"].as_str().expect("id").to_owned(),
            exp: now + 600,
            nbf,
            iat: now,
            jti: uuid::Uuid::new_v4().to_string(),
            typ: dotmac_tokens::TokenKind::Access,
            tid: None,
            fam: signed_in.fam.clone(),
            sxp: signed_in.sxp,
            pid: None,
            roles: vec![dotmac_domain::RoleName::from(dotmac_domain::Role::PlatformAdmin)],
        };
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.kid = Some(kid.to_owned());
        header.typ = Some("at+jwt".into());
        jsonwebtoken::encode(&header, &claims, &pem(key)).expect("signed")
    };
    let valid_now = forge(signing, &signing_kid, now - 5);
    assert_eq!(app.get_json(&valid_now, "/v1/auth/me").await.0, 200, "the hand-made token is faithful");
    let (status, error) = app.get_json(&forge(signing, &signing_kid, now + 3600), "/v1/auth/me").await;
    assert_eq!(
        (status, error["error"]["code"].clone()),
        (401, serde_json::json!("INVALID_TOKEN")),
        "{error}"
    );

    let (status, answer) = app.get_json(&forge(ahead, &ahead_kid, now - 5), "/v1/auth/me").await;
    assert_eq!(status, 200, "a key published ahead verifies before it signs: {answer}");
    assert_eq!(kid(&app.admin_token().await), signing_kid, "sign-ins still use the current key");
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
