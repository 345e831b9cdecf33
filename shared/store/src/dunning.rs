//! Dunning: the record of an unpaid invoice's dunning and the tenant's standing it sets.
//!
//! Layout (the one table):
//! - dunning: `TENANT#<id>` / `DUNNING#<YYYY-MM>`: one per invoice that failed, in the
//!   tenant's partition (IAM's leading-key fence covers it): its step, the standing it set,
//!   when the next step is due, and its history (every step and the clearing), which the
//!   invoice's payments view shows. Rewritten whole, version-checked.
//! - due index: `DUNNING_DUE` / `<invoice id>`: the dunnings with a step still to make and
//!   when, what the scheduled dunning job reads (like `CHARGES_DUE`). Written and removed in
//!   the same transaction as the dunning, so a dunning is never due without its index entry.
//! - the tenant's `billing_standing` on its record, moved with a `tenant.dunning_step` (or
//!   `tenant.dunning_cleared`) event in its log: the tenant's version-checked change
//!   (`transition_tenant_with`), with the dunning's own items in the same transaction.
//!
//! Every move is guarded by the state it leaves: the dunning's version, the tenant's
//! version, and (for a step) the invoice still unpaid, checked in the transaction, so a
//! payment that lands first makes the step refuse, and a duplicate or late step changes
//! nothing.

use aws_sdk_dynamodb::types::TransactWriteItem;
use dotmac_billing::Period;
use dotmac_domain::dunning::{DUNNING_CLEARED_EVENT, DUNNING_STEP_EVENT};
use dotmac_domain::{BillingStanding, DomainEvent, Tenant, TenantId};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::billing::{InvoiceStatus, invoice_id};
use crate::dynamo::{Expr, Query};
use crate::keys::{ItemKey, SK, Stored, n, s, tenant_pk};
use crate::payments::{ChargeDue, PaymentStatus};
use crate::{Store, StoreError};

pub const DUNNING_DUE_PK: &str = "DUNNING_DUE";
const DUNNING_SK_PREFIX: &str = "DUNNING#";

/// A delete's condition that always holds (a transaction's delete takes one; the due entry
/// may or may not be there).
fn any_state() -> Expr {
    Expr::new("attribute_exists(PK) OR attribute_not_exists(PK)")
}

/// Whether a dunning still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DunningStatus {
    Open,
    /// A payment ended it.
    Cleared,
}

/// One entry of a dunning's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DunningEntry {
    /// `started` (the failure), `step` (a scheduled step) or `cleared` (a payment).
    pub kind: String,
    pub step: u32,
    /// The standing the entry set on the invoice's account.
    pub standing: BillingStanding,
    /// The charge attempt the step queued (none for the start and the clearing).
    #[serde(default)]
    pub attempt: Option<u32>,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// An invoice's dunning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dunning {
    pub tenant_id: TenantId,
    pub period: Period,
    pub invoice_id: String,
    pub status: DunningStatus,
    /// The last step made (0: started by the failure).
    pub step: u32,
    /// The standing this dunning puts its tenant at (`current` once cleared).
    pub standing: BillingStanding,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    /// When the next step is due; none past the last step or once cleared.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub next_at: Option<OffsetDateTime>,
    #[serde(default)]
    pub history: Vec<DunningEntry>,
    pub version: u64,
}

/// A dunning with a step still to make (the due index's entry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DunningDue {
    pub tenant_id: TenantId,
    pub period: Period,
    #[serde(with = "time::serde::rfc3339")]
    pub next_at: OffsetDateTime,
}

/// What a dunning write came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DunningWrite {
    /// Written; the dunning and the tenant as they are now.
    Written { dunning: Box<Dunning>, tenant: Box<Tenant> },
    /// Nothing to write: the dunning already exists (a start), or is past this move, or its
    /// invoice is paid (a step), or is not open (a clearing).
    Unchanged,
}

fn dunning_sk(period: Period) -> String {
    format!("{DUNNING_SK_PREFIX}{period}")
}

impl ItemKey {
    pub(crate) fn dunning(tenant: TenantId, period: Period) -> Self {
        ItemKey::from_parts(tenant_pk(tenant), dunning_sk(period))
    }

    pub(crate) fn dunning_due(invoice_id: &str) -> Self {
        ItemKey::from_parts(DUNNING_DUE_PK, invoice_id)
    }
}

/// How many times a move is tried when the tenant changed under it (another writer).
const ATTEMPTS: usize = 5;

impl Store {
    pub async fn get_dunning(&self, tenant: TenantId, period: Period) -> Result<Option<Dunning>, StoreError> {
        Ok(self.get_item::<Stored<Dunning>>(ItemKey::dunning(tenant, period)).await?.map(|i| i.record))
    }

    /// Every dunning of the tenant, oldest invoice first.
    pub async fn tenant_dunnings(&self, tenant: TenantId) -> Result<Vec<Dunning>, StoreError> {
        let key = Expr::new("PK = :pk AND begins_with(#sk, :prefix)")
            .name("#sk", SK)
            .value(":pk", s(tenant_pk(tenant)))
            .value(":prefix", s(DUNNING_SK_PREFIX));
        let items: Vec<Stored<Dunning>> = self.query_all(Query::table(key).consistent()).await?;
        Ok(items.into_iter().map(|item| item.record).collect())
    }

    /// Every dunning whose next step is due at `now` (the scheduled job's list).
    pub async fn dunnings_due(&self, now: OffsetDateTime) -> Result<Vec<DunningDue>, StoreError> {
        let key = Expr::new("PK = :pk").value(":pk", s(DUNNING_DUE_PK));
        let items: Vec<Stored<DunningDue>> = self.query_all(Query::table(key).consistent()).await?;
        Ok(items.into_iter().map(|item| item.record).filter(|due| due.next_at <= now).collect())
    }

    /// Opens the dunning of the tenant's failed invoice of `period` at step 0, `standing`,
    /// its first step due at `next_at`. Unchanged if it exists or the invoice is not failed.
    pub async fn start_dunning(
        &self,
        tenant: TenantId,
        period: Period,
        standing: BillingStanding,
        next_at: Option<OffsetDateTime>,
        now: OffsetDateTime,
    ) -> Result<DunningWrite, StoreError> {
        let id = invoice_id(tenant, period);
        let dunning = Dunning {
            tenant_id: tenant,
            period,
            invoice_id: id.clone(),
            status: DunningStatus::Open,
            step: 0,
            standing,
            started_at: now,
            next_at,
            history: vec![DunningEntry { kind: "started".into(), step: 0, standing, attempt: None, at: now }],
            version: 1,
        };
        for _ in 0..ATTEMPTS {
            if self.get_dunning(tenant, period).await?.is_some() {
                return Ok(DunningWrite::Unchanged);
            }
            let item = Stored::new(ItemKey::dunning(tenant, period), "dunning", &dunning).to_item()?;
            let mut also = vec![self.put_new(item)?, self.invoice_unpaid(tenant, period, true)?];
            also.extend(self.due_step(&dunning)?);
            match self.move_tenant(&dunning, "started", None, also).await? {
                Some(written) => return Ok(written),
                None => {
                    if !self.invoice_failed(tenant, period).await? {
                        return Ok(DunningWrite::Unchanged);
                    }
                }
            }
        }
        Err(StoreError::VersionConflict { expected: 0 })
    }

    /// Makes step `step` of `dunning` (read at its current version): the standing it sets,
    /// the charge attempt it queues, the next step's time. Unchanged when the dunning moved
    /// on or was cleared, or the invoice is paid (checked in the same transaction).
    pub async fn advance_dunning(
        &self,
        dunning: &Dunning,
        step: u32,
        standing: BillingStanding,
        attempt: u32,
        next_at: Option<OffsetDateTime>,
        now: OffsetDateTime,
    ) -> Result<DunningWrite, StoreError> {
        let mut current = dunning.clone();
        for _ in 0..ATTEMPTS {
            if current.status != DunningStatus::Open || current.step + 1 != step {
                return Ok(DunningWrite::Unchanged);
            }
            let mut next = current.clone();
            next.step = step;
            next.standing = standing;
            next.next_at = next_at;
            next.version = current.version + 1;
            next.history.push(DunningEntry {
                kind: "step".into(),
                step,
                standing,
                attempt: Some(attempt),
                at: now,
            });
            let charge = ChargeDue { tenant_id: next.tenant_id, period: next.period, attempt, due_at: now };
            let charge_item =
                Stored::new(ItemKey::charge_due(&next.invoice_id), "charge_due", charge).to_item()?;
            let mut also = vec![
                self.versioned_put(&next, current.version)?,
                self.invoice_unpaid(next.tenant_id, next.period, false)?,
                self.put_step(charge_item, None)?,
            ];
            also.extend(self.due_step(&next)?);
            if let Some(written) = self.move_tenant(&next, "step", Some(attempt), also).await? {
                return Ok(written);
            }
            // Refused: the tenant, the dunning or the invoice moved; read them again.
            match self.get_dunning(dunning.tenant_id, dunning.period).await? {
                Some(again) if self.invoice_failed(again.tenant_id, again.period).await? => current = again,
                _ => return Ok(DunningWrite::Unchanged),
            }
        }
        Err(StoreError::VersionConflict { expected: dunning.version })
    }

    /// Clears the tenant's dunning of `period` (its invoice was paid): the tenant stands at
    /// what its other open dunnings say (`current` when none). Unchanged unless it was open.
    pub async fn clear_dunning(
        &self,
        tenant: TenantId,
        period: Period,
        now: OffsetDateTime,
    ) -> Result<DunningWrite, StoreError> {
        for _ in 0..ATTEMPTS {
            let Some(current) = self.get_dunning(tenant, period).await? else {
                return Ok(DunningWrite::Unchanged);
            };
            if current.status != DunningStatus::Open {
                return Ok(DunningWrite::Unchanged);
            }
            let mut next = current.clone();
            next.status = DunningStatus::Cleared;
            next.standing = BillingStanding::Current;
            next.next_at = None;
            next.version = current.version + 1;
            next.history.push(DunningEntry {
                kind: "cleared".into(),
                step: current.step,
                standing: BillingStanding::Current,
                attempt: None,
                at: now,
            });
            let also = vec![
                self.versioned_put(&next, current.version)?,
                self.delete_step(ItemKey::dunning_due(&next.invoice_id), any_state())?,
            ];
            if let Some(written) = self.move_tenant(&next, "cleared", None, also).await? {
                return Ok(written);
            }
        }
        Err(StoreError::VersionConflict { expected: 0 })
    }

    /// Takes a dunning whose last step is made and whose suspension is done off the due
    /// index (it stays there until then, so a crash in between is retried by the next run).
    /// `false` when the dunning moved meanwhile (cleared): nothing written.
    pub async fn settle_dunning(&self, dunning: &Dunning) -> Result<bool, StoreError> {
        let mut next = dunning.clone();
        next.next_at = None;
        next.version = dunning.version + 1;
        let steps = vec![
            self.versioned_put(&next, dunning.version)?,
            self.delete_step(ItemKey::dunning_due(&next.invoice_id), any_state())?,
        ];
        match self.transact(steps).await? {
            Ok(()) => Ok(true),
            Err(cancelled) if cancelled.refused(0) => Ok(false),
            Err(cancelled) => Err(cancelled.into()),
        }
    }

    /// The tenant's change (standing, event) with `also` in one transaction; `None` when a
    /// step was refused (the caller reads again).
    async fn move_tenant(
        &self,
        dunning: &Dunning,
        kind: &str,
        attempt: Option<u32>,
        also: Vec<TransactWriteItem>,
    ) -> Result<Option<DunningWrite>, StoreError> {
        let Some(mut record) = self.get_tenant_record(dunning.tenant_id).await? else {
            return Err(StoreError::Corrupt(format!("the dunning of {} has no tenant", dunning.invoice_id)));
        };
        // The tenant stands at the worst of its open dunnings, this one as it will be.
        let others = self
            .tenant_dunnings(dunning.tenant_id)
            .await?
            .into_iter()
            .filter(|d| d.period != dunning.period && d.status == DunningStatus::Open)
            .map(|d| d.standing)
            .max()
            .unwrap_or_default();
        let standing = others.max(dunning.standing);
        let (event_type, data) = match kind {
            "cleared" => (
                DUNNING_CLEARED_EVENT,
                serde_json::json!({ "invoice_id": dunning.invoice_id, "step": dunning.step, "standing": standing }),
            ),
            _ => (
                DUNNING_STEP_EVENT,
                serde_json::json!({ "invoice_id": dunning.invoice_id, "step": dunning.step,
                    "standing": standing, "attempt": attempt }),
            ),
        };
        record.tenant.billing_standing = standing;
        record.tenant.updated_at = OffsetDateTime::now_utc();
        match self.transition_tenant_with(&mut record, DomainEvent::new(event_type, data), also).await {
            Ok(_) => Ok(Some(DunningWrite::Written {
                dunning: Box::new(dunning.clone()),
                tenant: Box::new(record.tenant),
            })),
            Err(StoreError::VersionConflict { .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    fn versioned_put(&self, dunning: &Dunning, expected: u64) -> Result<TransactWriteItem, StoreError> {
        let item =
            Stored::new(ItemKey::dunning(dunning.tenant_id, dunning.period), "dunning", dunning).to_item()?;
        let condition = Expr::new("attribute_exists(PK) AND version = :expected")
            .value(":expected", n(i64::try_from(expected).unwrap_or(i64::MAX)));
        self.put_step(item, Some(condition))
    }

    /// The due index's entry of `dunning`: written when a step is left, removed when none is.
    fn due_step(&self, dunning: &Dunning) -> Result<Option<TransactWriteItem>, StoreError> {
        let key = ItemKey::dunning_due(&dunning.invoice_id);
        Ok(Some(match dunning.next_at {
            Some(next_at) => {
                let due = DunningDue { tenant_id: dunning.tenant_id, period: dunning.period, next_at };
                self.put_step(Stored::new(key, "dunning_due", due).to_item()?, None)?
            }
            None => self.delete_step(key, any_state())?,
        }))
    }

    /// The transaction's check that the invoice is finalized and unpaid (`failed` only, for
    /// a start: the failure is what starts a dunning).
    fn invoice_unpaid(
        &self,
        tenant: TenantId,
        period: Period,
        failed_only: bool,
    ) -> Result<TransactWriteItem, StoreError> {
        let text = if failed_only {
            "#istatus = :finalized AND payment_status = :failed"
        } else {
            "#istatus = :finalized AND (payment_status = :failed OR payment_status = :open)"
        };
        let mut condition = Expr::new(text)
            .name("#istatus", "status")
            .value(":finalized", s(InvoiceStatus::Finalized.as_str()))
            .value(":failed", s(PaymentStatus::Failed.as_str()));
        if !failed_only {
            condition = condition.value(":open", s(PaymentStatus::Open.as_str()));
        }
        self.check_step(ItemKey::invoice(tenant, period), condition)
    }

    async fn invoice_failed(&self, tenant: TenantId, period: Period) -> Result<bool, StoreError> {
        Ok(self.get_invoice(tenant, period).await?.is_some_and(|invoice| {
            matches!(invoice.payment_status, Some(PaymentStatus::Failed | PaymentStatus::Open))
        }))
    }
}

impl crate::Fenced<'_> {
    /// The dunning of the tenant's invoice of `period`, if it ever had one.
    pub async fn invoice_dunning(
        &self,
        tenant: &Tenant,
        period: Period,
    ) -> Result<Option<Dunning>, StoreError> {
        self.reaches(tenant)?;
        self.store().get_dunning(tenant.id, period).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenants_dunnings_sort_by_period_apart_from_its_payments() {
        let earlier = dunning_sk(Period::parse("2026-10").expect("p"));
        let later = dunning_sk(Period::parse("2026-11").expect("p"));
        assert!(earlier < later);
        assert!(later.starts_with(DUNNING_SK_PREFIX) && !later.starts_with("PAYMENT#"));
    }
}
