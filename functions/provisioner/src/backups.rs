//! Backups of a tenant's records and their restore, as queued jobs.
//!
//! A backup exports the tenant's whole partition (every item, raw, in DynamoDB JSON) to
//! `s3://<bucket>/tenants/<id>/backups/<backup id>/records.jsonl.gz` (gzip-compressed JSON
//! lines), writes `manifest.json` beside it (ids, time, item count, SHA-256 of the compressed
//! object, format version), then launches the tenant image's own data backup as a one-off
//! ECS task told the backup's `data/` prefix. Every key is derived from the tenant and the
//! backup id, so a retried attempt writes the same objects; one that finds a manifest whose
//! records object still hashes to its checksum adopts it instead of exporting again.
//!
//! A restore verifies the manifest's checksum and count against the object, then writes the
//! backup's items back and removes the items the backup does not have, except what
//! `dotmac_store::survives_restore` keeps. It computes what differs each time, so a repeated
//! or resumed restore converges on the same partition.

use aws_sdk_s3::primitives::ByteStream;
use dotmac_domain::{BackupId, TenantId, TenantStatus};
use dotmac_store::{
    BackupKeys, BackupRecord, BackupStatus, BackupTrigger, RawItem, RestoreRecord, RestoreStatus,
    item_from_json, item_to_json, survives_restore,
};
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::{Read, Write};
use time::OffsetDateTime;

/// The version of the records object's layout the manifest names.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("S3 {operation} failed: {message}")]
    S3 { operation: &'static str, message: String },
    #[error("the backup is unusable: {0}")]
    Corrupt(String),
}

impl StorageError {
    fn s3<E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static, R: std::fmt::Debug>(
        operation: &'static str,
        error: aws_sdk_s3::error::SdkError<E, R>,
    ) -> Self {
        let message = match error.as_service_error() {
            Some(e) => format!("{}: {}", e.code().unwrap_or("ServiceError"), e.message().unwrap_or_default()),
            None => aws_sdk_s3::error::DisplayErrorContext(&error).to_string(),
        };
        StorageError::S3 { operation, message }
    }
}

/// What lies beside the records: enough to check them before anything is restored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub backup_id: BackupId,
    pub tenant_id: TenantId,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub item_count: u64,
    /// SHA-256 (hex) of the compressed records object, exactly as stored.
    pub sha256: String,
    pub compressed_bytes: u64,
    pub records_key: String,
    pub data_prefix: String,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The records object: one item per line in DynamoDB JSON, gzip-compressed.
pub fn encode_records(items: &[RawItem]) -> Result<Vec<u8>, StorageError> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    for item in items {
        let line =
            serde_json::to_vec(&item_to_json(item)).map_err(|e| StorageError::Corrupt(e.to_string()))?;
        encoder
            .write_all(&line)
            .and_then(|()| encoder.write_all(b"\n"))
            .map_err(|e| StorageError::Corrupt(e.to_string()))?;
    }
    encoder.finish().map_err(|e| StorageError::Corrupt(e.to_string()))
}

pub fn decode_records(bytes: &[u8]) -> Result<Vec<RawItem>, StorageError> {
    let mut text = String::new();
    GzDecoder::new(bytes)
        .read_to_string(&mut text)
        .map_err(|e| StorageError::Corrupt(format!("the records object is not gzip-compressed text: {e}")))?;
    text.lines()
        .filter(|line| !line.is_empty())
        .enumerate()
        .map(|(n, line)| {
            let value: serde_json::Value = serde_json::from_str(line)
                .map_err(|e| StorageError::Corrupt(format!("line {}: {e}", n + 1)))?;
            item_from_json(&value).map_err(|e| StorageError::Corrupt(format!("line {}: {e}", n + 1)))
        })
        .collect()
}

/// How long backups stay (see `expired`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub days: u32,
    pub keep_at_least: u32,
}

/// The backups `retention` lets go at `now`: the completed and failed ones older than
/// `days`, except the newest `keep_at_least` completed ones, whatever their age. Pending
/// ones are in progress and never expire.
pub fn expired(backups: &[BackupRecord], retention: Retention, now: OffsetDateTime) -> Vec<BackupRecord> {
    let cutoff = now - time::Duration::days(i64::from(retention.days));
    let mut completed: Vec<&BackupRecord> =
        backups.iter().filter(|b| b.status == BackupStatus::Completed).collect();
    completed.sort_by(|a, b| b.created_at.cmp(&a.created_at).then_with(|| b.backup_id.cmp(&a.backup_id)));
    let kept: Vec<&BackupId> =
        completed.iter().take(retention.keep_at_least as usize).map(|b| &b.backup_id).collect();
    backups
        .iter()
        .filter(|b| {
            b.status != BackupStatus::Pending && b.created_at < cutoff && !kept.contains(&&b.backup_id)
        })
        .cloned()
        .collect()
}

/// The backup bucket.
#[derive(Clone)]
pub struct BackupStorage {
    pub s3: aws_sdk_s3::Client,
    pub bucket: String,
    pub retention: Retention,
}

impl BackupStorage {
    pub async fn put(&self, key: &str, body: Vec<u8>, content_type: &str) -> Result<(), StorageError> {
        self.s3
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| StorageError::s3("PutObject", e))?;
        Ok(())
    }

    /// The object's bytes, or `None` when there is no such object.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        match self.s3.get_object().bucket(&self.bucket).key(key).send().await {
            Ok(output) => {
                let bytes = output
                    .body
                    .collect()
                    .await
                    .map_err(|e| StorageError::S3 { operation: "GetObject", message: e.to_string() })?;
                Ok(Some(bytes.into_bytes().to_vec()))
            }
            Err(error) if error.as_service_error().is_some_and(|e| e.is_no_such_key()) => Ok(None),
            Err(error) => Err(StorageError::s3("GetObject", error)),
        }
    }

    pub async fn manifest(&self, keys: &BackupKeys) -> Result<Option<Manifest>, StorageError> {
        let Some(bytes) = self.get(&keys.manifest).await? else { return Ok(None) };
        serde_json::from_slice(&bytes).map(Some).map_err(|e| StorageError::Corrupt(format!("manifest: {e}")))
    }

    /// The records a manifest describes, checked against it: the object's SHA-256, its
    /// format and its item count. Anything else is `Corrupt`, and nothing is restored.
    pub async fn verified_records(&self, manifest: &Manifest) -> Result<Vec<RawItem>, StorageError> {
        if manifest.format_version != FORMAT_VERSION {
            return Err(StorageError::Corrupt(format!(
                "format version {} is unknown",
                manifest.format_version
            )));
        }
        let bytes = self
            .get(&manifest.records_key)
            .await?
            .ok_or_else(|| StorageError::Corrupt(format!("{} is missing", manifest.records_key)))?;
        let actual = sha256_hex(&bytes);
        if actual != manifest.sha256 {
            return Err(StorageError::Corrupt(format!(
                "checksum mismatch: the manifest says {}, the object hashes to {actual}",
                manifest.sha256
            )));
        }
        let items = decode_records(&bytes)?;
        if items.len() as u64 != manifest.item_count {
            return Err(StorageError::Corrupt(format!(
                "the manifest counts {} items, the object holds {}",
                manifest.item_count,
                items.len()
            )));
        }
        Ok(items)
    }

    /// Every object under `prefix`, deleted; nothing there is nothing to do.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<usize, StorageError> {
        let mut deleted = 0;
        let mut token: Option<String> = None;
        loop {
            let page = self
                .s3
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| StorageError::s3("ListObjectsV2", e))?;
            for object in page.contents() {
                if let Some(key) = object.key() {
                    self.s3
                        .delete_object()
                        .bucket(&self.bucket)
                        .key(key)
                        .send()
                        .await
                        .map_err(|e| StorageError::s3("DeleteObject", e))?;
                    deleted += 1;
                }
            }
            match page.next_continuation_token() {
                Some(next) if page.is_truncated() == Some(true) => token = Some(next.to_owned()),
                _ => return Ok(deleted),
            }
        }
    }
}

/// The `startedBy` of a backup's data task: unique per backup, within ECS's 36 characters.
pub fn data_task_marker(tenant: TenantId, backup: &BackupId) -> String {
    format!("bk-{}", &sha256_hex(format!("{tenant}/{backup}").as_bytes())[..32])
}

/// The restore's plan: what to write back and what to remove, from the backup's items and
/// the partition as it is now (neither side's surviving items take part).
pub fn restore_plan(backup: Vec<RawItem>, current: Vec<RawItem>) -> (Vec<RawItem>, Vec<RawItem>) {
    fn sort_key(item: &RawItem) -> Option<String> {
        item.get("SK").and_then(|v| v.as_s().ok()).cloned()
    }
    let restorable = |item: &RawItem| sort_key(item).is_some_and(|sk| !survives_restore(&sk));
    let wanted: HashMap<String, RawItem> =
        backup.into_iter().filter(restorable).filter_map(|item| Some((sort_key(&item)?, item))).collect();
    let now: HashMap<String, RawItem> =
        current.into_iter().filter(restorable).filter_map(|item| Some((sort_key(&item)?, item))).collect();
    let mut writes: Vec<RawItem> =
        wanted.iter().filter(|(sk, item)| now.get(*sk) != Some(item)).map(|(_, item)| item.clone()).collect();
    let mut removals: Vec<RawItem> =
        now.iter().filter(|(sk, _)| !wanted.contains_key(*sk)).map(|(_, item)| item.clone()).collect();
    writes.sort_by_key(sort_key);
    removals.sort_by_key(sort_key);
    (writes, removals)
}

/// Whether a tenant's records may be backed up (or restored) now: it exists for good.
pub fn backs_up(status: TenantStatus) -> bool {
    matches!(status, TenantStatus::Active | TenantStatus::Suspended)
}

/// A scheduled backup of `tenant` on the day of `scheduled_at`.
pub fn scheduled_backup(tenant: TenantId, scheduled_at: OffsetDateTime, now: OffsetDateTime) -> BackupRecord {
    BackupRecord::new(tenant, BackupId::daily(scheduled_at.date()), BackupTrigger::Scheduled, None, now)
}

/// A new restore's record.
pub fn new_restore(
    tenant: TenantId,
    backup: BackupId,
    requested_by: Option<String>,
    now: OffsetDateTime,
) -> RestoreRecord {
    RestoreRecord {
        restore_id: uuid::Uuid::now_v7().to_string(),
        backup_id: backup,
        tenant_id: tenant,
        status: RestoreStatus::Pending,
        requested_by,
        created_at: now,
        completed_at: None,
        written: None,
        removed: None,
        failure_reason: None,
        version: 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::types::AttributeValue;

    fn item(sk: &str, value: &str) -> RawItem {
        RawItem::from([
            ("PK".to_owned(), AttributeValue::S("TENANT#t".into())),
            ("SK".to_owned(), AttributeValue::S(sk.into())),
            ("v".to_owned(), AttributeValue::S(value.into())),
        ])
    }

    #[test]
    fn records_round_trip_and_their_checksum_is_stable() {
        let items = vec![item("USER#1", "a"), item("ROLE#x", "b")];
        let first = encode_records(&items).expect("encoded");
        assert_eq!(sha256_hex(&first), sha256_hex(&encode_records(&items).expect("again")));
        assert_eq!(decode_records(&first).expect("decoded"), items);
        assert!(decode_records(b"not gzip").is_err());
    }

    #[test]
    fn a_restore_writes_what_differs_and_removes_what_is_new_but_keeps_the_survivors() {
        let backup =
            vec![item("PROFILE", "old"), item("USER#1", "a"), item("USER#2", "b"), item("BACKUP#x", "p")];
        let current = vec![
            item("PROFILE", "new"),
            item("USER#1", "a"),
            item("USER#2", "changed"),
            item("USER#3", "added"),
            item("BACKUP#x", "c"),
            item("BACKUP#y", "later"),
            item("EVENT#1", "e"),
        ];
        let (writes, removals) = restore_plan(backup.clone(), current);
        assert_eq!(writes, vec![item("USER#2", "b")]);
        assert_eq!(removals, vec![item("USER#3", "added")]);
        // Applied, the plan leaves nothing to do.
        let after =
            vec![item("PROFILE", "new"), item("USER#1", "a"), item("USER#2", "b"), item("BACKUP#y", "later")];
        assert_eq!(restore_plan(backup, after), (vec![], vec![]));
    }

    fn backup(id: &str, status: BackupStatus, days_old: i64, now: OffsetDateTime) -> BackupRecord {
        let mut record = BackupRecord::new(
            TenantId::generate(),
            BackupId::parse(id).expect("id"),
            BackupTrigger::Scheduled,
            None,
            now - time::Duration::days(days_old),
        );
        record.status = status;
        record
    }

    #[test]
    fn retention_keeps_the_young_the_newest_few_and_the_unfinished() {
        let now = OffsetDateTime::now_utc();
        let all = vec![
            backup("a", BackupStatus::Completed, 40, now),
            backup("b", BackupStatus::Completed, 35, now),
            backup("c", BackupStatus::Completed, 31, now),
            backup("d", BackupStatus::Completed, 2, now),
            backup("e", BackupStatus::Failed, 50, now),
            backup("f", BackupStatus::Pending, 60, now),
        ];
        let ids = |r: Vec<BackupRecord>| r.into_iter().map(|b| b.backup_id.to_string()).collect::<Vec<_>>();
        assert_eq!(ids(expired(&all, Retention { days: 30, keep_at_least: 3 }, now)), ["a", "e"]);
        assert_eq!(ids(expired(&all, Retention { days: 30, keep_at_least: 1 }, now)), ["a", "b", "c", "e"]);
        assert_eq!(ids(expired(&all, Retention { days: 100, keep_at_least: 0 }, now)), Vec::<String>::new());
    }

    #[test]
    fn data_task_markers_fit_ecs_and_differ_per_backup() {
        let tenant = TenantId::generate();
        let a = data_task_marker(tenant, &BackupId::parse("a").expect("id"));
        assert!(a.len() <= 36 && a.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
        assert_ne!(a, data_task_marker(tenant, &BackupId::parse("b").expect("id")));
    }
}
