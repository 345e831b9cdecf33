//! The provisioner's domain events (`backup.completed`, `tenant.restored`, `tenant.scaled`,
//! ...), all through `emit`: the one seam where they leave this crate. Until the tenant's
//! event log (the outbox written with each state change, published to EventBridge) exists,
//! `emit` writes each event as one structured log line (`domain_event` target) in the
//! envelope the log will use, so nothing here changes when it is pointed at the outbox.

use dotmac_domain::TenantId;
use serde_json::Value;
use time::OffsetDateTime;

/// One domain event as the versioned envelope carries it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DomainEvent {
    /// `backup.completed`, `backup.failed`, `backup.expired`, `tenant.restored`,
    /// `tenant.restore_failed`, `tenant.scaled`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub version: u32,
    pub id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
    pub tenant_id: TenantId,
    pub data: Value,
}

impl DomainEvent {
    pub fn new(kind: &'static str, tenant_id: TenantId, data: Value) -> Self {
        DomainEvent {
            kind,
            version: 1,
            id: uuid::Uuid::now_v7().to_string(),
            occurred_at: OffsetDateTime::now_utc(),
            tenant_id,
            data,
        }
    }
}

/// Hands one event on (see the module comment).
pub fn emit(event: DomainEvent) {
    match serde_json::to_string(&event) {
        Ok(envelope) => {
            tracing::info!(target: "domain_event", event = %envelope, kind = event.kind, tenant_id = %event.tenant_id, "domain event")
        }
        Err(error) => tracing::error!(kind = event.kind, %error, "domain event not encoded"),
    }
}
