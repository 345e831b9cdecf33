//! Backups, restores and container size of a tenant: use cases (plain functions over the
//! store, the job queue and the caller, each with its own error enum) and their routes.
//!
//! Who may do what (`dotmac_domain::authorize`, resource `backup`): taking a backup is
//! `create`, listing `read`, restoring `update`, each on the tenant — so platform staff
//! anywhere and a tenant's own admins (`*` on their tenant) for their tenant only; a partner
//! and a customer user never. Sizing is `update` of `tenant` with no tenant in the target,
//! which only a global scope reaches: platform staff only.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use dotmac_domain::{
    Action, BackupId, Caller, Denied, Resource, Target, TaskSize, Tenant, TenantId, TenantStatus, authorize,
    desired_size,
};
use dotmac_http::error::ErrorEnvelope;
use dotmac_http::idempotency::IdempotencyKeyHeader;
use dotmac_http::{
    ApiError, Authenticated, ErrorCode, Idempotent, Json, Page, PageQuery, Path, idempotent,
    request_fingerprint,
};
use dotmac_queue::{ProvisioningJob, SqsQueue};
use dotmac_store::{
    BackupRecord, BackupStatus, BackupTrigger, RestoreRecord, RestoreStatus, Store, StoreError,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::TenantsState;

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error(transparent)]
    Denied(#[from] Denied),
    #[error("no such tenant where you can see")]
    TenantNotFound,
    #[error("the tenant is {0}; only an active or suspended tenant has records to back up or restore")]
    NotBackedUp(TenantStatus),
    #[error("the tenant is deleted")]
    Deleted,
    #[error("no backup {0} of this tenant")]
    BackupNotFound(BackupId),
    #[error("backup {0} is {1:?}, not completed")]
    BackupNotCompleted(BackupId, BackupStatus),
    #[error("{0:?} is not a Fargate CPU/memory pair")]
    NotFargate(TaskSize),
    #[error("the job queue is unavailable: {0}")]
    QueueUnavailable(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<FleetError> for ApiError {
    fn from(error: FleetError) -> Self {
        match error {
            FleetError::Denied(denied) => denied.into(),
            FleetError::TenantNotFound => ApiError::new(ErrorCode::TenantNotFound, error.to_string()),
            FleetError::NotBackedUp(status) => ApiError::new(ErrorCode::TenantNotActive, error.to_string())
                .with_details(json!({ "status": status })),
            FleetError::Deleted => ApiError::new(ErrorCode::TenantNotActive, error.to_string())
                .with_details(json!({ "status": TenantStatus::Deleted })),
            FleetError::BackupNotFound(_) => ApiError::new(ErrorCode::BackupNotFound, error.to_string()),
            FleetError::BackupNotCompleted(_, status) => {
                ApiError::new(ErrorCode::BackupNotCompleted, error.to_string())
                    .with_details(json!({ "status": status }))
            }
            FleetError::NotFargate(_) => ApiError::invalid_field("task_size", error.to_string()),
            FleetError::QueueUnavailable(cause) => ApiError::unavailable("sqs", cause),
            FleetError::Store(error) => error.into(),
        }
    }
}

/// The tenant, if the caller's fence lets it be seen.
async fn visible_tenant(store: &Store, caller: &Caller, id: TenantId) -> Result<Tenant, FleetError> {
    match store.fenced(caller.fence()).get_tenant(id).await {
        Ok(Some(tenant)) => Ok(tenant),
        Ok(None) | Err(StoreError::OutOfFence { .. }) => Err(FleetError::TenantNotFound),
        Err(error) => Err(error.into()),
    }
}

/// Records a pending on-demand backup and queues its job. If the queue refuses the job the
/// backup is marked failed (never left pending with nothing to finish it).
pub async fn request_backup(
    store: &Store,
    queue: &SqsQueue,
    caller: &Caller,
    tenant_id: TenantId,
    now: OffsetDateTime,
) -> Result<BackupRecord, FleetError> {
    authorize(caller, Resource::Backup, Action::Create, Target::tenant(tenant_id))?;
    let tenant = visible_tenant(store, caller, tenant_id).await?;
    if !matches!(tenant.status, TenantStatus::Active | TenantStatus::Suspended) {
        return Err(FleetError::NotBackedUp(tenant.status));
    }
    let record = BackupRecord::new(
        tenant_id,
        BackupId::generate(),
        BackupTrigger::OnDemand,
        Some(caller.user_id.clone()),
        now,
    );
    let (mut record, _) = store.fenced(caller.fence()).create_backup(&record).await?;
    let job = ProvisioningJob::BackupTenant { tenant_id, backup_id: record.backup_id.clone() };
    if let Err(error) = queue.enqueue(job).await {
        record.status = BackupStatus::Failed;
        record.failure_reason = Some("its job could not be queued".into());
        if let Err(save) = store.save_backup(&mut record).await {
            tracing::error!(%tenant_id, backup_id = %record.backup_id, error = %save, "unqueued backup not marked failed");
        }
        return Err(FleetError::QueueUnavailable(error.to_string()));
    }
    Ok(record)
}

pub async fn list_backups(
    store: &Store,
    caller: &Caller,
    tenant_id: TenantId,
    limit: i32,
    cursor: Option<&str>,
) -> Result<dotmac_store::Page<BackupRecord>, FleetError> {
    authorize(caller, Resource::Backup, Action::Read, Target::tenant(tenant_id))?;
    visible_tenant(store, caller, tenant_id).await?;
    Ok(store.fenced(caller.fence()).list_backups(tenant_id, limit, cursor).await?)
}

/// Records a pending restore of a completed backup and queues its job.
pub async fn request_restore(
    store: &Store,
    queue: &SqsQueue,
    caller: &Caller,
    tenant_id: TenantId,
    backup_id: BackupId,
    now: OffsetDateTime,
) -> Result<RestoreRecord, FleetError> {
    authorize(caller, Resource::Backup, Action::Update, Target::tenant(tenant_id))?;
    let tenant = visible_tenant(store, caller, tenant_id).await?;
    if !matches!(tenant.status, TenantStatus::Active | TenantStatus::Suspended) {
        return Err(FleetError::NotBackedUp(tenant.status));
    }
    let fenced = store.fenced(caller.fence());
    let backup = fenced
        .get_backup(tenant_id, &backup_id)
        .await?
        .ok_or_else(|| FleetError::BackupNotFound(backup_id.clone()))?;
    if backup.status != BackupStatus::Completed {
        return Err(FleetError::BackupNotCompleted(backup_id, backup.status));
    }
    let restore = RestoreRecord {
        restore_id: uuid::Uuid::now_v7().to_string(),
        backup_id: backup_id.clone(),
        tenant_id,
        status: RestoreStatus::Pending,
        requested_by: Some(caller.user_id.clone()),
        created_at: now,
        completed_at: None,
        written: None,
        removed: None,
        failure_reason: None,
        version: 1,
    };
    let mut restore = fenced.create_restore(&restore).await?;
    let job = ProvisioningJob::RestoreTenant { tenant_id, backup_id, restore_id: restore.restore_id.clone() };
    if let Err(error) = queue.enqueue(job).await {
        restore.status = RestoreStatus::Failed;
        restore.failure_reason = Some("its job could not be queued".into());
        if let Err(save) = store.save_restore(&mut restore).await {
            tracing::error!(%tenant_id, error = %save, "unqueued restore not marked failed");
        }
        return Err(FleetError::QueueUnavailable(error.to_string()));
    }
    Ok(restore)
}

/// What a platform admin asks of a tenant's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeChoice {
    /// Keep whatever override there is; just check the size now.
    Check,
    /// Size it by customer count again (clears the override).
    Auto,
    /// This size, whatever the customer count says, until `Auto`.
    Fixed(TaskSize),
}

/// The tenant's sizing after a request: the override, what it runs, what it should run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sizing {
    pub tenant: Tenant,
    pub customers: Option<u64>,
    pub desired: TaskSize,
    pub queued: bool,
}

/// Stores the choice on the tenant (a version-checked save) and queues a scale job when the
/// tenant is active; the job does the resize (or nothing, when the size is right already).
pub async fn request_scale(
    store: &Store,
    queue: &SqsQueue,
    caller: &Caller,
    tenant_id: TenantId,
    choice: SizeChoice,
) -> Result<Sizing, FleetError> {
    // No tenant in the target: only a global scope (platform staff) reaches it.
    authorize(caller, Resource::Tenant, Action::Update, Target::default())?;
    if let SizeChoice::Fixed(size) = choice
        && !size.is_valid_fargate_size()
    {
        return Err(FleetError::NotFargate(size));
    }
    let mut attempts = 0;
    let tenant = loop {
        let mut record = store.get_tenant_record(tenant_id).await?.ok_or(FleetError::TenantNotFound)?;
        if record.tenant.status == TenantStatus::Deleted {
            return Err(FleetError::Deleted);
        }
        let wanted = match choice {
            SizeChoice::Check => record.tenant.task_size_override,
            SizeChoice::Auto => None,
            SizeChoice::Fixed(size) => Some(size),
        };
        if record.tenant.task_size_override == wanted {
            break record.tenant;
        }
        record.tenant.task_size_override = wanted;
        record.tenant.updated_at = OffsetDateTime::now_utc();
        match store.save_tenant(&mut record).await {
            Ok(()) => break record.tenant,
            Err(StoreError::VersionConflict { .. }) if attempts < 3 => attempts += 1,
            Err(error) => return Err(error.into()),
        }
    };
    let plan = store.get_plan(&tenant.plan).await?;
    let plan_size = plan.map(|p| p.task_size).unwrap_or(TaskSize { cpu: 256, memory_mib: 512 });
    let customers = store.latest_usage(tenant_id).await?.map(|r| r.customer_count);
    let desired = desired_size(plan_size, customers, tenant.task_size_override);
    let queued = tenant.status == TenantStatus::Active;
    if queued {
        queue
            .enqueue(ProvisioningJob::ScaleTenant { tenant_id })
            .await
            .map_err(|e| FleetError::QueueUnavailable(e.to_string()))?;
    }
    Ok(Sizing { tenant, customers, desired, queued })
}

// ------------------------------------------------------------------------------ views

/// A backup as the API shows it. Platform staff also see the ECS task and why it failed.
#[derive(Debug, Serialize, ToSchema)]
pub struct BackupView {
    #[schema(value_type = String)]
    pub backup_id: BackupId,
    #[schema(value_type = String, format = Uuid)]
    pub tenant_id: TenantId,
    pub status: BackupStatus,
    pub trigger: BackupTrigger,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub completed_at: Option<OffsetDateTime>,
    /// Items of the tenant's partition in the export, once exported.
    pub item_count: Option<u64>,
    /// SHA-256 (hex) of the compressed records object, as the manifest records it.
    pub sha256: Option<String>,
    pub compressed_bytes: Option<u64>,
    /// S3 keys, under the tenant's own prefix.
    pub records_key: String,
    pub manifest_key: String,
    /// Where the container's own data backup writes.
    pub data_prefix: String,
    /// Whether the container's data backup task was launched.
    pub data_task_launched: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_task_arn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
}

impl BackupView {
    pub fn for_caller(caller: &Caller, record: &BackupRecord) -> Self {
        let staff = caller.has_global_scope();
        BackupView {
            backup_id: record.backup_id.clone(),
            tenant_id: record.tenant_id,
            status: record.status,
            trigger: record.trigger,
            created_at: record.created_at,
            completed_at: record.completed_at,
            item_count: record.item_count,
            sha256: record.sha256.clone(),
            compressed_bytes: record.compressed_bytes,
            records_key: record.keys.records.clone(),
            manifest_key: record.keys.manifest.clone(),
            data_prefix: record.keys.data_prefix.clone(),
            data_task_launched: record.data_task_arn.is_some(),
            data_task_arn: record.data_task_arn.clone().filter(|_| staff),
            failure_reason: record.failure_reason.clone().filter(|_| staff),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RestoreView {
    pub restore_id: String,
    #[schema(value_type = String)]
    pub backup_id: BackupId,
    #[schema(value_type = String, format = Uuid)]
    pub tenant_id: TenantId,
    pub status: RestoreStatus,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
}

impl RestoreView {
    pub fn of(record: &RestoreRecord) -> Self {
        RestoreView {
            restore_id: record.restore_id.clone(),
            backup_id: record.backup_id.clone(),
            tenant_id: record.tenant_id,
            status: record.status,
            created_at: record.created_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ScaleView {
    #[schema(value_type = String, format = Uuid)]
    pub tenant_id: TenantId,
    /// The platform admin's size, when one is set (`null`: sized by customer count).
    pub task_size_override: Option<TaskSize>,
    /// The size its container runs at now.
    pub current: Option<TaskSize>,
    /// The size it should run at: the override, else the plan's size or the tier of its
    /// latest reported customer count, whichever is larger.
    pub desired: TaskSize,
    /// The latest customer count its container reported.
    pub customer_count: Option<u64>,
    /// Whether a scale job was queued (only for an active tenant).
    pub scale_queued: bool,
}

// ------------------------------------------------------------------------------ routes

fn tenant_id(raw: &str) -> Result<TenantId, ApiError> {
    TenantId::parse(raw).map_err(ApiError::from)
}

/// Back up a tenant's records now: a backup is recorded `pending` and its job queued; it
/// becomes `completed` once its export and manifest are in S3 and its container's data
/// backup task is launched.
#[utoipa::path(
    post,
    path = "/v1/tenants/{id}/backups",
    tag = "tenants",
    operation_id = "create_backup",
    params(("id" = String, Path, format = Uuid, description = "The tenant's id"), IdempotencyKeyHeader),
    responses(
        (status = 202, description = "The backup, `pending`", body = BackupView,
            headers(("idempotent-replayed" = String, description = "`true` when this is the saved answer of an earlier request with the same key"))),
        (status = 404, description = "`TENANT_NOT_FOUND`: none the caller can see", body = ErrorEnvelope),
        (status = 409, description = "`TENANT_NOT_ACTIVE` (only an active or suspended tenant is backed up), or `REQUEST_IN_PROGRESS`", body = ErrorEnvelope),
        (status = 422, description = "`IDEMPOTENCY_KEY_REUSED`", body = ErrorEnvelope),
    )
)]
pub(crate) async fn create_backup(
    State(state): State<TenantsState>,
    Authenticated(caller): Authenticated,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Idempotent<BackupView>, ApiError> {
    let id = tenant_id(&id)?;
    authorize(&caller, Resource::Backup, Action::Create, Target::tenant(id))?;
    // A key names one request to this tenant's backups: the same key elsewhere is another.
    let scope = format!("backups#{}#{id}", caller.user_id);
    let fingerprint = request_fingerprint("POST", &format!("/v1/tenants/{id}/backups"), b"");
    idempotent(&state.store, &scope, &headers, &fingerprint, || async {
        let record =
            request_backup(&state.store, &state.provisioning, &caller, id, OffsetDateTime::now_utc()).await?;
        Ok((StatusCode::ACCEPTED, BackupView::for_caller(&caller, &record)))
    })
    .await
}

/// A tenant's backups, a page at a time, in id order.
#[utoipa::path(
    get,
    path = "/v1/tenants/{id}/backups",
    tag = "tenants",
    operation_id = "list_backups",
    params(("id" = String, Path, format = Uuid, description = "The tenant's id"), PageQuery),
    responses(
        (status = 200, description = "One page", body = Page<BackupView>),
        (status = 404, description = "`TENANT_NOT_FOUND`: none the caller can see", body = ErrorEnvelope),
    )
)]
pub(crate) async fn get_backups(
    State(state): State<TenantsState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<Page<BackupView>>, ApiError> {
    let id = tenant_id(&id)?;
    let Query(query) = query.map_err(|e| ApiError::new(ErrorCode::ValidationFailed, e.body_text()))?;
    let limit = query.limit()?;
    let page = list_backups(&state.store, &caller, id, limit, query.cursor.as_deref()).await?;
    let items = page.items.iter().map(|b| BackupView::for_caller(&caller, b)).collect();
    Ok(axum::Json(Page::new(items, page.next_cursor)))
}

/// Restore a tenant's records from one of its completed backups: the manifest's checksum is
/// verified, then the partition is brought back to the backup's items exactly (items added
/// since are removed), except the tenant's profile, its backup and restore records and its
/// event log, which stay as they are.
#[utoipa::path(
    post,
    path = "/v1/tenants/{id}/backups/{backup_id}/restore",
    tag = "tenants",
    operation_id = "restore_backup",
    params(
        ("id" = String, Path, format = Uuid, description = "The tenant's id"),
        ("backup_id" = String, Path, pattern = "^[a-z0-9][a-z0-9-]{0,63}$", description = "The backup's id"),
        IdempotencyKeyHeader,
    ),
    responses(
        (status = 202, description = "The restore, `pending`", body = RestoreView,
            headers(("idempotent-replayed" = String, description = "`true` when this is the saved answer of an earlier request with the same key"))),
        (status = 404, description = "`TENANT_NOT_FOUND` or `BACKUP_NOT_FOUND`", body = ErrorEnvelope),
        (status = 409, description = "`BACKUP_NOT_COMPLETED`, `TENANT_NOT_ACTIVE` or `REQUEST_IN_PROGRESS`", body = ErrorEnvelope),
        (status = 422, description = "`VALIDATION_FAILED` (not a backup id) or `IDEMPOTENCY_KEY_REUSED`", body = ErrorEnvelope),
    )
)]
pub(crate) async fn restore_backup(
    State(state): State<TenantsState>,
    Authenticated(caller): Authenticated,
    headers: HeaderMap,
    Path((id, backup_id)): Path<(String, String)>,
) -> Result<Idempotent<RestoreView>, ApiError> {
    let id = tenant_id(&id)?;
    let backup_id = BackupId::parse(&backup_id)?;
    authorize(&caller, Resource::Backup, Action::Update, Target::tenant(id))?;
    let scope = format!("restores#{}#{id}#{backup_id}", caller.user_id);
    let fingerprint =
        request_fingerprint("POST", &format!("/v1/tenants/{id}/backups/{backup_id}/restore"), b"");
    idempotent(&state.store, &scope, &headers, &fingerprint, || async {
        let now = OffsetDateTime::now_utc();
        let restore = request_restore(&state.store, &state.provisioning, &caller, id, backup_id, now).await?;
        Ok((StatusCode::ACCEPTED, RestoreView::of(&restore)))
    })
    .await
}

/// `"auto"`: size by customer count again.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AutoSize {
    Auto,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum TaskSizeChoice {
    Auto(AutoSize),
    Fixed(TaskSize),
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScaleRequest {
    /// A Fargate CPU/memory pair to run at whatever the customer count says, or `"auto"` to
    /// size by customer count again; absent, the override is kept and the size checked now.
    #[serde(default)]
    pub task_size: Option<TaskSizeChoice>,
}

/// Set or clear a tenant's container size override (platform staff), and queue a scale job
/// that resizes the running container when its size should change: a new task definition
/// revision, the replacement task started and recorded, then the old one stopped.
#[utoipa::path(
    post,
    path = "/v1/tenants/{id}/scale",
    tag = "tenants",
    operation_id = "scale_tenant",
    params(("id" = String, Path, format = Uuid, description = "The tenant's id")),
    request_body = ScaleRequest,
    responses(
        (status = 202, description = "The tenant's sizing", body = ScaleView),
        (status = 404, description = "`TENANT_NOT_FOUND`", body = ErrorEnvelope),
        (status = 409, description = "`TENANT_NOT_ACTIVE`: the tenant is deleted", body = ErrorEnvelope),
        (status = 422, description = "`VALIDATION_FAILED`: not a Fargate CPU/memory pair", body = ErrorEnvelope),
    )
)]
pub(crate) async fn scale_tenant(
    State(state): State<TenantsState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
    Json(request): Json<ScaleRequest>,
) -> Result<(StatusCode, axum::Json<ScaleView>), ApiError> {
    let id = tenant_id(&id)?;
    let choice = match request.task_size {
        None => SizeChoice::Check,
        Some(TaskSizeChoice::Auto(AutoSize::Auto)) => SizeChoice::Auto,
        Some(TaskSizeChoice::Fixed(size)) => SizeChoice::Fixed(size),
    };
    let sizing = request_scale(&state.store, &state.provisioning, &caller, id, choice).await?;
    let view = ScaleView {
        tenant_id: id,
        task_size_override: sizing.tenant.task_size_override,
        current: sizing.tenant.container.as_ref().map(|c| c.task_size),
        desired: sizing.desired,
        customer_count: sizing.customers,
        scale_queued: sizing.queued,
    };
    Ok((StatusCode::ACCEPTED, axum::Json(view)))
}
