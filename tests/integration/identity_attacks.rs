//! The identity attacks a review found, each replayed against the real HTTP API on the
//! emulator: a stolen session outliving its owner's password change, an older access token
//! outliving its sign-out, raced guesses beating the lockout, an attacker locking the owner
//! out, and a role recreated under a deleted one's name regranting it.

use dotmac_domain::Role;
use dotmac_tests::{Answer, TestApp, USER_PASSWORD};
use http::Method;
use serde_json::{Value, json};
use std::net::Ipv4Addr;

/// A signed-in session's tokens.
struct Session {
    access: String,
    refresh: String,
}

async fn sign_in(app: &TestApp, email: &str, password: &str) -> Session {
    let response = app.login(email, password).await;
    assert_eq!(response.status(), 200, "{email} signs in");
    let pair: Value = response.json().await.expect("pair");
    Session {
        access: pair["access_token"].as_str().expect("access").to_owned(),
        refresh: pair["refresh_token"].as_str().expect("refresh").to_owned(),
    }
}

async fn refresh(app: &TestApp, refresh_token: &str) -> Answer {
    Answer::of(app.http.post(app.url("/v1/auth/refresh")).json(&json!({ "refresh_token": refresh_token })))
        .await
}

async fn me(app: &TestApp, access: &str) -> u16 {
    app.get_json(access, "/v1/auth/me").await.0
}

/// Panics unless the session's access token is refused and its refresh token too.
async fn assert_session_over(app: &TestApp, session: &Session, why: &str) {
    let (status, body) = app.get_json(&session.access, "/v1/auth/me").await;
    assert_eq!((status, body["error"]["code"].clone()), (401, json!("INVALID_TOKEN")), "{why}: {body}");
    refresh(app, &session.refresh).await.assert_error(401, "INVALID_TOKEN");
}

#[tokio::test]
async fn a_session_stolen_before_a_password_change_dies_with_it() {
    let app = TestApp::spawn().await;
    let email = "owner@stolen.example";
    app.create_user(email, None, None, &["platform_admin"]).await;
    let owner = sign_in(&app, email, USER_PASSWORD).await;
    let thief = sign_in(&app, email, USER_PASSWORD).await;
    // The thief has refreshed before: an older access token of its session exists too.
    let thief_older_access = thief.access.clone();
    let thief_refreshed = refresh(&app, &thief.refresh).await;
    assert_eq!(thief_refreshed.status, 200);
    let thief = Session {
        access: thief_refreshed.json["access_token"].as_str().expect("access").to_owned(),
        refresh: thief_refreshed.json["refresh_token"].as_str().expect("refresh").to_owned(),
    };

    let change = json!({ "current_password": USER_PASSWORD, "new_password": "a brand new passphrase" });
    let (status, answer) =
        app.send(Method::POST, "/v1/auth/password", Some(&owner.access), Some(&change)).await;
    assert_eq!(status, 204, "{answer}");

    assert_session_over(&app, &thief, "the other session ends at once").await;
    assert_eq!(me(&app, &thief_older_access).await, 401, "its older access token too");
    assert_eq!(me(&app, &owner.access).await, 200, "the session that changed it carries on");
    assert_eq!(refresh(&app, &owner.refresh).await.status, 200, "and still refreshes");
    sign_in(&app, email, "a brand new passphrase").await;
    app.shutdown().await;
}

#[tokio::test]
async fn sign_out_everywhere_ends_every_session_and_a_new_sign_in_works() {
    let app = TestApp::spawn().await;
    let email = "everywhere@logout.example";
    app.create_user(email, None, None, &["platform_admin"]).await;
    let laptop = sign_in(&app, email, USER_PASSWORD).await;
    let phone = sign_in(&app, email, USER_PASSWORD).await;
    let answer = app.exchange(Method::POST, "/v1/auth/logout-all", Some(&laptop.access), None).await;
    assert_eq!(answer.status, 204, "{}", answer.text);
    assert_session_over(&app, &laptop, "the session that asked").await;
    assert_session_over(&app, &phone, "every other session").await;
    let again = sign_in(&app, email, USER_PASSWORD).await;
    assert_eq!(me(&app, &again.access).await, 200, "a session started after it is good");
    app.shutdown().await;
}

#[tokio::test]
async fn sign_out_refuses_every_access_token_of_the_session_on_the_very_next_request() {
    let app = TestApp::spawn().await;
    let email = "older@logout.example";
    app.create_user(email, None, None, &["platform_admin"]).await;
    let first = sign_in(&app, email, USER_PASSWORD).await;
    let refreshed = refresh(&app, &first.refresh).await;
    let newer = refreshed.json["access_token"].as_str().expect("access").to_owned();
    let answer = app.exchange(Method::POST, "/v1/auth/logout", Some(&newer), None).await;
    assert_eq!(answer.status, 204);
    for (token, which) in [(&first.access, "the older access token"), (&newer, "the one signed out with")] {
        for path in ["/v1/auth/me", "/v1/tenants"] {
            let (status, body) = app.get_json(token, path).await;
            assert_eq!(
                (status, body["error"]["code"].clone()),
                (401, json!("INVALID_TOKEN")),
                "{which} {path}"
            );
        }
    }
    app.shutdown().await;
}

/// Deactivating, deleting or changing the roles of a user ends its sessions on its next
/// request, not when its access token would have expired; reactivating brings none back.
#[tokio::test]
async fn an_admin_ending_a_users_standing_ends_its_sessions_at_once() {
    let app = TestApp::spawn().await;
    let admin = app.admin_token().await;
    let tenant = app.onboarded_tenant(&admin).await;
    let mut ids = Vec::new();
    for who in ["demoted", "deactivated", "deleted"] {
        let email = format!("{who}@standing.example");
        let id = app.create_user(&email, Some(tenant), None, &[Role::TenantAdmin.name()]).await;
        ids.push((id, sign_in(&app, &email, USER_PASSWORD).await));
    }
    let user_path = |id: &str| format!("/v1/users/{id}");
    let demote = json!({ "roles": ["customer_user"] });
    let (status, answer) = app.send(Method::PATCH, &user_path(&ids[0].0), Some(&admin), Some(&demote)).await;
    assert_eq!(status, 200, "{answer}");
    assert_session_over(&app, &ids[0].1, "roles changed").await;

    let deactivate = json!({ "active": false });
    let (status, _) = app.send(Method::PATCH, &user_path(&ids[1].0), Some(&admin), Some(&deactivate)).await;
    assert_eq!(status, 200);
    assert_session_over(&app, &ids[1].1, "deactivated").await;
    let reactivate = json!({ "active": true });
    let (status, _) = app.send(Method::PATCH, &user_path(&ids[1].0), Some(&admin), Some(&reactivate)).await;
    assert_eq!(status, 200);
    assert_session_over(&app, &ids[1].1, "reactivation brings no old session back").await;

    let (status, _) = app.send(Method::DELETE, &user_path(&ids[2].0), Some(&admin), None).await;
    assert_eq!(status, 204);
    assert_session_over(&app, &ids[2].1, "deleted").await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_session_ends_at_its_absolute_lifetime_however_often_it_refreshes() {
    const LIFETIME: i64 = 4;
    let app = TestApp::spawn_with(&[("DOTMAC_SESSION_MAX_AGE_SECONDS", "4")]).await;
    let email = "mortal@lifetime.example";
    app.create_user(email, None, None, &["platform_admin"]).await;
    let started = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut session = sign_in(&app, email, USER_PASSWORD).await;
    let keys = &app.stack.platform.keys;
    let claims = keys.verify(&session.access, dotmac_tokens::TokenKind::Access).expect("claims");
    let ends_at = claims.sxp.expect("the session's end travels in its tokens");
    assert!((started..=started + 1).contains(&(ends_at - LIFETIME)), "ends {LIFETIME} s after sign-in");
    let refreshed = refresh(&app, &session.refresh).await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.text);
    session.refresh = refreshed.json["refresh_token"].as_str().expect("refresh").to_owned();
    session.access = refreshed.json["access_token"].as_str().expect("access").to_owned();
    for token in [&session.access, &session.refresh] {
        let kind = if *token == session.access {
            dotmac_tokens::TokenKind::Access
        } else {
            dotmac_tokens::TokenKind::Refresh
        };
        let claims = keys.verify(token, kind).expect("claims");
        assert!(claims.exp <= ends_at, "a refresh issues nothing that outlives the session");
    }
    tokio::time::sleep(std::time::Duration::from_secs(u64::try_from(LIFETIME).expect("positive") + 1)).await;
    assert_session_over(&app, &session, "past its absolute end").await;
    app.shutdown().await;
}

/// The address run `run` of a counting test sends from, so its per-source counters start at
/// zero. A run whose requests straddle the failure window's boundary proves nothing and is
/// repeated (two runs in a row cannot both straddle it).
fn source(run: u8, which: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 2 + which, 10 + run)
}

const RUNS: u8 = 3;
const FAILURE_WINDOW: i64 = 15 * 60;

fn window_index() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp().div_euclid(FAILURE_WINDOW)
}

async fn login_from(client: &reqwest::Client, app: &TestApp, email: &str, password: &str) -> Answer {
    Answer::of(client.post(app.url("/v1/auth/login")).json(&json!({ "email": email, "password": password })))
        .await
}

#[tokio::test]
async fn thirty_concurrent_guesses_get_no_more_than_the_limit_checked() {
    use dotmac_auth::sign_in::MAX_FAILURES_PER_PAIR;
    let app = TestApp::spawn().await;
    for run in 0..RUNS {
        let email = format!("raced-{run}@race.example");
        app.create_user(&email, None, None, &["platform_admin"]).await;
        let client = app.client_from(source(run, 0));
        let window = window_index();
        let guesses = (0..30).map(|n| {
            let password = if n == 17 { USER_PASSWORD.to_owned() } else { format!("wrong-guess-{n}") };
            let (client, app, email) = (&client, &app, &email);
            async move { login_from(client, app, email, &password).await }
        });
        let answers = futures::future::join_all(guesses).await;
        if window_index() != window {
            continue;
        }
        let checked: Vec<u16> = answers.iter().map(|a| a.status).filter(|s| *s != 429).collect();
        assert!(
            checked.len() <= usize::try_from(MAX_FAILURES_PER_PAIR).expect("small"),
            "at most {MAX_FAILURES_PER_PAIR} of 30 concurrent attempts reach the password check: {checked:?}"
        );
        assert!(checked.iter().all(|s| [200, 401].contains(s)), "{checked:?}");
        assert!(answers.iter().any(|a| a.status == 429), "the rest are refused unchecked");
        return app.shutdown().await;
    }
    panic!("{RUNS} runs in a row straddled a failure window");
}

#[tokio::test]
async fn an_attacker_holding_the_accounts_failures_cannot_lock_its_owner_out() {
    let app = TestApp::spawn().await;
    for run in 0..RUNS {
        let email = format!("victim-{run}@siege.example");
        app.create_user(&email, None, None, &["platform_admin"]).await;
        let window = window_index();
        // Two attacking addresses, six failures each: each locks itself, and the account's
        // own count (twelve) is well past the point where attempts are slowed.
        let attackers = [app.client_from(source(run, 0)), app.client_from(source(run, 1))];
        let mut attacker_answers = Vec::new();
        for attacker in &attackers {
            for n in 0..6 {
                attacker_answers.push(login_from(attacker, &app, &email, &format!("guess-{n}")).await.status);
            }
        }
        let locked_attacker = login_from(&attackers[0], &app, &email, USER_PASSWORD).await;
        let victim = app.client_from(source(run, 2));
        let started = std::time::Instant::now();
        let owner = login_from(&victim, &app, &email, USER_PASSWORD).await;
        let waited = started.elapsed();
        if window_index() != window {
            continue;
        }
        assert_eq!(attacker_answers, [401, 401, 401, 401, 401, 429, 401, 401, 401, 401, 401, 429]);
        locked_attacker.assert_error(429, "RATE_LIMITED");
        assert_eq!(owner.status, 200, "the owner signs in from its own address: {}", owner.text);
        assert!(
            waited >= std::time::Duration::from_millis(250),
            "but is slowed while the account is under attack ({waited:?})"
        );
        return app.shutdown().await;
    }
    panic!("{RUNS} runs in a row straddled a failure window");
}

#[tokio::test]
async fn a_role_defined_again_under_a_deleted_ones_name_grants_nothing_to_its_old_holders() {
    let app = TestApp::spawn().await;
    let admin_token = app.admin_token().await;
    let tenant = app.onboarded_tenant(&admin_token).await;
    let admin = app.user_token("boss@recreated.example", tenant, Role::TenantAdmin).await;
    let auditor = json!({
        "name": "user-auditor",
        "permissions": [{ "resource": "user", "action": "read", "scope": "tenant" }],
    });
    let (status, _) = app.send(Method::POST, "/v1/roles", Some(&admin), Some(&auditor)).await;
    assert_eq!(status, 201);
    let holder_id = app.create_user("holder@recreated.example", Some(tenant), None, &["user-auditor"]).await;
    let holder = sign_in(&app, "holder@recreated.example", USER_PASSWORD).await;
    assert_eq!(app.get_json(&holder.access, "/v1/users").await.0, 200, "the role grants it");

    let (status, _) = app.send(Method::DELETE, "/v1/roles/user-auditor", Some(&admin), None).await;
    assert_eq!(status, 204);
    let (status, user) = app.get_json(&admin, &format!("/v1/users/{holder_id}")).await;
    assert_eq!((status, user["roles"].clone()), (200, json!([])), "taken from its holder: {user}");
    assert_session_over(&app, &holder, "a change of roles ends the holder's sessions").await;

    let (status, _) = app.send(Method::POST, "/v1/roles", Some(&admin), Some(&auditor)).await;
    assert_eq!(status, 201, "the name is free again");
    let holder = sign_in(&app, "holder@recreated.example", USER_PASSWORD).await;
    let (status, body) = app.get_json(&holder.access, "/v1/users").await;
    assert_eq!(status, 403, "the new role is not the old holder's: {body}");
    app.shutdown().await;
}
