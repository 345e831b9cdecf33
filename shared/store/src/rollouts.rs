//! Rolling image updates of the fleet: a rollout's record (`ROLLOUT#<id>` / `ROLLOUT`, in
//! the platform's `ROLLOUTS` index partition so they list newest first) and one mark per
//! tenant it reached (`ROLLOUT#<id>` / `TENANT#<tenant id>`: moved, skipped or failed).
//!
//! A tenant's mark and the counter it moves are written in one transaction, the mark only if
//! new, so a redelivered batch job counts nobody twice. Every write bumps the record's
//! `version`; whole-record saves (a new batch, pause, resume, the end) check it, counter
//! updates only add to it, so a save never overwrites a count made meanwhile.

use aws_sdk_dynamodb::types::AttributeValue;
use dotmac_domain::TenantId;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::dynamo::{Expr, ITEM_EXISTS, Query};
use crate::keys::{GSI1, ItemKey, Stored, n, s};
use crate::tenants::Page;
use crate::{Store, StoreError};

/// The GSI1 partition listing rollouts (their ids are time-ordered).
const ROLLOUTS_GSI1PK: &str = "ROLLOUTS";
/// Failures kept on the record with their reasons (the count goes on beyond it).
pub const KEPT_FAILURES: usize = 50;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RolloutStatus {
    Running,
    Paused,
    Completed,
    Failed,
}

impl RolloutStatus {
    pub fn is_finished(self) -> bool {
        matches!(self, RolloutStatus::Completed | RolloutStatus::Failed)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutFailure {
    pub tenant_id: TenantId,
    pub reason: String,
}

/// A rollout: the image, its pace, where it is and what it counted so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollout {
    pub id: String,
    pub image: String,
    pub batch_size: u32,
    /// Failures tolerated: one more fails the rollout.
    pub failure_threshold: u64,
    pub status: RolloutStatus,
    /// Tenants there were when it started (it grows if the walk meets more).
    pub total: u64,
    #[serde(default)]
    pub updated: u64,
    #[serde(default)]
    pub skipped: u64,
    #[serde(default)]
    pub failed: u64,
    /// The first `KEPT_FAILURES` failures, with their reasons.
    #[serde(default)]
    pub failures: Vec<RolloutFailure>,
    /// Batches started so far (the current one included).
    #[serde(default)]
    pub batch_number: u32,
    /// The tenants of the batch in flight (empty between batches).
    #[serde(default)]
    pub current_batch: Vec<TenantId>,
    /// Where the next batch's page of tenants starts; `None` before the first and after the last.
    #[serde(default)]
    pub cursor: Option<String>,
    /// Whether the walk has read its last page of tenants.
    #[serde(default)]
    pub walked: bool,
    #[serde(default)]
    pub reason: Option<String>,
    pub created_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    pub version: u64,
}

/// What happened to one tenant in a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutOutcome {
    Updated,
    Skipped,
    Failed,
}

impl RolloutOutcome {
    fn counter(self) -> &'static str {
        match self {
            RolloutOutcome::Updated => "updated",
            RolloutOutcome::Skipped => "skipped",
            RolloutOutcome::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutMark {
    pub tenant_id: TenantId,
    pub outcome: RolloutOutcome,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

impl ItemKey {
    pub(crate) fn rollout(id: &str) -> Self {
        ItemKey::from_parts(format!("ROLLOUT#{id}"), "ROLLOUT")
    }

    pub(crate) fn rollout_mark(id: &str, tenant: TenantId) -> Self {
        ItemKey::from_parts(format!("ROLLOUT#{id}"), format!("TENANT#{tenant}"))
    }
}

fn rollout_item(rollout: &Rollout) -> Result<crate::dynamo::Item, StoreError> {
    Stored::new(ItemKey::rollout(&rollout.id), "rollout", rollout)
        .indexed(ROLLOUTS_GSI1PK, rollout.id.clone())
        .to_item()
}

impl Store {
    /// Records a new rollout; `AlreadyExists` if its id is taken.
    pub async fn create_rollout(&self, rollout: &Rollout) -> Result<(), StoreError> {
        match self.transact(vec![self.put_new(rollout_item(rollout)?)?]).await? {
            Ok(()) => Ok(()),
            Err(cancelled) if cancelled.refused(0) => Err(StoreError::AlreadyExists),
            Err(cancelled) => Err(cancelled.into()),
        }
    }

    pub async fn get_rollout(&self, id: &str) -> Result<Option<Rollout>, StoreError> {
        Ok(self.get_item::<Stored<Rollout>>(ItemKey::rollout(id)).await?.map(|item| item.record))
    }

    /// Rollouts, newest first.
    pub async fn list_rollouts(&self, limit: i32, cursor: Option<&str>) -> Result<Page<Rollout>, StoreError> {
        let start = cursor
            .map(|cursor| -> Result<_, StoreError> {
                let id = crate::dynamo::decode_cursor(cursor)?;
                let mut start = ItemKey::rollout(&id).into_item();
                start.insert(crate::keys::GSI1PK.to_owned(), s(ROLLOUTS_GSI1PK));
                start.insert(crate::keys::GSI1SK.to_owned(), s(id));
                Ok(start)
            })
            .transpose()?;
        let key = Expr::new("GSI1PK = :pk").value(":pk", s(ROLLOUTS_GSI1PK));
        let query = Query::index(GSI1, key).limit(limit).start(start).descending();
        self.page(query, crate::keys::GSI1SK, |item: Stored<Rollout>| item.record).await
    }

    /// Saves `rollout` if nobody changed it since it was read, and bumps its version.
    pub async fn save_rollout(&self, rollout: &mut Rollout) -> Result<(), StoreError> {
        let expected = rollout.version;
        let mut next = rollout.clone();
        next.version = expected + 1;
        let unchanged = Expr::new("attribute_exists(PK) AND version = :expected")
            .value(":expected", n(i64::try_from(expected).unwrap_or(i64::MAX)));
        self.put(rollout_item(&next)?, Some(unchanged))
            .await?
            .map_err(|_| StoreError::VersionConflict { expected })?;
        *rollout = next;
        Ok(())
    }

    /// The tenant's mark in the rollout, if it has one.
    pub async fn rollout_mark(&self, id: &str, tenant: TenantId) -> Result<Option<RolloutMark>, StoreError> {
        Ok(self.get_item::<Stored<RolloutMark>>(ItemKey::rollout_mark(id, tenant)).await?.map(|i| i.record))
    }

    /// Marks what happened to `tenant` and counts it, in one transaction; `false` (nothing
    /// written) when the tenant was marked before: a duplicate counts nobody twice. A failure
    /// keeps its reason on the record while fewer than `KEPT_FAILURES` are kept.
    pub async fn record_rollout_outcome(
        &self,
        id: &str,
        tenant: TenantId,
        outcome: RolloutOutcome,
        reason: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let mark = RolloutMark { tenant_id: tenant, outcome, reason: reason.map(str::to_owned), at: now };
        let mark_item = Stored::new(ItemKey::rollout_mark(id, tenant), "rollout_mark", &mark).to_item()?;
        let counter = outcome.counter();
        let mut update = Expr::new("SET updated_at = :now ADD #counter :one, version :one")
            .name("#counter", counter)
            .value(":one", n(1))
            .value(":now", s(now.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()));
        let mut condition = Expr::new(ITEM_EXISTS);
        if outcome == RolloutOutcome::Failed {
            let failure = RolloutFailure { tenant_id: tenant, reason: reason.unwrap_or_default().to_owned() };
            let failure = serde_dynamo::to_attribute_value(&failure)?;
            update = update
                .with_text(
                    "SET updated_at = :now, failures = list_append(if_not_exists(failures, :empty), :failure) ADD #counter :one, version :one",
                )
                .value(":failure", AttributeValue::L(vec![failure]))
                .value(":empty", AttributeValue::L(Vec::new()));
            // Past the kept number the failure is counted, its reason left in its mark.
            condition = Expr::new(format!(
                "{ITEM_EXISTS} AND (attribute_not_exists(failures) OR size(failures) < :kept)"
            ))
            .value(":kept", n(KEPT_FAILURES as i64));
        }
        let steps = vec![
            self.put_new(mark_item.clone())?,
            self.update_step(ItemKey::rollout(id), update, condition)?,
        ];
        match self.transact(steps).await? {
            Ok(()) => Ok(true),
            Err(cancelled) if cancelled.refused(0) => Ok(false),
            Err(cancelled) if cancelled.refused(1) && outcome == RolloutOutcome::Failed => {
                // The kept list is full (or the rollout is gone): count it without the reason.
                let update = Expr::new("SET updated_at = :now ADD failed :one, version :one")
                    .value(":one", n(1))
                    .value(
                        ":now",
                        s(now.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()),
                    );
                let steps = vec![
                    self.put_new(mark_item)?,
                    self.update_step(ItemKey::rollout(id), update, Expr::new(ITEM_EXISTS))?,
                ];
                match self.transact(steps).await? {
                    Ok(()) => Ok(true),
                    Err(cancelled) if cancelled.refused(0) => Ok(false),
                    Err(cancelled) if cancelled.refused(1) => {
                        Err(StoreError::Corrupt(format!("rollout {id} does not exist")))
                    }
                    Err(cancelled) => Err(cancelled.into()),
                }
            }
            Err(cancelled) if cancelled.refused(1) => {
                Err(StoreError::Corrupt(format!("rollout {id} does not exist")))
            }
            Err(cancelled) => Err(cancelled.into()),
        }
    }
}
