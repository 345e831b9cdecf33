//! Sessions: rotating refresh tokens, reuse detection, sign-out that bites at once.

use dotmac_tests::{ADMIN_EMAIL, ADMIN_PASSWORD, TestApp};
use serde_json::{Value, json};

async fn refresh(app: &TestApp, token: &str) -> (u16, Value) {
    let response = app
        .http
        .post(app.url("/v1/auth/refresh"))
        .json(&json!({ "refresh_token": token }))
        .send()
        .await
        .expect("refresh");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn refresh_tokens_rotate_and_a_reused_one_revokes_the_session() {
    let app = TestApp::spawn().await;
    let first: Value = app.login(ADMIN_EMAIL, ADMIN_PASSWORD).await.json().await.expect("json");
    let first_refresh = first["refresh_token"].as_str().expect("refresh").to_owned();

    let (status, second) = refresh(&app, &first_refresh).await;
    assert_eq!(status, 200, "{second}");
    let second_refresh = second["refresh_token"].as_str().expect("refresh").to_owned();
    assert_ne!(second_refresh, first_refresh);
    let (status, me) = app.get_json(second["access_token"].as_str().expect("access"), "/v1/auth/me").await;
    assert_eq!((status, me["email"].clone()), (200, json!(ADMIN_EMAIL)));
    assert!(me.get("password_hash").is_none());

    // The first refresh token again: a replay. The whole session goes, the newest token too.
    let (status, error) = refresh(&app, &first_refresh).await;
    assert_eq!((status, error["error"]["code"].clone()), (401, json!("TOKEN_REUSED")));
    let (status, _) = refresh(&app, &second_refresh).await;
    assert_eq!(status, 401, "the thief's (or owner's) newer token dies with the session");
}

#[tokio::test]
async fn tokens_are_only_good_for_their_own_purpose() {
    let app = TestApp::spawn().await;
    let pair: Value = app.login(ADMIN_EMAIL, ADMIN_PASSWORD).await.json().await.expect("json");
    let access = pair["access_token"].as_str().expect("access");
    let refresh_token = pair["refresh_token"].as_str().expect("refresh");
    let (status, _) = refresh(&app, access).await;
    assert_eq!(status, 401, "an access token is not a refresh token");
    let (status, _) = app.get_json(refresh_token, "/v1/auth/me").await;
    assert_eq!(status, 401, "a refresh token is not an access token");
    let (status, _) = refresh(&app, "not-a-token").await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn logout_stops_the_access_token_at_once_and_ends_the_session() {
    let app = TestApp::spawn().await;
    let pair: Value = app.login(ADMIN_EMAIL, ADMIN_PASSWORD).await.json().await.expect("json");
    let access = pair["access_token"].as_str().expect("access");
    let (status, _) = app.get_json(access, "/v1/tenants").await;
    assert_eq!(status, 200);

    let response =
        app.http.post(app.url("/v1/auth/logout")).bearer_auth(access).send().await.expect("logout");
    assert_eq!(response.status(), 204);
    // Refused by every route (the deny-list lives in DynamoDB, shared by all instances).
    for path in ["/v1/tenants", "/v1/auth/me"] {
        let (status, body) = app.get_json(access, path).await;
        assert_eq!((status, body["error"]["code"].clone()), (401, json!("INVALID_TOKEN")), "{path}");
    }
    let (status, _) = refresh(&app, pair["refresh_token"].as_str().expect("refresh")).await;
    assert_eq!(status, 401, "the session's refresh token is gone too");
    // Another session of the same user is untouched.
    let other = app.admin_token().await;
    assert_eq!(app.get_json(&other, "/v1/auth/me").await.0, 200);
}

#[tokio::test]
async fn repeated_failures_lock_the_account_for_known_and_unknown_emails_alike() {
    let app = TestApp::spawn().await;
    for email in [ADMIN_EMAIL, "nobody@dotmac.test"] {
        for attempt in 1..=5 {
            let response = app.login(email, "wrong-password-attempt").await;
            assert_eq!(response.status(), 401, "{email} attempt {attempt}");
        }
        let locked = app.login(email, "wrong-password-attempt").await;
        assert_eq!(locked.status(), 429, "{email}");
        assert!(locked.headers().get("retry-after").is_some());
        let body: Value = locked.json().await.expect("json");
        assert_eq!(body["error"]["code"], "RATE_LIMITED");
    }
    // Locked means locked: the right password waits too.
    assert_eq!(app.login(ADMIN_EMAIL, ADMIN_PASSWORD).await.status(), 429);
}

#[tokio::test]
async fn auth_requests_are_capped_per_source() {
    let app = TestApp::spawn().await;
    let mut statuses = Vec::new();
    for _ in 0..62 {
        statuses.push(refresh(&app, "not-a-token").await.0);
    }
    assert!(statuses[..60].iter().all(|s| *s == 401), "{statuses:?}");
    assert_eq!(statuses[61], 429, "{statuses:?}");
}

#[tokio::test]
async fn a_password_change_checks_the_old_one_and_the_policy() {
    let app = TestApp::spawn().await;
    let token = app.admin_token().await;
    let change = |current: &str, new: &str| {
        app.http
            .post(app.url("/v1/auth/password"))
            .bearer_auth(&token)
            .json(&json!({ "current_password": current, "new_password": new }))
            .send()
    };
    let wrong = change("not-the-password", "a perfectly fine passphrase").await.expect("post");
    assert_eq!(wrong.status(), 422);
    assert_eq!(wrong.json::<Value>().await.expect("json")["error"]["details"]["field"], "current_password");
    let weak = change(ADMIN_PASSWORD, "password1234").await.expect("post");
    assert_eq!(weak.status(), 422);
    assert_eq!(weak.json::<Value>().await.expect("json")["error"]["details"]["field"], "new_password");
    let ok = change(ADMIN_PASSWORD, "a perfectly fine passphrase").await.expect("post");
    assert_eq!(ok.status(), 204);
    assert_eq!(app.login(ADMIN_EMAIL, ADMIN_PASSWORD).await.status(), 401);
    assert_eq!(app.login(ADMIN_EMAIL, "a perfectly fine passphrase").await.status(), 200);
}
