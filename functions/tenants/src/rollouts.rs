//! Rolling image updates of the fleet (platform staff only): start one, read its progress,
//! pause and resume it. The provisioner's `RolloutBatch` job does the moving.
//!
//! Who: `update` of `tenant` with no tenant in the target, which only a global scope reaches.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use dotmac_domain::{Action, Caller, Denied, Resource, Target, TenantId, authorize};
use dotmac_http::error::ErrorEnvelope;
use dotmac_http::idempotency::IdempotencyKeyHeader;
use dotmac_http::{
    ApiError, Authenticated, ErrorCode, Idempotent, Json, Path, idempotent, request_fingerprint,
};
use dotmac_queue::{ProvisioningJob, SqsQueue};
use dotmac_store::{Rollout, RolloutStatus, Store, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::TenantsState;

/// Most tenants one batch moves.
pub const MAX_BATCH_SIZE: u32 = 100;
/// More failures than this is no threshold at all (and beyond what JSON integers carry safely).
pub const MAX_FAILURE_THRESHOLD: u64 = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    #[error(transparent)]
    Denied(#[from] Denied),
    #[error("no rollout {0}")]
    NotFound(String),
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("the rollout is {0:?}")]
    State(RolloutStatus),
    #[error("the job queue is unavailable: {0}")]
    QueueUnavailable(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<RolloutError> for ApiError {
    fn from(error: RolloutError) -> Self {
        match error {
            RolloutError::Denied(denied) => denied.into(),
            RolloutError::NotFound(_) => ApiError::new(ErrorCode::RolloutNotFound, error.to_string()),
            RolloutError::Invalid { field, reason } => ApiError::invalid_field(field, reason),
            RolloutError::State(status) => ApiError::new(ErrorCode::RolloutStateConflict, error.to_string())
                .with_details(json!({ "status": status })),
            RolloutError::QueueUnavailable(cause) => ApiError::unavailable("sqs", cause),
            RolloutError::Store(error) => error.into(),
        }
    }
}

fn staff_only(caller: &Caller) -> Result<(), RolloutError> {
    // No tenant in the target: only a global scope (platform staff) reaches it.
    Ok(authorize(caller, Resource::Tenant, Action::Update, Target::default())?)
}

/// A validated rollout request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRollout {
    pub image: String,
    pub batch_size: u32,
    pub failure_threshold: u64,
}

impl NewRollout {
    pub fn parse(request: &RolloutRequest) -> Result<Self, RolloutError> {
        let image = request.image.trim();
        // An image reference: registry/name[:tag][@digest], no spaces, not absurdly long.
        if image.is_empty() || image.len() > 255 || image.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(RolloutError::Invalid {
                field: "image",
                reason: "must be an image reference".into(),
            });
        }
        if !(1..=MAX_BATCH_SIZE).contains(&request.batch_size) {
            return Err(RolloutError::Invalid {
                field: "batch_size",
                reason: format!("must be from 1 to {MAX_BATCH_SIZE}"),
            });
        }
        let failure_threshold = request.failure_threshold.unwrap_or(0);
        if failure_threshold > MAX_FAILURE_THRESHOLD {
            return Err(RolloutError::Invalid {
                field: "failure_threshold",
                reason: format!("must be from 0 to {MAX_FAILURE_THRESHOLD}"),
            });
        }
        Ok(NewRollout { image: image.to_owned(), batch_size: request.batch_size, failure_threshold })
    }
}

/// Records a running rollout (its total: the tenants there are now) and queues its first batch.
pub async fn start_rollout(
    store: &Store,
    queue: &SqsQueue,
    caller: &Caller,
    request: NewRollout,
    now: OffsetDateTime,
) -> Result<Rollout, RolloutError> {
    staff_only(caller)?;
    let mut total = 0u64;
    let mut cursor: Option<String> = None;
    loop {
        let page = store.list_tenants(100, cursor.as_deref()).await?;
        total += page.items.len() as u64;
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let rollout = Rollout {
        id: uuid::Uuid::now_v7().to_string(),
        image: request.image,
        batch_size: request.batch_size,
        failure_threshold: request.failure_threshold,
        status: RolloutStatus::Running,
        total,
        updated: 0,
        skipped: 0,
        failed: 0,
        failures: Vec::new(),
        batch_number: 0,
        current_batch: Vec::new(),
        cursor: None,
        walked: false,
        reason: None,
        created_by: caller.user_id.clone(),
        created_at: now,
        updated_at: now,
        version: 1,
    };
    store.create_rollout(&rollout).await?;
    queue
        .enqueue(ProvisioningJob::RolloutBatch { rollout_id: rollout.id.clone() })
        .await
        .map_err(|e| RolloutError::QueueUnavailable(e.to_string()))?;
    Ok(rollout)
}

pub async fn get_rollout(store: &Store, caller: &Caller, id: &str) -> Result<Rollout, RolloutError> {
    staff_only(caller)?;
    store.get_rollout(id).await?.ok_or_else(|| RolloutError::NotFound(id.to_owned()))
}

/// Pauses (`pause`) or resumes a rollout: a version-checked save; resuming queues the next
/// batch (a batch in flight when it was paused finishes either way). Repeating either is a
/// no-op answering the rollout as it is.
pub async fn set_paused(
    store: &Store,
    queue: &SqsQueue,
    caller: &Caller,
    id: &str,
    pause: bool,
) -> Result<Rollout, RolloutError> {
    staff_only(caller)?;
    for _ in 0..5 {
        let mut rollout =
            store.get_rollout(id).await?.ok_or_else(|| RolloutError::NotFound(id.to_owned()))?;
        let (from, to) = if pause {
            (RolloutStatus::Running, RolloutStatus::Paused)
        } else {
            (RolloutStatus::Paused, RolloutStatus::Running)
        };
        if rollout.status == to {
            return Ok(rollout);
        }
        if rollout.status != from {
            return Err(RolloutError::State(rollout.status));
        }
        rollout.status = to;
        rollout.updated_at = OffsetDateTime::now_utc();
        match store.save_rollout(&mut rollout).await {
            Ok(()) => {}
            // A batch counted a tenant meanwhile: read it again.
            Err(StoreError::VersionConflict { .. }) => continue,
            Err(error) => return Err(error.into()),
        }
        if !pause {
            queue
                .enqueue(ProvisioningJob::RolloutBatch { rollout_id: id.to_owned() })
                .await
                .map_err(|e| RolloutError::QueueUnavailable(e.to_string()))?;
        }
        return Ok(rollout);
    }
    Err(RolloutError::Store(StoreError::VersionConflict { expected: 0 }))
}

// ------------------------------------------------------------------------------ views

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RolloutRequest {
    /// The ISP framework image to move the active tenants to (`registry/name:tag`).
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"^\S+$",
        example = "registry.example/isp-framework:2.0.0"
    )]
    pub image: String,
    /// Tenants examined per batch (1–100): the active ones are moved, the others skipped.
    #[schema(minimum = 1, maximum = 100)]
    pub batch_size: u32,
    /// Failures tolerated; one more stops the rollout with status `failed` (default 0).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 100000)]
    pub failure_threshold: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RolloutFailureView {
    #[schema(value_type = String, format = Uuid)]
    pub tenant_id: TenantId,
    pub reason: String,
}

/// A rollout's progress.
#[derive(Debug, Serialize, ToSchema)]
pub struct RolloutView {
    pub id: String,
    pub image: String,
    pub status: RolloutStatus,
    pub batch_size: u32,
    pub failure_threshold: u64,
    /// Tenants there were when it started (more if the walk met more).
    pub total: u64,
    pub updated: u64,
    /// Suspended, deleted or not yet provisioned tenants: nothing to replace.
    pub skipped: u64,
    pub failed: u64,
    /// The first failures, with their reasons.
    pub failures: Vec<RolloutFailureView>,
    /// The number of the batch in flight or last run.
    pub current_batch: u32,
    /// The tenants of the batch in flight.
    #[schema(value_type = Vec<String>)]
    pub batch_tenants: Vec<TenantId>,
    /// Why it failed, when it did.
    pub reason: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: OffsetDateTime,
}

impl RolloutView {
    pub fn of(rollout: &Rollout) -> Self {
        RolloutView {
            id: rollout.id.clone(),
            image: rollout.image.clone(),
            status: rollout.status,
            batch_size: rollout.batch_size,
            failure_threshold: rollout.failure_threshold,
            total: rollout.total,
            updated: rollout.updated,
            skipped: rollout.skipped,
            failed: rollout.failed,
            failures: rollout
                .failures
                .iter()
                .map(|f| RolloutFailureView { tenant_id: f.tenant_id, reason: f.reason.clone() })
                .collect(),
            current_batch: rollout.batch_number,
            batch_tenants: rollout.current_batch.clone(),
            reason: rollout.reason.clone(),
            created_at: rollout.created_at,
            updated_at: rollout.updated_at,
        }
    }
}

// ------------------------------------------------------------------------------ routes

/// Start a rolling image update (platform staff): the active tenants are moved to the image
/// batch by batch (a new task definition revision, the replacement started, recorded, the
/// old task stopped); suspended and deleted tenants are skipped.
#[utoipa::path(
    post,
    path = "/v1/fleet/rollouts",
    tag = "fleet",
    operation_id = "start_rollout",
    params(IdempotencyKeyHeader),
    request_body = RolloutRequest,
    responses(
        (status = 202, description = "The rollout, `running`", body = RolloutView,
            headers(("idempotent-replayed" = String, description = "`true` when this is the saved answer of an earlier request with the same key"))),
        (status = 403, description = "`FORBIDDEN`: platform staff only", body = ErrorEnvelope),
        (status = 409, description = "`REQUEST_IN_PROGRESS`", body = ErrorEnvelope),
        (status = 422, description = "`VALIDATION_FAILED` or `IDEMPOTENCY_KEY_REUSED`", body = ErrorEnvelope),
    )
)]
pub(crate) async fn create_rollout(
    State(state): State<TenantsState>,
    Authenticated(caller): Authenticated,
    headers: HeaderMap,
    Json(request): Json<RolloutRequest>,
) -> Result<Idempotent<RolloutView>, ApiError> {
    staff_only(&caller)?;
    let parsed = NewRollout::parse(&request)?;
    let scope = format!("rollouts#{}", caller.user_id);
    let body = format!("{}|{}|{}", parsed.image, parsed.batch_size, parsed.failure_threshold);
    let fingerprint = request_fingerprint("POST", "/v1/fleet/rollouts", body.as_bytes());
    idempotent(&state.store, &scope, &headers, &fingerprint, || async {
        let now = OffsetDateTime::now_utc();
        let rollout = start_rollout(&state.store, &state.provisioning, &caller, parsed, now).await?;
        Ok((StatusCode::ACCEPTED, RolloutView::of(&rollout)))
    })
    .await
}

/// A rollout's progress (platform staff).
#[utoipa::path(
    get,
    path = "/v1/fleet/rollouts/{id}",
    tag = "fleet",
    operation_id = "get_rollout",
    params(("id" = String, Path, description = "The rollout's id")),
    responses(
        (status = 200, description = "The rollout", body = RolloutView),
        (status = 403, description = "`FORBIDDEN`: platform staff only", body = ErrorEnvelope),
        (status = 404, description = "`ROLLOUT_NOT_FOUND`", body = ErrorEnvelope),
    )
)]
pub(crate) async fn show_rollout(
    State(state): State<TenantsState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> Result<axum::Json<RolloutView>, ApiError> {
    let rollout = get_rollout(&state.store, &caller, &id).await?;
    Ok(axum::Json(RolloutView::of(&rollout)))
}

/// Pause a running rollout (platform staff): the batch in flight finishes, no next one starts.
#[utoipa::path(
    post,
    path = "/v1/fleet/rollouts/{id}/pause",
    tag = "fleet",
    operation_id = "pause_rollout",
    params(("id" = String, Path, description = "The rollout's id")),
    responses(
        (status = 200, description = "The rollout, `paused`", body = RolloutView),
        (status = 403, description = "`FORBIDDEN`: platform staff only", body = ErrorEnvelope),
        (status = 404, description = "`ROLLOUT_NOT_FOUND`", body = ErrorEnvelope),
        (status = 409, description = "`ROLLOUT_STATE_CONFLICT`: completed or failed", body = ErrorEnvelope),
    )
)]
pub(crate) async fn pause_rollout(
    State(state): State<TenantsState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> Result<axum::Json<RolloutView>, ApiError> {
    let rollout = set_paused(&state.store, &state.provisioning, &caller, &id, true).await?;
    Ok(axum::Json(RolloutView::of(&rollout)))
}

/// Resume a paused rollout (platform staff): its next batch is queued.
#[utoipa::path(
    post,
    path = "/v1/fleet/rollouts/{id}/resume",
    tag = "fleet",
    operation_id = "resume_rollout",
    params(("id" = String, Path, description = "The rollout's id")),
    responses(
        (status = 200, description = "The rollout, `running`", body = RolloutView),
        (status = 403, description = "`FORBIDDEN`: platform staff only", body = ErrorEnvelope),
        (status = 404, description = "`ROLLOUT_NOT_FOUND`", body = ErrorEnvelope),
        (status = 409, description = "`ROLLOUT_STATE_CONFLICT`: completed or failed", body = ErrorEnvelope),
    )
)]
pub(crate) async fn resume_rollout(
    State(state): State<TenantsState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> Result<axum::Json<RolloutView>, ApiError> {
    let rollout = set_paused(&state.store, &state.provisioning, &caller, &id, false).await?;
    Ok(axum::Json(RolloutView::of(&rollout)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(image: &str, batch_size: u32) -> RolloutRequest {
        RolloutRequest { image: image.into(), batch_size, failure_threshold: None }
    }

    #[test]
    fn a_rollout_request_is_parsed() {
        let parsed = NewRollout::parse(&request(" registry/isp:2.0 ", 5)).expect("valid");
        assert_eq!(
            parsed,
            NewRollout { image: "registry/isp:2.0".into(), batch_size: 5, failure_threshold: 0 }
        );
        for (image, size) in [("", 5), ("a b", 5), ("img:1", 0), ("img:1", MAX_BATCH_SIZE + 1)] {
            assert!(NewRollout::parse(&request(image, size)).is_err(), "{image:?} {size}");
        }
        let threshold = |n| RolloutRequest { failure_threshold: Some(n), ..request("img:1", 5) };
        assert_eq!(
            NewRollout::parse(&threshold(MAX_FAILURE_THRESHOLD)).expect("at the bound").failure_threshold,
            MAX_FAILURE_THRESHOLD
        );
        assert!(NewRollout::parse(&threshold(MAX_FAILURE_THRESHOLD + 1)).is_err());
        assert!(NewRollout::parse(&threshold(1 << 63)).is_err(), "past JSON's safe integers");
    }

    #[test]
    fn only_platform_staff_may_roll_out() {
        use dotmac_domain::Role;
        assert!(staff_only(&Caller::new("s", None, &[Role::PlatformAdmin])).is_ok());
        let tenant = TenantId::generate();
        assert!(staff_only(&Caller::new("a", Some(tenant), &[Role::TenantAdmin])).is_err());
    }
}
