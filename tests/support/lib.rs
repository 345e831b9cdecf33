//! Test harness: every test gets its own resources (a random name prefix) on the one
//! emulator that `make test` starts, so tests run in parallel without seeing each other.

use dotmac_config::Config;
use dotmac_local::{LocalSettings, prepare, seed};
use dotmac_platform::Platform;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::oneshot;

pub const ADMIN_EMAIL: &str = "admin@dotmac.test";
pub const ADMIN_PASSWORD: &str = "admin-password-for-tests";
/// The password of every user `TestApp::user_token` creates.
pub const USER_PASSWORD: &str = "user-password-for-tests";

/// An HTTP client for the tests (aws-lc-rs TLS, as the Lambda binary: see
/// `dotmac_platform::install_tls_provider`).
pub fn http_client() -> reqwest::Client {
    dotmac_platform::install_tls_provider();
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client")
}

/// The SDK configuration for the emulator `make test` started.
pub async fn sdk() -> aws_config::SdkConfig {
    assert!(
        std::env::var("AWS_ENDPOINT_URL").is_ok_and(|v| !v.is_empty()),
        "AWS_ENDPOINT_URL is not set: run these tests with `make test` (or `local/stack.sh with-emulator cargo test`)"
    );
    aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await
}

fn unique_prefix() -> String {
    format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// A prepared stack (resources created, plans and admin seeded) with no server.
pub struct TestStack {
    pub platform: Platform,
    pub local: LocalSettings,
    pub sdk: aws_config::SdkConfig,
}

impl TestStack {
    pub async fn new(overrides: &[(&str, &str)]) -> TestStack {
        let sdk = sdk().await;
        let mut env: HashMap<String, String> = std::env::vars().collect();
        env.insert("DOTMAC_PREFIX".into(), unique_prefix());
        env.insert("DOTMAC_ADMIN_EMAIL".into(), ADMIN_EMAIL.into());
        env.insert("DOTMAC_ADMIN_PASSWORD".into(), ADMIN_PASSWORD.into());
        env.insert("DOTMAC_WORKER_RETRY_DELAY_SECONDS".into(), "1".into());
        env.insert("DOTMAC_TASK_START_TIMEOUT_SECONDS".into(), "10".into());
        env.remove("DOTMAC_STATE_DIR");
        env.remove("DOTMAC_JWT_SIGNING_KEY");
        env.remove("DOTMAC_JWT_KEY_SET");
        for (name, value) in overrides {
            env.insert((*name).to_owned(), (*value).to_owned());
        }
        let local = LocalSettings::from_env(&env).expect("local settings");
        let config = prepare(&sdk, &env, &local).await.expect("resources on the emulator");
        let platform = Platform::with_sdk_config(config, &sdk).await.expect("platform");
        seed(&platform, &local).await.expect("seed");
        TestStack { platform, local, sdk }
    }

    /// A platform admin's access token in a real session (user and session in the store),
    /// signed by `keys`: for tests that drive a router directly rather than signing in.
    pub async fn staff_token(&self, keys: &dotmac_tokens::JwtKeys) -> String {
        let now = time::OffsetDateTime::now_utc();
        let user = dotmac_store::UserRecord {
            id: uuid::Uuid::now_v7().to_string(),
            email: dotmac_domain::Email::parse(&format!("staff-{}@dotmac.test", uuid::Uuid::new_v4()))
                .expect("email"),
            password_hash: String::new(),
            tenant_id: None,
            partner_id: None,
            roles: vec![dotmac_domain::Role::PlatformAdmin.into()],
            active: true,
            created_at: now,
            last_login: None,
            sessions_valid_after_ms: 0,
        };
        self.platform.store.create_user(&user).await.expect("user");
        let family = uuid::Uuid::new_v4().to_string();
        let session = dotmac_tokens::SessionTerm { family: &family, ends_at: keys.session_ends_at(now) };
        let issued = keys.issue(&user.caller(), &session, now).expect("issued");
        let started = dotmac_store::NewSession {
            family: &family,
            user_id: &user.id,
            refresh_jti: &issued.refresh_jti,
            started_at_ms: dotmac_store::unix_ms(now),
            ends_at: session.ends_at,
        };
        self.platform.store.start_session(&started).await.expect("session");
        issued.pair.access_token
    }

    pub fn config(&self) -> &Config {
        &self.platform.config
    }

    /// The dead-letter queue beside the provisioning queue.
    pub async fn provisioning_dlq(&self) -> dotmac_queue::SqsQueue {
        let client = aws_sdk_sqs::Client::new(&self.sdk);
        let name = format!("{}-provisioning-jobs-dlq", self.local.prefix);
        let url = client
            .get_queue_url()
            .queue_name(name)
            .send()
            .await
            .expect("DLQ exists")
            .queue_url
            .expect("DLQ url");
        dotmac_queue::SqsQueue::new(client, url)
    }
}

/// The whole platform served on a random port, workers included: what `make dev` runs.
pub struct TestApp {
    pub address: String,
    pub stack: TestStack,
    pub http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(&[]).await
    }

    pub async fn spawn_with(overrides: &[(&str, &str)]) -> TestApp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = format!("http://{}", listener.local_addr().expect("addr"));
        // Invitation links open this server's page, as `make dev`'s open its own.
        let accept_url = format!("{address}{}", dotmac_users::ACCEPT_PAGE_PATH);
        let mut overrides = overrides.to_vec();
        overrides.insert(0, ("DOTMAC_INVITATION_ACCEPT_URL", accept_url.as_str()));
        let stack = TestStack::new(&overrides).await;
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(dotmac_local::serve(
            stack.platform.clone(),
            listener,
            stack.local.clone(),
            async move {
                let _ = stopped.await;
            },
        ));
        TestApp { address, stack, http: http_client(), stop: Some(stop), server: Some(server) }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn login(&self, email: &str, password: &str) -> reqwest::Response {
        self.http
            .post(self.url("/v1/auth/login"))
            .json(&json!({ "email": email, "password": password }))
            .send()
            .await
            .expect("login request")
    }

    pub async fn token_for(&self, email: &str, password: &str) -> String {
        let response = self.login(email, password).await;
        assert_eq!(response.status(), 200, "login of {email}");
        let body: Value = response.json().await.expect("json");
        body["access_token"].as_str().expect("access_token").to_owned()
    }

    /// Creates a user of `tenant` with `role` and signs it in.
    pub async fn user_token(
        &self,
        email: &str,
        tenant: dotmac_domain::TenantId,
        role: dotmac_domain::Role,
    ) -> String {
        self.create_user(email, Some(tenant), None, &[role.name()]).await;
        self.token_for(email, USER_PASSWORD).await
    }

    /// Creates a user directly in the store (any kind of account) and returns its id.
    pub async fn create_user(
        &self,
        email: &str,
        tenant: Option<dotmac_domain::TenantId>,
        partner: Option<&str>,
        roles: &[&str],
    ) -> String {
        let user = dotmac_store::UserRecord {
            id: uuid::Uuid::now_v7().to_string(),
            email: dotmac_domain::Email::parse(email).expect("email"),
            password_hash: dotmac_tokens::hash_password(USER_PASSWORD).expect("hash"),
            tenant_id: tenant,
            partner_id: partner.map(|p| dotmac_domain::PartnerId::parse(p).expect("partner id")),
            roles: roles.iter().map(|r| dotmac_domain::RoleName::parse(r).expect("role")).collect(),
            active: true,
            created_at: time::OffsetDateTime::now_utc(),
            last_login: None,
            sessions_valid_after_ms: 0,
        };
        self.stack.platform.store.create_user(&user).await.expect("user");
        user.id
    }

    /// Sends `method path` with an optional token and JSON body; the status and JSON answer
    /// (`Value::Null` when the body is not JSON: use `exchange` to see the raw text).
    pub async fn send(
        &self,
        method: http::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let answer = self.exchange(method, path, token, body).await;
        (answer.status, answer.json)
    }

    /// Like `send`, keeping the whole answer: status, headers and the raw text, so a check
    /// for leaks also catches a body that is not JSON.
    pub async fn exchange(
        &self,
        method: http::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Answer {
        let mut request = self.http.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        Answer::of(request).await
    }

    /// A client whose connections come from `source` (any 127.x.y.z address reaches the
    /// server on Linux), so a test can start per-source counters afresh.
    pub fn client_from(&self, source: std::net::Ipv4Addr) -> reqwest::Client {
        dotmac_platform::install_tls_provider();
        reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .local_address(std::net::IpAddr::V4(source))
            .build()
            .expect("client")
    }

    /// `POST /v1/invitations` as `token`.
    pub async fn invite(&self, token: &str, body: &Value) -> Answer {
        self.exchange(http::Method::POST, "/v1/invitations", Some(token), Some(body)).await
    }

    /// `POST /v1/invitations/accept` with the token of an invitation's link.
    pub async fn accept_invitation(&self, invitation_token: &str, password: &str) -> Answer {
        let body = json!({ "token": invitation_token, "password": password });
        self.exchange(http::Method::POST, "/v1/invitations/accept", None, Some(&body)).await
    }

    /// Invites `email` with `roles` into the inviter's own home (a tenant's or partner's
    /// admin), reads the link from the e-mail SES sent and accepts it with `password`:
    /// how an account other than platform staff's comes to be. Returns the new user.
    pub async fn invite_and_accept(
        &self,
        inviter: &str,
        email: &str,
        roles: &[&str],
        password: &str,
    ) -> Value {
        let invited = self.invite(inviter, &json!({ "email": email, "roles": roles })).await;
        assert_eq!(invited.status, 202, "inviting {email}: {}", invited.text);
        let token = invitation_token(&self.invitation_link(email).await);
        let accepted = self.accept_invitation(&token, password).await;
        assert_eq!(accepted.status, 201, "accepting {email}'s invitation: {}", accepted.text);
        accepted.json
    }

    /// The e-mails SES has sent to `to`, oldest first, as the emulator recorded them
    /// (`{"id","source","subject","body","destinations"}`; see `local/moto_server.py`).
    pub async fn emails_to(&self, to: &str) -> Vec<Value> {
        let endpoint = std::env::var("AWS_ENDPOINT_URL").expect("AWS_ENDPOINT_URL");
        let url =
            reqwest::Url::parse_with_params(&format!("{endpoint}/moto-api/dotmac/ses/sent"), [("to", to)])
                .expect("url");
        let answer = self.http.get(url).send().await.expect("the emulator answers");
        assert!(answer.status().is_success(), "reading sent e-mails: {}", answer.status());
        answer.json::<Vec<Value>>().await.expect("a list of e-mails")
    }

    /// The link in the newest invitation e-mail to `email`.
    pub async fn invitation_link(&self, email: &str) -> String {
        let emails = self.emails_to(email).await;
        let body =
            emails.last().and_then(|e| e["body"].as_str()).unwrap_or_else(|| panic!("no e-mail to {email}"));
        let start =
            body.find(&self.stack.config().invitations.accept_url).expect("the e-mail links the accept page");
        body[start..]
            .split(|c: char| c.is_whitespace() || c == '"' || c == '<')
            .next()
            .expect("a link")
            .to_owned()
    }

    pub async fn admin_token(&self) -> String {
        self.token_for(ADMIN_EMAIL, ADMIN_PASSWORD).await
    }

    pub async fn create_tenant(&self, token: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(self.url("/v1/tenants"))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("create tenant request")
    }

    /// Onboards a tenant (as `token`) and returns its id.
    pub async fn onboarded_tenant(&self, token: &str) -> dotmac_domain::TenantId {
        let created: Value =
            self.create_tenant(token, &new_tenant_body("usage")).await.json().await.expect("json");
        dotmac_domain::TenantId::parse(created["id"].as_str().expect("id")).expect("uuid")
    }

    pub async fn get_json(&self, token: &str, path: &str) -> (u16, Value) {
        self.send(http::Method::GET, path, Some(token), None).await
    }

    /// Polls a tenant until `done` holds, or panics with the last state after `within`.
    pub async fn wait_for_tenant(
        &self,
        token: &str,
        id: &str,
        within: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let (status, tenant) = self.get_json(token, &format!("/v1/tenants/{id}")).await;
            assert_eq!(status, 200, "GET tenant: {tenant}");
            if done(&tenant) {
                return tenant;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "tenant never reached the expected state: {tenant}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Stops the server and workers the way Ctrl-C does, and waits for them.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.expect("server task").expect("server stopped cleanly");
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A whole HTTP answer. `json` is `Value::Null` when the body is not JSON; `text` is always
/// the body as sent, so leak checks look at what a client would really see.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
    pub json: Value,
}

impl Answer {
    pub async fn of(request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.expect("body");
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Answer { status, headers, text, json }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Panics unless the body is exactly the error envelope `{"error":{"code","message",
    /// "details"}}` with `code`, a non-empty message and an object of details.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{}", self.text);
        assert_envelope(&self.json, code);
    }
}

/// Panics unless `body` is exactly `{"error":{"code","message","details"}}` with `code`, a
/// non-empty message and an object of details (nothing more, nothing less).
pub fn assert_envelope(body: &Value, code: &str) {
    let keys = |v: &Value| {
        let mut keys = v.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()).unwrap_or_default();
        keys.sort();
        keys
    };
    assert_eq!(keys(body), vec!["error"], "{body}");
    assert_eq!(keys(&body["error"]), vec!["code", "details", "message"], "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    assert!(body["error"]["details"].is_object(), "{body}");
}

/// `path` with `name=value` added to its query, the value percent-encoded (a cursor may hold
/// characters a query cannot carry as they are).
pub fn with_query(path: &str, name: &str, value: &str) -> String {
    let mut url = reqwest::Url::parse("http://localhost").expect("base").join(path).expect("path");
    url.query_pairs_mut().append_pair(name, value);
    match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_owned(),
    }
}

/// A tenant body that passes validation, with a unique slug.
pub fn new_tenant_body(plan: &str) -> Value {
    let slug = format!("isp-{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    json!({ "name": format!("ISP {slug}"), "slug": slug, "plan": plan, "contact_email": format!("ops@{slug}.example") })
}

/// The SQS event Lambda's event source mapping would invoke the provisioner with for these
/// received messages (id, receipt, body, receive count).
pub fn sqs_event(messages: &[dotmac_queue::ReceivedMessage]) -> aws_lambda_events::event::sqs::SqsEvent {
    let mut event = aws_lambda_events::event::sqs::SqsEvent::default();
    for message in messages {
        let mut record = aws_lambda_events::event::sqs::SqsMessage::default();
        record.message_id = Some(message.message_id.clone());
        record.receipt_handle = Some(message.receipt_handle.clone());
        record.body = Some(message.body.clone());
        record.attributes.insert("ApproximateReceiveCount".into(), message.receive_count.to_string());
        event.records.push(record);
    }
    event
}

/// The token in an invitation link (after `#token=`).
pub fn invitation_token(link: &str) -> String {
    let (_, token) = link.split_once("#token=").unwrap_or_else(|| panic!("no token in {link}"));
    assert_eq!(token.len(), dotmac_tokens::INVITATION_TOKEN_LENGTH, "{link}");
    token.to_owned()
}
