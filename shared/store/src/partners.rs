//! Partners (resellers), their commission ledger, and the credit notes of refunded invoices.
//!
//! Layout (the one table):
//! - partner: `PARTNER#<id>` / `PROFILE`: name, contact, commission rates (a default and
//!   per-plan overrides), `version` (every change is a put conditioned on the version read).
//!   The partner's staff live in the same partition (`USER#...`), so the partner fence
//!   (`Fence::Partner`) admits exactly its own record and ledger.
//! - commission entry: `PARTNER#<id>` / `COMMISSION#<booked YYYY-MM>#<invoice id>#A` for the
//!   accrual, written in the transaction that moves the invoice to paid (see
//!   `Store::decide_payment`, `Store::settle_without_charge`), create-if-absent; and
//!   `...#R<credit note seq:03>` for a clawback, in the transaction that records the credit
//!   note. `booked` is the month the money moved (paid, or refunded), so a month's entries
//!   are one key-prefix query: the partner's monthly statement. The rates in force are
//!   snapshotted into the entry, so a later change of rates never rewrites history.
//! - credit note: `TENANT#<id>` / `CREDIT_NOTE#<invoice YYYY-MM>#<seq:03>`: one per refund of
//!   an invoice, numbered `<invoice number>-<seq>` within it, in the tenant's partition (the
//!   tenant fence and IAM's leading-key condition cover it). Its key is the refund's
//!   sequence, so two refunds racing for the same place cannot both be recorded.

use dotmac_billing::{Accrual, CommissionLine, CommissionRates, Money, Period, accrue, clawback};
use dotmac_domain::{Email, Fence, PartnerId, TenantId, TenantName};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::billing::{InvoiceRecord, InvoiceStatus, OutboxEvent, invoice_id};
use crate::dynamo::{Expr, Item, Query};
use crate::fence::Fenced;
use crate::keys::{ItemKey, SK, Stored, n, partner_pk, s, tenant_pk};
use crate::payments::PaymentStatus;
use crate::{Store, StoreError};

const PARTNER_SK: &str = "PROFILE";
const COMMISSION_SK_PREFIX: &str = "COMMISSION#";
const CREDIT_NOTE_SK_PREFIX: &str = "CREDIT_NOTE#";

/// A partner as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartnerRecord {
    pub id: PartnerId,
    pub name: TenantName,
    pub contact_email: Email,
    pub rates: CommissionRates,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    pub version: u64,
}

/// An accrual or a clawback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CommissionKind {
    Accrual,
    Clawback,
}

impl CommissionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CommissionKind::Accrual => "accrual",
            CommissionKind::Clawback => "clawback",
        }
    }
}

/// One entry of a partner's ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommissionEntry {
    pub partner_id: PartnerId,
    pub tenant_id: TenantId,
    pub invoice_id: String,
    pub invoice_period: Period,
    /// The month the entry counts in (the money moved then).
    pub booked_period: Period,
    pub kind: CommissionKind,
    /// Accrual: the commissionable base; clawback: the refunded amount (negative).
    pub base: Money,
    /// Signed: positive for an accrual, negative (or zero) for a clawback.
    pub amount: Money,
    /// The accrual's lines, each with the rate it was earned at (none on a clawback).
    #[serde(default)]
    pub lines: Vec<CommissionLine>,
    /// The rates in force when it was written.
    pub rates: CommissionRates,
    /// The clawback's credit note.
    #[serde(default)]
    pub credit_note_id: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// A refund of (part of) an invoice, as the tenant sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditNote {
    /// `<invoice id>_CN<seq>`.
    pub id: String,
    /// `<invoice number>-<seq>`.
    pub number: String,
    pub invoice_id: String,
    pub tenant_id: TenantId,
    pub period: Period,
    /// 1 for the invoice's first refund.
    pub sequence: u32,
    /// Positive: what went back to the tenant.
    pub amount: Money,
    pub reason: String,
    pub stripe_refund_id: String,
    /// The payment it refunds (`<invoice id>_<attempt>`).
    pub payment_id: String,
    /// What the partner lost by it (negative), when a partner earned on the invoice.
    #[serde(default)]
    pub commission_reversed: Option<Money>,
    pub requested_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// The credit note's id.
pub fn credit_note_id(tenant: TenantId, period: Period, sequence: u32) -> String {
    format!("{}_CN{sequence}", invoice_id(tenant, period))
}

fn commission_sk(booked: Period, invoice_id: &str, suffix: &str) -> String {
    format!("{COMMISSION_SK_PREFIX}{booked}#{invoice_id}#{suffix}")
}

fn credit_note_sk(period: Period, sequence: u32) -> String {
    format!("{CREDIT_NOTE_SK_PREFIX}{period}#{sequence:03}")
}

impl ItemKey {
    pub(crate) fn partner(id: &PartnerId) -> Self {
        ItemKey::from_parts(partner_pk(id), PARTNER_SK)
    }

    fn commission(entry: &CommissionEntry) -> Self {
        let suffix = match (entry.kind, &entry.credit_note_id) {
            (CommissionKind::Accrual, _) => "A".to_owned(),
            (CommissionKind::Clawback, Some(note)) => {
                format!("R{}", note.rsplit_once("_CN").map_or(note.as_str(), |(_, seq)| seq))
            }
            (CommissionKind::Clawback, None) => "R".to_owned(),
        };
        ItemKey::from_parts(
            partner_pk(&entry.partner_id),
            commission_sk(entry.booked_period, &entry.invoice_id, &suffix),
        )
    }

    fn credit_note(tenant: TenantId, period: Period, sequence: u32) -> Self {
        ItemKey::in_tenant(tenant, credit_note_sk(period, sequence))
    }
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// The accrual a paid invoice earns its partner, if it has one with a record (rates read
/// now, before the transaction that pays the invoice, and snapshotted into the entry).
pub fn accrual_entry(
    invoice: &InvoiceRecord,
    partner: &PartnerRecord,
    now: OffsetDateTime,
) -> Result<CommissionEntry, StoreError> {
    let Accrual { lines, base, amount } =
        accrue(&invoice.content, &partner.rates).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(CommissionEntry {
        partner_id: partner.id.clone(),
        tenant_id: invoice.tenant_id,
        invoice_id: invoice.id.clone(),
        invoice_period: invoice.period,
        booked_period: Period::containing(now),
        kind: CommissionKind::Accrual,
        base,
        amount,
        lines,
        rates: partner.rates.clone(),
        credit_note_id: None,
        created_at: now,
    })
}

/// A refund to record: the credit note, and what it moves.
#[derive(Debug, Clone)]
pub struct RefundRecord {
    pub note: CreditNote,
    /// What was refunded before this one (minor units), as read with the invoice.
    pub refunded_before: i64,
    /// What the invoice was paid.
    pub paid: i64,
}

/// What recording a refund did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refunded {
    Recorded(CreditNote),
    /// A credit note already holds this refund's place (a retry, or a race): the one stored.
    Existed(CreditNote),
    /// The invoice moved since it was read (another refund got in first): read again.
    InvoiceChanged,
}

impl Store {
    /// Creates a partner; `AlreadyExists` if its id is taken.
    pub async fn create_partner(&self, partner: &PartnerRecord) -> Result<(), StoreError> {
        let item = Stored::new(ItemKey::partner(&partner.id), "partner", partner).to_item()?;
        match self.put_new_or_read(item).await? {
            None => Ok(()),
            Some(_) => Err(StoreError::AlreadyExists),
        }
    }

    pub async fn get_partner(&self, id: &PartnerId) -> Result<Option<PartnerRecord>, StoreError> {
        Ok(self.get_item::<Stored<PartnerRecord>>(ItemKey::partner(id)).await?.map(|i| i.record))
    }

    /// Writes `partner` (its `version` already moved on by one) if the stored one is still at
    /// `partner.version - 1`.
    pub async fn save_partner(&self, partner: &PartnerRecord) -> Result<(), StoreError> {
        let expected = partner.version.saturating_sub(1);
        let item = Stored::new(ItemKey::partner(&partner.id), "partner", partner).to_item()?;
        let condition = Expr::new("attribute_exists(PK) AND version = :expected")
            .value(":expected", n(i64::try_from(expected).unwrap_or(i64::MAX)));
        self.put(item, Some(condition)).await?.map_err(|_| StoreError::VersionConflict { expected })
    }

    /// The optional extra step of the transaction that moves `invoice` to paid: its partner's
    /// accrual, create-if-absent (`None` when the invoice has no partner, or the partner no
    /// record). Reads the partner's rates now, before the transaction is built.
    pub(crate) async fn accrual_step(
        &self,
        invoice: &InvoiceRecord,
        now: OffsetDateTime,
    ) -> Result<Option<aws_sdk_dynamodb::types::TransactWriteItem>, StoreError> {
        let Some(partner_id) = &invoice.partner_id else { return Ok(None) };
        let Some(partner) = self.get_partner(partner_id).await? else {
            tracing::warn!(partner = %partner_id, invoice = invoice.id, "the invoice's partner has no record: no commission");
            return Ok(None);
        };
        let entry = accrual_entry(invoice, &partner, now)?;
        let item = Stored::new(ItemKey::commission(&entry), "commission", &entry).to_item()?;
        self.put_new(item).map(Some)
    }

    /// `accrual_step` for the tenant's invoice of `period` (read first; none if it is gone).
    pub(crate) async fn accrual_step_for(
        &self,
        tenant: TenantId,
        period: Period,
        now: OffsetDateTime,
    ) -> Result<Option<aws_sdk_dynamodb::types::TransactWriteItem>, StoreError> {
        match self.get_invoice(tenant, period).await? {
            Some(invoice) => self.accrual_step(&invoice, now).await,
            None => Ok(None),
        }
    }

    /// A partner's ledger entries booked in `period`, in key order (accrual before its
    /// clawbacks).
    pub async fn commissions(
        &self,
        partner: &PartnerId,
        period: Period,
    ) -> Result<Vec<CommissionEntry>, StoreError> {
        let key = Expr::new("PK = :pk AND begins_with(#sk, :prefix)")
            .name("#sk", SK)
            .value(":pk", s(partner_pk(partner)))
            .value(":prefix", s(format!("{COMMISSION_SK_PREFIX}{period}#")));
        let items: Vec<Stored<CommissionEntry>> = self.query_all(Query::table(key).consistent()).await?;
        Ok(items.into_iter().map(|item| item.record).collect())
    }

    /// The accrual an invoice earned, wherever it was booked (the partner's partition holds
    /// few entries per invoice; the filter finds it without knowing the month it was paid).
    pub async fn accrual_of(
        &self,
        partner: &PartnerId,
        invoice: &str,
    ) -> Result<Option<CommissionEntry>, StoreError> {
        let key = Expr::new("PK = :pk AND begins_with(#sk, :prefix)")
            .name("#sk", SK)
            .value(":pk", s(partner_pk(partner)))
            .value(":prefix", s(COMMISSION_SK_PREFIX));
        let filter = Expr::new("invoice_id = :invoice AND kind = :accrual")
            .value(":invoice", s(invoice))
            .value(":accrual", s(CommissionKind::Accrual.as_str()));
        let items: Vec<Stored<CommissionEntry>> =
            self.query_all(Query::table(key).filter(Some(filter)).consistent()).await?;
        Ok(items.into_iter().next().map(|item| item.record))
    }

    /// Every credit note of the tenant's invoice of `period`, first first.
    pub async fn credit_notes(
        &self,
        tenant: TenantId,
        period: Period,
    ) -> Result<Vec<CreditNote>, StoreError> {
        let key = Expr::new("PK = :pk AND begins_with(#sk, :prefix)")
            .name("#sk", SK)
            .value(":pk", s(tenant_pk(tenant)))
            .value(":prefix", s(format!("{CREDIT_NOTE_SK_PREFIX}{period}#")));
        let items: Vec<Stored<CreditNote>> = self.query_all(Query::table(key).consistent()).await?;
        Ok(items.into_iter().map(|item| item.record).collect())
    }

    /// Records a refund in one transaction: the credit note (in its sequence's place), the
    /// invoice's payment status and refunded total (guarded by the total it was read with),
    /// the `invoice.refunded` event, and — when `accrual` is the partner's accrual on the
    /// invoice — the clawback of the refunded share.
    pub async fn record_refund(
        &self,
        refund: &RefundRecord,
        accrual: Option<&CommissionEntry>,
        now: OffsetDateTime,
    ) -> Result<Refunded, StoreError> {
        let mut note = refund.note.clone();
        let after = refund.refunded_before + note.amount.minor;
        let clawback_entry = match accrual {
            None => None,
            Some(accrual) => {
                let back = clawback(accrual.amount, refund.paid, refund.refunded_before, note.amount.minor)
                    .map_err(|e| StoreError::Corrupt(format!("refund beyond the paid amount: {e}")))?;
                note.commission_reversed = Some(back);
                Some(CommissionEntry {
                    partner_id: accrual.partner_id.clone(),
                    tenant_id: note.tenant_id,
                    invoice_id: note.invoice_id.clone(),
                    invoice_period: note.period,
                    booked_period: Period::containing(now),
                    kind: CommissionKind::Clawback,
                    base: Money::new(-note.amount.minor, note.amount.currency),
                    amount: back,
                    lines: Vec::new(),
                    rates: accrual.rates.clone(),
                    credit_note_id: Some(note.id.clone()),
                    created_at: now,
                })
            }
        };
        let note_item = Stored::new(
            ItemKey::credit_note(note.tenant_id, note.period, note.sequence),
            "credit_note",
            &note,
        )
        .to_item()?;
        let status =
            if after >= refund.paid { PaymentStatus::Refunded } else { PaymentStatus::PartiallyRefunded };
        let update = Expr::new("SET payment_status = :status, refunded_minor = :after, refunded_at = :now")
            .value(":status", s(status.as_str()))
            .value(":after", n(after))
            .value(":now", s(rfc3339(now)));
        let before = if refund.refunded_before == 0 {
            "(attribute_not_exists(refunded_minor) OR refunded_minor = :before)"
        } else {
            "refunded_minor = :before"
        };
        let condition = Expr::new(format!(
            "#istatus = :finalized AND (payment_status = :paid OR payment_status = :partial) AND {before}"
        ))
        .name("#istatus", "status")
        .value(":finalized", s(InvoiceStatus::Finalized.as_str()))
        .value(":paid", s(PaymentStatus::Paid.as_str()))
        .value(":partial", s(PaymentStatus::PartiallyRefunded.as_str()))
        .value(":before", n(refund.refunded_before));
        let detail = serde_json::json!({
            "invoice_id": note.invoice_id,
            "tenant_id": note.tenant_id,
            "period": note.period.to_string(),
            "credit_note_id": note.id,
            "amount": { "minor": note.amount.minor, "currency": note.amount.currency.to_string() },
            "refunded_total": after,
            "payment_status": status.as_str(),
        });
        let event = OutboxEvent {
            event_id: format!("invoice.refunded:{}", note.id),
            detail_type: "invoice.refunded".into(),
            source: "dotmac.billing".into(),
            detail: detail.to_string(),
            created_at: now,
            published: false,
        };
        let event_item = Stored::new(ItemKey::outbox(&event.event_id), "outbox_event", &event).to_item()?;
        let mut steps = vec![
            self.put_new(note_item)?,
            self.update_step(ItemKey::invoice(note.tenant_id, note.period), update, condition)?,
            self.put_new(event_item)?,
        ];
        if let Some(entry) = &clawback_entry {
            let item: Item = Stored::new(ItemKey::commission(entry), "commission", entry).to_item()?;
            steps.push(self.put_new(item)?);
        }
        match self.transact(steps).await? {
            Ok(()) => Ok(Refunded::Recorded(note)),
            Err(cancelled) if cancelled.refused(0) => {
                let stored = self
                    .get_item::<Stored<CreditNote>>(ItemKey::credit_note(
                        note.tenant_id,
                        note.period,
                        note.sequence,
                    ))
                    .await?
                    .map(|i| i.record)
                    .ok_or(StoreError::AlreadyExists)?;
                Ok(Refunded::Existed(stored))
            }
            Err(cancelled) if cancelled.refused(1) => Ok(Refunded::InvoiceChanged),
            Err(cancelled) => Err(cancelled.into()),
        }
    }
}

impl Fenced<'_> {
    fn admit_partner(&self, partner: &PartnerId) -> Result<(), StoreError> {
        let inside = match self.fence() {
            Fence::Global => true,
            Fence::Partner(own) => own == partner,
            Fence::Tenant(_) | Fence::Nothing => false,
        };
        if inside { Ok(()) } else { Err(StoreError::OutOfFence { key: partner_pk(partner) }) }
    }

    pub async fn get_partner(&self, id: &PartnerId) -> Result<Option<PartnerRecord>, StoreError> {
        self.admit_partner(id)?;
        self.store().get_partner(id).await
    }

    pub async fn commissions(
        &self,
        partner: &PartnerId,
        period: Period,
    ) -> Result<Vec<CommissionEntry>, StoreError> {
        self.admit_partner(partner)?;
        self.store().commissions(partner, period).await
    }

    /// The credit notes of `tenant`'s invoice (`tenant` as the caller read it).
    pub async fn credit_notes(
        &self,
        tenant: &dotmac_domain::Tenant,
        period: Period,
    ) -> Result<Vec<CreditNote>, StoreError> {
        let inside = match self.fence() {
            Fence::Global => true,
            Fence::Tenant(own) => *own == tenant.id,
            Fence::Partner(partner) => tenant.partner_id.as_ref() == Some(partner),
            Fence::Nothing => false,
        };
        if !inside {
            return Err(StoreError::OutOfFence { key: tenant_pk(tenant.id) });
        }
        self.store().credit_notes(tenant.id, period).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_months_entries_share_a_prefix_and_an_accrual_sorts_before_its_clawbacks() {
        let period = Period::parse("2026-11").expect("period");
        let accrual = commission_sk(period, "t_2026-10", "A");
        let clawback = commission_sk(period, "t_2026-10", "R1");
        assert!(accrual.starts_with("COMMISSION#2026-11#"));
        assert!(accrual < clawback);
        assert!(credit_note_sk(period, 9) < credit_note_sk(period, 10));
    }
}
