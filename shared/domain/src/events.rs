//! Domain events: what a change says happened, and the versioned envelope it travels in.
//!
//! A change produces a `DomainEvent` (its type and data); the store seals it into an
//! `EventEnvelope` (id, time, tenant, sequence) and writes it in the same transaction as the
//! change itself, so there is no change without its event and no event without its change.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::tenant::TenantId;

/// The envelope's schema version. A consumer reads `version` before `data`; a change to the
/// envelope (not to one event's data) bumps it.
pub const ENVELOPE_VERSION: u32 = 1;

/// What a change emits, before the store gives it an id and a place in the tenant's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainEvent {
    /// `tenant.suspended`, `invoice.paid`, ...: `<aggregate>.<past tense>`.
    pub event_type: String,
    pub data: Value,
}

impl DomainEvent {
    pub fn new(event_type: impl Into<String>, data: Value) -> Self {
        Self { event_type: event_type.into(), data }
    }
}

/// An event as it is stored in the tenant's log and published to EventBridge (the `Detail`
/// of the entry): `{"type","version","id","occurred_at","tenant_id","sequence","data"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EventEnvelope {
    #[serde(rename = "type")]
    #[schema(example = "tenant.suspended")]
    pub event_type: String,
    /// The envelope's schema version (`ENVELOPE_VERSION`).
    pub version: u32,
    /// Unique per event: a consumer deduplicates on it (publishing is at least once).
    #[schema(value_type = String, format = Uuid)]
    pub id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub occurred_at: OffsetDateTime,
    #[schema(value_type = String, format = Uuid)]
    pub tenant_id: TenantId,
    /// The event's place in its tenant's log: the tenant record's version after the change.
    /// Increasing per tenant (with gaps: bookkeeping writes bump the version too), so a
    /// consumer orders a tenant's events by it.
    pub sequence: u64,
    #[schema(value_type = Object)]
    pub data: Value,
}

impl EventEnvelope {
    pub fn seal(event: DomainEvent, tenant_id: TenantId, sequence: u64, occurred_at: OffsetDateTime) -> Self {
        EventEnvelope {
            event_type: event.event_type,
            version: ENVELOPE_VERSION,
            id: Uuid::now_v7(),
            occurred_at,
            tenant_id,
            sequence,
            data: event.data,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_envelope_has_the_documented_fields() {
        let tenant = TenantId::generate();
        let event = DomainEvent::new("tenant.suspended", serde_json::json!({ "reason": "admin" }));
        let sealed = EventEnvelope::seal(event, tenant, 7, OffsetDateTime::UNIX_EPOCH);
        let json = serde_json::to_value(&sealed).expect("json");
        let mut keys: Vec<_> = json.as_object().expect("object").keys().cloned().collect();
        keys.sort();
        assert_eq!(keys, ["data", "id", "occurred_at", "sequence", "tenant_id", "type", "version"]);
        assert_eq!(json["type"], "tenant.suspended");
        assert_eq!(json["version"], 1);
        assert_eq!(json["occurred_at"], "1970-01-01T00:00:00Z");
        let back: EventEnvelope = serde_json::from_value(json).expect("reads back");
        assert_eq!(back, sealed);
    }
}
