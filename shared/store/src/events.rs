//! Each tenant's event log (the outbox): an item per event in the tenant's partition, SK
//! `EVENT#<sequence:010>`, written in the same transaction as the change it reports.
//!
//! The reusable API for any feature that changes a tenant and must say so:
//! - `Store::transition_tenant(&mut record, event)`: the version-checked save of the tenant
//!   and its event, in one `TransactWriteItems` (the event's sequence is the record's new
//!   version, so a tenant's log is in version order and two writers can never both append);
//! - `Store::tenant_change_steps` (crate): the same two steps, for a store module that has
//!   items of its own to write in the same transaction (an invoice and `invoice.paid`, a
//!   backup and `backup.completed`).
//!
//! An unpublished event also sits in GSI1 under `OUTBOX`, sorted `<tenant>#<sequence>`, so
//! the publisher reads every tenant's pending events in order; publishing removes it from
//! the index (`mark_published`), the item itself stays in the log.

use aws_sdk_dynamodb::types::TransactWriteItem;
use dotmac_domain::{DomainEvent, EventEnvelope, TenantId};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::dynamo::{Expr, Query, decode_cursor};
use crate::keys::{GSI1, GSI1PK, GSI1SK, ItemKey, OUTBOX_GSI1PK, SK, Stored, s, tenant_pk};
use crate::tenants::{Page, TenantRecord, tenant_item};
use crate::{Store, StoreError};

pub const EVENT_SK_PREFIX: &str = "EVENT#";

/// Which end of a tenant's log a page starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EventOrder {
    /// The newest event first (the default: what changed lately).
    #[default]
    NewestFirst,
    OldestFirst,
}

#[derive(Serialize, Deserialize)]
struct EventAttributes {
    #[serde(flatten)]
    envelope: EventEnvelope,
    /// When the publisher handed it to EventBridge (epoch ms); absent until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    published_at_ms: Option<i64>,
}

type EventItem = Stored<EventAttributes>;

fn outbox_sort_key(tenant: TenantId, sequence: u64) -> String {
    format!("{tenant}#{sequence:010}")
}

impl Store {
    /// The two steps of a change to a tenant: its record, saved only if still at
    /// `expected` (the version it was read at), and the event, created only if its
    /// sequence is free. `next` carries the new version (`expected + 1`).
    pub(crate) fn tenant_change_steps(
        &self,
        next: &TenantRecord,
        expected: u64,
        envelope: &EventEnvelope,
    ) -> Result<Vec<TransactWriteItem>, StoreError> {
        let unchanged = Expr::new("attribute_exists(PK) AND version = :expected")
            .value(":expected", aws_sdk_dynamodb::types::AttributeValue::N(expected.to_string()));
        Ok(vec![self.put_step(tenant_item(next)?, Some(unchanged))?, self.put_new(event_item(envelope)?)?])
    }

    /// Saves `record` (if nobody changed it since it was read: its `version` still matches)
    /// together with `event` in its log, in one transaction, and bumps the version in
    /// `record`. `VersionConflict` when someone else changed it first: nothing is written.
    pub async fn transition_tenant(
        &self,
        record: &mut TenantRecord,
        event: DomainEvent,
    ) -> Result<EventEnvelope, StoreError> {
        self.transition_tenant_with(record, event, Vec::new()).await
    }

    /// `transition_tenant` with more steps of the caller's in the same transaction (a backup's
    /// record and `backup.completed`): all of it is written, or none. Any step refused is a
    /// `VersionConflict`: the caller reads again and retries.
    pub(crate) async fn transition_tenant_with(
        &self,
        record: &mut TenantRecord,
        event: DomainEvent,
        also: Vec<TransactWriteItem>,
    ) -> Result<EventEnvelope, StoreError> {
        let expected = record.tenant.version;
        let mut next = record.clone();
        next.tenant.version = expected + 1;
        let envelope =
            EventEnvelope::seal(event, next.tenant.id, next.tenant.version, OffsetDateTime::now_utc());
        let mut steps = self.tenant_change_steps(&next, expected, &envelope)?;
        let count = steps.len() + also.len();
        steps.extend(also);
        match self.transact(steps).await? {
            Ok(()) => {}
            // A refused step means another writer got there first (the event's sequence is
            // the version, so it is taken only by a write that also moved the version).
            Err(cancelled) if (0..count).any(|step| cancelled.refused(step)) => {
                return Err(StoreError::VersionConflict { expected });
            }
            Err(cancelled) => return Err(cancelled.into()),
        }
        *record = next;
        Ok(envelope)
    }

    /// One page of a tenant's events, from the newest or the oldest. The cursor is opaque.
    pub async fn tenant_events(
        &self,
        tenant: TenantId,
        order: EventOrder,
        limit: i32,
        cursor: Option<&str>,
    ) -> Result<Page<EventEnvelope>, StoreError> {
        let start = cursor
            .map(|cursor| -> Result<_, StoreError> {
                let sk = decode_cursor(cursor)?;
                if !sk.starts_with(EVENT_SK_PREFIX) {
                    return Err(StoreError::BadCursor);
                }
                let mut start = ItemKey::tenant(tenant).into_item();
                start.insert(SK.to_owned(), s(sk));
                Ok(start)
            })
            .transpose()?;
        let key = Expr::new("PK = :pk AND begins_with(SK, :events)")
            .value(":pk", s(tenant_pk(tenant)))
            .value(":events", s(EVENT_SK_PREFIX));
        let mut query = Query::table(key).limit(limit).start(start);
        if order == EventOrder::NewestFirst {
            query = query.descending();
        }
        self.page(query, SK, |item: EventItem| item.record.envelope).await
    }

    /// Up to `limit` events not yet published, every tenant's in sequence order (tenants in
    /// id order). Read from the index, so an event written a moment ago may show up only on
    /// the next read, and one just published may show up once more (publishing is at least
    /// once).
    pub async fn unpublished_events(&self, limit: i32) -> Result<Vec<EventEnvelope>, StoreError> {
        let query =
            Query::index(GSI1, Expr::new("GSI1PK = :outbox").value(":outbox", s(OUTBOX_GSI1PK))).limit(limit);
        let (items, _) = self.query_page::<EventItem>(query).await?;
        Ok(items.into_iter().map(|item| item.record.envelope).collect())
    }

    /// Takes a published event out of the outbox index (the event stays in the log).
    pub async fn mark_published(
        &self,
        tenant: TenantId,
        sequence: u64,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let update = Expr::new("REMOVE #pk, #sk SET published_at_ms = :now")
            .name("#pk", GSI1PK)
            .name("#sk", GSI1SK)
            .value(":now", aws_sdk_dynamodb::types::AttributeValue::N(now_ms.to_string()));
        let exists = Expr::new(crate::dynamo::ITEM_EXISTS);
        // An event that is not there cannot be marked; nothing to do either way.
        let _ = self.update(ItemKey::tenant_event(tenant, sequence), update, Some(exists), None).await?;
        Ok(())
    }
}

/// An event's item: in its tenant's log, and in the outbox index until published.
pub(crate) fn event_item(envelope: &EventEnvelope) -> Result<crate::dynamo::Item, StoreError> {
    let attributes = EventAttributes { envelope: envelope.clone(), published_at_ms: None };
    Stored::new(ItemKey::tenant_event(envelope.tenant_id, envelope.sequence), "event", attributes)
        .indexed(OUTBOX_GSI1PK, outbox_sort_key(envelope.tenant_id, envelope.sequence))
        .to_item()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_item_sits_in_its_tenants_log_and_in_the_outbox_in_sequence_order() {
        let tenant = TenantId::generate();
        let event = DomainEvent::new("tenant.suspended", serde_json::json!({ "reason": "admin" }));
        let envelope = EventEnvelope::seal(event, tenant, 12, OffsetDateTime::UNIX_EPOCH);
        let item = event_item(&envelope).expect("item");
        assert_eq!(item["PK"], s(format!("TENANT#{tenant}")));
        assert_eq!(item["SK"], s("EVENT#0000000012"));
        assert_eq!(item[GSI1PK], s(OUTBOX_GSI1PK));
        assert_eq!(item[GSI1SK], s(format!("{tenant}#0000000012")));
        assert_eq!(item["type"], s("tenant.suspended"));
        let back: EventItem = crate::dynamo::decode(item).expect("decodes");
        assert_eq!(back.record.envelope, envelope);
        // Zero-padded, so the string order of keys is the number order of sequences.
        assert!(outbox_sort_key(tenant, 9) < outbox_sort_key(tenant, 10));
    }
}
