//! The typed jobs of each queue.

use dotmac_domain::{BackupId, TenantId};
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
}

impl Job for ProvisioningJob {
    const QUEUE: &'static str = "provisioning-jobs";
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
    }

    /// What the template's schedules send (`infra/template.yaml`, `events/`): it must decode.
    #[test]
    fn the_schedules_messages_decode() {
        for raw in [
            include_str!("../../../events/sqs-scheduled-backups.json"),
            include_str!("../../../events/sqs-scheduled-scaling.json"),
        ] {
            let event: serde_json::Value = serde_json::from_str(raw).expect("event");
            let body = event["Records"][0]["body"].as_str().expect("body");
            let envelope: Envelope<ProvisioningJob> = serde_json::from_str(body).expect("decodes");
            assert!(matches!(
                envelope.job,
                ProvisioningJob::ScheduledBackups { .. } | ProvisioningJob::ScheduledScaling {}
            ));
        }
    }
}
