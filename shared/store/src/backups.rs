//! A tenant's backups and restores, as records in its own partition, and the raw reads and
//! writes of the whole partition that exporting and restoring it need.
//!
//! `TENANT#<id>` / `BACKUP#<backup id>`: one backup's record (status `pending → completed |
//! failed`, counts, checksum, its S3 keys), created once (a conditional put: the same id again
//! is the same backup) and changed only by version-checked writes. `RESTORE#<restore id>`:
//! one restore, the same way. The S3 keys are derived from the tenant and the backup id alone,
//! so every attempt of a backup writes the very same objects.

use aws_sdk_dynamodb::types::{AttributeValue, DeleteRequest, PutRequest, WriteRequest};
use dotmac_domain::{BackupId, DomainEvent, EventEnvelope, TenantId};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use time::OffsetDateTime;

use crate::billing::INVOICE_SK_PREFIX;
use crate::dynamo::{Expr, Item, Query, decode, decode_cursor};
use crate::events::EVENT_SK_PREFIX;
use crate::item_json::RawItem;
use crate::keys::{ItemKey, PK, SK, Stored, TENANT_PROFILE_SK, USAGE_SK_PREFIX, s, tenant_pk};
use crate::secret_writes::SECRET_WRITES_SK;
use crate::subscriptions::SUBSCRIPTION_SK_PREFIX;
use crate::tenants::Page;
use crate::tenants::TenantRecord;
use crate::{Store, StoreError};

pub const BACKUP_SK_PREFIX: &str = "BACKUP#";
pub const RESTORE_SK_PREFIX: &str = "RESTORE#";

/// Whether an item of the tenant's partition (by its sort key) is left exactly as it is by a
/// restore — neither written back from the backup nor removed when the backup lacks it:
/// - the profile: the control plane's live record of the tenant (status, its running
///   container and task definition, secret, lease, optimistic-lock version). Writing back an
///   old one would point the tenant at a task that may be gone and move its version backwards,
///   which would let a stale writer's save through;
/// - the backup and restore records: the catalogue a restore is chosen from, and the restore
///   in progress itself;
/// - the event log: what happened, including the restore;
/// - the platform's ledger of the tenant: its usage reports, its plan and bundle spans, its
///   invoices and the license writers' claim. They record what the platform billed and
///   sold, not the tenant's own data: an old invoice written back would undo a finalization
///   (and its number), and a removed report would be billed zero times.
pub fn survives_restore(sk: &str) -> bool {
    sk == TENANT_PROFILE_SK
        || sk == SECRET_WRITES_SK
        || [
            BACKUP_SK_PREFIX,
            RESTORE_SK_PREFIX,
            EVENT_SK_PREFIX,
            USAGE_SK_PREFIX,
            SUBSCRIPTION_SK_PREFIX,
            INVOICE_SK_PREFIX,
        ]
        .iter()
        .any(|prefix| sk.starts_with(prefix))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BackupStatus {
    Pending,
    Completed,
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BackupTrigger {
    /// `POST /v1/tenants/{id}/backups`.
    OnDemand,
    /// The daily schedule.
    Scheduled,
}

/// The S3 layout of one backup, under the tenant's own prefix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupKeys {
    /// `tenants/<id>/backups/<backup id>/`: everything of this backup, the container's own
    /// data backup included, is below it.
    pub prefix: String,
    pub records: String,
    pub manifest: String,
    /// Where the tenant's container writes its own data backup.
    pub data_prefix: String,
}

impl BackupKeys {
    pub fn of(tenant: TenantId, backup: &BackupId) -> Self {
        let prefix = format!("tenants/{tenant}/backups/{backup}/");
        BackupKeys {
            records: format!("{prefix}records.jsonl.gz"),
            manifest: format!("{prefix}manifest.json"),
            data_prefix: format!("{prefix}data/"),
            prefix,
        }
    }
}

/// One backup of a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupRecord {
    pub backup_id: BackupId,
    pub tenant_id: TenantId,
    pub status: BackupStatus,
    pub trigger: BackupTrigger,
    /// Who asked for it (a user id), for on-demand backups.
    #[serde(default)]
    pub requested_by: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub completed_at: Option<OffsetDateTime>,
    pub keys: BackupKeys,
    /// Items exported and the SHA-256 (hex) of the compressed records object, once exported.
    #[serde(default)]
    pub item_count: Option<u64>,
    #[serde(default)]
    pub sha256: Option<String>,
    #[serde(default)]
    pub compressed_bytes: Option<u64>,
    /// The one-off ECS task running the container's own data backup, once launched.
    #[serde(default)]
    pub data_task_arn: Option<String>,
    #[serde(default)]
    pub failure_reason: Option<String>,
    pub version: u64,
}

impl BackupRecord {
    pub fn new(
        tenant: TenantId,
        backup_id: BackupId,
        trigger: BackupTrigger,
        requested_by: Option<String>,
        now: OffsetDateTime,
    ) -> Self {
        BackupRecord {
            keys: BackupKeys::of(tenant, &backup_id),
            backup_id,
            tenant_id: tenant,
            status: BackupStatus::Pending,
            trigger,
            requested_by,
            created_at: now,
            completed_at: None,
            item_count: None,
            sha256: None,
            compressed_bytes: None,
            data_task_arn: None,
            failure_reason: None,
            version: 1,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RestoreStatus {
    Pending,
    Completed,
    Failed,
}

/// One restore of a tenant's partition from one of its backups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreRecord {
    pub restore_id: String,
    pub backup_id: BackupId,
    pub tenant_id: TenantId,
    pub status: RestoreStatus,
    #[serde(default)]
    pub requested_by: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub completed_at: Option<OffsetDateTime>,
    /// Items written back and items removed by the last attempt.
    #[serde(default)]
    pub written: Option<u64>,
    #[serde(default)]
    pub removed: Option<u64>,
    #[serde(default)]
    pub failure_reason: Option<String>,
    pub version: u64,
}

type BackupItem = Stored<BackupRecord>;
type RestoreItem = Stored<RestoreRecord>;

impl ItemKey {
    pub(crate) fn backup(tenant: TenantId, id: &BackupId) -> Self {
        Self::in_tenant(tenant, format!("{BACKUP_SK_PREFIX}{id}"))
    }

    pub(crate) fn restore(tenant: TenantId, id: &str) -> Self {
        Self::in_tenant(tenant, format!("{RESTORE_SK_PREFIX}{id}"))
    }
}

fn version_is(expected: u64) -> Expr {
    Expr::new("attribute_exists(PK) AND version = :expected")
        .value(":expected", AttributeValue::N(expected.to_string()))
}

/// A backup or a restore: one record under its own key, replaced whole by each save, which
/// bumps its `version` (the lock the next save checks).
trait VersionedRecord: Clone + Serialize {
    const KIND: &'static str;
    fn key(&self) -> ItemKey;
    fn version_mut(&mut self) -> &mut u64;
}

impl VersionedRecord for BackupRecord {
    const KIND: &'static str = "backup";
    fn key(&self) -> ItemKey {
        ItemKey::backup(self.tenant_id, &self.backup_id)
    }
    fn version_mut(&mut self) -> &mut u64 {
        &mut self.version
    }
}

impl VersionedRecord for RestoreRecord {
    const KIND: &'static str = "restore";
    fn key(&self) -> ItemKey {
        ItemKey::restore(self.tenant_id, &self.restore_id)
    }
    fn version_mut(&mut self) -> &mut u64 {
        &mut self.version
    }
}

/// The record's next version, the item that stores it, and the version it replaces.
fn item_after<R: VersionedRecord>(record: &R) -> Result<(Item, R, u64), StoreError> {
    let mut next = record.clone();
    let expected = *next.version_mut();
    *next.version_mut() = expected + 1;
    let item = Stored::new(next.key(), R::KIND, &next).to_item()?;
    Ok((item, next, expected))
}

/// What a write of many raw items at once can take (BatchWriteItem's limit).
const BATCH: usize = 25;

impl Store {
    /// Records a new backup, or returns the one recorded under its id before (the same id is
    /// the same backup: a retried request or a repeated schedule run).
    pub async fn create_backup(&self, record: &BackupRecord) -> Result<(BackupRecord, bool), StoreError> {
        let item =
            Stored::new(ItemKey::backup(record.tenant_id, &record.backup_id), "backup", record).to_item()?;
        match self.put_new_or_read(item).await? {
            None => Ok((record.clone(), true)),
            Some(existing) => Ok((decode::<BackupItem>(existing)?.record, false)),
        }
    }

    pub async fn get_backup(
        &self,
        tenant: TenantId,
        id: &BackupId,
    ) -> Result<Option<BackupRecord>, StoreError> {
        Ok(self.get_item::<BackupItem>(ItemKey::backup(tenant, id)).await?.map(|i| i.record))
    }

    /// Replaces the record if nobody changed it since it was read, then bumps its version.
    pub async fn save_backup(&self, record: &mut BackupRecord) -> Result<(), StoreError> {
        self.save_versioned(record).await
    }

    /// `save_backup` with `event` in the tenant's log, in one transaction with the tenant's
    /// version-checked record (`transition_tenant`): a backup's outcome is never recorded
    /// without its event, nor the event without it. On `VersionConflict` read both again.
    pub async fn save_backup_with_event(
        &self,
        record: &mut BackupRecord,
        tenant: &mut TenantRecord,
        event: DomainEvent,
    ) -> Result<EventEnvelope, StoreError> {
        self.save_versioned_with_event(record, tenant, event).await
    }

    /// Removes a backup's record (its objects are gone) with `event` in the tenant's log, in
    /// one transaction with the tenant's version-checked record.
    pub async fn delete_backup_with_event(
        &self,
        record: &BackupRecord,
        tenant: &mut TenantRecord,
        event: DomainEvent,
    ) -> Result<EventEnvelope, StoreError> {
        let key = ItemKey::backup(record.tenant_id, &record.backup_id);
        let step = self.delete_step(key, version_is(record.version))?;
        self.transition_tenant_with(tenant, event, vec![step]).await
    }

    /// A tenant's backups, in id order, `limit` at a time.
    pub async fn list_backups(
        &self,
        tenant: TenantId,
        limit: i32,
        cursor: Option<&str>,
    ) -> Result<Page<BackupRecord>, StoreError> {
        let start = cursor
            .map(|c| {
                let id = BackupId::parse(&decode_cursor(c)?).map_err(|_| StoreError::BadCursor)?;
                Ok::<_, StoreError>(ItemKey::backup(tenant, &id).into_item())
            })
            .transpose()?;
        let query = Query::table(backups_of(tenant)).limit(limit).start(start);
        self.page(query, "backup_id", |item: BackupItem| item.record).await
    }

    /// Every backup of a tenant.
    pub async fn all_backups(&self, tenant: TenantId) -> Result<Vec<BackupRecord>, StoreError> {
        let items: Vec<BackupItem> = self.query_all(Query::table(backups_of(tenant))).await?;
        Ok(items.into_iter().map(|i| i.record).collect())
    }

    /// Records a new restore (ids are fresh UUIDs; the same id again returns the first).
    pub async fn create_restore(&self, record: &RestoreRecord) -> Result<RestoreRecord, StoreError> {
        let item = Stored::new(ItemKey::restore(record.tenant_id, &record.restore_id), "restore", record)
            .to_item()?;
        match self.put_new_or_read(item).await? {
            None => Ok(record.clone()),
            Some(existing) => Ok(decode::<RestoreItem>(existing)?.record),
        }
    }

    pub async fn get_restore(&self, tenant: TenantId, id: &str) -> Result<Option<RestoreRecord>, StoreError> {
        Ok(self.get_item::<RestoreItem>(ItemKey::restore(tenant, id)).await?.map(|i| i.record))
    }

    /// Replaces the record if nobody changed it since it was read, then bumps its version.
    pub async fn save_restore(&self, record: &mut RestoreRecord) -> Result<(), StoreError> {
        self.save_versioned(record).await
    }

    /// `save_restore` with `event` in the tenant's log, in one transaction (as
    /// `save_backup_with_event`).
    pub async fn save_restore_with_event(
        &self,
        record: &mut RestoreRecord,
        tenant: &mut TenantRecord,
        event: DomainEvent,
    ) -> Result<EventEnvelope, StoreError> {
        self.save_versioned_with_event(record, tenant, event).await
    }

    async fn save_versioned<R: VersionedRecord>(&self, record: &mut R) -> Result<(), StoreError> {
        let (item, next, expected) = item_after(record)?;
        self.put(item, Some(version_is(expected)))
            .await?
            .map_err(|_| StoreError::VersionConflict { expected })?;
        *record = next;
        Ok(())
    }

    async fn save_versioned_with_event<R: VersionedRecord>(
        &self,
        record: &mut R,
        tenant: &mut TenantRecord,
        event: DomainEvent,
    ) -> Result<EventEnvelope, StoreError> {
        let (item, next, expected) = item_after(record)?;
        let step = self.put_step(item, Some(version_is(expected)))?;
        let envelope = self.transition_tenant_with(tenant, event, vec![step]).await?;
        *record = next;
        Ok(envelope)
    }

    /// Every item of the tenant's partition as DynamoDB holds it (every attribute, every
    /// type), in sort-key order, read strongly consistent page by page.
    pub async fn partition_items(&self, tenant: TenantId) -> Result<Vec<RawItem>, StoreError> {
        let key = Expr::new("PK = :pk").value(":pk", s(tenant_pk(tenant)));
        let mut start: Option<Item> = None;
        let mut all = Vec::new();
        loop {
            let (names, values) = (None::<HashMap<String, String>>, key.values().clone());
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression(key.text())
                .set_expression_attribute_names(names)
                .set_expression_attribute_values(Some(values))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| StoreError::dynamo("Query", e))?;
            all.extend(output.items.unwrap_or_default());
            match output.last_evaluated_key {
                Some(last) => start = Some(last),
                None => return Ok(all),
            }
        }
    }

    /// Writes `items` as they are (each replaces whatever has its key) and deletes the items
    /// with `removed` keys, all inside the tenant's partition; 25 at a time, with what
    /// DynamoDB leaves unprocessed sent again. Unconditional: repeating it changes nothing.
    pub async fn write_partition(
        &self,
        tenant: TenantId,
        items: Vec<RawItem>,
        removed: Vec<RawItem>,
    ) -> Result<(), StoreError> {
        let pk = s(tenant_pk(tenant));
        let inside = |item: &RawItem| item.get(PK) == Some(&pk) && item.get(SK).is_some();
        if !items.iter().chain(&removed).all(inside) {
            return Err(StoreError::OutOfFence { key: "an item outside the tenant's partition".into() });
        }
        let mut requests = Vec::with_capacity(items.len() + removed.len());
        for item in items {
            let put = PutRequest::builder().set_item(Some(item)).build().map_err(StoreError::request)?;
            requests.push(WriteRequest::builder().put_request(put).build());
        }
        for key in removed {
            let only_key: RawItem = key.into_iter().filter(|(name, _)| name == PK || name == SK).collect();
            let delete =
                DeleteRequest::builder().set_key(Some(only_key)).build().map_err(StoreError::request)?;
            requests.push(WriteRequest::builder().delete_request(delete).build());
        }
        for chunk in requests.chunks(BATCH) {
            let mut pending = chunk.to_vec();
            for attempt in 0..8u32 {
                let output = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table, pending)
                    .send()
                    .await
                    .map_err(|e| StoreError::dynamo("BatchWriteItem", e))?;
                pending =
                    output.unprocessed_items.and_then(|mut u| u.remove(&self.table)).unwrap_or_default();
                if pending.is_empty() {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50 << attempt)).await;
            }
            if !pending.is_empty() {
                return Err(StoreError::Dynamo {
                    operation: "BatchWriteItem",
                    message: format!("{} writes left unprocessed", pending.len()),
                });
            }
        }
        Ok(())
    }
}

impl Store {
    /// Keeps the e-mail claims (outside the partition) in step with a restore's users, before
    /// the partition is written: every user of the backup holds its address again (unless
    /// someone else took it meanwhile: that user then cannot sign in until an admin sorts it
    /// out, and a warning says so), and a user the restore removes frees its address. Both
    /// are conditional writes, so repeating them changes nothing.
    pub async fn settle_email_claims(
        &self,
        tenant: TenantId,
        restored: &[RawItem],
        removed: &[RawItem],
    ) -> Result<(), StoreError> {
        let user = |item: &RawItem| -> Option<(String, String)> {
            let sk = item.get(SK)?.as_s().ok()?;
            sk.starts_with("USER#").then_some(())?;
            Some((item.get("id")?.as_s().ok()?.clone(), item.get("email")?.as_s().ok()?.clone()))
        };
        for (id, email) in restored.iter().filter_map(user) {
            let mut claim = ItemKey::email(&email).into_item();
            claim.insert("entity".to_owned(), s("email_claim"));
            claim.insert("user_id".to_owned(), s(&id));
            claim.insert("home".to_owned(), s(tenant_pk(tenant)));
            if let Some(existing) = self.put_new_or_read(claim).await?
                && existing.get("user_id").and_then(|v| v.as_s().ok()) != Some(&id)
            {
                tracing::warn!(%tenant, user_id = id, "a restored user's e-mail belongs to another account now");
            }
        }
        for (id, email) in removed.iter().filter_map(user) {
            let theirs = Expr::new("user_id = :id").value(":id", s(&id));
            // Refused: the address is someone else's (or free) already.
            let _ = self.delete(ItemKey::email(&email), Some(theirs)).await?;
        }
        Ok(())
    }
}

fn backups_of(tenant: TenantId) -> Expr {
    Expr::new("PK = :pk AND begins_with(SK, :backups)")
        .value(":pk", s(tenant_pk(tenant)))
        .value(":backups", s(BACKUP_SK_PREFIX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_keys_of_a_backup_depend_on_the_tenant_and_id_alone() {
        let tenant = TenantId::generate();
        let id = BackupId::parse("daily-20261201").expect("id");
        let keys = BackupKeys::of(tenant, &id);
        assert_eq!(keys, BackupKeys::of(tenant, &id));
        assert_eq!(keys.records, format!("tenants/{tenant}/backups/daily-20261201/records.jsonl.gz"));
        assert_eq!(keys.manifest, format!("tenants/{tenant}/backups/daily-20261201/manifest.json"));
        assert!(keys.data_prefix.starts_with(&keys.prefix) && keys.records.starts_with(&keys.prefix));
    }

    #[test]
    fn what_a_restore_leaves_alone() {
        let ledger = ["USAGE#r", "SUBSCRIPTION#PLAN#000000000000001", "INVOICE#2026-11", "SECRET_WRITES"];
        for kept in ["PROFILE", "BACKUP#x", "RESTORE#y", "EVENT#0001"].into_iter().chain(ledger) {
            assert!(survives_restore(kept), "{kept}");
        }
        for restored in ["USER#1", "ROLE#a", "HEARTBEAT", "INVITATION#i"] {
            assert!(!survives_restore(restored), "{restored}");
        }
    }
}
