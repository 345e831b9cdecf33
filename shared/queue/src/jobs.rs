//! The typed jobs of each queue.

use dotmac_domain::{BackupId, PartnerId, PlanId, TenantId};
use serde::{Deserialize, Serialize};

use crate::job::Job;

/// Work on a tenant's container, consumed by the provisioner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ProvisioningJob {
    /// Launch the tenant's container and mark the tenant active once it runs.
    ProvisionTenant { tenant_id: TenantId },
    /// Export the tenant's partition to S3 (records + manifest) and launch its container's
    /// own data backup; the backup's record (pending) exists before the job is queued.
    BackupTenant { tenant_id: TenantId, backup_id: BackupId },
    /// Bring the tenant's partition back to what the backup holds (the restore's record,
    /// pending, exists before the job is queued).
    RestoreTenant { tenant_id: TenantId, backup_id: BackupId, restore_id: String },
    /// Bring the tenant's container to the size it should have now (override, else the tier
    /// of its latest customer count): no-op when it already has it.
    ScaleTenant { tenant_id: TenantId },
    /// The daily schedule: a backup of every active tenant, and each tenant's expired
    /// backups pruned. `scheduled_at` (RFC 3339, EventBridge Scheduler's
    /// `<aws.scheduler.scheduled-time>`) names the day, so a repeated run names the same backups.
    ScheduledBackups { scheduled_at: String },
    /// The hourly schedule: a scale job for every active tenant whose size should change.
    ScheduledScaling {},
    /// Delete a tenant's expired backups (S3 objects first, then the records).
    PruneBackups { tenant_id: TenantId },
    /// Sign the tenant's license from its plan and bundles as they stand when the job runs,
    /// and write it into the tenant's secret. Queued whenever they change; any delivery,
    /// duplicate or late, writes what holds now, so repeats are harmless.
    IssueLicense { tenant_id: TenantId },
    /// Stop a suspended tenant's task (its secret, task definition and data stay). Converges
    /// ECS to the record: a no-op unless the tenant is still suspended when it runs, so a
    /// late or duplicate copy after a resume does nothing.
    SuspendTenant { tenant_id: TenantId },
    /// Run a resumed tenant's task again, with the same identity (task family, secret).
    /// `version` is the tenant's version the resume left, naming this resume in the RunTask
    /// client token; a no-op unless the tenant is active when it runs.
    ResumeTenant { tenant_id: TenantId, version: u64 },
    /// The delete saga of a tenant in `deprovisioning`: stop its task, deregister its task
    /// definition revisions, revoke its machine token, delete its secret (with a recovery
    /// window), mark it `deleted`. Every step checks what is left first, so a retry after a
    /// crash at any point carries on where the last attempt stopped.
    DeprovisionTenant { tenant_id: TenantId },
    /// The fleet reconcile (every 5 minutes): compare what each active, suspended or deleted
    /// tenant should run with what ECS runs and repair the drift, at most the configured
    /// number of repairs per run; past it the job queues itself again from `cursor` (the
    /// tenants list's). `scheduled_at` (RFC 3339) names the run in logs and events.
    ReconcileFleet {
        scheduled_at: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cursor: Option<String>,
    },
    /// The reconcile of one tenant: what an ECS "Task State Change" to STOPPED queues (the
    /// rule's input transformer writes it, `infra/template.yaml`), so a crashed container is
    /// back in seconds.
    ReconcileTenant { tenant_id: TenantId },
    /// The next batch of a rolling image update: its active tenants moved to the rollout's
    /// image, the others counted skipped; queues the batch after it unless paused or done.
    RolloutBatch { rollout_id: String },
}

impl Job for ProvisioningJob {
    const QUEUE: &'static str = "provisioning-jobs";
}

/// Billing work, consumed by the billing worker. Every variant tolerates duplicates, any
/// order and crashes: invoices are keyed by tenant and period, run counters move with a
/// per-tenant mark, and the fan-out resumes from the cursor its run records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BillingJob {
    /// Queue one `InvoiceTenant` per active tenant of the run, a page of tenants at a time,
    /// from the run's recorded cursor on.
    FanOut { run_id: String },
    /// Compute (or recompute, while a draft) the tenant's invoice of the run's period. It
    /// carries what the tenants list already said (plan, partner), so the worker reads no
    /// tenant profile.
    InvoiceTenant {
        run_id: String,
        tenant_id: TenantId,
        period: String,
        plan: PlanId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        partner_id: Option<PartnerId>,
    },
    /// Charge attempt `attempt` (from 1) at the tenant's finalized invoice of `period`
    /// through Stripe (run by the payments worker, `dotmac_payments`). Every Stripe call it
    /// makes carries an idempotency key derived from the invoice and attempt, and the attempt
    /// is recorded before Stripe is asked, so a duplicate, a retry or a crash charges once.
    ChargeInvoice { tenant_id: TenantId, period: String, attempt: u32 },
}

impl Job for BillingJob {
    const QUEUE: &'static str = "billing-jobs";
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::Envelope;

    #[test]
    fn wire_format_is_stable() {
        let raw = r#"{"job_id":"0190c6a2-5d1e-7f00-8000-000000000001","job":{"type":"provision_tenant","tenant_id":"0190c6a2-5d1e-7f00-8000-0000000000aa"}}"#;
        let envelope: Envelope<ProvisioningJob> = serde_json::from_str(raw).expect("decodes");
        let ProvisioningJob::ProvisionTenant { tenant_id } = &envelope.job else { panic!("provision") };
        assert_eq!(tenant_id.to_string(), "0190c6a2-5d1e-7f00-8000-0000000000aa");
        let again: serde_json::Value = serde_json::to_value(&envelope).expect("encodes");
        assert_eq!(again, serde_json::from_str::<serde_json::Value>(raw).expect("json"));
        let raw = r#"{"job_id":"0190c6a2-5d1e-7f00-8000-000000000002","job":{"type":"issue_license","tenant_id":"0190c6a2-5d1e-7f00-8000-0000000000aa"}}"#;
        let envelope: Envelope<ProvisioningJob> = serde_json::from_str(raw).expect("decodes");
        assert!(matches!(envelope.job, ProvisioningJob::IssueLicense { .. }));
    }

    #[test]
    fn billing_jobs_wire_format_is_stable() {
        let raw = r#"{"job_id":"0190c6a2-5d1e-7f00-8000-000000000002","job":{"type":"invoice_tenant","run_id":"r1","tenant_id":"0190c6a2-5d1e-7f00-8000-0000000000aa","period":"2026-11","plan":"usage"}}"#;
        let envelope: Envelope<BillingJob> = serde_json::from_str(raw).expect("decodes");
        assert!(
            matches!(&envelope.job, BillingJob::InvoiceTenant { period, partner_id: None, .. } if period == "2026-11")
        );
        let again: serde_json::Value = serde_json::to_value(&envelope).expect("encodes");
        assert_eq!(again, serde_json::from_str::<serde_json::Value>(raw).expect("json"));
    }

    /// What the template's schedules send (`infra/template.yaml`, `events/`): it must decode.
    #[test]
    fn the_schedules_messages_decode() {
        for raw in [
            include_str!("../../../events/sqs-scheduled-backups.json"),
            include_str!("../../../events/sqs-scheduled-scaling.json"),
            include_str!("../../../events/sqs-scheduled-reconcile.json"),
        ] {
            let event: serde_json::Value = serde_json::from_str(raw).expect("event");
            let body = event["Records"][0]["body"].as_str().expect("body");
            let envelope: Envelope<ProvisioningJob> = serde_json::from_str(body).expect("decodes");
            assert!(matches!(
                envelope.job,
                ProvisioningJob::ScheduledBackups { .. }
                    | ProvisioningJob::ScheduledScaling {}
                    | ProvisioningJob::ReconcileFleet { cursor: None, .. }
            ));
        }
    }

    /// The sample SQS events in `events/` (for `cargo lambda invoke`) carry these jobs.
    #[test]
    fn the_sample_events_decode_to_their_jobs() {
        let samples = [
            (include_str!("../../../events/sqs-suspend-tenant.json"), "suspend_tenant"),
            (include_str!("../../../events/sqs-resume-tenant.json"), "resume_tenant"),
            (include_str!("../../../events/sqs-deprovision-tenant.json"), "deprovision_tenant"),
            (include_str!("../../../events/sqs-ecs-task-stopped.json"), "reconcile_tenant"),
            (include_str!("../../../events/sqs-rollout-batch.json"), "rollout_batch"),
        ];
        for (raw, tag) in samples {
            let event: serde_json::Value = serde_json::from_str(raw).expect("json");
            let body = event["Records"][0]["body"].as_str().expect("body");
            let envelope: Envelope<ProvisioningJob> = serde_json::from_str(body).expect("a job");
            assert_eq!(serde_json::to_value(&envelope.job).expect("json")["type"], tag);
        }
    }

    #[test]
    fn lifecycle_jobs_have_their_own_tags() {
        let tenant_id = dotmac_domain::TenantId::generate();
        let cases = [
            (ProvisioningJob::SuspendTenant { tenant_id }, "suspend_tenant"),
            (ProvisioningJob::ResumeTenant { tenant_id, version: 4 }, "resume_tenant"),
            (ProvisioningJob::DeprovisionTenant { tenant_id }, "deprovision_tenant"),
        ];
        for (job, tag) in cases {
            let json = serde_json::to_value(&job).expect("json");
            assert_eq!(json["type"], tag);
            assert_eq!(json["tenant_id"], tenant_id.to_string());
            assert_eq!(serde_json::from_value::<ProvisioningJob>(json).expect("back"), job);
        }
    }
}
