//! The event publisher: moves the events waiting in the outbox (see `dotmac_store::events`)
//! to EventBridge, at least once and in order per tenant; then the platform's own events
//! (no tenant's: `billing.cycle_started`), oldest first.
//!
//! Why an outbox poller on a schedule rather than DynamoDB Streams: Streams order records per
//! item, and each event is an item of its own, so two events of one tenant carry no order
//! between them on a stream; the poller reads each tenant's pending events in sequence
//! order from the index and publishes the next one only after the one before it went out.
//! It is also the same code in AWS (EventBridge Scheduler, every minute) and in the dev
//! server (a loop, every second), with no stream emulation needed. The cost is latency (up
//! to the schedule's period in AWS) and one Query per run on a sparse index.
//!
//! In order per tenant: each round sends at most one event per tenant (the oldest it has
//! left), and a tenant whose event failed sends nothing more this run. EventBridge itself
//! does not promise delivery order to targets, so a consumer that needs it orders by the
//! envelope's `sequence` (and deduplicates on `id`: a crash between PutEvents and marking
//! the event published sends it again on the next run).

use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use dotmac_domain::{EventEnvelope, TenantId};
use dotmac_store::{OutboxEvent, Store, StoreError};
use std::collections::VecDeque;

/// The `source` of every entry the platform puts on the bus (rules match on it).
pub const EVENT_SOURCE: &str = "dotmac.platform";
/// PutEvents takes at most 10 entries.
const ENTRIES_PER_CALL: usize = 10;
/// Events read from the outbox per run.
const EVENTS_PER_RUN: i32 = 200;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("EventBridge PutEvents failed: {0}")]
    EventBridge(String),
}

/// What one run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Published {
    pub published: usize,
    /// Events left for the next run (EventBridge refused one of their tenant's).
    pub held_back: usize,
}

#[derive(Clone)]
pub struct Publisher {
    pub store: Store,
    pub events: aws_sdk_eventbridge::Client,
    pub bus: String,
}

/// The pending events grouped by tenant, each tenant's in sequence order, tenants in the order
/// the outbox lists them.
pub fn by_tenant(events: Vec<EventEnvelope>) -> Vec<VecDeque<EventEnvelope>> {
    let mut groups: Vec<(TenantId, VecDeque<EventEnvelope>)> = Vec::new();
    for event in events {
        match groups.iter_mut().find(|(tenant, _)| *tenant == event.tenant_id) {
            Some((_, group)) => group.push_back(event),
            None => groups.push((event.tenant_id, VecDeque::from([event]))),
        }
    }
    for (_, group) in &mut groups {
        group.make_contiguous().sort_by_key(|event| event.sequence);
    }
    groups.into_iter().map(|(_, group)| group).collect()
}

impl Publisher {
    fn entry(&self, event: &EventEnvelope) -> Result<PutEventsRequestEntry, PublishError> {
        let detail = serde_json::to_string(event).map_err(|e| PublishError::EventBridge(e.to_string()))?;
        Ok(PutEventsRequestEntry::builder()
            .event_bus_name(&self.bus)
            .source(EVENT_SOURCE)
            .detail_type(&event.event_type)
            .detail(detail)
            .build())
    }

    /// A platform event's entry: the same versioned envelope as a tenant's, without a tenant.
    fn platform_entry(&self, event: &OutboxEvent) -> Result<PutEventsRequestEntry, PublishError> {
        let data: serde_json::Value =
            serde_json::from_str(&event.detail).map_err(|e| PublishError::EventBridge(e.to_string()))?;
        let occurred_at = event
            .created_at
            .format(&time::format_description::well_known::Rfc3339)
            .map_err(|e| PublishError::EventBridge(e.to_string()))?;
        let envelope = serde_json::json!({
            "type": event.detail_type,
            "version": 1,
            "id": event.event_id,
            "occurred_at": occurred_at,
            "data": data,
        });
        Ok(PutEventsRequestEntry::builder()
            .event_bus_name(&self.bus)
            .source(EVENT_SOURCE)
            .detail_type(&event.detail_type)
            .detail(envelope.to_string())
            .build())
    }

    /// One run: publishes what the outbox holds now (up to `EVENTS_PER_RUN` of the tenants'
    /// and as many of the platform's).
    pub async fn publish_pending(&self) -> Result<Published, PublishError> {
        let mut done = self.publish_tenant_events().await?;
        let platform = self.publish_platform_events().await?;
        done.published += platform.published;
        done.held_back += platform.held_back;
        Ok(done)
    }

    /// The platform's events, oldest first; one EventBridge refused stops the run there, so
    /// they go out in order.
    async fn publish_platform_events(&self) -> Result<Published, PublishError> {
        let pending = self.store.unpublished_platform_events(EVENTS_PER_RUN).await?;
        let mut done = Published::default();
        for (sent, chunk) in pending.chunks(ENTRIES_PER_CALL).enumerate() {
            let entries = chunk.iter().map(|e| self.platform_entry(e)).collect::<Result<Vec<_>, _>>()?;
            let output = self.events.put_events().set_entries(Some(entries)).send().await.map_err(|e| {
                PublishError::EventBridge(aws_sdk_eventbridge::error::DisplayErrorContext(e).to_string())
            })?;
            for (position, event) in chunk.iter().enumerate() {
                if output.entries().get(position).is_none_or(|result| result.error_code().is_some()) {
                    tracing::warn!(event_id = %event.event_id, "EventBridge refused a platform event; it waits for the next run");
                    done.held_back += pending.len() - sent * ENTRIES_PER_CALL - position;
                    return Ok(done);
                }
                self.store.mark_platform_event_published(&event.event_id).await?;
                done.published += 1;
            }
        }
        Ok(done)
    }

    async fn publish_tenant_events(&self) -> Result<Published, PublishError> {
        let mut tenants = by_tenant(self.store.unpublished_events(EVENTS_PER_RUN).await?);
        let mut done = Published::default();
        loop {
            // The oldest pending event of each tenant that still has one, ten at a time.
            let heads: Vec<usize> =
                (0..tenants.len()).filter(|i| !tenants[*i].is_empty()).take(ENTRIES_PER_CALL).collect();
            if heads.is_empty() {
                return Ok(done);
            }
            let entries = heads.iter().map(|i| self.entry(&tenants[*i][0])).collect::<Result<Vec<_>, _>>()?;
            let output = self.events.put_events().set_entries(Some(entries)).send().await.map_err(|e| {
                PublishError::EventBridge(aws_sdk_eventbridge::error::DisplayErrorContext(e).to_string())
            })?;
            let now_ms = i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
                .unwrap_or(0);
            // One result per entry, in order; an entry with an error code was not put.
            for (position, i) in heads.into_iter().enumerate() {
                let failed =
                    output.entries().get(position).is_none_or(|result| result.error_code().is_some());
                if failed {
                    let left = tenants[i].len();
                    tracing::warn!(tenant_id = %tenants[i][0].tenant_id, left, "EventBridge refused an event; its tenant waits for the next run");
                    done.held_back += left;
                    tenants[i].clear();
                    continue;
                }
                if let Some(event) = tenants[i].pop_front() {
                    self.store.mark_published(event.tenant_id, event.sequence, now_ms).await?;
                    done.published += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dotmac_domain::DomainEvent;
    use time::OffsetDateTime;

    fn event(tenant: TenantId, sequence: u64) -> EventEnvelope {
        EventEnvelope::seal(
            DomainEvent::new("tenant.x", serde_json::json!({})),
            tenant,
            sequence,
            OffsetDateTime::UNIX_EPOCH,
        )
    }

    #[test]
    fn events_group_by_tenant_in_sequence_order() {
        let (a, b) = (TenantId::generate(), TenantId::generate());
        let groups = by_tenant(vec![event(a, 3), event(b, 1), event(a, 1), event(b, 2), event(a, 2)]);
        let sequences: Vec<(TenantId, Vec<u64>)> =
            groups.iter().map(|g| (g[0].tenant_id, g.iter().map(|e| e.sequence).collect())).collect();
        assert_eq!(sequences, vec![(a, vec![1, 2, 3]), (b, vec![1, 2])]);
    }
}
