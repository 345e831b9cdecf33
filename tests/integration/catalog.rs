//! The catalogue and subscriptions against the emulator: price versions taking effect from
//! the next period only, concurrent price changes, bundle spans, isolation of a tenant's
//! subscriptions, and the signed license in the tenant's secret (PyJWT verifies it).

use dotmac_billing::Period;
use dotmac_domain::{PlanId, Role, TenantId};
use dotmac_tests::TestApp;
use http::Method;
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

fn package_price(cents_per_package: u32) -> Value {
    json!({
        "currency": "USD",
        "per_customer": { "model": "package", "size": 100, "package_price": format!("{}.{:02}", cents_per_package / 100, cents_per_package % 100) },
        "monthly_minimum": "10",
        "aggregation": "max",
    })
}

#[tokio::test]
async fn a_price_change_applies_from_the_next_period_and_of_two_at_once_one_wins() {
    let app = TestApp::spawn().await;
    let admin = app.admin_token().await;
    let store = &app.stack.platform.store;
    let usage = PlanId::parse("usage").expect("id");
    let now = Period::containing(time::OffsetDateTime::now_utc());

    // The seed priced every period: version 1 from 2000-01.
    let seeded = store.price_in_force(&usage, Period::parse("2000-01").expect("period")).await.expect("read");
    assert_eq!(seeded.as_ref().map(|v| v.version), Some(1), "{seeded:?}");
    let (status, plan) = app.get_json(&admin, "/v1/plans/usage").await;
    assert_eq!(status, 200, "{plan}");
    assert_eq!(plan["current_price"]["version"], 1, "{plan}");
    assert_eq!(plan["scheduled_prices"], json!([]), "{plan}");

    let change = json!({ "price": package_price(2500), "expected_version": 1 });
    let (status, version) =
        app.send(Method::POST, "/v1/plans/usage/prices", Some(&admin), Some(&change)).await;
    assert_eq!(status, 201, "{version}");
    assert_eq!(
        (version["version"].clone(), version["effective_from"].clone()),
        (json!(2), json!(now.next().to_string()))
    );
    // The same change again (a retry) answers the version it made.
    let (status, again) = app.send(Method::POST, "/v1/plans/usage/prices", Some(&admin), Some(&change)).await;
    assert_eq!((status, again["version"].clone()), (200, json!(2)), "{again}");

    let this = store.price_in_force(&usage, now).await.expect("read").expect("a price");
    let next = store.price_in_force(&usage, now.next()).await.expect("read").expect("a price");
    assert_eq!(this.version, 1, "the running period keeps its price");
    assert_eq!(next.version, 2, "the next period has the new one");
    let (_, plan) = app.get_json(&admin, "/v1/plans/usage").await;
    assert_eq!(
        (plan["current_price"]["version"].clone(), plan["scheduled_prices"][0]["version"].clone()),
        (json!(1), json!(2)),
        "{plan}"
    );

    // Two different changes based on version 2 at once: one wins, the other is a conflict.
    let a = json!({ "price": package_price(2600), "expected_version": 2 });
    let b = json!({ "price": package_price(2700), "expected_version": 2 });
    let (first, second) = tokio::join!(
        app.send(Method::POST, "/v1/plans/usage/prices", Some(&admin), Some(&a)),
        app.send(Method::POST, "/v1/plans/usage/prices", Some(&admin), Some(&b)),
    );
    let mut statuses = [first.0, second.0];
    statuses.sort_unstable();
    assert_eq!(statuses, [201, 409], "{first:?} {second:?}");
    let loser = if first.0 == 409 { &first.1 } else { &second.1 };
    assert_eq!(loser["error"]["code"], "VERSION_CONFLICT", "{loser}");
    let versions = store.price_versions(&usage).await.expect("versions");
    assert_eq!(
        versions.iter().map(|v| v.version).collect::<Vec<_>>(),
        vec![1, 2, 3],
        "one version per winner"
    );
    assert_eq!(store.price_in_force(&usage, now.next()).await.expect("read").map(|v| v.version), Some(3));

    // A price the rules refuse, and a tenant admin, change nothing.
    let bad = json!({ "price": { "currency": "USD", "per_customer": { "model": "tiered", "mode": "graduated", "tiers": [{ "up_to": 10, "unit_price": "1" }] } } });
    let (status, answer) = app.send(Method::POST, "/v1/plans/usage/prices", Some(&admin), Some(&bad)).await;
    assert_eq!((status, answer["error"]["details"]["field"].clone()), (422, json!("price")), "{answer}");
    let tenant = app.onboarded_tenant(&admin).await;
    let tenant_admin = app.user_token("admin@prices.example", tenant, Role::TenantAdmin).await;
    let (status, _) = app.send(Method::POST, "/v1/plans/usage/prices", Some(&tenant_admin), Some(&a)).await;
    assert_eq!(status, 403);
    let (status, plans) = app.get_json(&tenant_admin, "/v1/plans").await;
    assert_eq!(status, 200, "a tenant admin reads the catalogue: {plans}");
    assert_eq!(plans["items"].as_array().map(Vec::len), Some(3), "{plans}");
    assert_eq!(store.price_versions(&usage).await.expect("versions").len(), 3);
    app.shutdown().await;
}

#[tokio::test]
async fn bundles_are_added_removed_and_added_again_as_spans_and_adding_twice_is_one_subscription() {
    let app = TestApp::spawn().await;
    let admin = app.admin_token().await;
    let (status, bundles) = app.get_json(&admin, "/v1/bundles").await;
    assert_eq!(status, 200, "{bundles}");
    let codes: Vec<&str> =
        bundles["items"].as_array().expect("items").iter().filter_map(|b| b["code"].as_str()).collect();
    assert_eq!(codes, ["ai", "crm", "project-management"], "{bundles}");

    let tenant = app.onboarded_tenant(&admin).await;
    let tenant_admin = app.user_token("admin@bundles.example", tenant, Role::TenantAdmin).await;
    let path = format!("/v1/tenants/{tenant}/bundles/crm");
    let (status, added) = app.send(Method::POST, &path, Some(&tenant_admin), None).await;
    assert_eq!(status, 201, "{added}");
    assert_eq!(
        (added["monthly"]["minor"].clone(), added["to"].clone()),
        (json!(4900), Value::Null),
        "{added}"
    );
    // Twice at once, and again: the one running subscription each time.
    let (one, two) = tokio::join!(
        app.send(Method::POST, &path, Some(&tenant_admin), None),
        app.send(Method::POST, &path, Some(&admin), None),
    );
    for (status, again) in [one, two] {
        assert_eq!((status, again["from"].clone()), (200, added["from"].clone()), "{again}");
    }
    let (status, removed) = app.send(Method::DELETE, &path, Some(&tenant_admin), None).await;
    assert_eq!(status, 200, "{removed}");
    assert!(removed["to"].is_string(), "{removed}");
    let (status, again) = app.send(Method::DELETE, &path, Some(&tenant_admin), None).await;
    assert_eq!((status, again["error"]["code"].clone()), (404, json!("SUBSCRIPTION_NOT_FOUND")), "{again}");
    let (status, readded) = app.send(Method::POST, &path, Some(&tenant_admin), None).await;
    assert_eq!(status, 201, "{readded}");
    let (status, unknown) =
        app.send(Method::POST, &format!("/v1/tenants/{tenant}/bundles/telephony"), Some(&admin), None).await;
    assert_eq!((status, unknown["error"]["code"].clone()), (404, json!("BUNDLE_NOT_FOUND")), "{unknown}");

    // The store holds the spans the billing worker reads, with one Query.
    let held = app.stack.platform.store.subscriptions(tenant).await.expect("spans");
    let crm: Vec<_> = held.bundles.iter().filter(|s| s.bundle == "crm").collect();
    assert_eq!(crm.len(), 2, "{held:?}");
    assert!(crm[0].to.is_some_and(|to| to >= crm[0].from) && crm[1].to.is_none(), "{held:?}");
    assert!(crm[1].from >= crm[0].to.expect("ended"), "the second span starts after the first ended");
    assert_eq!(crm[1].monthly.minor, 4900);
    // Onboarding recorded the first plan span, from the tenant's creation.
    let stored = app.stack.platform.store.get_tenant(tenant).await.expect("get").expect("tenant");
    assert_eq!(held.plans.len(), 1, "{held:?}");
    assert_eq!(
        (held.plans[0].plan_id.as_str(), held.plans[0].from, held.plans[0].to),
        ("usage", stored.created_at, None)
    );
    assert_eq!(stored.bundles, vec!["crm".to_owned()]);

    // A plan change (platform staff only) ends that span and starts another.
    let plan_path = format!("/v1/tenants/{tenant}/plan");
    let (status, _) =
        app.send(Method::POST, &plan_path, Some(&tenant_admin), Some(&json!({ "plan": "scaled" }))).await;
    assert_eq!(status, 403, "a tenant admin does not change its plan");
    let (status, changed) =
        app.send(Method::POST, &plan_path, Some(&admin), Some(&json!({ "plan": "scaled" }))).await;
    assert_eq!(status, 201, "{changed}");
    let (status, same) =
        app.send(Method::POST, &plan_path, Some(&admin), Some(&json!({ "plan": "scaled" }))).await;
    assert_eq!((status, same["from"].clone()), (200, changed["from"].clone()), "{same}");
    let (status, listed) = app.get_json(&tenant_admin, &format!("/v1/tenants/{tenant}/bundles")).await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed["history"].as_array().map(Vec::len), Some(2), "{listed}");
    let plans: Vec<_> = listed["plans"]
        .as_array()
        .expect("plans")
        .iter()
        .map(|p| (p["plan"].clone(), p["to"].is_null()))
        .collect();
    assert_eq!(plans, vec![(json!("usage"), false), (json!("scaled"), true)], "{listed}");
    app.shutdown().await;
}

#[tokio::test]
async fn a_tenants_admin_never_touches_another_tenants_bundles() {
    let app = TestApp::spawn().await;
    let admin = app.admin_token().await;
    let (a, b) = (app.onboarded_tenant(&admin).await, app.onboarded_tenant(&admin).await);
    let (status, _) =
        app.send(Method::POST, &format!("/v1/tenants/{b}/bundles/ai"), Some(&admin), None).await;
    assert_eq!(status, 201);
    let a_admin = app.user_token("admin@a-bundles.example", a, Role::TenantAdmin).await;
    let before = app.stack.platform.store.subscriptions(b).await.expect("spans");
    for (method, path) in [
        (Method::GET, format!("/v1/tenants/{b}/bundles")),
        (Method::POST, format!("/v1/tenants/{b}/bundles/crm")),
        (Method::DELETE, format!("/v1/tenants/{b}/bundles/ai")),
        (Method::POST, format!("/v1/tenants/{b}/plan")),
    ] {
        let answer =
            app.exchange(method.clone(), &path, Some(&a_admin), Some(&json!({ "plan": "scaled" }))).await;
        assert_eq!(answer.status, 403, "{method} {path}: {answer:?}");
        assert!(!answer.text.contains(&b.to_string()), "{method} {path} leaked B: {}", answer.text);
    }
    assert_eq!(app.stack.platform.store.subscriptions(b).await.expect("spans"), before, "B's spans changed");
    app.shutdown().await;
}

/// Runs the PyJWT check of `license` (as `tenant`'s) against the server's JWKS.
async fn pyjwt(app: &TestApp, license: &str, tenant: TenantId) -> Result<Value, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = root.join(".venv/bin/python");
    assert!(python.exists(), "the project venv is missing: run through `make test`");
    let audience = dotmac_tokens::license_audience(tenant);
    let output = tokio::process::Command::new(python)
        .arg(root.join("tests/interop/verify_license_with_pyjwt.py"))
        .args([app.address.as_str(), license, app.stack.platform.keys.issuer(), audience.as_str()])
        .output()
        .await
        .expect("python runs");
    if output.status.success() {
        Ok(serde_json::from_slice(&output.stdout).expect("json"))
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// Reads the tenant's secret until its license satisfies `done` (the worker writes it).
async fn license_when(
    app: &TestApp,
    tenant: TenantId,
    done: impl Fn(&dotmac_tokens::LicenseClaims) -> bool,
) -> String {
    let secrets = app.stack.platform.tenant_secrets();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let license = secrets.read(tenant).await.expect("secret").and_then(|c| c.license);
        if let Some(license) = &license
            && app.stack.platform.keys.verify_license(license, tenant).is_ok_and(|claims| done(&claims))
        {
            return license.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "the license never came: {license:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn the_license_in_the_tenant_secret_verifies_with_pyjwt_and_is_reissued_after_a_bundle_change() {
    let app = TestApp::spawn().await;
    let admin = app.admin_token().await;
    let tenant = app.onboarded_tenant(&admin).await;
    app.wait_for_tenant(&admin, &tenant.to_string(), Duration::from_secs(60), |t| t["status"] == "active")
        .await;

    // Provisioning wrote it beside the machine token.
    let first = license_when(&app, tenant, |claims| claims.bundles.is_empty()).await;
    let secret = app.stack.platform.tenant_secrets().read(tenant).await.expect("read").expect("secret");
    assert!(
        app.stack.platform.keys.verify(&secret.machine_token, dotmac_tokens::TokenKind::Access).is_ok(),
        "the machine token is kept"
    );
    let verified = pyjwt(&app, &first, tenant).await.expect("PyJWT verifies the license");
    assert_eq!(verified["header"]["typ"], "license+jwt", "{verified}");
    assert_eq!(verified["header"]["alg"], "EdDSA", "{verified}");
    let claims = &verified["claims"];
    assert_eq!(
        (claims["sub"].clone(), claims["aud"].clone()),
        (json!(tenant.to_string()), json!(format!("tenant:{tenant}"))),
        "{claims}"
    );
    assert_eq!(
        (claims["plan"].clone(), claims["bundles"].clone(), claims["billing_status"].clone()),
        (json!("usage"), json!([]), json!("current")),
        "{claims}"
    );
    let lifetime = claims["exp"].as_i64().expect("exp") - claims["iat"].as_i64().expect("iat");
    assert_eq!(u64::try_from(lifetime).ok(), Some(app.stack.config().license_ttl_seconds), "{claims}");

    // A bundle change re-issues it.
    let (status, answer) =
        app.send(Method::POST, &format!("/v1/tenants/{tenant}/bundles/crm"), Some(&admin), None).await;
    assert_eq!(status, 201, "{answer}");
    let second = license_when(&app, tenant, |claims| claims.bundles == ["crm"]).await;
    assert_ne!(second, first);
    let verified = pyjwt(&app, &second, tenant).await.expect("PyJWT verifies the new license");
    assert_eq!(verified["claims"]["bundles"], json!(["crm"]), "{verified}");
    assert_ne!(verified["claims"]["jti"], claims["jti"], "a new license");
    let secret = app.stack.platform.tenant_secrets().read(tenant).await.expect("read").expect("secret");
    assert!(
        app.stack.platform.keys.verify(&secret.machine_token, dotmac_tokens::TokenKind::Access).is_ok(),
        "still the machine token beside it"
    );

    // PyJWT holds a license to its tenant: as another tenant's it is refused.
    let refused = pyjwt(&app, &second, TenantId::generate()).await.expect_err("another audience");
    assert!(refused.contains("InvalidAudienceError"), "{refused}");
    app.shutdown().await;
}
