//! Liveness (`/health`) and readiness (`/ready`: DynamoDB, SQS and ECS all answer).

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use dotmac_http::{Access, ApiError, ApiRoutes, ErrorCode, Routes};
use dotmac_queue::SqsQueue;
use dotmac_store::Store;
use serde_json::{Map, Value, json};
use std::future::Future;
use std::time::Duration;

#[derive(Clone)]
pub struct HealthState {
    pub store: Store,
    pub provisioning: SqsQueue,
    pub ecs: aws_sdk_ecs::Client,
    pub cluster: String,
}

pub fn router(state: HealthState) -> ApiRoutes {
    Routes::new()
        .route(Method::GET, "/health", Access::Public, health)
        .route(Method::GET, "/ready", Access::Public, ready)
        .with_state(state)
}

async fn health() -> axum::Json<Value> {
    axum::Json(json!({ "status": "ok" }))
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

async fn ready(State(state): State<HealthState>) -> Response {
    let (dynamodb, sqs, ecs) = tokio::join!(
        check(state.store.ping()),
        check(async { state.provisioning.approximate_depth().await.map(|_| ()) }),
        check(ecs_cluster_active(&state.ecs, &state.cluster)),
    );
    let mut checks = Map::new();
    let mut failing = Vec::new();
    for (name, result) in [("dynamodb", dynamodb), ("sqs", sqs), ("ecs", ecs)] {
        match result {
            Ok(()) => {
                checks.insert(name.into(), json!("ok"));
            }
            Err(reason) => {
                // The reason (SDK errors name accounts and roles) goes to the log only: this
                // endpoint answers anyone.
                tracing::warn!(dependency = name, %reason, "readiness check failed");
                checks.insert(name.into(), json!("unavailable"));
                failing.push(name);
            }
        }
    }
    if failing.is_empty() {
        return (StatusCode::OK, axum::Json(json!({ "status": "ready", "checks": checks }))).into_response();
    }
    ApiError::new(ErrorCode::DependencyUnavailable, format!("not ready: {} unavailable", failing.join(", ")))
        .with_details(json!({ "failing": failing, "checks": checks }))
        .into_response()
}
