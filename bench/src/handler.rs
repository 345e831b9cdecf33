//! In-process handler cost of an authenticated GET: JWT verify + authorize + route +
//! serialize, in Rust (criterion) and in Python with PyJWT and json (the AWS reference
//! implementations' stack), on the same token and the same tenant.

use anyhow::{Context, bail};
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{Request, StatusCode, header};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use dotmac_config::JwtSettings;
use dotmac_domain::{
    Action, Caller, Container, Email, PlanId, Resource, Role, Target, TaskSize, Tenant, TenantId, TenantName,
    TenantSlug, TenantStatus, authorize,
};
use dotmac_http::{ApiError, ErrorCode, with_defaults};
use dotmac_tokens::{JwtKeys, TokenKind};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

pub const AXUM_BENCH: &str = "rust_axum_get_tenant";
pub const CORE_BENCH: &str = "rust_core_get_tenant";

/// What both languages work on: one signing key, one access token of a tenant admin, and
/// that tenant's full record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fixture {
    pub signing_key: String,
    /// Raw 32-byte Ed25519 public key, base64.
    pub public_key: String,
    pub kid: String,
    pub issuer: String,
    pub audience: String,
    pub token: String,
    pub path: String,
    pub tenant: Value,
}

fn settings(signing_key: &str, issuer: &str, audience: &str) -> JwtSettings {
    JwtSettings {
        signing_key: Some(signing_key.to_owned()),
        key_set: None,
        key_set_secret: None,
        public_key_set_secret: None,
        key_reload_seconds: 300,
        rotate_after_seconds: 30 * 24 * 3600,
        issuer: issuer.to_owned(),
        audience: audience.to_owned(),
        access_ttl_seconds: 3600,
        refresh_ttl_seconds: 7200,
        session_max_seconds: 30 * 24 * 3600,
    }
}

pub fn make_fixture() -> anyhow::Result<Fixture> {
    let signing_key = dotmac_tokens::generate_signing_key()?;
    let pkcs8 = STANDARD.decode(&signing_key)?;
    let pair = Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|_| anyhow::anyhow!("bad generated key"))?;
    let public_key = STANDARD.encode(pair.public_key().as_ref());
    let (issuer, audience) = ("https://api.dotmac.local", "dotmac-platform");
    let keys = JwtKeys::from_settings(&settings(&signing_key, issuer, audience))?;
    let now = OffsetDateTime::now_utc();
    let tenant_id = TenantId::generate();
    let caller = Caller::new("u-bench", Some(tenant_id), &[Role::TenantAdmin]);
    let token = keys
        .issue(&caller, &dotmac_tokens::SessionTerm { family: "bench-session", ends_at: i64::MAX }, now)?
        .pair
        .access_token;
    let tenant = Tenant {
        id: tenant_id,
        slug: TenantSlug::parse("bench-isp")?,
        name: TenantName::parse("Bench ISP")?,
        plan: PlanId::parse("usage")?,
        contact_email: Email::parse("ops@bench-isp.example")?,
        partner_id: None,
        secret_arn: None,
        status: TenantStatus::Active,
        container: Some(Container {
            cluster_arn: "arn:aws:ecs:us-east-1:123456789012:cluster/dotmac-tenants".into(),
            task_arn:
                "arn:aws:ecs:us-east-1:123456789012:task/dotmac-tenants/0f1e2d3c4b5a69788796a5b4c3d2e1f0"
                    .into(),
            task_definition_arn: "arn:aws:ecs:us-east-1:123456789012:task-definition/dotmac-isp-framework:3"
                .into(),
            task_size: TaskSize { cpu: 256, memory_mib: 512 },
            last_status: "RUNNING".into(),
            endpoint: Some("http://10.0.1.23:8000".into()),
            started_at: now,
        }),
        customer_count: 1234,
        task_size_override: None,
        bundles: vec!["crm".into(), "ai".into()],
        suspended_for: Vec::new(),
        billing_standing: Default::default(),
        failure_reason: None,
        created_at: now,
        updated_at: now,
        version: 3,
    };
    Ok(Fixture {
        kid: keys.kid().to_owned(),
        signing_key,
        public_key,
        issuer: issuer.into(),
        audience: audience.into(),
        token,
        path: format!("/v1/tenants/{tenant_id}"),
        tenant: serde_json::to_value(&tenant)?,
    })
}

/// The in-memory stand-in for the store read, shared by both Rust variants.
#[derive(Clone)]
struct BenchState {
    keys: Arc<JwtKeys>,
    tenants: Arc<HashMap<TenantId, Tenant>>,
}

impl axum::extract::FromRef<BenchState> for Arc<JwtKeys> {
    fn from_ref(state: &BenchState) -> Self {
        state.keys.clone()
    }
}

/// The bearer check of `dotmac_http::Authenticated` without its deny-list read (a DynamoDB
/// GetItem, measured by the end-to-end rows, not here): signature, claims, caller.
struct BenchCaller(dotmac_domain::Caller);

impl axum::extract::FromRequestParts<BenchState> for BenchCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &BenchState,
    ) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                ApiError::new(ErrorCode::Unauthenticated, "send an Authorization: Bearer token")
            })?;
        let claims = state
            .keys
            .verify(token, TokenKind::Access)
            .map_err(|_| ApiError::new(ErrorCode::InvalidToken, "the access token is invalid or expired"))?;
        Ok(BenchCaller(claims.caller()))
    }
}

/// Shaped like the tenants function's `get_tenant`, the store read replaced by a map.
async fn get_tenant(
    State(state): State<BenchState>,
    BenchCaller(caller): BenchCaller,
    UrlPath(id): UrlPath<String>,
) -> Result<axum::Json<Value>, ApiError> {
    let id = TenantId::parse(&id).map_err(ApiError::from)?;
    authorize(&caller, Resource::Tenant, Action::Read, Target::tenant(id))?;
    let tenant = state
        .tenants
        .get(&id)
        .ok_or_else(|| ApiError::new(ErrorCode::TenantNotFound, format!("no tenant {id}")))?;
    Ok(axum::Json(serde_json::to_value(tenant).map_err(ApiError::internal)?))
}

fn bench_router(state: BenchState) -> Router {
    with_defaults(Router::new().route("/v1/tenants/{id}", get(get_tenant)).with_state(state), &[])
}

/// The same work with no HTTP framework: what the Python handler does too.
fn core_handle(state: &BenchState, method: &str, path: &str, authorization: &str) -> (u16, Vec<u8>) {
    let Some(token) = authorization.strip_prefix("Bearer ") else {
        return (401, br#"{"error":{"code":"UNAUTHENTICATED"}}"#.to_vec());
    };
    let caller = match state.keys.verify(token, TokenKind::Access) {
        Ok(claims) => claims.caller(),
        Err(_) => return (401, br#"{"error":{"code":"INVALID_TOKEN"}}"#.to_vec()),
    };
    let id = match (method, path.strip_prefix("/v1/tenants/")) {
        ("GET", Some(id)) if !id.is_empty() && !id.contains('/') => id,
        _ => return (404, br#"{"error":{"code":"NOT_FOUND"}}"#.to_vec()),
    };
    let Ok(id) = TenantId::parse(id) else {
        return (422, br#"{"error":{"code":"VALIDATION_FAILED"}}"#.to_vec());
    };
    if authorize(&caller, Resource::Tenant, Action::Read, Target::tenant(id)).is_err() {
        return (403, br#"{"error":{"code":"FORBIDDEN"}}"#.to_vec());
    }
    match state.tenants.get(&id).map(serde_json::to_vec) {
        Some(Ok(body)) => (200, body),
        Some(Err(_)) => (500, br#"{"error":{"code":"INTERNAL"}}"#.to_vec()),
        None => (404, br#"{"error":{"code":"TENANT_NOT_FOUND"}}"#.to_vec()),
    }
}

fn state_from(fixture: &Fixture) -> anyhow::Result<BenchState> {
    let keys = JwtKeys::from_settings(&settings(&fixture.signing_key, &fixture.issuer, &fixture.audience))?;
    let tenant: Tenant = serde_json::from_value(fixture.tenant.clone())?;
    Ok(BenchState { keys: Arc::new(keys), tenants: Arc::new(HashMap::from([(tenant.id, tenant)])) })
}

fn request(fixture: &Fixture) -> anyhow::Result<Request<Body>> {
    Ok(Request::get(&fixture.path)
        .header(header::AUTHORIZATION, format!("Bearer {}", fixture.token))
        .header(header::ACCEPT, "application/json")
        .body(Body::empty())?)
}

async fn call_router(
    router: &Router,
    request: Request<Body>,
) -> anyhow::Result<(StatusCode, axum::body::Bytes)> {
    use tower::ServiceExt;
    let response = router.clone().oneshot(request).await?;
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX).await?;
    Ok((status, body))
}

/// `dotmac-bench criterion-handler FIXTURE DIR`: runs in a child process so criterion's own
/// report goes to stderr and stdout keeps only the table.
pub fn criterion_child(fixture_path: &Path, out_dir: &Path) -> anyhow::Result<()> {
    use criterion::Criterion;
    use std::hint::black_box;
    let fixture: Fixture = serde_json::from_str(&std::fs::read_to_string(fixture_path)?)?;
    let state = state_from(&fixture)?;
    let router = bench_router(state.clone());
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    let authorization = format!("Bearer {}", fixture.token);
    let expected: Value = fixture.tenant.clone();

    // Both variants must really answer 200 with the tenant before their timing counts.
    let (status, body) = runtime.block_on(call_router(&router, request(&fixture)?))?;
    if status != StatusCode::OK || serde_json::from_slice::<Value>(&body)? != expected {
        bail!("the axum handler answered {status}: {}", String::from_utf8_lossy(&body));
    }
    let (status, body) = core_handle(&state, "GET", &fixture.path, &authorization);
    if status != 200 || serde_json::from_slice::<Value>(&body)? != expected {
        bail!("the core handler answered {status}: {}", String::from_utf8_lossy(&body));
    }

    let mut criterion = Criterion::default()
        .output_directory(out_dir)
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .nresamples(10_000)
        .without_plots();
    criterion.bench_function(AXUM_BENCH, |b| {
        b.iter(|| {
            let request = request(&fixture).expect("request");
            black_box(runtime.block_on(call_router(&router, request)).expect("response"))
        })
    });
    criterion.bench_function(CORE_BENCH, |b| {
        b.iter(|| black_box(core_handle(&state, "GET", black_box(&fixture.path), black_box(&authorization))))
    });
    Ok(())
}

/// Median time per iteration in ns, from criterion's `estimates.json` of one benchmark.
pub fn criterion_median_ns(out_dir: &Path, id: &str) -> anyhow::Result<f64> {
    let path = out_dir.join(id).join("new").join("estimates.json");
    let estimates: Value = serde_json::from_str(
        &std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?,
    )?;
    estimates["median"]["point_estimate"].as_f64().with_context(|| format!("no median in {}", path.display()))
}

/// Runs this binary again as the criterion child, its stdout sent to our stderr.
pub fn run_criterion(fixture_path: &Path, out_dir: &Path) -> anyhow::Result<()> {
    use std::os::fd::AsFd;
    let exe = std::env::current_exe()?;
    let stderr = std::io::stderr().as_fd().try_clone_to_owned()?;
    let status = std::process::Command::new(exe)
        .arg("criterion-handler")
        .arg(fixture_path)
        .arg(out_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::from(stderr))
        .status()?;
    if !status.success() {
        bail!("the criterion run failed ({status})");
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
pub struct PythonResult {
    pub median_ns: f64,
    pub python: String,
    pub pyjwt: String,
}

/// Runs `bench/python/handler_bench.py` with the project venv's Python.
pub fn run_python(python: &Path, script: &Path, fixture_path: &Path) -> anyhow::Result<PythonResult> {
    if !python.exists() {
        bail!("{} is missing: run `local/stack.sh venv`", python.display());
    }
    let output = std::process::Command::new(python)
        .arg(script)
        .arg(fixture_path)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("starting {}", python.display()))?;
    if !output.status.success() {
        bail!("the Python handler bench failed ({})", output.status);
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let last = text.lines().last().unwrap_or_default();
    serde_json::from_str(last).with_context(|| format!("reading the Python bench's answer: {last}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_rust_variants_answer_the_fixture_and_refuse_other_tenants() {
        let fixture = make_fixture().expect("fixture");
        let state = state_from(&fixture).expect("state");
        let authorization = format!("Bearer {}", fixture.token);
        let (status, body) = core_handle(&state, "GET", &fixture.path, &authorization);
        assert_eq!(status, 200);
        assert_eq!(serde_json::from_slice::<Value>(&body).expect("json"), fixture.tenant);

        let elsewhere = format!("/v1/tenants/{}", TenantId::generate());
        assert_eq!(core_handle(&state, "GET", &elsewhere, &authorization).0, 403);
        assert_eq!(core_handle(&state, "GET", &fixture.path, "Bearer nope").0, 401);
        assert_eq!(core_handle(&state, "POST", &fixture.path, &authorization).0, 404);

        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        let router = bench_router(state);
        let (status, body) =
            runtime.block_on(call_router(&router, request(&fixture).expect("request"))).expect("response");
        assert_eq!(status, StatusCode::OK);
        assert_eq!(serde_json::from_slice::<Value>(&body).expect("json"), fixture.tenant);
    }
}
