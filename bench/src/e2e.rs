//! End-to-end figures on the local stack (the platform and its provisioning workers served
//! in this process, on 127.0.0.1, against the emulator): time from onboarding request to an
//! active tenant, 200 concurrent onboardings, and request rates of the local server.

use crate::report::{Summary, summarize};
use anyhow::{Context, bail};
use dotmac_local::LocalSettings;
use dotmac_platform::Platform;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use tokio::sync::oneshot;

pub const ADMIN_EMAIL: &str = "admin@dotmac.bench";
pub const ADMIN_PASSWORD: &str = "bench-admin-password";

/// A fresh set of resources (unique name prefix) on the emulator, seeded.
pub struct Stack {
    pub platform: Platform,
    pub local: LocalSettings,
    pub sdk: aws_config::SdkConfig,
}

pub async fn prepare_stack(sdk: &aws_config::SdkConfig) -> anyhow::Result<Stack> {
    let mut env: HashMap<String, String> = std::env::vars().collect();
    env.insert("DOTMAC_PREFIX".into(), format!("bench{}", &uuid::Uuid::new_v4().simple().to_string()[..10]));
    env.insert("DOTMAC_ADMIN_EMAIL".into(), ADMIN_EMAIL.into());
    env.insert("DOTMAC_ADMIN_PASSWORD".into(), ADMIN_PASSWORD.into());
    env.insert("DOTMAC_WORKER_RETRY_DELAY_SECONDS".into(), "1".into());
    env.remove("DOTMAC_STATE_DIR");
    env.remove("DOTMAC_JWT_SIGNING_KEY");
    env.remove("DOTMAC_JWT_KEY_SET");
    let local = LocalSettings::from_env(&env)?;
    let config = dotmac_local::prepare(sdk, &env, &local).await.context("resources on the emulator")?;
    let platform = Platform::with_sdk_config(config, sdk).await?;
    dotmac_local::seed(&platform, &local).await.context("seeding")?;
    Ok(Stack { platform, local, sdk: sdk.clone() })
}

/// The local server, running until dropped or shut down.
pub struct Server {
    pub base: String,
    pub http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Server {
    pub async fn start(stack: &Stack) -> anyhow::Result<Server> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(dotmac_local::serve(
            stack.platform.clone(),
            listener,
            stack.local.clone(),
            async move {
                let _ = stopped.await;
            },
        ));
        dotmac_platform::install_tls_provider();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(256)
            .build()?;
        Ok(Server { base, http, stop: Some(stop), task: Some(task) })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn admin_token(&self) -> anyhow::Result<String> {
        let response = self
            .http
            .post(self.url("/v1/auth/login"))
            .json(&json!({ "email": ADMIN_EMAIL, "password": ADMIN_PASSWORD }))
            .send()
            .await?;
        let status = response.status();
        let body: Value = response.json().await?;
        match body["access_token"].as_str() {
            Some(token) if status.is_success() => Ok(token.to_owned()),
            _ => bail!("login answered {status}: {body}"),
        }
    }

    async fn onboard(&self, token: &str) -> anyhow::Result<Onboarded> {
        onboard(&self.http, &self.base, token).await
    }

    async fn tenant(&self, token: &str, id: &str) -> anyhow::Result<Value> {
        let response =
            self.http.get(self.url(&format!("/v1/tenants/{id}"))).bearer_auth(token).send().await?;
        let status = response.status();
        let body: Value = response.json().await?;
        if !status.is_success() {
            bail!("GET tenant answered {status}: {body}");
        }
        Ok(body)
    }

    /// Every tenant the list endpoint returns, page by page (at most 50 pages).
    async fn all_tenants(&self, token: &str) -> anyhow::Result<Vec<Value>> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..50 {
            let mut request =
                self.http.get(self.url("/v1/tenants")).bearer_auth(token).query(&[("limit", "100")]);
            if let Some(cursor) = &cursor {
                request = request.query(&[("cursor", cursor)]);
            }
            let page: Value = request.send().await?.error_for_status()?.json().await?;
            items.extend(page["items"].as_array().cloned().unwrap_or_default());
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return Ok(items),
            }
        }
        Ok(items)
    }

    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Attempts a client makes at one onboarding before giving up.
const POST_ATTEMPTS: u32 = 5;

/// One accepted onboarding.
pub struct Onboarded {
    pub id: String,
    /// When the first attempt was sent: the client's view of the wait starts there.
    pub sent: OffsetDateTime,
    /// Attempts answered 503/409/429 or lost, then retried with the same Idempotency-Key.
    pub retries: u32,
}

/// POSTs an onboarding the way a careful client does: an `Idempotency-Key`, and a retry
/// with the same key (backing off) when the answer says "try again".
async fn onboard(http: &reqwest::Client, base: &str, token: &str) -> anyhow::Result<Onboarded> {
    let slug = format!("bench-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let body = json!({
        "name": format!("ISP {slug}"),
        "slug": slug,
        "plan": "usage",
        "contact_email": format!("ops@{slug}.example"),
    });
    let key = uuid::Uuid::new_v4().to_string();
    let sent = OffsetDateTime::now_utc();
    let mut last = String::new();
    for attempt in 0..POST_ATTEMPTS {
        if attempt > 0 {
            let jitter = u64::try_from(uuid::Uuid::new_v4().as_u128() % 100).unwrap_or(0);
            tokio::time::sleep(Duration::from_millis((200 << attempt) + jitter)).await;
        }
        let sending = http
            .post(format!("{base}/v1/tenants"))
            .bearer_auth(token)
            .header("Idempotency-Key", &key)
            .json(&body)
            .send()
            .await;
        let response = match sending {
            Ok(response) => response,
            Err(error) => {
                // With its causes: a client timeout and a refused connection read alike otherwise.
                last = format!("transport: {:#}", anyhow::Error::from(error));
                continue;
            }
        };
        let status = response.status().as_u16();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        match (status, answer["id"].as_str()) {
            (202, Some(id)) => return Ok(Onboarded { id: id.to_owned(), sent, retries: attempt }),
            (409 | 429 | 503, _) if answer["error"]["code"] != "SLUG_TAKEN" => {
                last = format!("{status}: {answer}");
            }
            _ => bail!("POST /v1/tenants answered {status}: {answer}"),
        }
    }
    bail!("POST /v1/tenants refused {POST_ATTEMPTS} times, last {last}")
}

/// Seconds from the client sending the onboarding request to the tenant turning active, by
/// the tenant's own `updated_at` at activation (the server runs in this process: same clock).
fn seconds_to_active(tenant: &Value, sent: OffsetDateTime) -> Option<f64> {
    if tenant["status"] != "active" {
        return None;
    }
    let updated = tenant["updated_at"].as_str()?;
    let at = OffsetDateTime::parse(updated, &time::format_description::well_known::Rfc3339).ok()?;
    Some((at - sent).as_seconds_f64())
}

/// Onboards `count` tenants one after the other, each waited for before the next.
pub async fn sequential_provisioning(server: &Server, count: usize) -> anyhow::Result<Summary> {
    let token = server.admin_token().await?;
    let mut seconds = Vec::new();
    for _ in 0..count {
        let Onboarded { id, sent, .. } = server.onboard(&token).await?;
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let tenant = server.tenant(&token, &id).await?;
            if let Some(s) = seconds_to_active(&tenant, sent) {
                seconds.push(s);
                break;
            }
            if tenant["status"] == "failed" {
                bail!("tenant {id} failed: {}", tenant["failure_reason"]);
            }
            if Instant::now() > deadline {
                bail!("tenant {id} not active after 90 s: {}", tenant["status"]);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    summarize(&seconds).context("no tenant became active")
}

pub struct Onboardings {
    pub requested: usize,
    pub accepted: usize,
    pub active: usize,
    pub failed: usize,
    /// Attempts retried (503 and the like) across all onboardings.
    pub retries: u32,
    /// First request sent → last tenant active.
    pub wall_seconds: f64,
    pub time_to_active: Option<Summary>,
    pub post_ms: Option<Summary>,
    /// The tenants accepted, to check what ECS runs for them afterwards.
    pub ids: Vec<String>,
}

/// `count` onboardings sent at once; waits (at most `limit`) for every tenant to settle.
pub async fn concurrent_onboardings(
    server: &Server,
    count: usize,
    limit: Duration,
) -> anyhow::Result<Onboardings> {
    let token = Arc::new(server.admin_token().await?);
    let started = OffsetDateTime::now_utc();
    let mut posts = tokio::task::JoinSet::new();
    for _ in 0..count {
        let (http, base, token) = (server.http.clone(), server.base.clone(), token.clone());
        posts.spawn(async move {
            let begun = Instant::now();
            let outcome = onboard(&http, &base, &token).await;
            (outcome, begun.elapsed().as_secs_f64() * 1000.0)
        });
    }
    let mut sent: HashMap<String, OffsetDateTime> = HashMap::new();
    let mut post_ms = Vec::new();
    let mut refused = Vec::new();
    let mut retries = 0;
    while let Some(joined) = posts.join_next().await {
        let (outcome, ms) = joined?;
        post_ms.push(ms);
        match outcome {
            Ok(onboarded) => {
                retries += onboarded.retries;
                sent.insert(onboarded.id, onboarded.sent);
            }
            Err(error) => refused.push(error.to_string()),
        }
    }
    if let Some(first) = refused.first() {
        eprintln!("bench: {} of {count} onboardings refused, first: {first}", refused.len());
    }

    let deadline = Instant::now() + limit;
    let mut settled: HashMap<String, Value> = HashMap::new();
    while settled.len() < sent.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        // A poll the loaded server does not answer in time is polled again (until `limit`):
        // one slow list is no reason to lose the whole measurement.
        let tenants = match server.all_tenants(&token).await {
            Ok(tenants) => tenants,
            Err(error) => {
                eprintln!("bench: polling the tenants failed, polling again: {:#}", error);
                continue;
            }
        };
        for tenant in tenants {
            let Some(id) = tenant["id"].as_str() else { continue };
            if sent.contains_key(id) && matches!(tenant["status"].as_str(), Some("active" | "failed")) {
                settled.insert(id.to_owned(), tenant);
            }
        }
    }
    let mut to_active = Vec::new();
    let mut last_active = started;
    let mut failed = 0;
    for (id, tenant) in &settled {
        let Some(&at) = sent.get(id) else { continue };
        match seconds_to_active(tenant, at) {
            Some(s) => {
                to_active.push(s);
                last_active = last_active.max(at + time::Duration::seconds_f64(s));
            }
            None => failed += 1,
        }
    }
    Ok(Onboardings {
        requested: count,
        accepted: sent.len(),
        active: to_active.len(),
        failed,
        retries,
        wall_seconds: (last_active - started).as_seconds_f64(),
        time_to_active: summarize(&to_active),
        post_ms: summarize(&post_ms),
        ids: sent.into_keys().collect(),
    })
}

pub struct Load {
    pub planned: usize,
    pub requests: usize,
    pub ok: usize,
    pub per_second: f64,
    pub latency_ms: Summary,
}

/// `total` GETs of `path` from `concurrency` connections, stopping early at `limit`.
pub async fn load(
    server: &Server,
    path: &str,
    token: Option<&str>,
    total: usize,
    concurrency: usize,
    limit: Duration,
) -> anyhow::Result<Load> {
    let url = Arc::new(server.url(path));
    let token = token.map(|t| Arc::new(t.to_owned()));
    let deadline = Instant::now() + limit;
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    let concurrency = concurrency.clamp(1, total.max(1));
    let per_worker = total / concurrency;
    let planned = per_worker * concurrency;
    for _ in 0..concurrency {
        let (http, url, token) = (server.http.clone(), url.clone(), token.clone());
        workers.spawn(async move {
            let mut latencies = Vec::with_capacity(per_worker);
            let mut ok = 0usize;
            for _ in 0..per_worker {
                if Instant::now() > deadline {
                    break;
                }
                let mut request = http.get(url.as_str());
                if let Some(token) = &token {
                    request = request.bearer_auth(token.as_str());
                }
                let begun = Instant::now();
                let answered = match request.send().await {
                    Ok(response) => response.status().is_success() && response.bytes().await.is_ok(),
                    Err(_) => false,
                };
                latencies.push(begun.elapsed().as_secs_f64() * 1000.0);
                ok += usize::from(answered);
            }
            (latencies, ok)
        });
    }
    let mut latencies = Vec::with_capacity(total);
    let mut ok = 0;
    while let Some(joined) = workers.join_next().await {
        let (mut part, part_ok) = joined?;
        latencies.append(&mut part);
        ok += part_ok;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let requests = latencies.len();
    Ok(Load {
        planned,
        requests,
        ok,
        per_second: requests as f64 / elapsed.max(f64::EPSILON),
        latency_ms: summarize(&latencies).context("no request was sent")?,
    })
}

/// Counts every DynamoDB request attempt its client sends (retries included): the round
/// trips a request costs, whatever the backend.
#[derive(Debug)]
pub(crate) struct CountAttempts(pub(crate) Arc<AtomicU64>);

impl aws_sdk_dynamodb::config::Intercept for CountAttempts {
    fn name(&self) -> &'static str {
        "CountAttempts"
    }

    fn read_before_transmit(
        &self,
        _context: &aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _components: &aws_sdk_dynamodb::config::RuntimeComponents,
        _cfg: &mut aws_sdk_dynamodb::config::ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// DynamoDB round trips the tenants function makes per authenticated `GET /v1/tenants/{id}`
/// (`requests` of them, through its router in process, with a client that counts).
pub async fn dynamo_round_trips_per_get(
    stack: &Stack,
    token: &str,
    id: &str,
    requests: u32,
) -> anyhow::Result<f64> {
    use tower::ServiceExt;
    let attempts = Arc::new(AtomicU64::new(0));
    let config = aws_sdk_dynamodb::config::Builder::from(&stack.sdk)
        .interceptor(CountAttempts(attempts.clone()))
        .build();
    let mut counted = stack.platform.clone();
    counted.store =
        dotmac_store::Store::new(aws_sdk_dynamodb::Client::from_conf(config), stack.platform.store.table());
    let router =
        counted.router(dotmac_platform::Handler::Tenants).context("the tenants function serves routes")?;
    for _ in 0..requests {
        let request = http::Request::get(format!("/v1/tenants/{id}"))
            .header("authorization", format!("Bearer {token}"))
            .body(axum::body::Body::empty())?;
        let status = router.clone().oneshot(request).await?.status();
        if status != 200 {
            bail!("GET /v1/tenants/{id} answered {status}");
        }
    }
    Ok(attempts.load(Ordering::Relaxed) as f64 / f64::from(requests.max(1)))
}

/// An active tenant for the authenticated GET load: onboards one and waits for it.
pub async fn active_tenant(server: &Server) -> anyhow::Result<(String, String)> {
    let token = server.admin_token().await?;
    let id = server.onboard(&token).await?.id;
    let deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < deadline {
        if server.tenant(&token, &id).await?["status"] == "active" {
            return Ok((token, id));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("tenant {id} never became active")
}

/// Seconds from `POST /suspend` to the record showing its task stopped, and from `POST
/// /resume` to the record showing a new task running, over `rounds` suspend/resume pairs of
/// one active tenant (each state waited for before the next request).
pub async fn suspend_resume(
    server: &Server,
    token: &str,
    id: &str,
    rounds: usize,
) -> anyhow::Result<(Summary, Summary)> {
    let (mut suspend, mut resume) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let before = server.tenant(token, id).await?;
        let sent = Instant::now();
        server.lifecycle(token, id, "suspend", json!({ "reason": "admin" })).await?;
        server
            .wait_until(token, id, |t| {
                t["status"] == "suspended" && t["container"]["last_status"] == "STOPPED"
            })
            .await?;
        suspend.push(sent.elapsed().as_secs_f64());
        let sent = Instant::now();
        server.lifecycle(token, id, "resume", json!({})).await?;
        let old_task = before["container"]["task_arn"].clone();
        server
            .wait_until(token, id, |t| {
                t["status"] == "active"
                    && t["container"]["last_status"] == "RUNNING"
                    && t["container"]["task_arn"] != old_task
            })
            .await?;
        resume.push(sent.elapsed().as_secs_f64());
    }
    Ok((
        summarize(&suspend).context("no suspend measured")?,
        summarize(&resume).context("no resume measured")?,
    ))
}

/// Tasks ECS runs beyond one per tenant, plus tenants running none, over `ids`: the
/// provisioning's promise is exactly one each.
pub async fn task_count_errors(stack: &Stack, ids: &[String]) -> anyhow::Result<usize> {
    let provisioner = stack.platform.provisioner();
    let mut wrong = 0;
    for id in ids {
        let tenant = dotmac_domain::TenantId::parse(id).context("tenant id")?;
        let running = provisioner.fleet().running_tenant_tasks(tenant).await?;
        wrong += running.len().abs_diff(1);
    }
    Ok(wrong)
}

impl Server {
    async fn lifecycle(&self, token: &str, id: &str, action: &str, body: Value) -> anyhow::Result<()> {
        let response = self
            .http
            .post(self.url(&format!("/v1/tenants/{id}/{action}")))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await?;
        let status = response.status();
        if status.as_u16() != 202 {
            bail!("POST {action} answered {status}: {}", response.text().await.unwrap_or_default());
        }
        Ok(())
    }

    /// Polls the tenant every 50 ms until `done` holds (at most 90 s).
    async fn wait_until(&self, token: &str, id: &str, done: impl Fn(&Value) -> bool) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let tenant = self.tenant(token, id).await?;
            if done(&tenant) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("tenant {id} did not get there in 90 s: {tenant}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_to_active_comes_from_the_activation_timestamp() {
        let sent =
            OffsetDateTime::parse("2026-01-01T00:00:00Z", &time::format_description::well_known::Rfc3339)
                .expect("time");
        let active = json!({ "status": "active", "updated_at": "2026-01-01T00:00:01.5Z" });
        assert_eq!(seconds_to_active(&active, sent), Some(1.5));
        let pending = json!({ "status": "provisioning", "updated_at": "2026-01-01T00:00:01.5Z" });
        assert_eq!(seconds_to_active(&pending, sent), None);
    }
}
