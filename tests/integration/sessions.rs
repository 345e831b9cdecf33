//! Sessions: rotating refresh tokens, reuse detection, sign-out that bites at once.

use dotmac_tests::{ADMIN_EMAIL, ADMIN_PASSWORD, Answer, TestApp, USER_PASSWORD};
use serde_json::{Value, json};
use std::net::Ipv4Addr;

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
    let mut fields: Vec<&str> = first.as_object().expect("object").keys().map(String::as_str).collect();
    fields.sort_unstable();
    assert_eq!(fields, ["access_token", "expires_in", "refresh_token", "token_type"], "{first}");
    assert_eq!((first["token_type"].clone(), first["expires_in"].clone()), (json!("Bearer"), json!(900)));
    let first_refresh = first["refresh_token"].as_str().expect("refresh").to_owned();

    let (status, second) = refresh(&app, &first_refresh).await;
    assert_eq!(status, 200, "{second}");
    let second_refresh = second["refresh_token"].as_str().expect("refresh").to_owned();
    assert_ne!(second_refresh, first_refresh);
    let (status, me) = app.get_json(second["access_token"].as_str().expect("access"), "/v1/auth/me").await;
    assert_eq!((status, me["email"].clone()), (200, json!(ADMIN_EMAIL)));
    assert_eq!(me["roles"], json!(["platform_admin"]), "{me}");
    assert_eq!(me["active"], json!(true), "{me}");
    for field in ["id", "created_at", "last_login"] {
        assert!(me[field].is_string(), "me has {field} (signed in, so last_login is set): {me}");
    }
    assert!(me.get("tenant_id").is_none_or(Value::is_null), "platform staff have no tenant: {me}");
    assert!(!me.to_string().contains("argon2") && me.get("password_hash").is_none(), "{me}");

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
    let invalid = (401, json!("INVALID_TOKEN"));
    let (status, body) = refresh(&app, access).await;
    assert_eq!((status, body["error"]["code"].clone()), invalid, "an access token is not a refresh token");
    let (status, body) = app.get_json(refresh_token, "/v1/auth/me").await;
    assert_eq!((status, body["error"]["code"].clone()), invalid, "a refresh token is not an access token");
    let (status, body) = refresh(&app, "not-a-token").await;
    assert_eq!((status, body["error"]["code"].clone()), invalid);
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
    let (status, body) = refresh(&app, pair["refresh_token"].as_str().expect("refresh")).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (401, json!("INVALID_TOKEN")),
        "the session's refresh token is gone too"
    );
    // Another session of the same user is untouched.
    let other = app.admin_token().await;
    assert_eq!(app.get_json(&other, "/v1/auth/me").await.0, 200);
}

/// The index of the fixed window `now` falls in, as the store's counters align them.
fn window_index(window_seconds: i64) -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp().div_euclid(window_seconds)
}

/// The address run `run` of a counting test sends from: each run gets its own, so its
/// per-source counters start at zero.
fn source(run: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 10 + run)
}

/// How many runs a counting test may make: a run whose requests straddle a counter window's
/// boundary splits its counts and proves nothing, and is repeated from a fresh address with
/// fresh accounts. The server reads the clock between a run's first request and its last
/// answer, so a run that starts and ends in the same window was counted in that one window;
/// two runs in a row cannot both straddle a boundary.
const RUNS: u8 = 3;

/// Panics unless `answer` is the 429 `RATE_LIMITED` envelope whose `Retry-After` header is
/// exactly its `details.retry_after_seconds` (at least 1) and within one `window_seconds`.
fn assert_rate_limited(answer: &Answer, window_seconds: i64) {
    answer.assert_error(429, "RATE_LIMITED");
    let seconds =
        answer.json["error"]["details"]["retry_after_seconds"].as_i64().expect("retry_after_seconds");
    assert!((1..=window_seconds).contains(&seconds), "{}", answer.text);
    assert_eq!(answer.header("retry-after"), Some(seconds.max(1).to_string().as_str()), "{answer:?}");
}

async fn login_from(client: &reqwest::Client, app: &TestApp, email: &str, password: &str) -> Answer {
    Answer::of(client.post(app.url("/v1/auth/login")).json(&json!({ "email": email, "password": password })))
        .await
}

const FAILURE_WINDOW: i64 = 15 * 60;

#[tokio::test]
async fn repeated_failures_lock_the_account_for_known_and_unknown_emails_alike() {
    let app = TestApp::spawn().await;
    for run in 0..RUNS {
        let client = app.client_from(source(run));
        let window = window_index(FAILURE_WINDOW);
        let known = format!("locked-{run}@lockout.example");
        app.create_user(&known, None, None, &["platform_admin"]).await;
        let mut refusals = Vec::new();
        for email in [known.clone(), format!("nobody-{run}@lockout.example")] {
            for attempt in 1..=5 {
                let answer = login_from(&client, &app, &email, "wrong-password-attempt").await;
                assert_eq!(answer.status, 401, "{email} attempt {attempt}: {}", answer.text);
            }
            refusals.push(login_from(&client, &app, &email, "wrong-password-attempt").await);
        }
        // Locked means locked: the right password waits too.
        let right = login_from(&client, &app, &known, USER_PASSWORD).await;
        if window_index(FAILURE_WINDOW) != window {
            continue;
        }
        for refusal in &refusals {
            assert_rate_limited(refusal, FAILURE_WINDOW);
        }
        assert_eq!(
            refusals[0].json["error"]["message"], refusals[1].json["error"]["message"],
            "a lockout says nothing of whether the account exists"
        );
        assert_rate_limited(&right, FAILURE_WINDOW);
        return app.shutdown().await;
    }
    panic!("{RUNS} runs in a row straddled a failure window");
}

/// 50 failures from one address lock that address (whatever e-mails they named), for the
/// right password too; another address is not affected.
#[tokio::test]
async fn fifty_failures_from_one_source_lock_that_source() {
    let app = TestApp::spawn().await;
    app.create_user("victim@source-lock.example", None, None, &["platform_admin"]).await;
    for run in 0..RUNS {
        let client = app.client_from(source(run));
        let window = window_index(FAILURE_WINDOW);
        // A different e-mail each time, so no account reaches its own limit of 5.
        for attempt in 1..=50 {
            let email = format!("guess-{run}-{attempt}@source-lock.example");
            let answer = login_from(&client, &app, &email, "wrong-password-attempt").await;
            assert_eq!(answer.status, 401, "failure {attempt} from one source: {}", answer.text);
        }
        let locked = login_from(&client, &app, "victim@source-lock.example", USER_PASSWORD).await;
        if window_index(FAILURE_WINDOW) != window {
            continue;
        }
        assert_rate_limited(&locked, FAILURE_WINDOW);
        let elsewhere = app.client_from(Ipv4Addr::new(127, 0, 1, 1 + run));
        let answer = login_from(&elsewhere, &app, "victim@source-lock.example", USER_PASSWORD).await;
        assert_eq!(answer.status, 200, "another source is not locked: {}", answer.text);
        return app.shutdown().await;
    }
    panic!("{RUNS} runs in a row straddled a failure window");
}

/// A successful sign-in clears the account's failures: 4 failures, a success, then 4 more
/// failures still leave the account open (without the clear it locks after the 5th).
#[tokio::test]
async fn a_successful_sign_in_clears_the_account_failures() {
    let app = TestApp::spawn().await;
    for run in 0..RUNS {
        let client = app.client_from(source(run));
        let window = window_index(FAILURE_WINDOW);
        let email = format!("forgetful-{run}@clear.example");
        app.create_user(&email, None, None, &["platform_admin"]).await;
        let mut statuses = Vec::new();
        for _ in 0..4 {
            statuses.push(login_from(&client, &app, &email, "wrong-password-attempt").await.status);
        }
        statuses.push(login_from(&client, &app, &email, USER_PASSWORD).await.status);
        for _ in 0..4 {
            statuses.push(login_from(&client, &app, &email, "wrong-password-attempt").await.status);
        }
        statuses.push(login_from(&client, &app, &email, USER_PASSWORD).await.status);
        if window_index(FAILURE_WINDOW) != window {
            continue;
        }
        assert_eq!(statuses, [401, 401, 401, 401, 200, 401, 401, 401, 401, 200]);
        return app.shutdown().await;
    }
    panic!("{RUNS} runs in a row straddled a failure window");
}

/// At most 60 auth requests a minute per source: request 60 is answered, request 61 is the
/// 429, and its `Retry-After` is when the minute ends.
#[tokio::test]
async fn auth_requests_are_capped_per_source() {
    const RATE_WINDOW: i64 = 60;
    let app = TestApp::spawn().await;
    for run in 0..RUNS {
        let client = app.client_from(source(run));
        let window = window_index(RATE_WINDOW);
        let mut answers = Vec::new();
        for _ in 0..61 {
            let request =
                client.post(app.url("/v1/auth/refresh")).json(&json!({ "refresh_token": "not-a-token" }));
            answers.push(Answer::of(request).await);
        }
        if window_index(RATE_WINDOW) != window {
            continue;
        }
        let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
        assert!(statuses[..60].iter().all(|s| *s == 401), "the first 60 are answered: {statuses:?}");
        assert_rate_limited(&answers[60], RATE_WINDOW);
        return app.shutdown().await;
    }
    panic!("{RUNS} runs in a row straddled a rate window");
}

/// Password changes are capped per user (5 per window, counted whatever the outcome), so a
/// stolen access token cannot become a password-guessing oracle; past the cap even the right
/// current password is refused and the password stays as it was.
#[tokio::test]
async fn password_changes_are_capped_per_user() {
    let app = TestApp::spawn().await;
    for run in 0..RUNS {
        let window = window_index(FAILURE_WINDOW);
        let email = format!("guesser-{run}@password-cap.example");
        app.create_user(&email, None, None, &["platform_admin"]).await;
        let token = app.token_for(&email, USER_PASSWORD).await;
        let change = |current: &str| {
            let body = json!({ "current_password": current, "new_password": "a perfectly fine passphrase" });
            Answer::of(app.http.post(app.url("/v1/auth/password")).bearer_auth(&token).json(&body))
        };
        let mut guesses = Vec::new();
        for attempt in 0..5 {
            guesses.push(change(&format!("guess number {attempt}")).await);
        }
        let sixth = change(USER_PASSWORD).await;
        if window_index(FAILURE_WINDOW) != window {
            continue;
        }
        for guess in &guesses {
            guess.assert_error(422, "VALIDATION_FAILED");
            assert_eq!(guess.json["error"]["details"]["field"], "current_password", "{}", guess.text);
        }
        assert_rate_limited(&sixth, FAILURE_WINDOW);
        assert_eq!(app.login(&email, USER_PASSWORD).await.status(), 200, "the password did not change");
        return app.shutdown().await;
    }
    panic!("{RUNS} runs in a row straddled a failure window");
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

/// The sign-in limits count in fixed windows of the clock the use case is given, so the test
/// sets that clock to either side of a window's boundary instead of racing the wall clock:
/// locked one second before it (told to come back in exactly one second), free exactly at it.
#[tokio::test]
async fn an_account_lockout_ends_exactly_at_its_windows_boundary() {
    use dotmac_auth::sign_in::{FAILURE_WINDOW_SECONDS, MAX_FAILURES_PER_PAIR};
    use dotmac_auth::{SignInError, sign_in};
    let stack = dotmac_tests::TestStack::new(&[]).await;
    let (store, keys) = (&stack.platform.store, &stack.platform.keys);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let boundary = (now / FAILURE_WINDOW_SECONDS + 1) * FAILURE_WINDOW_SECONDS;
    let at = |t: i64| time::OffsetDateTime::from_unix_timestamp(t).expect("time");
    let source = "203.0.113.7";
    let attempt = |password: &str, t: i64| {
        sign_in(store, keys, source, dotmac_tests::ADMIN_EMAIL, password.to_owned(), at(t))
    };
    for n in 1..=MAX_FAILURES_PER_PAIR {
        let answer = attempt("not-the-password", boundary - 1).await;
        assert!(matches!(answer, Err(SignInError::InvalidCredentials)), "failure {n}: {answer:?}");
    }
    let locked = attempt(dotmac_tests::ADMIN_PASSWORD, boundary - 1).await;
    assert!(
        matches!(locked, Err(SignInError::RateLimited { retry_after_seconds: 1, .. })),
        "the right password is refused while locked, until the boundary: {locked:?}"
    );
    let free = attempt(dotmac_tests::ADMIN_PASSWORD, boundary).await;
    assert!(free.is_ok(), "a new window starts at the boundary: {free:?}");
}
