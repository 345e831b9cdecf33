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
    /// Sign the tenant's license from its plan and bundles as they stand when the job runs,
    /// and write it into the tenant's secret. Queued whenever they change; any delivery,
    /// duplicate or late, writes what holds now, so repeats are harmless.
    IssueLicense { tenant_id: TenantId },
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
        let ProvisioningJob::ProvisionTenant { tenant_id } = &envelope.job else {
            panic!("a provisioning job")
        };
        assert_eq!(tenant_id.to_string(), "0190c6a2-5d1e-7f00-8000-0000000000aa");
        let again: serde_json::Value = serde_json::to_value(&envelope).expect("encodes");
        assert_eq!(again, serde_json::from_str::<serde_json::Value>(raw).expect("json"));
        let raw = r#"{"job_id":"0190c6a2-5d1e-7f00-8000-000000000002","job":{"type":"issue_license","tenant_id":"0190c6a2-5d1e-7f00-8000-0000000000aa"}}"#;
        let envelope: Envelope<ProvisioningJob> = serde_json::from_str(raw).expect("decodes");
        assert!(matches!(envelope.job, ProvisioningJob::IssueLicense { .. }));
    }
}
