//! Cold start of the release `bootstrap` under a minimal Lambda Runtime API served here:
//! exec → first `GET /next` (what Lambda reports as init), exec → the first invocation's
//! response, and the process's peak RSS (VmHWM) read just before it is killed.

use anyhow::{Context, bail};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, watch};

/// One run may take this long from exec to its first response before it counts as failed.
const RUN_TIMEOUT: Duration = Duration::from_secs(20);

/// What a function is sent and what its answer must look like for the run to count.
pub struct Target {
    pub handler: &'static str,
    pub event: Value,
    pub expect: Expect,
    pub what: &'static str,
}

#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub init_ms: f64,
    pub first_response_ms: f64,
    pub peak_rss_kib: u64,
}

enum Signal {
    Next(Instant),
    Response(Instant, Bytes),
    Failed(String),
}

struct ApiState {
    event: Bytes,
    request_id: String,
    delivered: AtomicBool,
    signals: mpsc::UnboundedSender<Signal>,
    done: watch::Receiver<bool>,
}

async fn next_invocation(State(state): State<Arc<ApiState>>) -> Response {
    if state.delivered.swap(true, Ordering::SeqCst) {
        // The runtime asks for its next event after answering: hold it, as Lambda does
        // between invocations, until this run is over.
        let mut done = state.done.clone();
        let _ = tokio::time::timeout(RUN_TIMEOUT, done.wait_for(|d| *d)).await;
        return StatusCode::GONE.into_response();
    }
    let _ = state.signals.send(Signal::Next(Instant::now()));
    let deadline_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() + 30_000)
        .unwrap_or_default()
        .to_string();
    let mut headers = HeaderMap::new();
    let mut put = |name: &'static str, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    put("lambda-runtime-aws-request-id", &state.request_id);
    put("lambda-runtime-deadline-ms", &deadline_ms);
    put("lambda-runtime-invoked-function-arn", "arn:aws:lambda:us-east-1:123456789012:function:dotmac-bench");
    put(
        "lambda-runtime-trace-id",
        "Root=1-65f1c0de-4a1b2c3d4e5f60718293a4b5;Parent=53995c3f42cd8ad8;Sampled=0",
    );
    put("content-type", "application/json");
    (StatusCode::OK, headers, state.event.clone()).into_response()
}

async fn invocation_response(
    State(state): State<Arc<ApiState>>,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> StatusCode {
    let at = Instant::now();
    let signal = if id == state.request_id {
        Signal::Response(at, body)
    } else {
        Signal::Failed(format!("response for unknown request id {id}"))
    };
    let _ = state.signals.send(signal);
    StatusCode::ACCEPTED
}

async fn invocation_error(
    State(state): State<Arc<ApiState>>,
    UrlPath(_id): UrlPath<String>,
    body: Bytes,
) -> StatusCode {
    let _ = state
        .signals
        .send(Signal::Failed(format!("the function reported an error: {}", String::from_utf8_lossy(&body))));
    StatusCode::ACCEPTED
}

async fn init_error(State(state): State<Arc<ApiState>>, body: Bytes) -> StatusCode {
    let _ = state.signals.send(Signal::Failed(format!("init error: {}", String::from_utf8_lossy(&body))));
    StatusCode::ACCEPTED
}

fn runtime_api(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next_invocation))
        .route("/2018-06-01/runtime/invocation/{id}/response", post(invocation_response))
        .route("/2018-06-01/runtime/invocation/{id}/error", post(invocation_error))
        .route("/2018-06-01/runtime/init/error", post(init_error))
        .with_state(state)
}

/// Peak resident set size of a live process, from `/proc/<pid>/status`.
pub fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_hwm(&status)
}

fn parse_vm_hwm(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

/// Starts `bootstrap` once as `target.handler` and times it to its first response.
pub async fn run_once(
    bootstrap: &Path,
    target: &Target,
    env: &[(String, String)],
    log: &Path,
) -> anyhow::Result<Sample> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("binding the runtime API")?;
    let address = listener.local_addr()?;
    let (signals, mut received) = mpsc::unbounded_channel();
    let (done_tx, done) = watch::channel(false);
    let state = Arc::new(ApiState {
        event: Bytes::from(serde_json::to_vec(&target.event)?),
        request_id: uuid::Uuid::new_v4().to_string(),
        delivered: AtomicBool::new(false),
        signals,
        done,
    });
    let server = tokio::spawn(async move { axum::serve(listener, runtime_api(state)).await });

    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let mut command = tokio::process::Command::new(bootstrap);
    command
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("AWS_LAMBDA_RUNTIME_API", address.to_string())
        .env("_HANDLER", target.handler)
        .env("AWS_LAMBDA_FUNCTION_NAME", format!("dotmac-bench-{}", target.handler))
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/dotmac-bench-{}", target.handler))
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .kill_on_drop(true);

    let started = Instant::now();
    let mut child = command.spawn().with_context(|| format!("starting {}", bootstrap.display()))?;
    let pid = child.id().context("the child has no pid")?;

    let outcome = async {
        let mut init = None;
        loop {
            tokio::select! {
                signal = received.recv() => match signal {
                    Some(Signal::Next(at)) => init = Some(at),
                    Some(Signal::Response(at, body)) => return Ok((init, at, body)),
                    Some(Signal::Failed(why)) => bail!(why),
                    None => bail!("the runtime API stopped"),
                },
                status = child.wait() => bail!("bootstrap exited before answering ({})", status?),
            }
        }
    };
    let result = tokio::time::timeout(RUN_TIMEOUT, outcome).await;
    // Read the peak before the process goes away.
    let peak = vm_hwm_kib(pid);
    let _ = child.start_kill();
    let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
    let _ = done_tx.send(true);
    server.abort();

    let (init, answered, body) = match result {
        Ok(outcome) => outcome?,
        Err(_) => bail!("no response within {} s", RUN_TIMEOUT.as_secs()),
    };
    let response: Value = serde_json::from_slice(&body)
        .with_context(|| format!("the response is not JSON: {}", String::from_utf8_lossy(&body)))?;
    target
        .expect
        .check(&response)
        .map_err(|why| anyhow::anyhow!("unexpected response ({why}): {response}"))?;
    let init = init.context("answered without asking for an event")?;
    Ok(Sample {
        init_ms: init.duration_since(started).as_secs_f64() * 1000.0,
        first_response_ms: answered.duration_since(started).as_secs_f64() * 1000.0,
        peak_rss_kib: peak.context("could not read VmHWM")?,
    })
}

/// The events each function is started with: real-shaped API Gateway and SQS events.
pub fn targets(events_dir: &Path) -> anyhow::Result<Vec<Target>> {
    let read = |name: &str| -> anyhow::Result<Value> {
        let path = events_dir.join(name);
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    };
    let health = read("apigw-health.json")?;
    // The same request on a path no function serves: the router answers 404 without any
    // AWS call, so the figure is the runtime plus the function's own init.
    let mut unrouted = health.clone();
    let path = "/v1/bench/no-such-route";
    unrouted["rawPath"] = path.into();
    unrouted["routeKey"] = "$default".into();
    unrouted["requestContext"]["http"]["path"] = path.into();
    unrouted["requestContext"]["routeKey"] = "$default".into();
    // The docs function builds the OpenAPI document on its first request, not at init: this
    // row is where that cost shows.
    let mut openapi = health.clone();
    let path = "/v1/openapi.json";
    openapi["rawPath"] = path.into();
    openapi["routeKey"] = format!("GET {path}").into();
    openapi["requestContext"]["http"]["path"] = path.into();
    openapi["requestContext"]["routeKey"] = format!("GET {path}").into();
    let sqs = read("sqs-provision-tenant.json")?;
    Ok(vec![
        Target { handler: "health", event: health, expect: Expect::HttpStatus(200), what: "GET /health" },
        Target {
            handler: "auth",
            event: unrouted.clone(),
            expect: Expect::HttpStatus(404),
            what: "unrouted GET → 404",
        },
        Target {
            handler: "tenants",
            event: unrouted,
            expect: Expect::HttpStatus(404),
            what: "unrouted GET → 404",
        },
        Target {
            handler: "docs",
            event: openapi,
            expect: Expect::HttpStatus(200),
            what: "GET /v1/openapi.json, built on this first request",
        },
        Target {
            handler: "provisioner",
            event: sqs,
            expect: Expect::NoBatchFailures,
            what: "SQS job, unknown tenant: 1 GetItem",
        },
    ])
}

/// What a run's answer must be for it to count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// An API Gateway response with this `statusCode`.
    HttpStatus(u64),
    /// An SQS batch response with no failed items.
    NoBatchFailures,
}

impl Expect {
    pub fn check(self, response: &Value) -> Result<(), String> {
        match self {
            Expect::HttpStatus(expected) => match response["statusCode"].as_u64() {
                Some(code) if code == expected => Ok(()),
                other => Err(format!("statusCode {other:?}, expected {expected}")),
            },
            Expect::NoBatchFailures => match response["batchItemFailures"].as_array() {
                Some(failures) if failures.is_empty() => Ok(()),
                _ => Err("expected an empty batchItemFailures".into()),
            },
        }
    }
}

/// Where the release `bootstrap` is, if it was built.
pub fn release_binary(target_dir: &Path) -> PathBuf {
    target_dir.join("release").join("bootstrap")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_peak_from_proc_status() {
        let status = "Name:\tbootstrap\nVmPeak:\t  30000 kB\nVmHWM:\t   14336 kB\nVmRSS:\t   14000 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(14336));
        assert_eq!(parse_vm_hwm("Name:\tx\n"), None);
        assert!(vm_hwm_kib(std::process::id()).is_some_and(|kib| kib > 0));
    }

    #[test]
    fn status_checks_accept_only_the_expected_answer() {
        let ok = serde_json::json!({ "statusCode": 200 });
        assert!(Expect::HttpStatus(200).check(&ok).is_ok());
        assert!(Expect::HttpStatus(404).check(&ok).is_err());
        assert!(Expect::NoBatchFailures.check(&serde_json::json!({ "batchItemFailures": [] })).is_ok());
        let failed = serde_json::json!({ "batchItemFailures": [{ "itemIdentifier": "x" }] });
        assert!(Expect::NoBatchFailures.check(&failed).is_err());
    }
}
