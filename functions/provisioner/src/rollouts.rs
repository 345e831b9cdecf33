//! Rolling image updates: a `RolloutBatch` job moves the next batch of active tenants to the
//! rollout's image and queues the batch after it.
//!
//! A batch is one page of tenants (`batch_size` of them) from the rollout's cursor: the active
//! ones are moved, the rest counted skipped at once (so a suspended or deleted tenant never
//! stalls it). Moving a tenant records the image on its record (with `tenant.image_changed`
//! in its log) and runs the scale saga, whose replace is keyed by image and size: a new task
//! definition revision with the image, the replacement started and recorded, the old task
//! stopped. Each tenant's outcome is a mark written with its counter in one transaction, so
//! a redelivered batch counts nobody twice and skips whoever is marked; the rollout fails
//! once its failures pass the threshold, and completes after its last page.

use dotmac_domain::{
    DomainEvent, RolloutChoice, TenantId, TenantStatus, rollout_choice, rollout_failed, select_batch,
};
use dotmac_queue::{Delivery, JobError, ProvisioningJob};
use dotmac_store::{Rollout, RolloutOutcome, RolloutStatus, StoreError};
use serde_json::json;
use time::OffsetDateTime;

use crate::{Provisioner, retry};

fn conflict(error: StoreError) -> JobError {
    match error {
        StoreError::VersionConflict { .. } => JobError::Retry("the rollout changed meanwhile".into()),
        other => JobError::Retry(other.to_string()),
    }
}

impl Provisioner {
    async fn load_rollout(&self, rollout_id: &str) -> Result<Rollout, JobError> {
        self.store
            .get_rollout(rollout_id)
            .await
            .map_err(retry)?
            .ok_or_else(|| JobError::Discard(format!("no rollout {rollout_id}")))
    }

    pub(crate) async fn rollout_batch(&self, rollout_id: &str, delivery: &Delivery) -> Result<(), JobError> {
        let mut rollout = self.load_rollout(rollout_id).await?;
        if rollout.status != RolloutStatus::Running {
            tracing::info!(rollout_id, status = ?rollout.status, "rollout not running: no batch");
            return Ok(());
        }
        // 1. The batch in flight, else the next page of tenants.
        if rollout.current_batch.is_empty() {
            if rollout.walked {
                return self.finish_batch(rollout_id).await;
            }
            let limit = i32::try_from(rollout.batch_size.clamp(1, 100)).unwrap_or(10);
            let page =
                self.store.list_tenant_records(limit, rollout.cursor.as_deref()).await.map_err(retry)?;
            let statuses: Vec<(TenantId, TenantStatus)> =
                page.items.iter().map(|r| (r.tenant.id, r.tenant.status)).collect();
            let (batch, skipped) = select_batch(&statuses);
            let now = OffsetDateTime::now_utc();
            for (tenant, reason) in skipped {
                self.store
                    .record_rollout_outcome(rollout_id, tenant, RolloutOutcome::Skipped, Some(reason), now)
                    .await
                    .map_err(retry)?;
            }
            rollout = self.load_rollout(rollout_id).await?;
            rollout.current_batch = batch;
            rollout.walked = page.next_cursor.is_none();
            rollout.cursor = page.next_cursor;
            rollout.batch_number += 1;
            let reached =
                rollout.updated + rollout.skipped + rollout.failed + rollout.current_batch.len() as u64;
            rollout.total = rollout.total.max(reached);
            rollout.updated_at = now;
            // A conflict: another copy of this job moved it on; the redelivery takes its batch.
            self.store.save_rollout(&mut rollout).await.map_err(conflict)?;
        }
        // 2. Each tenant of the batch not marked yet.
        let mut again = None;
        for tenant_id in rollout.current_batch.clone() {
            if self.store.rollout_mark(rollout_id, tenant_id).await.map_err(retry)?.is_some() {
                continue;
            }
            let (outcome, reason) = match self.move_tenant(&rollout, tenant_id).await {
                Ok(None) => (RolloutOutcome::Updated, None),
                Ok(Some(reason)) => (RolloutOutcome::Skipped, Some(reason.to_owned())),
                // Tenants marked so far stay marked; the re-sent job carries on from here.
                Err(error @ JobError::Throttled(_)) => return Err(error),
                // Tried again by the next delivery, unless this is its last.
                Err(error @ JobError::Retry(_)) if !delivery.ends_the_job(&error) => {
                    tracing::warn!(rollout_id, %tenant_id, %error, "tenant not moved yet");
                    again = Some(error);
                    continue;
                }
                Err(error) => (RolloutOutcome::Failed, Some(error.to_string())),
            };
            let now = OffsetDateTime::now_utc();
            self.store
                .record_rollout_outcome(rollout_id, tenant_id, outcome, reason.as_deref(), now)
                .await
                .map_err(retry)?;
        }
        if let Some(error) = again {
            return Err(error);
        }
        // 3. The batch is done: the next one, or the end.
        self.finish_batch(rollout_id).await
    }

    /// Closes the batch in flight: the rollout fails past its threshold, completes after its
    /// last page, or queues its next batch (unless paused).
    async fn finish_batch(&self, rollout_id: &str) -> Result<(), JobError> {
        let mut rollout = self.load_rollout(rollout_id).await?;
        if rollout.status.is_finished() {
            return Ok(());
        }
        rollout.current_batch.clear();
        if rollout_failed(rollout.failed, rollout.failure_threshold) {
            rollout.status = RolloutStatus::Failed;
            rollout.reason = Some(format!(
                "{} tenants failed, more than the threshold of {}",
                rollout.failed, rollout.failure_threshold
            ));
        } else if rollout.walked {
            rollout.status = RolloutStatus::Completed;
        }
        rollout.updated_at = OffsetDateTime::now_utc();
        self.store.save_rollout(&mut rollout).await.map_err(conflict)?;
        tracing::info!(rollout_id, status = ?rollout.status, updated = rollout.updated, skipped = rollout.skipped, failed = rollout.failed, "rollout batch done");
        if rollout.status == RolloutStatus::Running {
            self.enqueue(ProvisioningJob::RolloutBatch { rollout_id: rollout_id.to_owned() }).await?;
        }
        Ok(())
    }

    /// Moves one tenant to the rollout's image; `Some(reason)` when it is no longer one to
    /// move (suspended or deleted since the batch was chosen).
    async fn move_tenant(
        &self,
        rollout: &Rollout,
        tenant_id: TenantId,
    ) -> Result<Option<&'static str>, JobError> {
        let Some(record) = self.store.get_tenant_record(tenant_id).await.map_err(retry)? else {
            return Ok(Some("deleted"));
        };
        if let RolloutChoice::Skip(reason) = rollout_choice(record.tenant.status) {
            return Ok(Some(reason));
        }
        // The tenant's lease, under a token of this attempt's own: a second copy of the batch
        // (a duplicate delivery) meets it and tries again later instead of replacing the
        // same task at the same time.
        let token = format!("rollout-{}", uuid::Uuid::new_v4());
        let mut record = self.claim_as(record, token.clone()).await?;
        let outcome = self.move_claimed(rollout, &mut record).await;
        self.let_go_of(tenant_id, &token).await;
        outcome.map(|()| None)
    }

    async fn move_claimed(
        &self,
        rollout: &Rollout,
        record: &mut dotmac_store::TenantRecord,
    ) -> Result<(), JobError> {
        let tenant_id = record.tenant.id;
        if record.image.as_deref() != Some(rollout.image.as_str()) {
            let from = self.image_of(record).to_owned();
            record.image = Some(rollout.image.clone());
            record.tenant.updated_at = OffsetDateTime::now_utc();
            let event = DomainEvent::new(
                "tenant.image_changed",
                json!({ "from": from, "to": rollout.image, "rollout_id": rollout.id }),
            );
            self.store.transition_tenant(record, event).await.map_err(|error| match error {
                StoreError::VersionConflict { .. } => JobError::Retry("the tenant changed meanwhile".into()),
                other => retry(other),
            })?;
        }
        self.crash_point("rollout.after_image")?;
        // The scale saga's replace, keyed by image and size (a no-op once it runs the image).
        self.scale(tenant_id).await
    }
}
