//! The tenant jobs beyond provisioning: backup, restore, prune, scale, and the scheduled
//! runs that fan them out. Each is idempotent under duplicate delivery and resumable after a
//! crash at any step: the state an earlier attempt left (the backup's record and its S3
//! objects, the tenant's scale operation, what ECS runs) decides what is left to do.

use dotmac_domain::{BackupId, Container, DomainEvent, TenantId, TenantStatus, desired_size};
use dotmac_queue::{JobError, ProvisioningJob};
use dotmac_store::{BackupStatus, RestoreStatus, ScaleOperation, StoreError, TenantRecord};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

use crate::backups::{
    self, BackupStorage, FORMAT_VERSION, Manifest, StorageError, data_task_marker, encode_records,
    restore_plan, sha256_hex,
};
use crate::{FleetError, OneOffTask, Provisioner, fleet};

/// A test's crash points: called with each step's name (`backup.after_records`,
/// `scale.after_run_task`, ...) after the step's effect; answering `true` ends the attempt
/// there as a crash would (a retryable failure, nothing after it done). Only tests install
/// one (`Provisioner::with_fault_hook`); without it every step runs.
pub type FaultHook = Arc<dyn Fn(&str) -> bool + Send + Sync>;

fn retry(error: impl std::fmt::Display) -> JobError {
    JobError::Retry(error.to_string())
}

fn storage_error(error: StorageError) -> JobError {
    match error {
        // A backup that does not check out never will.
        StorageError::Corrupt(reason) => JobError::Discard(reason),
        other => JobError::Retry(other.to_string()),
    }
}

fn fleet_error(error: FleetError) -> JobError {
    match error {
        FleetError::Throttled { .. } => JobError::Throttled(error.to_string()),
        other => JobError::Retry(other.to_string()),
    }
}

fn saved(error: StoreError) -> JobError {
    match error {
        StoreError::VersionConflict { .. } => JobError::Retry("changed meanwhile; trying again".into()),
        other => JobError::Retry(other.to_string()),
    }
}

/// Tenants read per page by the scheduled runs.
const PAGE: i32 = 100;

impl Provisioner {
    pub(crate) fn crash_point(&self, step: &str) -> Result<(), JobError> {
        match &self.faults {
            Some(hook) if hook(step) => Err(JobError::Retry(format!("injected crash after {step}"))),
            _ => Ok(()),
        }
    }

    /// The tenant's record, to write an event into its log beside the change it reports.
    async fn tenant_record(&self, tenant_id: TenantId) -> Result<TenantRecord, JobError> {
        self.store
            .get_tenant_record(tenant_id)
            .await
            .map_err(retry)?
            .ok_or_else(|| JobError::Discard(format!("tenant {tenant_id} does not exist")))
    }

    /// The size the tenant's container should have now: its override, else the tier of its
    /// latest customer count, never below its plan's size.
    pub(crate) async fn size_due(
        &self,
        tenant: &dotmac_domain::Tenant,
        plan_size: dotmac_domain::TaskSize,
    ) -> Result<dotmac_domain::TaskSize, JobError> {
        let customers = self.store.latest_usage(tenant.id).await.map_err(retry)?.map(|r| r.customer_count);
        Ok(desired_size(plan_size, customers, tenant.task_size_override))
    }

    fn storage(&self) -> Result<&BackupStorage, JobError> {
        self.backups
            .as_ref()
            .ok_or_else(|| JobError::Discard("no backup bucket is configured (DOTMAC_BACKUP_BUCKET)".into()))
    }

    pub(crate) async fn enqueue(&self, job: ProvisioningJob) -> Result<(), JobError> {
        let queue =
            self.jobs.as_ref().ok_or_else(|| JobError::Discard("no job queue to fan out to".into()))?;
        queue.enqueue(job).await.map(|_| ()).map_err(retry)
    }

    // ------------------------------------------------------------------------------ backup

    pub(crate) async fn backup(&self, tenant_id: TenantId, backup_id: &BackupId) -> Result<(), JobError> {
        let storage = self.storage()?;
        let Some(mut record) = self.store.get_backup(tenant_id, backup_id).await.map_err(retry)? else {
            return Err(JobError::Discard(format!("no backup {backup_id} of tenant {tenant_id}")));
        };
        match record.status {
            BackupStatus::Completed => return Ok(()),
            BackupStatus::Failed => {
                return Err(JobError::Discard(format!("backup {backup_id} failed before")));
            }
            BackupStatus::Pending => {}
        }
        let Some(tenant) = self.store.get_tenant(tenant_id).await.map_err(retry)? else {
            return Err(JobError::Discard(format!("tenant {tenant_id} does not exist")));
        };

        // 1. The records and their manifest (or those an earlier attempt left, verified).
        if record.sha256.is_none() {
            let manifest = match storage.manifest(&record.keys).await {
                Ok(Some(found)) if found.backup_id == *backup_id && found.tenant_id == tenant_id => {
                    match storage.verified_records(&found).await {
                        Ok(_) => Some(found),
                        Err(StorageError::Corrupt(reason)) => {
                            tracing::warn!(%tenant_id, %backup_id, %reason, "an earlier attempt's export does not check out; exporting again");
                            None
                        }
                        Err(other) => return Err(storage_error(other)),
                    }
                }
                Ok(_) | Err(StorageError::Corrupt(_)) => None,
                Err(other) => return Err(storage_error(other)),
            };
            let manifest = match manifest {
                Some(manifest) => manifest,
                None => {
                    let items = self.store.partition_items(tenant_id).await.map_err(retry)?;
                    let body = encode_records(&items).map_err(storage_error)?;
                    let manifest = Manifest {
                        format_version: FORMAT_VERSION,
                        backup_id: backup_id.clone(),
                        tenant_id,
                        created_at: record.created_at,
                        item_count: items.len() as u64,
                        sha256: sha256_hex(&body),
                        compressed_bytes: body.len() as u64,
                        records_key: record.keys.records.clone(),
                        data_prefix: record.keys.data_prefix.clone(),
                    };
                    storage
                        .put(&record.keys.records, body, "application/gzip")
                        .await
                        .map_err(storage_error)?;
                    self.crash_point("backup.after_records")?;
                    let text = serde_json::to_vec_pretty(&manifest).map_err(retry)?;
                    storage
                        .put(&record.keys.manifest, text, "application/json")
                        .await
                        .map_err(storage_error)?;
                    manifest
                }
            };
            self.crash_point("backup.after_manifest")?;
            record.item_count = Some(manifest.item_count);
            record.sha256 = Some(manifest.sha256);
            record.compressed_bytes = Some(manifest.compressed_bytes);
            self.store.save_backup(&mut record).await.map_err(saved)?;
        }

        // 2. The container's own data backup: a one-off task of its image, found again by its
        // marker (and, in AWS, made once by its client token) whatever an attempt crashed in.
        if record.data_task_arn.is_none()
            && let (Some(secret_arn), true) = (tenant.secret_arn.as_deref(), backups::backs_up(tenant.status))
        {
            let size = tenant.container.as_ref().map(|c| c.task_size);
            let plan_size = match size {
                Some(size) => size,
                None => self.plan_size(&tenant.plan).await?,
            };
            let marker = data_task_marker(tenant_id, backup_id);
            let uri = format!("s3://{}/{}", storage.bucket, record.keys.data_prefix);
            let arn = self
                .fleet
                .run_one_off(OneOffTask {
                    tenant: &tenant,
                    secret_arn,
                    size: plan_size,
                    marker: &marker,
                    client_token: &marker,
                    command: vec!["backup".into(), "--to".into(), uri.clone()],
                    environment: vec![
                        ("DOTMAC_BACKUP_PREFIX", uri),
                        ("DOTMAC_BACKUP_ID", backup_id.to_string()),
                    ],
                })
                .await
                .map_err(fleet_error)?;
            self.crash_point("backup.after_data_task")?;
            record.data_task_arn = Some(arn);
            self.store.save_backup(&mut record).await.map_err(saved)?;
        }

        // 3. Done.
        record.status = BackupStatus::Completed;
        record.completed_at = Some(OffsetDateTime::now_utc());
        record.failure_reason = None;
        let event = DomainEvent::new(
            "backup.completed",
            json!({
                "backup_id": backup_id,
                "item_count": record.item_count,
                "sha256": record.sha256,
                "records_key": record.keys.records,
                "data_task_arn": record.data_task_arn,
            }),
        );
        let mut tenant_record = self.tenant_record(tenant_id).await?;
        self.store.save_backup_with_event(&mut record, &mut tenant_record, event).await.map_err(saved)?;
        Ok(())
    }

    /// The attempt SQS will not repeat: the backup is marked failed with the reason.
    pub(crate) async fn backup_failed(&self, tenant_id: TenantId, backup_id: &BackupId, reason: &str) {
        for _ in 0..3 {
            let mut record = match self.store.get_backup(tenant_id, backup_id).await {
                Ok(Some(record)) if record.status == BackupStatus::Pending => record,
                Ok(_) => return,
                Err(error) => {
                    tracing::error!(%tenant_id, %backup_id, %error, "could not load the backup to mark it failed");
                    continue;
                }
            };
            record.status = BackupStatus::Failed;
            record.failure_reason = Some(reason.to_owned());
            let Ok(mut tenant_record) = self.tenant_record(tenant_id).await else { continue };
            let event =
                DomainEvent::new("backup.failed", json!({ "backup_id": backup_id, "reason": reason }));
            match self.store.save_backup_with_event(&mut record, &mut tenant_record, event).await {
                Ok(_) => return,
                Err(StoreError::VersionConflict { .. }) => continue,
                Err(error) => {
                    tracing::error!(%tenant_id, %backup_id, %error, "could not mark the backup failed")
                }
            }
        }
    }

    async fn plan_size(&self, plan: &dotmac_domain::PlanId) -> Result<dotmac_domain::TaskSize, JobError> {
        let plan = self.store.get_plan(plan).await.map_err(retry)?;
        plan.map(|p| p.task_size).ok_or_else(|| JobError::Discard("the tenant's plan does not exist".into()))
    }

    // ------------------------------------------------------------------------------ restore

    pub(crate) async fn restore(
        &self,
        tenant_id: TenantId,
        backup_id: &BackupId,
        restore_id: &str,
    ) -> Result<(), JobError> {
        let storage = self.storage()?;
        let Some(mut restore) = self.store.get_restore(tenant_id, restore_id).await.map_err(retry)? else {
            return Err(JobError::Discard(format!("no restore {restore_id} of tenant {tenant_id}")));
        };
        match restore.status {
            RestoreStatus::Completed => return Ok(()),
            RestoreStatus::Failed => {
                return Err(JobError::Discard(format!("restore {restore_id} failed before")));
            }
            RestoreStatus::Pending => {}
        }
        let backup = self
            .store
            .get_backup(tenant_id, backup_id)
            .await
            .map_err(retry)?
            .filter(|b| b.status == BackupStatus::Completed)
            .ok_or_else(|| {
                JobError::Discard(format!("backup {backup_id} is not a completed backup of the tenant"))
            })?;
        // 1. The manifest and the records, checked against each other and the backup's record.
        let manifest = storage
            .manifest(&backup.keys)
            .await
            .map_err(storage_error)?
            .ok_or_else(|| JobError::Discard(format!("{} is missing", backup.keys.manifest)))?;
        if manifest.tenant_id != tenant_id
            || manifest.backup_id != *backup_id
            || Some(&manifest.sha256) != backup.sha256.as_ref()
        {
            return Err(JobError::Discard("the manifest does not describe this backup".into()));
        }
        let items = storage.verified_records(&manifest).await.map_err(storage_error)?;
        // 2. What differs from the partition now, written back; what the backup lacks, removed.
        let current = self.store.partition_items(tenant_id).await.map_err(retry)?;
        let restorable_items = items.clone();
        let (writes, removals) = restore_plan(items, current);
        let (written, removed) = (writes.len() as u64, removals.len() as u64);
        // The users' e-mail claims first, from the whole backup: a retry after the partition
        // is written finds nothing left to write but still has every claim right.
        self.store.settle_email_claims(tenant_id, &restorable_items, &removals).await.map_err(retry)?;
        self.store.write_partition(tenant_id, writes, removals).await.map_err(retry)?;
        self.crash_point("restore.after_write")?;
        restore.status = RestoreStatus::Completed;
        restore.completed_at = Some(OffsetDateTime::now_utc());
        // A resumed restore finds less to do; the first attempt's figures are the story.
        restore.written = Some(restore.written.unwrap_or(0).max(written));
        restore.removed = Some(restore.removed.unwrap_or(0).max(removed));
        let event = DomainEvent::new(
            "tenant.restored",
            json!({ "backup_id": backup_id, "restore_id": restore_id, "written": written, "removed": removed }),
        );
        let mut tenant_record = self.tenant_record(tenant_id).await?;
        self.store.save_restore_with_event(&mut restore, &mut tenant_record, event).await.map_err(saved)?;
        Ok(())
    }

    pub(crate) async fn restore_failed(&self, tenant_id: TenantId, restore_id: &str, reason: &str) {
        for _ in 0..3 {
            let mut record = match self.store.get_restore(tenant_id, restore_id).await {
                Ok(Some(record)) if record.status == RestoreStatus::Pending => record,
                Ok(_) => return,
                Err(error) => {
                    tracing::error!(%tenant_id, restore_id, %error, "could not load the restore to mark it failed");
                    continue;
                }
            };
            record.status = RestoreStatus::Failed;
            record.failure_reason = Some(reason.to_owned());
            let Ok(mut tenant_record) = self.tenant_record(tenant_id).await else { continue };
            let event = DomainEvent::new(
                "tenant.restore_failed",
                json!({ "restore_id": restore_id, "reason": reason }),
            );
            match self.store.save_restore_with_event(&mut record, &mut tenant_record, event).await {
                Ok(_) => return,
                Err(StoreError::VersionConflict { .. }) => continue,
                Err(error) => {
                    tracing::error!(%tenant_id, restore_id, %error, "could not mark the restore failed")
                }
            }
        }
    }

    // ------------------------------------------------------------------------------ retention

    pub(crate) async fn prune_backups(&self, tenant_id: TenantId) -> Result<(), JobError> {
        let storage = self.storage()?;
        let all = self.store.all_backups(tenant_id).await.map_err(retry)?;
        let mut tenant_record: Option<TenantRecord> = None;
        for backup in backups::expired(&all, storage.retention, OffsetDateTime::now_utc()) {
            // Objects first: a crash between the two leaves a record whose objects are gone,
            // which the next run deletes; never objects no record leads to.
            let objects = storage.delete_prefix(&backup.keys.prefix).await.map_err(storage_error)?;
            self.crash_point("prune.after_objects")?;
            let event = DomainEvent::new(
                "backup.expired",
                json!({ "backup_id": backup.backup_id, "objects_deleted": objects }),
            );
            let tenant = match tenant_record.as_mut() {
                Some(record) => record,
                None => tenant_record.insert(self.tenant_record(tenant_id).await?),
            };
            self.store.delete_backup_with_event(&backup, tenant, event).await.map_err(saved)?;
        }
        Ok(())
    }

    // ------------------------------------------------------------------------------ schedules

    pub(crate) async fn scheduled_backups(&self, scheduled_at: &str) -> Result<(), JobError> {
        let at = OffsetDateTime::parse(scheduled_at, &time::format_description::well_known::Rfc3339)
            .map_err(|e| JobError::Discard(format!("scheduled_at {scheduled_at:?} is not RFC 3339: {e}")))?;
        let mut cursor: Option<String> = None;
        loop {
            let page = self.store.list_tenants(PAGE, cursor.as_deref()).await.map_err(retry)?;
            for tenant in &page.items {
                if tenant.status == TenantStatus::Deleted {
                    continue;
                }
                if tenant.status == TenantStatus::Active {
                    let now = OffsetDateTime::now_utc();
                    let (record, _) = self
                        .store
                        .create_backup(&backups::scheduled_backup(tenant.id, at, now))
                        .await
                        .map_err(retry)?;
                    if record.status == BackupStatus::Pending {
                        self.enqueue(ProvisioningJob::BackupTenant {
                            tenant_id: tenant.id,
                            backup_id: record.backup_id,
                        })
                        .await?;
                    }
                }
                self.enqueue(ProvisioningJob::PruneBackups { tenant_id: tenant.id }).await?;
            }
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(()),
            }
        }
    }

    pub(crate) async fn scheduled_scaling(&self) -> Result<(), JobError> {
        let mut plans = HashMap::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = self.store.list_tenants(PAGE, cursor.as_deref()).await.map_err(retry)?;
            for tenant in page.items.iter().filter(|t| t.status == TenantStatus::Active) {
                let Some(container) = &tenant.container else { continue };
                let plan_size = match plans.get(&tenant.plan) {
                    Some(size) => *size,
                    None => {
                        let size = self.plan_size(&tenant.plan).await?;
                        plans.insert(tenant.plan.clone(), size);
                        size
                    }
                };
                if self.size_due(tenant, plan_size).await? != container.task_size {
                    self.enqueue(ProvisioningJob::ScaleTenant { tenant_id: tenant.id }).await?;
                }
            }
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(()),
            }
        }
    }

    // ------------------------------------------------------------------------------ scale

    /// Brings the tenant's container to the size it should have. A saga: record the intent
    /// (target, client token, the task it replaces), register the sized task definition,
    /// start the replacement (or adopt the one an earlier attempt started), wait for it to
    /// run, point the record at it, stop the old task, clear the intent. The record points at
    /// a running task throughout, and a retry after any step picks up from the intent.
    pub(crate) async fn scale(&self, tenant_id: TenantId) -> Result<(), JobError> {
        let Some(mut record) = self.store.get_tenant_record(tenant_id).await.map_err(retry)? else {
            return Err(JobError::Discard(format!("tenant {tenant_id} does not exist")));
        };
        if record.tenant.status != TenantStatus::Active {
            return self.abandon_scaling(record).await;
        }
        let (Some(container), Some(secret_arn)) =
            (record.tenant.container.clone(), record.tenant.secret_arn.clone())
        else {
            return Err(JobError::Discard(format!("tenant {tenant_id} runs no container")));
        };
        let operation = match record.scaling.clone() {
            Some(operation) => operation,
            None => {
                let plan_size = self.plan_size(&record.tenant.plan).await?;
                let target = self.size_due(&record.tenant, plan_size).await?;
                // The image it should run (a rollout's, else the fleet's) against the one its
                // task's revision runs: a replace is keyed by both.
                let image = self.image_of(&record).to_owned();
                if target == container.task_size
                    && self
                        .fleet
                        .definition_image(&container.task_definition_arn)
                        .await
                        .map_err(fleet_error)?
                        .as_deref()
                        == Some(image.as_str())
                {
                    return Ok(());
                }
                if !target.is_valid_fargate_size() {
                    return Err(JobError::Discard(format!("{target:?} is not a Fargate size")));
                }
                let operation = ScaleOperation {
                    token: uuid::Uuid::new_v4().to_string(),
                    target,
                    previous_task_arn: container.task_arn.clone(),
                    replacement_task_arn: None,
                    task_definition_arn: None,
                    image: Some(image),
                };
                record.scaling = Some(operation.clone());
                self.store.save_tenant(&mut record).await.map_err(saved)?;
                self.crash_point("scale.after_intent")?;
                operation
            }
        };
        let mut operation = operation;

        if record.tenant.container.as_ref().map(|c| &c.task_arn) != operation.replacement_task_arn.as_ref()
            || operation.replacement_task_arn.is_none()
        {
            // The sized revision (reused when it exists already).
            let image = operation.image.clone().or_else(|| record.image.clone());
            let definition = self
                .fleet
                .ensure_definition(tenant_id, &secret_arn, Some(operation.target), image.as_deref())
                .await
                .map_err(fleet_error)?;
            self.crash_point("scale.after_register")?;
            // The replacement: one an earlier attempt started is adopted (any running task of
            // the tenant other than the one being replaced), else started.
            let running = self.fleet.running_tenant_tasks(tenant_id).await.map_err(fleet_error)?;
            let adopted = running.into_iter().find(|t| t.task_arn != operation.previous_task_arn);
            let replacement = match adopted {
                Some(task) => task,
                None => {
                    self.pace_run_task().await;
                    self.fleet
                        .launch_image(
                            &record.tenant,
                            operation.target,
                            &operation.token,
                            &secret_arn,
                            image.as_deref(),
                        )
                        .await
                        .map_err(fleet_error)?
                }
            };
            self.crash_point("scale.after_run_task")?;
            let timeout = Duration::from_secs(self.fleet.settings().task_start_timeout_seconds);
            let running = match self.fleet.wait_until_running(&replacement.task_arn, timeout).await {
                Ok(running) => running,
                Err(error) => {
                    // Never left behind: stopped, and the next attempt starts afresh (a new
                    // client token, so ECS does not hand the dead task back).
                    let _ = self.fleet.stop_task(&replacement.task_arn, "replacement did not run").await;
                    operation.token = uuid::Uuid::new_v4().to_string();
                    record.scaling = Some(operation);
                    self.store.save_tenant(&mut record).await.map_err(saved)?;
                    return Err(fleet_error(error));
                }
            };
            // Point the record at the replacement; the old task still runs until after this.
            record.tenant.container = Some(Container {
                cluster_arn: running.cluster_arn,
                task_arn: running.task_arn.clone(),
                task_definition_arn: running.task_definition_arn.clone(),
                task_size: operation.target,
                last_status: running.last_status,
                endpoint: running.private_ip.map(|ip| format!("http://{ip}:{}", fleet::CONTAINER_PORT)),
                started_at: OffsetDateTime::now_utc(),
            });
            record.tenant.updated_at = OffsetDateTime::now_utc();
            operation.replacement_task_arn = Some(running.task_arn);
            operation.task_definition_arn = Some(definition);
            record.scaling = Some(operation.clone());
            self.store.save_tenant(&mut record).await.map_err(saved)?;
            self.crash_point("scale.after_record")?;
        }

        self.fleet
            .stop_task(&operation.previous_task_arn, "replaced by a resized task")
            .await
            .map_err(fleet_error)?;
        self.crash_point("scale.after_stop")?;
        record.scaling = None;
        let event = DomainEvent::new(
            "tenant.scaled",
            json!({
                "from": container.task_size,
                "to": operation.target,
                "task_arn": operation.replacement_task_arn,
                "task_definition_arn": operation.task_definition_arn,
                "image": operation.image,
                "override": record.tenant.task_size_override.is_some(),
            }),
        );
        self.store.transition_tenant(&mut record, event).await.map_err(saved)?;
        Ok(())
    }

    /// A tenant that stopped being active mid-resize (suspended, being deleted): whatever
    /// replacement was started and is not the recorded task is stopped, and the intent dropped.
    async fn abandon_scaling(&self, mut record: TenantRecord) -> Result<(), JobError> {
        let tenant_id = record.tenant.id;
        let Some(operation) = record.scaling.clone() else {
            return Err(JobError::Discard(format!(
                "tenant {tenant_id} is {}, not active",
                record.tenant.status
            )));
        };
        let recorded = record.tenant.container.as_ref().map(|c| c.task_arn.clone());
        for task in self.fleet.running_tenant_tasks(tenant_id).await.map_err(fleet_error)? {
            let is_replacement = Some(&task.task_arn) == operation.replacement_task_arn.as_ref()
                || task.task_arn != operation.previous_task_arn;
            if is_replacement && Some(&task.task_arn) != recorded.as_ref() {
                self.fleet.stop_task(&task.task_arn, "resize abandoned").await.map_err(fleet_error)?;
            }
        }
        record.scaling = None;
        self.store.save_tenant(&mut record).await.map_err(saved)?;
        Ok(())
    }
}
