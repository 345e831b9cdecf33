//! The provisioner: consumes provisioning jobs and runs each tenant's dedicated container on
//! ECS (one long-running task per tenant, launched with RunTask).

pub mod backups;
mod fleet;
mod lifecycle;
mod operations;
mod reconcile;
mod rollouts;

pub use backups::{BackupStorage, Manifest, Retention};
pub use fleet::{Fleet, FleetError, LaunchedTask, OneOffTask, is_throttling};
pub use lifecycle::{Fault, Operation};
pub use operations::FaultHook;

use dotmac_config::EcsSettings;
use dotmac_domain::{Container, Tenant, TenantId, TenantStatus};
use dotmac_queue::{Delivery, JobError, JobHandler, ProvisioningJob};
use dotmac_secrets::{MachineCredentials, TenantSecrets};
use dotmac_store::{Lease, Store, StoreError, TenantRecord};
use dotmac_tokens::{Entitlements, JwtKeys, TokenError};
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

/// What one attempt spends beyond waiting for RUNNING (the secret, the plan, RunTask, the
/// saves), and so how long its lease outlives the task start timeout. The function's timeout
/// must hold both plus the SQS adapter's answer reserve (`infra/template.yaml`, checked by
/// `functions/bootstrap/tests/template.rs`).
pub const LEASE_MARGIN_SECONDS: i64 = 30;

/// What the provisioner needs to give each container its machine token.
#[derive(Clone)]
pub struct ContainerCredentials {
    pub secrets: TenantSecrets,
    pub keys: Arc<JwtKeys>,
    pub ttl_seconds: u64,
    /// Lifetime of the licenses it signs.
    pub license_ttl_seconds: u64,
}

/// How long one writer may hold a tenant's secret (`Store::claim_secret_writes`): far more
/// than a read, a signature and a put take.
const SECRET_CLAIM_SECONDS: i64 = 30;

/// The billing status every license states until the payments work sets others.
pub const BILLING_STATUS_CURRENT: &str = "current";

pub struct Provisioner {
    store: Store,
    fleet: Fleet,
    credentials: ContainerCredentials,
    /// The backup bucket; without one, backup and restore jobs fail saying so.
    backups: Option<BackupStorage>,
    /// Where the scheduled jobs queue their per-tenant jobs (this same queue).
    jobs: Option<dotmac_queue::SqsQueue>,
    /// Tests only (see `FaultHook`); `None`, and so inert, everywhere else.
    faults: Option<FaultHook>,
    /// Days a deleted tenant's secret stays recoverable.
    secret_recovery_days: i64,
    /// Tests only (`with_fault`): no setting or variable reads it, so it is never armed in a
    /// deployed function.
    fault: Option<Fault>,
    /// When this instance's next RunTask may go (see `pace_run_task`).
    next_run_task: Arc<tokio::sync::Mutex<tokio::time::Instant>>,
}

impl Provisioner {
    pub fn new(
        store: Store,
        ecs: aws_sdk_ecs::Client,
        settings: EcsSettings,
        credentials: ContainerCredentials,
    ) -> Self {
        Self {
            store,
            fleet: Fleet::new(ecs, settings),
            credentials,
            backups: None,
            jobs: None,
            faults: None,
            secret_recovery_days: 30,
            fault: None,
            next_run_task: Arc::new(tokio::sync::Mutex::new(tokio::time::Instant::now())),
        }
    }

    /// The image the tenant's container should run: the one a rollout moved it to, else the
    /// fleet's.
    pub(crate) fn image_of<'a>(&'a self, record: &'a TenantRecord) -> &'a str {
        record.image.as_deref().unwrap_or(&self.fleet.settings().image)
    }

    /// Waits for this instance's next RunTask slot: the fleet's repairs and replacements go
    /// at most `reconcile_run_tasks_per_second` a second, under ECS's RunTask rate of 20 a
    /// second (a throttle beyond that still goes through `JobError::Throttled`).
    pub(crate) async fn pace_run_task(&self) {
        let per_second = self.fleet.settings().reconcile_run_tasks_per_second.max(1);
        let gap = Duration::from_secs(1) / per_second;
        let mut next = self.next_run_task.lock().await;
        let now = tokio::time::Instant::now();
        let at = (*next).max(now);
        *next = at + gap;
        drop(next);
        tokio::time::sleep_until(at).await;
    }

    /// Backups go to this bucket.
    pub fn with_backups(mut self, storage: BackupStorage) -> Self {
        self.backups = Some(storage);
        self
    }

    /// The scheduled jobs fan out onto this queue.
    pub fn with_job_queue(mut self, queue: dotmac_queue::SqsQueue) -> Self {
        self.jobs = Some(queue);
        self
    }

    /// A test's crash points (see `FaultHook`). Nothing but tests calls it.
    pub fn with_fault_hook(mut self, hook: FaultHook) -> Self {
        self.faults = Some(hook);
        self
    }

    /// Days a deleted tenant's secret stays recoverable (Secrets Manager allows 7 to 30).
    pub fn with_secret_recovery_days(self, days: i64) -> Self {
        Self { secret_recovery_days: days, ..self }
    }

    /// Arms a fault for fault-injection tests: the operation stops (as a crashed worker
    /// would: the job fails and nothing after the step runs, its lease left in place) right
    /// after the step the fault names.
    pub fn with_fault(self, fault: Fault) -> Self {
        Self { fault: Some(fault), ..self }
    }

    pub fn fleet(&self) -> &Fleet {
        &self.fleet
    }

    async fn provision(&self, tenant_id: TenantId) -> Result<(), JobError> {
        let Some(mut record) = self.store.get_tenant_record(tenant_id).await.map_err(retry)? else {
            return Err(JobError::Discard(format!("tenant {tenant_id} does not exist")));
        };
        match record.tenant.status {
            TenantStatus::Provisioning => {}
            // A duplicate or late delivery of a job that already succeeded.
            TenantStatus::Active if record.tenant.container.is_some() => return Ok(()),
            other => {
                return Err(JobError::Discard(format!("tenant {tenant_id} is {other}, not provisioning")));
            }
        }
        let now = OffsetDateTime::now_utc();
        if record.lease.as_ref().is_some_and(|lease| lease.is_live(now)) {
            return Err(JobError::Retry("another attempt holds the provisioning lease".into()));
        }
        // Claim the work: the version check makes the claim exclusive across workers.
        let lease_seconds = i64::try_from(self.fleet.settings().task_start_timeout_seconds).unwrap_or(60)
            + LEASE_MARGIN_SECONDS;
        record.lease = Some(Lease {
            token: uuid::Uuid::new_v4().to_string(),
            expires_at: now.unix_timestamp() + lease_seconds,
        });
        match self.store.save_tenant(&mut record).await {
            Ok(()) => {}
            Err(StoreError::VersionConflict { .. }) => {
                return Err(JobError::Retry("the tenant changed while claiming it".into()));
            }
            Err(error) => return Err(retry(error)),
        }

        let client_token = record.lease.as_ref().map(|l| l.token.clone()).unwrap_or_default();
        match self.launch(&record, &client_token).await {
            Ok((container, secret_arn)) => self.finish(record, container, secret_arn).await,
            Err(error) => self.release(record, error).await,
        }
    }

    /// The tenant's secret with a machine token the container can use for a while yet
    /// (kept across retries; renewed when a quarter of its life is left) and a license
    /// stating the tenant's plan and bundles, written under the claim on the secret.
    pub(crate) async fn ensure_credentials(&self, tenant: &Tenant) -> Result<String, FleetError> {
        let dependency = |e: &dyn std::fmt::Display| FleetError::Dependency(e.to_string());
        let claim = self.claim_secret(tenant.id).await.map_err(|e| dependency(&e))?;
        let Some(claim) = claim else {
            return Err(FleetError::Dependency("another writer holds the tenant's secret".into()));
        };
        let written = self.write_credentials(tenant).await;
        self.release_secret(tenant.id, &claim).await;
        written
    }

    async fn write_credentials(&self, tenant: &Tenant) -> Result<String, FleetError> {
        let ContainerCredentials { secrets, keys, ttl_seconds, .. } = &self.credentials;
        let renew_within = i64::try_from(*ttl_seconds / 4).unwrap_or(i64::MAX);
        let ensured = secrets
            .ensure_machine_token(tenant.id, keys, *ttl_seconds, renew_within, OffsetDateTime::now_utc())
            .await
            .map_err(|e| FleetError::Dependency(e.to_string()))?;
        if let Some(old) = &ensured.replaced {
            self.revoke(old).await.map_err(|e| FleetError::Dependency(e.to_string()))?;
        }
        self.write_license(tenant).await.map_err(|e| FleetError::Dependency(e.to_string()))?;
        Ok(ensured.secret_arn)
    }

    /// Signs the license of `tenant` as it stands and writes it into its secret; `false`
    /// when the tenant has no secret yet.
    async fn write_license(&self, tenant: &Tenant) -> Result<bool, LicenseError> {
        let ContainerCredentials { secrets, keys, license_ttl_seconds, .. } = &self.credentials;
        let entitlements = Entitlements {
            tenant_id: tenant.id,
            plan: tenant.plan.to_string(),
            // Dunning's standing: a restricted (or suspended) tenant's premium bundles are off
            // until a payment clears it; the bundles themselves stay on the tenant.
            bundles: if tenant.billing_standing.keeps_bundles() {
                tenant.bundles.clone()
            } else {
                Vec::new()
            },
            billing_status: tenant.billing_standing.license_status().to_owned(),
        };
        let (license, claims) =
            keys.issue_license(&entitlements, *license_ttl_seconds, OffsetDateTime::now_utc())?;
        let written = secrets.write_license(tenant.id, &license).await?;
        if written {
            tracing::info!(tenant_id = %tenant.id, plan = %claims.plan, bundles = ?claims.bundles, jti = %claims.jti, "license issued");
        }
        Ok(written)
    }

    /// Claims the tenant's secret for this writer: its claim token, or `None` while another
    /// writer holds it.
    async fn claim_secret(&self, tenant_id: TenantId) -> Result<Option<String>, StoreError> {
        let token = uuid::Uuid::new_v4().to_string();
        let now = OffsetDateTime::now_utc();
        let claimed = self.store.claim_secret_writes(tenant_id, &token, SECRET_CLAIM_SECONDS, now).await?;
        Ok(claimed.then_some(token))
    }

    async fn release_secret(&self, tenant_id: TenantId, token: &str) {
        if let Err(error) = self.store.release_secret_writes(tenant_id, token).await {
            // It expires on its own; the next writer waits at most that long.
            tracing::warn!(%tenant_id, %error, "claim on the tenant's secret not released");
        }
    }

    /// The `IssueLicense` job: the license of the tenant as it stands now, whichever change
    /// queued it (so duplicates and late deliveries write the same thing or something newer).
    async fn issue_license(&self, tenant_id: TenantId) -> Result<(), JobError> {
        let Some(record) = self.store.get_tenant_record(tenant_id).await.map_err(retry)? else {
            return Err(JobError::Discard(format!("tenant {tenant_id} does not exist")));
        };
        let tenant = &record.tenant;
        match tenant.status {
            // Nothing runs that could read a license; provisioning issues one when it does.
            TenantStatus::Pending | TenantStatus::Deprovisioning | TenantStatus::Deleted => return Ok(()),
            // The attempt running now writes the secret itself; this job waits for it, so
            // what it writes then is the newest.
            TenantStatus::Provisioning
                if record.lease.as_ref().is_some_and(|lease| lease.is_live(OffsetDateTime::now_utc())) =>
            {
                return Err(JobError::Retry("a provisioning attempt holds the tenant".into()));
            }
            _ => {}
        }
        let Some(claim) = self.claim_secret(tenant_id).await.map_err(retry)? else {
            return Err(JobError::Retry("another writer holds the tenant's secret".into()));
        };
        // Read again under the claim: a change committed before the claim is in this license.
        let written = match self.store.get_tenant(tenant_id).await {
            Ok(Some(now)) => self.write_license(&now).await.map_err(|e| JobError::Retry(e.to_string())),
            Ok(None) => Err(JobError::Discard(format!("tenant {tenant_id} does not exist"))),
            Err(error) => Err(retry(error)),
        };
        self.release_secret(tenant_id, &claim).await;
        match written? {
            true => Ok(()),
            // No secret yet: the provisioning that creates it issues the license.
            false => {
                tracing::info!(%tenant_id, status = %tenant.status, "no tenant secret yet; provisioning will issue the license");
                Ok(())
            }
        }
    }

    /// Puts a machine token on the deny-list: it stops working at once, everywhere.
    pub(crate) async fn revoke(&self, credentials: &MachineCredentials) -> Result<(), StoreError> {
        dotmac_tokens::revoke_token(&self.store, &credentials.token_id, credentials.expires_at).await
    }

    /// A failed tenant's container credentials are revoked with it.
    async fn revoke_credentials(&self, tenant_id: TenantId) {
        match self.credentials.secrets.read(tenant_id).await {
            Ok(Some(credentials)) => {
                if let Err(error) = self.revoke(&credentials).await {
                    tracing::error!(%tenant_id, %error, "machine token of a failed tenant not revoked");
                }
            }
            Ok(None) => {}
            Err(error) => tracing::error!(%tenant_id, %error, "machine token of a failed tenant not read"),
        }
    }

    /// Runs the tenant's task (adopting one that already runs) and waits until it does.
    /// `client_token` names the attempt to RunTask, so a repeated call returns its task.
    async fn launch(
        &self,
        record: &TenantRecord,
        client_token: &str,
    ) -> Result<(Container, String), FleetError> {
        let tenant = &record.tenant;
        let secret_arn = self.ensure_credentials(tenant).await?;
        let plan = self
            .store
            .get_plan(&tenant.plan)
            .await
            .map_err(|e| FleetError::Dependency(e.to_string()))?
            .ok_or_else(|| FleetError::Invalid(format!("plan {} does not exist", tenant.plan)))?;
        // A task left by an earlier attempt (or a duplicate delivery) is adopted, not doubled.
        let task = match self.fleet.find_tenant_task(tenant.id).await? {
            Some(task) => {
                tracing::info!(tenant_id = %tenant.id, task_arn = %task.task_arn, "adopting the tenant's existing task");
                task
            }
            None => {
                self.fleet
                    .launch_image(tenant, plan.task_size, client_token, &secret_arn, record.image.as_deref())
                    .await?
            }
        };
        let timeout = Duration::from_secs(self.fleet.settings().task_start_timeout_seconds);
        let running = self.fleet.wait_until_running(&task.task_arn, timeout).await?;
        let container = Container {
            cluster_arn: running.cluster_arn,
            task_arn: running.task_arn,
            task_definition_arn: running.task_definition_arn,
            task_size: plan.task_size,
            last_status: running.last_status,
            endpoint: running.private_ip.map(|ip| format!("http://{ip}:{}", fleet::CONTAINER_PORT)),
            started_at: OffsetDateTime::now_utc(),
        };
        Ok((container, secret_arn))
    }

    async fn finish(
        &self,
        mut record: TenantRecord,
        container: Container,
        secret_arn: String,
    ) -> Result<(), JobError> {
        let now = OffsetDateTime::now_utc();
        let tenant_id = record.tenant.id;
        let event = record
            .tenant
            .activate(container, secret_arn, now)
            .map_err(|e| JobError::Discard(e.to_string()))?;
        record.lease = None;
        self.store.transition_tenant(&mut record, event).await.map_err(retry)?;
        tracing::info!(%tenant_id, "tenant active");
        Ok(())
    }

    /// Keeps the reason on the tenant and frees the lease, so the next attempt starts at once.
    async fn release(&self, mut record: TenantRecord, error: FleetError) -> Result<(), JobError> {
        let reason = error.to_string();
        let throttled = matches!(error, FleetError::Throttled { .. });
        record.lease = None;
        record.tenant.failure_reason = Some(reason.clone());
        record.tenant.updated_at = OffsetDateTime::now_utc();
        if let Err(save) = self.store.save_tenant(&mut record).await {
            tracing::warn!(tenant_id = %record.tenant.id, error = %save, "failure reason not recorded; the lease will expire");
        }
        Err(if throttled { JobError::Throttled(reason) } else { JobError::Retry(reason) })
    }

    /// The attempt SQS will not repeat: whatever made it fail, the tenant becomes `failed`
    /// with the reason kept, and only once that is saved are its tasks stopped (so a tenant
    /// that another attempt brought up is never touched).
    async fn give_up(&self, tenant_id: TenantId, reason: &str) {
        for _ in 0..3 {
            let record = match self.store.get_tenant_record(tenant_id).await {
                Ok(Some(record)) if record.tenant.status == TenantStatus::Provisioning => record,
                Ok(_) => return,
                Err(error) => {
                    tracing::error!(%tenant_id, %error, "could not load the tenant to mark it failed");
                    continue;
                }
            };
            let mut record = record;
            let now = OffsetDateTime::now_utc();
            let Ok(event) = record.tenant.fail(reason, now) else { return };
            record.lease = None;
            match self.store.transition_tenant(&mut record, event).await {
                Ok(_) => {
                    tracing::warn!(%tenant_id, %reason, "provisioning failed for good; the job goes to the DLQ");
                    if let Err(stop) = self.fleet.stop_tenant_tasks(tenant_id, "provisioning failed").await {
                        tracing::error!(%tenant_id, error = %stop, "task of a failed tenant not stopped");
                    }
                    self.revoke_credentials(tenant_id).await;
                    return;
                }
                Err(StoreError::VersionConflict { .. }) => continue,
                Err(error) => tracing::error!(%tenant_id, %error, "could not mark the tenant failed"),
            }
        }
    }
}

/// Why a license was not written.
#[derive(Debug, thiserror::Error)]
pub enum LicenseError {
    #[error("signing the license: {0}")]
    Signing(#[from] TokenError),
    #[error(transparent)]
    Secret(#[from] dotmac_secrets::SecretsError),
}

pub(crate) fn retry(error: StoreError) -> JobError {
    JobError::Retry(error.to_string())
}

impl JobHandler<ProvisioningJob> for Provisioner {
    async fn handle(&self, job: ProvisioningJob, delivery: &Delivery) -> Result<(), JobError> {
        match job {
            ProvisioningJob::ProvisionTenant { tenant_id } => {
                let outcome = self.provision(tenant_id).await;
                if let Some(reason) = final_retry(&outcome, delivery) {
                    self.give_up(tenant_id, reason).await;
                }
                outcome
            }
            ProvisioningJob::SuspendTenant { tenant_id } => {
                let outcome = self.suspend(tenant_id, delivery).await;
                if let Some(reason) = final_retry(&outcome, delivery) {
                    self.note_failure(tenant_id, reason).await;
                }
                outcome
            }
            ProvisioningJob::ResumeTenant { tenant_id, version } => {
                let outcome = self.resume(tenant_id, version, delivery).await;
                if let Some(reason) = final_retry(&outcome, delivery) {
                    self.note_failure(tenant_id, reason).await;
                }
                outcome
            }
            ProvisioningJob::DeprovisionTenant { tenant_id } => {
                let outcome = self.deprovision(tenant_id, delivery).await;
                if let Some(reason) = final_retry(&outcome, delivery) {
                    self.give_up_deleting(tenant_id, reason).await;
                }
                outcome
            }
            // A license not written stays as it was; the next change queues another.
            ProvisioningJob::IssueLicense { tenant_id } => self.issue_license(tenant_id).await,
            ProvisioningJob::BackupTenant { tenant_id, backup_id } => {
                let outcome = self.backup(tenant_id, &backup_id).await;
                if let Some(reason) = final_failure(&outcome, delivery) {
                    self.backup_failed(tenant_id, &backup_id, reason).await;
                }
                outcome
            }
            ProvisioningJob::RestoreTenant { tenant_id, backup_id, restore_id } => {
                let outcome = self.restore(tenant_id, &backup_id, &restore_id).await;
                if let Some(reason) = final_failure(&outcome, delivery) {
                    self.restore_failed(tenant_id, &restore_id, reason).await;
                }
                outcome
            }
            ProvisioningJob::ScaleTenant { tenant_id } => self.scale(tenant_id).await,
            ProvisioningJob::ScheduledBackups { scheduled_at } => self.scheduled_backups(&scheduled_at).await,
            ProvisioningJob::ScheduledScaling {} => self.scheduled_scaling().await,
            ProvisioningJob::PruneBackups { tenant_id } => self.prune_backups(tenant_id).await,
            ProvisioningJob::ReconcileFleet { scheduled_at, cursor } => {
                self.reconcile_fleet(&scheduled_at, cursor.as_deref()).await.map(|_| ())
            }
            ProvisioningJob::ReconcileTenant { tenant_id } => {
                self.reconcile_tenant(tenant_id).await.map(|_| ())
            }
            ProvisioningJob::RolloutBatch { rollout_id } => self.rollout_batch(&rollout_id, delivery).await,
        }
    }
}

/// The reason of a retryable failure on the job's last receive: the tenant is then marked as
/// the job left it. A throttle the adapter will re-send is not the end, even on the last
/// receive (`ends_the_job` knows), so the tenant stays as it is for the re-sent copy.
fn final_retry<'a>(outcome: &'a Result<(), JobError>, delivery: &Delivery) -> Option<&'a str> {
    match outcome {
        Err(error @ (JobError::Retry(reason) | JobError::Throttled(reason)))
            if delivery.ends_the_job(error) =>
        {
            Some(reason)
        }
        _ => None,
    }
}

/// As `final_retry`, a discard included: a backup or restore that will never run is recorded
/// as failed, whatever ended it.
fn final_failure<'a>(outcome: &'a Result<(), JobError>, delivery: &Delivery) -> Option<&'a str> {
    match outcome {
        Err(error @ JobError::Discard(reason)) if delivery.ends_the_job(error) => Some(reason),
        other => final_retry(other, delivery),
    }
}
