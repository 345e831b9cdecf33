//! The typed jobs of each queue.

use dotmac_domain::TenantId;
use serde::{Deserialize, Serialize};

use crate::job::Job;

/// Work on a tenant's container, consumed by the provisioner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ProvisioningJob {
    /// Launch the tenant's container and mark the tenant active once it runs.
    ProvisionTenant { tenant_id: TenantId },
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
}

impl ProvisioningJob {
    pub fn tenant_id(&self) -> TenantId {
        match self {
            ProvisioningJob::ProvisionTenant { tenant_id }
            | ProvisioningJob::SuspendTenant { tenant_id }
            | ProvisioningJob::ResumeTenant { tenant_id, .. }
            | ProvisioningJob::DeprovisionTenant { tenant_id } => *tenant_id,
        }
    }
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
        assert!(matches!(envelope.job, ProvisioningJob::ProvisionTenant { .. }));
        assert_eq!(envelope.job.tenant_id().to_string(), "0190c6a2-5d1e-7f00-8000-0000000000aa");
        let again: serde_json::Value = serde_json::to_value(&envelope).expect("encodes");
        assert_eq!(again, serde_json::from_str::<serde_json::Value>(raw).expect("json"));
    }

    /// The sample SQS events in `events/` (for `cargo lambda invoke`) carry these jobs.
    #[test]
    fn the_sample_events_decode_to_their_jobs() {
        let samples = [
            (include_str!("../../../events/sqs-suspend-tenant.json"), "suspend_tenant"),
            (include_str!("../../../events/sqs-resume-tenant.json"), "resume_tenant"),
            (include_str!("../../../events/sqs-deprovision-tenant.json"), "deprovision_tenant"),
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
