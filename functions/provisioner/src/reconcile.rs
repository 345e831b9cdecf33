//! The fleet reconcile: what each tenant should run (its record) against what ECS runs, and
//! the repair of any drift (`dotmac_domain::classify` decides; this file does).
//!
//! - An active tenant with no running task is launched again through the provisioning launch
//!   path: its secret ensured, a task that runs by then adopted, else RunTask with a client
//!   token naming the repair (`reconcile-<version>-<tenant>`), so a repeated attempt of the same
//!   repair is the same call.
//! - A task on the wrong image or size is not replaced here: the repair records the scale
//!   saga's intent (target size and image) and queues `ScaleTenant`, the one replace path.
//! - A suspended or deleted tenant's running task is stopped; extra tasks of an active one too.
//! - The record is pointed at the task that runs (endpoint, ARN, status).
//!
//! Each repair happens under the tenant's lease (a version-checked claim, so two reconciles
//! never repair one tenant twice), looks at ECS again under it, and ends in one transaction
//! writing the record and its `tenant.reconciled` event (what was wrong, what was done).

use dotmac_domain::{
    Container, DomainEvent, Expected, Recorded, TaskSize, TenantId, TenantStatus, Verdict, classify,
    expects_compute,
};
use dotmac_queue::{JobError, ProvisioningJob};
use dotmac_store::{ScaleOperation, StoreError, TenantRecord};
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;
use time::OffsetDateTime;

use crate::fleet::{CONTAINER_PORT, FleetError, LaunchedTask};
use crate::{Provisioner, retry};

/// What one reconcile run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    pub examined: usize,
    pub repaired: usize,
    /// Where the run queued its continuation from (it reached its repair limit).
    pub continued_from: Option<String>,
}

fn fleet_error(error: FleetError) -> JobError {
    match error {
        FleetError::Throttled { .. } => JobError::Throttled(error.to_string()),
        other => JobError::Retry(other.to_string()),
    }
}

fn observed(tasks: &[LaunchedTask]) -> Vec<dotmac_domain::ObservedTask> {
    tasks.iter().map(LaunchedTask::observed).collect()
}

fn recorded(record: &TenantRecord) -> Option<Recorded<'_>> {
    record.tenant.container.as_ref().map(|c| Recorded {
        task_arn: &c.task_arn,
        last_status: &c.last_status,
        size: c.task_size,
    })
}

fn container_of(task: &LaunchedTask, size: TaskSize) -> Container {
    Container {
        cluster_arn: task.cluster_arn.clone(),
        task_arn: task.task_arn.clone(),
        task_definition_arn: task.task_definition_arn.clone(),
        task_size: size,
        last_status: task.last_status.clone(),
        endpoint: task.private_ip.as_ref().map(|ip| format!("http://{ip}:{CONTAINER_PORT}")),
        started_at: OffsetDateTime::now_utc(),
    }
}

impl Provisioner {
    /// One run over the tenants from `cursor`: at most `reconcile_max_repairs` repairs, then
    /// the rest is queued as another run from where this one stopped. ECS is read once for
    /// the whole cluster (ListTasks pages + DescribeTasks batches of 100); only a tenant that
    /// looks wrong costs calls of its own.
    pub async fn reconcile_fleet(
        &self,
        scheduled_at: &str,
        cursor: Option<&str>,
    ) -> Result<ReconcileReport, JobError> {
        let max = usize::try_from(self.fleet.settings().reconcile_max_repairs).unwrap_or(50).max(1);
        let tasks = self.fleet.running_tasks_by_starter().await.map_err(fleet_error)?;
        let mut plans = HashMap::new();
        let mut cursor = cursor.map(str::to_owned);
        let mut report = ReconcileReport::default();
        loop {
            // Never more tenants in a page than repairs left: each tenant makes at most one.
            let limit = (max - report.repaired).clamp(1, 100);
            let page = self
                .store
                .list_tenant_records(i32::try_from(limit).unwrap_or(100), cursor.as_deref())
                .await
                .map_err(retry)?;
            for record in page.items {
                report.examined += 1;
                let tenant_id = record.tenant.id;
                let running = tasks.get(&tenant_id.to_string()).cloned().unwrap_or_default();
                match self.reconcile_record(record, &running, &mut plans, scheduled_at).await {
                    Ok(true) => report.repaired += 1,
                    Ok(false) => {}
                    // ECS asks to slow down: the whole run is re-sent later (repairs made
                    // stay made; the next run finds them in sync).
                    Err(error @ JobError::Throttled(_)) => return Err(error),
                    // One tenant's trouble does not hold up the fleet; the next run tries it again.
                    Err(error) => tracing::warn!(%tenant_id, %error, "tenant not reconciled"),
                }
            }
            cursor = page.next_cursor;
            match &cursor {
                None => break,
                Some(next) if report.repaired >= max => {
                    self.enqueue(ProvisioningJob::ReconcileFleet {
                        scheduled_at: scheduled_at.to_owned(),
                        cursor: Some(next.clone()),
                    })
                    .await?;
                    report.continued_from = Some(next.clone());
                    break;
                }
                Some(_) => {}
            }
        }
        tracing::info!(scheduled_at, ?report, "fleet reconciled");
        Ok(report)
    }

    /// The reconcile of one tenant (an ECS task of it stopped).
    pub async fn reconcile_tenant(&self, tenant_id: TenantId) -> Result<bool, JobError> {
        let Some(record) = self.store.get_tenant_record(tenant_id).await.map_err(retry)? else {
            return Err(JobError::Discard(format!("tenant {tenant_id} does not exist")));
        };
        let running = self.fleet.running_tenant_tasks(tenant_id).await.map_err(fleet_error)?;
        self.reconcile_record(record, &running, &mut HashMap::new(), "task-state-change").await
    }

    /// What the tenant should run now.
    async fn expected(
        &self,
        record: &TenantRecord,
        should_run: bool,
        plans: &mut HashMap<dotmac_domain::PlanId, TaskSize>,
    ) -> Result<Expected, JobError> {
        if !should_run {
            return Ok(Expected::Nothing);
        }
        let plan_size = match plans.get(&record.tenant.plan) {
            Some(size) => *size,
            None => {
                let plan = self.store.get_plan(&record.tenant.plan).await.map_err(retry)?;
                let size = plan.map(|p| p.task_size).ok_or_else(|| {
                    JobError::Discard(format!("plan {} does not exist", record.tenant.plan))
                })?;
                plans.insert(record.tenant.plan.clone(), size);
                size
            }
        };
        let size = self.size_due(&record.tenant, plan_size).await?;
        Ok(Expected::Runs { image: self.image_of(record).to_owned(), size })
    }

    /// Compares one tenant with `running` (what ECS lists for it) and repairs what differs;
    /// `true` when it repaired something.
    async fn reconcile_record(
        &self,
        record: TenantRecord,
        running: &[LaunchedTask],
        plans: &mut HashMap<dotmac_domain::PlanId, TaskSize>,
        run: &str,
    ) -> Result<bool, JobError> {
        let tenant_id = record.tenant.id;
        let Some(should_run) = expects_compute(record.tenant.status) else { return Ok(false) };
        if record.lease.as_ref().is_some_and(|lease| lease.is_live(OffsetDateTime::now_utc())) {
            // Another job works on it; what it leaves is looked at next time.
            return Ok(false);
        }
        if should_run && record.scaling.is_some() {
            // A replace under way: its job carries on from the recorded intent. Queued again in
            // case the first was lost (a duplicate finds the work done).
            self.enqueue(ProvisioningJob::ScaleTenant { tenant_id }).await?;
            return Ok(false);
        }
        let expected = self.expected(&record, should_run, plans).await?;
        if classify(&expected, recorded(&record), &observed(running)).in_sync() {
            return Ok(false);
        }
        // The repair is named after the version it saw, so every attempt of it is one RunTask.
        let token = format!("reconcile-{}-{tenant_id}", record.tenant.version);
        let record = match self.claim_as(record, token.clone()).await {
            Ok(record) => record,
            // Someone changed or claimed it meanwhile: they own it now.
            Err(JobError::Retry(reason)) => {
                tracing::info!(%tenant_id, %reason, "not reconciled: the tenant is busy");
                return Ok(false);
            }
            Err(error) => return Err(error),
        };
        let outcome = self.repair(record, &expected, &token, run).await;
        if outcome.is_err() {
            self.let_go_of(tenant_id, &token).await;
        }
        outcome
    }

    /// The repair, under the lease `token` names.
    async fn repair(
        &self,
        mut record: TenantRecord,
        expected: &Expected,
        token: &str,
        run: &str,
    ) -> Result<bool, JobError> {
        let tenant_id = record.tenant.id;
        // ECS again, now that nothing else may change the tenant: the run's listing is older.
        let running = self.fleet.running_tenant_tasks(tenant_id).await.map_err(fleet_error)?;
        let verdict: Verdict = classify(expected, recorded(&record), &observed(&running));
        if verdict.in_sync() {
            record.lease = None;
            match self.store.save_tenant(&mut record).await {
                Ok(()) | Err(StoreError::VersionConflict { .. }) => return Ok(false),
                Err(error) => return Err(retry(error)),
            }
        }
        let mut done: Vec<String> = Vec::new();
        for arn in &verdict.stop {
            let reason = if matches!(expected, Expected::Nothing) {
                format!("reconcile: the tenant is {}", record.tenant.status)
            } else {
                "reconcile: an extra task of the tenant".to_owned()
            };
            self.fleet.stop_task(arn, &reason).await.map_err(fleet_error)?;
            done.push(format!("stopped {arn}"));
        }
        let recorded_size = record.tenant.container.as_ref().map(|c| c.task_size);
        let desired_size = match expected {
            Expected::Runs { size, .. } => Some(*size),
            Expected::Nothing => None,
        };
        if verdict.relaunch
            && let Some(size) = desired_size
        {
            let secret_arn = self.ensure_credentials(&record.tenant).await.map_err(fleet_error)?;
            // A task that runs by now (another launch got there) is adopted, not doubled.
            let task = match self.fleet.find_tenant_task(tenant_id).await.map_err(fleet_error)? {
                Some(task) => task,
                None => {
                    self.pace_run_task().await;
                    self.fleet
                        .launch_image(&record.tenant, size, token, &secret_arn, record.image.as_deref())
                        .await
                        .map_err(fleet_error)?
                }
            };
            let timeout = Duration::from_secs(self.fleet.settings().task_start_timeout_seconds);
            let task = self.fleet.wait_until_running(&task.task_arn, timeout).await.map_err(fleet_error)?;
            record.tenant.container = Some(container_of(&task, size));
            record.tenant.secret_arn = Some(secret_arn);
            done.push(format!("launched {}", task.task_arn));
        } else if let Some(arn) = &verdict.adopt
            && let Some(task) = running.iter().find(|t| &t.task_arn == arn)
        {
            let same = record.tenant.container.as_ref().is_some_and(|c| &c.task_arn == arn);
            let size = task
                .size
                .or(if same { recorded_size } else { None })
                .or(desired_size)
                .or(recorded_size)
                .unwrap_or(TaskSize { cpu: 256, memory_mib: 512 });
            record.tenant.container = Some(container_of(task, size));
            done.push(format!("recorded {arn}"));
        }
        if matches!(expected, Expected::Nothing)
            && let Some(container) = record.tenant.container.as_mut()
        {
            container.last_status = "STOPPED".into();
        }
        let replace = verdict.replace && record.tenant.container.is_some();
        if replace
            && let Expected::Runs { image, size } = expected
            && let Some(container) = record.tenant.container.as_ref()
        {
            record.scaling = Some(ScaleOperation {
                token: uuid::Uuid::new_v4().to_string(),
                target: *size,
                previous_task_arn: container.task_arn.clone(),
                replacement_task_arn: None,
                task_definition_arn: None,
                image: Some(image.clone()),
            });
            done.push("replace queued".into());
        }
        record.lease = None;
        record.tenant.updated_at = OffsetDateTime::now_utc();
        if record.tenant.status == TenantStatus::Active {
            record.tenant.failure_reason = None;
        }
        let event = DomainEvent::new(
            "tenant.reconciled",
            json!({
                "run": run,
                "drift": verdict.drift,
                "repairs": done,
                "task_arn": record.tenant.container.as_ref().map(|c| c.task_arn.clone()),
            }),
        );
        match self.store.transition_tenant(&mut record, event).await {
            Ok(_) => {}
            Err(StoreError::VersionConflict { .. }) => {
                return Err(JobError::Retry("the tenant changed during its repair".into()));
            }
            Err(error) => return Err(retry(error)),
        }
        if replace {
            self.enqueue(ProvisioningJob::ScaleTenant { tenant_id }).await?;
        }
        tracing::info!(%tenant_id, drift = ?verdict.drift, repairs = ?done, "tenant reconciled");
        Ok(true)
    }
}
