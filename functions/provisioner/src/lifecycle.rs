//! Suspend, resume and delete, as the provisioner runs them. Each job converges ECS, Secrets
//! Manager and the record to the tenant's status as the use case left it, and each step
//! first reads back what is already done (ECS's task list by `startedBy`, the task
//! definition revisions still active, the secret's state), so a retry after a crash at any
//! point carries on where the last attempt stopped: no second task, no orphan.
//!
//! One job at a time works on a tenant: each claims the tenant's lease (a version-checked
//! write) before touching anything. The lease is named after the job, so a redelivery of the
//! same job (its earlier attempt crashed) takes it over at once instead of waiting for it to
//! expire; two copies of one job running together are harmless, every step being idempotent
//! (RunTask carries a client token).

use dotmac_domain::{Container, TenantId, TenantStatus};
use dotmac_queue::{Delivery, JobError};
use dotmac_secrets::SecretState;
use dotmac_store::{Lease, StoreError, TenantRecord};
use time::OffsetDateTime;

use crate::fleet::FleetError;
use crate::{LEASE_MARGIN_SECONDS, Provisioner, retry};

/// The operations a fault can be injected into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// 1: the tenant's tasks stopped; 2: the record says so.
    Suspend,
    /// 1: the secret (its machine token) ensured; 2: the task started or adopted; 3: it
    /// runs; 4: the record says so.
    Resume,
    /// 1: tasks stopped; 2: task definition revisions deregistered; 3: machine token
    /// revoked; 4: secret deleted (recovery window); 5: the tenant marked `deleted`.
    Deprovision,
}

/// "Crash right after step `after_step` of `operation`" (see `Provisioner::with_fault`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    pub operation: Operation,
    pub after_step: u32,
}

fn fleet(error: FleetError) -> JobError {
    match error {
        FleetError::Throttled { .. } => JobError::Throttled(error.to_string()),
        other => JobError::Retry(other.to_string()),
    }
}

fn dependency(error: impl std::fmt::Display) -> JobError {
    JobError::Retry(error.to_string())
}

/// What names this job's attempts: its id (the same on every redelivery), else the message.
fn job_key(delivery: &Delivery) -> String {
    delivery.job_id.map(|id| id.to_string()).unwrap_or_else(|| delivery.message_id.clone())
}

impl Provisioner {
    /// The injected crash, if this is its step.
    fn checkpoint(&self, operation: Operation, step: u32) -> Result<(), JobError> {
        match self.fault {
            Some(fault) if fault.operation == operation && fault.after_step == step => {
                tracing::warn!(?operation, step, "injected fault: stopping as a crashed worker would");
                Err(JobError::Retry(format!("injected fault after step {step} of {operation:?}")))
            }
            _ => Ok(()),
        }
    }

    async fn load(&self, tenant_id: TenantId) -> Result<TenantRecord, JobError> {
        self.store
            .get_tenant_record(tenant_id)
            .await
            .map_err(retry)?
            .ok_or_else(|| JobError::Discard(format!("tenant {tenant_id} does not exist")))
    }

    /// Takes the tenant's lease for this job (see the module's doc).
    async fn claim(&self, record: TenantRecord, delivery: &Delivery) -> Result<TenantRecord, JobError> {
        self.claim_as(record, job_key(delivery)).await
    }

    /// `claim` under a lease token of the caller's (a reconcile names its repair).
    pub(crate) async fn claim_as(
        &self,
        mut record: TenantRecord,
        token: String,
    ) -> Result<TenantRecord, JobError> {
        let now = OffsetDateTime::now_utc();
        if record.lease.as_ref().is_some_and(|lease| lease.is_live(now) && lease.token != token) {
            return Err(JobError::Retry("another job holds the tenant's lease".into()));
        }
        let seconds = i64::try_from(self.fleet.settings().task_start_timeout_seconds).unwrap_or(60)
            + LEASE_MARGIN_SECONDS;
        record.lease = Some(Lease { token, expires_at: now.unix_timestamp() + seconds });
        match self.store.save_tenant(&mut record).await {
            Ok(()) => Ok(record),
            Err(StoreError::VersionConflict { .. }) => {
                Err(JobError::Retry("the tenant changed while claiming it".into()))
            }
            Err(error) => Err(retry(error)),
        }
    }

    /// Frees the lease this job holds after a failed attempt, so the next job need not wait
    /// for it to expire (best effort: it expires anyway).
    async fn let_go(&self, tenant_id: TenantId, delivery: &Delivery) {
        self.let_go_of(tenant_id, &job_key(delivery)).await
    }

    /// `let_go` of the lease `token` names.
    pub(crate) async fn let_go_of(&self, tenant_id: TenantId, token: &str) {
        for _ in 0..3 {
            let Ok(Some(mut record)) = self.store.get_tenant_record(tenant_id).await else { return };
            if record.lease.as_ref().is_none_or(|lease| lease.token != token) {
                return;
            }
            record.lease = None;
            match self.store.save_tenant(&mut record).await {
                Err(StoreError::VersionConflict { .. }) => continue,
                _ => return,
            }
        }
    }

    /// Runs `work` under the tenant's lease; a failure that is not an injected crash frees it.
    async fn leased<F, Fut>(&self, record: TenantRecord, delivery: &Delivery, work: F) -> Result<(), JobError>
    where
        F: FnOnce(TenantRecord) -> Fut,
        Fut: std::future::Future<Output = Result<(), JobError>>,
    {
        let tenant_id = record.tenant.id;
        let record = self.claim(record, delivery).await?;
        let outcome = work(record).await;
        if let Err(error) = &outcome
            && !error.to_string().contains("injected fault")
        {
            self.let_go(tenant_id, delivery).await;
        }
        outcome
    }

    /// Saves the record the job finished with; a conflict (the tenant changed meanwhile, say
    /// a resume right after a suspend) is retried, and the retry converges to the new status.
    async fn save_finished(&self, mut record: TenantRecord) -> Result<(), JobError> {
        record.lease = None;
        match self.store.save_tenant(&mut record).await {
            Ok(()) => Ok(()),
            Err(StoreError::VersionConflict { .. }) => {
                Err(JobError::Retry("the tenant changed meanwhile".into()))
            }
            Err(error) => Err(retry(error)),
        }
    }

    /// Stops a suspended tenant's task. Its secret, task definition and data stay.
    pub(crate) async fn suspend(&self, tenant_id: TenantId, delivery: &Delivery) -> Result<(), JobError> {
        let record = self.load(tenant_id).await?;
        if record.tenant.status != TenantStatus::Suspended {
            tracing::info!(%tenant_id, status = %record.tenant.status, "not suspended (any more): nothing to stop");
            return Ok(());
        }
        self.leased(record, delivery, |mut record| async move {
            let stopped = self.fleet.stop_tenant_tasks(tenant_id, "tenant suspended").await.map_err(fleet)?;
            self.checkpoint(Operation::Suspend, 1)?;
            if let Some(container) = record.tenant.container.as_mut() {
                container.last_status = "STOPPED".into();
            }
            record.tenant.updated_at = OffsetDateTime::now_utc();
            self.save_finished(record).await?;
            self.checkpoint(Operation::Suspend, 2)?;
            tracing::info!(%tenant_id, stopped, "suspended tenant's compute stopped");
            Ok(())
        })
        .await
    }

    /// Runs an active tenant's task again, with the same task family and secret.
    pub(crate) async fn resume(
        &self,
        tenant_id: TenantId,
        version: u64,
        delivery: &Delivery,
    ) -> Result<(), JobError> {
        let record = self.load(tenant_id).await?;
        if record.tenant.status != TenantStatus::Active {
            tracing::info!(%tenant_id, status = %record.tenant.status, "not active (any more): nothing to start");
            return Ok(());
        }
        // Named after the resume (the version it left), so each resume's RunTask is its own and
        // every attempt of the same resume is the same call.
        let client_token = format!("resume-{version}-{tenant_id}");
        self.leased(record, delivery, |mut record| async move {
            // The task this tenant runs now, if any: a duplicate, or an earlier attempt's.
            let running = self.fleet.find_tenant_task(tenant_id).await.map_err(fleet)?;
            let recorded =
                record.tenant.container.as_ref().map(|c| (c.task_arn.clone(), c.last_status.clone()));
            if let (Some(task), Some((arn, status))) = (&running, &recorded)
                && &task.task_arn == arn
                && status == "RUNNING"
            {
                return self.save_finished(record).await;
            }
            let secret_arn = self.ensure_credentials(&record.tenant).await.map_err(fleet)?;
            self.checkpoint(Operation::Resume, 1)?;
            let plan =
                self.store.get_plan(&record.tenant.plan).await.map_err(retry)?.ok_or_else(|| {
                    JobError::Discard(format!("plan {} does not exist", record.tenant.plan))
                })?;
            // Back at the size it should have now (the customer count may have moved while
            // it was suspended), so no resize follows the resume.
            let size = self.size_due(&record.tenant, plan.task_size).await?;
            let task = match running {
                Some(task) => task,
                None => self
                    .fleet
                    .launch_image(&record.tenant, size, &client_token, &secret_arn, record.image.as_deref())
                    .await
                    .map_err(fleet)?,
            };
            self.checkpoint(Operation::Resume, 2)?;
            let timeout = std::time::Duration::from_secs(self.fleet.settings().task_start_timeout_seconds);
            let running = self.fleet.wait_until_running(&task.task_arn, timeout).await.map_err(fleet)?;
            self.checkpoint(Operation::Resume, 3)?;
            let container = Container {
                cluster_arn: running.cluster_arn,
                task_arn: running.task_arn,
                task_definition_arn: running.task_definition_arn,
                task_size: size,
                last_status: running.last_status,
                endpoint: running
                    .private_ip
                    .map(|ip| format!("http://{ip}:{}", crate::fleet::CONTAINER_PORT)),
                started_at: OffsetDateTime::now_utc(),
            };
            record.tenant.container = Some(container);
            record.tenant.secret_arn = Some(secret_arn);
            record.tenant.failure_reason = None;
            record.tenant.updated_at = OffsetDateTime::now_utc();
            self.save_finished(record).await?;
            self.checkpoint(Operation::Resume, 4)?;
            tracing::info!(%tenant_id, "resumed tenant's task runs");
            Ok(())
        })
        .await
    }

    /// The delete saga (see `ProvisioningJob::DeprovisionTenant`).
    pub(crate) async fn deprovision(&self, tenant_id: TenantId, delivery: &Delivery) -> Result<(), JobError> {
        let record = self.load(tenant_id).await?;
        match record.tenant.status {
            TenantStatus::Deprovisioning => {}
            TenantStatus::Deleted => return Ok(()),
            other => {
                return Err(JobError::Discard(format!("tenant {tenant_id} is {other}, not deprovisioning")));
            }
        }
        self.leased(record, delivery, |mut record| async move {
            let stopped = self.fleet.stop_tenant_tasks(tenant_id, "tenant deleted").await.map_err(fleet)?;
            self.checkpoint(Operation::Deprovision, 1)?;
            let deregistered =
                self.fleet.deregister_tenant_task_definitions(tenant_id).await.map_err(fleet)?;
            self.checkpoint(Operation::Deprovision, 2)?;
            // Revoked while the secret can still be read: its token id is only there.
            let secrets = &self.credentials.secrets;
            if secrets.state(tenant_id).await.map_err(dependency)? == SecretState::Live
                && let Some(credentials) = secrets.read(tenant_id).await.map_err(dependency)?
            {
                self.revoke(&credentials).await.map_err(retry)?;
            }
            self.checkpoint(Operation::Deprovision, 3)?;
            secrets.delete(tenant_id, self.secret_recovery_days).await.map_err(dependency)?;
            self.checkpoint(Operation::Deprovision, 4)?;
            let event = record
                .tenant
                .finish_deprovisioning(OffsetDateTime::now_utc())
                .map_err(|e| JobError::Discard(e.to_string()))?;
            record.lease = None;
            match self.store.transition_tenant(&mut record, event).await {
                Ok(_) => {}
                Err(StoreError::VersionConflict { .. }) => {
                    return Err(JobError::Retry("the tenant changed meanwhile".into()));
                }
                Err(error) => return Err(retry(error)),
            }
            self.checkpoint(Operation::Deprovision, 5)?;
            tracing::info!(%tenant_id, stopped, deregistered, "tenant deleted; its record stays");
            Ok(())
        })
        .await
    }

    /// The delete saga will not be tried again: the tenant becomes `failed` with the reason
    /// (from there a new DELETE runs the saga again, every step picking up what is left).
    pub(crate) async fn give_up_deleting(&self, tenant_id: TenantId, reason: &str) {
        for _ in 0..3 {
            let mut record = match self.store.get_tenant_record(tenant_id).await {
                Ok(Some(record)) if record.tenant.status == TenantStatus::Deprovisioning => record,
                Ok(_) => return,
                Err(error) => {
                    tracing::error!(%tenant_id, %error, "could not load the tenant to mark it failed");
                    continue;
                }
            };
            let Ok(event) = record.tenant.fail(reason, OffsetDateTime::now_utc()) else { return };
            record.lease = None;
            match self.store.transition_tenant(&mut record, event).await {
                Ok(_) => {
                    tracing::warn!(%tenant_id, %reason, "deleting the tenant failed for good; the job goes to the DLQ");
                    return;
                }
                Err(StoreError::VersionConflict { .. }) => continue,
                Err(error) => tracing::error!(%tenant_id, %error, "could not mark the tenant failed"),
            }
        }
    }

    /// A suspend or resume that will not be tried again: the status stays what the use case
    /// decided (it is what the tenant should be), the reason is kept on the record for the
    /// staff view, and the fleet reconcile repairs the compute.
    pub(crate) async fn note_failure(&self, tenant_id: TenantId, reason: &str) {
        for _ in 0..3 {
            let Ok(Some(mut record)) = self.store.get_tenant_record(tenant_id).await else { return };
            record.tenant.failure_reason = Some(reason.to_owned());
            record.lease = None;
            match self.store.save_tenant(&mut record).await {
                Err(StoreError::VersionConflict { .. }) => continue,
                Err(error) => {
                    tracing::error!(%tenant_id, %error, "failure reason not recorded");
                    return;
                }
                Ok(()) => return,
            }
        }
    }
}
