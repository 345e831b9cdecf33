//! Liveness (`/health`) and readiness (`/ready`: DynamoDB, SQS and ECS all answer).

use axum::extract::State;
use dotmac_http::error::ErrorEnvelope;
use dotmac_http::{Access, ApiError, ApiRoutes, ErrorCode, Routes, routes};
use dotmac_queue::SqsQueue;
use dotmac_store::Store;
use serde::Serialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;
use utoipa::ToSchema;

#[derive(Clone)]
pub struct HealthState {
    pub store: Store,
    pub provisioning: SqsQueue,
    pub ecs: aws_sdk_ecs::Client,
    pub cluster: String,
}

pub fn routes() -> Routes<HealthState> {
    Routes::new().route(Access::Public, routes!(health)).route(Access::Public, routes!(ready))
}

pub fn router(state: HealthState) -> ApiRoutes {
    routes().with_state(state)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Liveness {
    /// Always `ok`: the function answers.
    #[schema(example = "ok")]
    pub status: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// Always `ready` in a 200.
    pub status: &'static str,
    /// Each dependency (`dynamodb`, `sqs`, `ecs`) and whether it answered.
    pub checks: BTreeMap<&'static str, CheckResult>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CheckResult {
    Ok,
    Unavailable,
}

/// Liveness: the function answers.
#[utoipa::path(get, path = "/health", tag = "health", operation_id = "health",
    responses((status = 200, description = "Alive", body = Liveness)))]
async fn health() -> axum::Json<Liveness> {
    axum::Json(Liveness { status: "ok" })
}

/// Each dependency gets this long to answer before it counts as down.
const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

async fn check<E: std::fmt::Display>(probe: impl Future<Output = Result<(), E>>) -> Result<(), String> {
    match tokio::time::timeout(CHECK_TIMEOUT, probe).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("no answer within {} s", CHECK_TIMEOUT.as_secs())),
    }
}

async fn ecs_cluster_active(ecs: &aws_sdk_ecs::Client, cluster: &str) -> Result<(), String> {
    let output = ecs
        .describe_clusters()
        .clusters(cluster)
        .send()
        .await
        .map_err(|e| aws_sdk_ecs::error::DisplayErrorContext(e).to_string())?;
    match output.clusters().first().and_then(|c| c.status()) {
        Some("ACTIVE") => Ok(()),
        Some(other) => Err(format!("cluster {cluster} is {other}")),
        None => Err(format!("cluster {cluster} not found")),
    }
}

/// Readiness: DynamoDB, SQS and ECS all answer.
#[utoipa::path(get, path = "/ready", tag = "health", operation_id = "ready",
    responses(
        (status = 200, description = "Every dependency answers", body = Readiness),
        (status = 503, description = "`DEPENDENCY_UNAVAILABLE`, naming the failing ones in `details.failing`", body = ErrorEnvelope),
    ))]
async fn ready(State(state): State<HealthState>) -> Result<axum::Json<Readiness>, ApiError> {
    let (dynamodb, sqs, ecs) = tokio::join!(
        check(state.store.ping()),
        check(async { state.provisioning.approximate_depth().await.map(|_| ()) }),
        check(ecs_cluster_active(&state.ecs, &state.cluster)),
    );
    let mut checks = BTreeMap::new();
    let mut failing = Vec::new();
    for (name, result) in [("dynamodb", dynamodb), ("sqs", sqs), ("ecs", ecs)] {
        match result {
            Ok(()) => {
                checks.insert(name, CheckResult::Ok);
            }
            Err(reason) => {
                // The reason (SDK errors name accounts and roles) goes to the log only: this
                // endpoint answers anyone.
                tracing::warn!(dependency = name, %reason, "readiness check failed");
                checks.insert(name, CheckResult::Unavailable);
                failing.push(name);
            }
        }
    }
    if failing.is_empty() {
        return Ok(axum::Json(Readiness { status: "ready", checks }));
    }
    Err(ApiError::new(
        ErrorCode::DependencyUnavailable,
        format!("not ready: {} unavailable", failing.join(", ")),
    )
    .with_details(json!({ "failing": failing, "checks": checks })))
}
