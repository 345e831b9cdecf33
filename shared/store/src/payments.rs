//! Payments: what charging a finalized invoice through Stripe records.
//!
//! Layout (the one table):
//! - charge due: `CHARGES_DUE` / `<invoice id>`: written in the transaction that finalizes an
//!   invoice (`Store::finalize_invoice`), so an invoice is never finalized without it; the
//!   finalizer's schedule queues a `ChargeInvoice` for every one still there, and it is deleted
//!   once an attempt has a final answer. This is what makes the charge crash-safe: a crash
//!   between the finalization and the enqueue leaves the item, and the next sweep queues it.
//! - Stripe customer: `TENANT#<id>` / `STRIPE_CUSTOMER`: the tenant's Stripe customer id, for
//!   life. An item of its own beside the profile, created only if absent: the profile is
//!   rewritten whole by every tenant change (a put of the record), which would drop an
//!   attribute it does not know, and a version check against the profile would conflict with
//!   every unrelated change.
//! - payment: `TENANT#<id>` / `PAYMENT#<YYYY-MM>#<attempt:03>`: one per attempt at an
//!   invoice, in the tenant's partition (IAM's leading-key fence covers it). Its id is
//!   `<invoice id>_<attempt>`, so the webhook finds it from the metadata we give Stripe.
//! - Stripe event: `STRIPE_EVENT#<evt id>` / `EVENT`: a webhook event applied (dedupe), with
//!   what it did.
//! - the invoice's `payment_status` (open → paid | failed, failed → paid, paid → refunded
//!   later), moved in the same transaction as the payment that decides it, with the
//!   platform event (`invoice.paid`, `invoice.payment_failed`) in the outbox beside them.
//!
//! Order does not matter: a payment moves `pending → succeeded | failed` and `failed →
//! succeeded`, never out of `succeeded`; an invoice moves to `paid` once and a failure never
//! moves it back. Each move is a conditional write on the state it leaves, so a late or
//! duplicate answer (the job's own, or a webhook) changes nothing.

use dotmac_billing::{Money, Period};
use dotmac_domain::TenantId;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::billing::{InvoiceStatus, OutboxEvent, invoice_id};
use crate::dynamo::{Expr, Item, Query, decode};
use crate::keys::{ItemKey, SK, Stored, n, s, tenant_pk};
use crate::{Store, StoreError};

pub const CHARGES_DUE_PK: &str = "CHARGES_DUE";
const PAYMENT_SK_PREFIX: &str = "PAYMENT#";

/// An invoice's payment state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    /// Finalized, not yet paid (a charge is due or under way).
    Open,
    Paid,
    /// The last attempt failed (dunning retries it).
    Failed,
    Refunded,
    /// Paid, and part of it refunded (credit notes, `crate::partners`).
    PartiallyRefunded,
}

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Open => "open",
            PaymentStatus::Paid => "paid",
            PaymentStatus::Failed => "failed",
            PaymentStatus::Refunded => "refunded",
            PaymentStatus::PartiallyRefunded => "partially_refunded",
        }
    }
}

/// One attempt's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AttemptStatus {
    /// Recorded before Stripe was asked; or asked, and Stripe's answer is not final.
    Pending,
    Succeeded,
    Failed,
}

impl AttemptStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptStatus::Pending => "pending",
            AttemptStatus::Succeeded => "succeeded",
            AttemptStatus::Failed => "failed",
        }
    }
}

/// A charge waiting for its job (see the layout above).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChargeDue {
    pub tenant_id: TenantId,
    pub period: Period,
    /// The attempt the next `ChargeInvoice` makes.
    pub attempt: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub due_at: OffsetDateTime,
}

/// One attempt at charging an invoice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    /// `<invoice id>_<attempt>`.
    pub id: String,
    pub invoice_id: String,
    pub tenant_id: TenantId,
    pub period: Period,
    pub attempt: u32,
    pub amount: Money,
    pub status: AttemptStatus,
    pub stripe_customer_id: String,
    /// The payment method the attempt charges (fixed at its first try, so a retry of the job
    /// sends Stripe the same parameters under the same idempotency key).
    #[serde(default)]
    pub stripe_payment_method_id: Option<String>,
    #[serde(default)]
    pub stripe_payment_intent_id: Option<String>,
    #[serde(default)]
    pub failure_code: Option<String>,
    #[serde(default)]
    pub failure_message: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When the final answer (succeeded or failed) was recorded.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub processed_at: Option<OffsetDateTime>,
    /// The Stripe event that decided it, when a webhook did (the job's own answer leaves none).
    #[serde(default)]
    pub decided_by_event: Option<String>,
    pub version: u64,
}

/// The payment's id, from its invoice and attempt.
pub fn payment_id(tenant: TenantId, period: Period, attempt: u32) -> String {
    format!("{}_{attempt}", invoice_id(tenant, period))
}

/// The tenant, period and attempt a payment id names.
pub fn parse_payment_id(id: &str) -> Option<(TenantId, Period, u32)> {
    let (invoice, attempt) = id.rsplit_once('_')?;
    let (tenant, period) = crate::billing::parse_invoice_id(invoice)?;
    let attempt: u32 = attempt.parse().ok().filter(|a| *a >= 1)?;
    // One canonical spelling (`_01` would name attempt 1 too).
    (payment_id(tenant, period, attempt) == id).then_some((tenant, period, attempt))
}

/// What deciding an attempt did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decided {
    /// The attempt (and the invoice, when it was still open or failed) moved.
    Applied,
    /// Nothing to do: the attempt already had this or a stronger answer, or does not exist.
    Unchanged,
}

/// The final answer about an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Succeeded { payment_intent: Option<String> },
    Failed { payment_intent: Option<String>, code: String, message: String },
}

/// A Stripe webhook event as recorded once applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StripeEventRecord {
    pub event_id: String,
    pub kind: String,
    /// What applying it did (`applied`, `unchanged`, `ignored`).
    pub outcome: String,
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
}

#[derive(Serialize, Deserialize)]
struct CustomerAttributes {
    tenant_id: TenantId,
    customer_id: String,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
}

fn payment_sk(period: Period, attempt: u32) -> String {
    format!("{PAYMENT_SK_PREFIX}{period}#{attempt:03}")
}

impl ItemKey {
    pub(crate) fn charge_due(invoice_id: &str) -> Self {
        ItemKey::from_parts(CHARGES_DUE_PK, invoice_id)
    }

    pub(crate) fn stripe_customer(tenant: TenantId) -> Self {
        ItemKey::from_parts(tenant_pk(tenant), "STRIPE_CUSTOMER")
    }

    pub(crate) fn payment(tenant: TenantId, period: Period, attempt: u32) -> Self {
        ItemKey::from_parts(tenant_pk(tenant), payment_sk(period, attempt))
    }

    pub(crate) fn stripe_event(event_id: &str) -> Self {
        ItemKey::from_parts(format!("STRIPE_EVENT#{event_id}"), "EVENT")
    }
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// The charge-due item written beside a finalization (crate: `finalize_invoice` adds it).
pub(crate) fn charge_due_item(
    tenant: TenantId,
    period: Period,
    now: OffsetDateTime,
) -> Result<Item, StoreError> {
    let due = ChargeDue { tenant_id: tenant, period, attempt: 1, due_at: now };
    Stored::new(ItemKey::charge_due(&invoice_id(tenant, period)), "charge_due", due).to_item()
}

fn outbox_event(
    event_id: String,
    detail_type: &str,
    detail: serde_json::Value,
    now: OffsetDateTime,
) -> OutboxEvent {
    OutboxEvent {
        event_id,
        detail_type: detail_type.to_owned(),
        source: "dotmac.billing".to_owned(),
        detail: detail.to_string(),
        created_at: now,
        published: false,
    }
}

impl Store {
    /// Every charge still due, oldest invoice first (the sweep's list).
    pub async fn charges_due(&self) -> Result<Vec<ChargeDue>, StoreError> {
        let key = Expr::new("PK = :pk").value(":pk", s(CHARGES_DUE_PK));
        let items: Vec<Stored<ChargeDue>> = self.query_all(Query::table(key).consistent()).await?;
        Ok(items.into_iter().map(|item| item.record).collect())
    }

    /// Takes an invoice off the due list (repeating it changes nothing).
    pub async fn clear_charge_due(&self, tenant: TenantId, period: Period) -> Result<(), StoreError> {
        let _ = self.delete(ItemKey::charge_due(&invoice_id(tenant, period)), None).await?;
        Ok(())
    }

    /// Puts an invoice (back) on the due list for `attempt` (dunning's retries use it).
    pub async fn schedule_charge(
        &self,
        tenant: TenantId,
        period: Period,
        attempt: u32,
        due_at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let due = ChargeDue { tenant_id: tenant, period, attempt, due_at };
        let item =
            Stored::new(ItemKey::charge_due(&invoice_id(tenant, period)), "charge_due", due).to_item()?;
        let _ = self.put(item, None).await?;
        Ok(())
    }

    /// The tenant's Stripe customer id, if it has one.
    pub async fn stripe_customer(&self, tenant: TenantId) -> Result<Option<String>, StoreError> {
        Ok(self
            .get_item::<Stored<CustomerAttributes>>(ItemKey::stripe_customer(tenant))
            .await?
            .map(|item| item.record.customer_id))
    }

    /// Keeps `customer_id` as the tenant's customer unless it already has one; returns the one
    /// it has now (the first writer's, if two raced).
    pub async fn keep_stripe_customer(
        &self,
        tenant: TenantId,
        customer_id: &str,
        now: OffsetDateTime,
    ) -> Result<String, StoreError> {
        let record =
            CustomerAttributes { tenant_id: tenant, customer_id: customer_id.to_owned(), created_at: now };
        let item = Stored::new(ItemKey::stripe_customer(tenant), "stripe_customer", record).to_item()?;
        match self.put_new_or_read(item).await? {
            None => Ok(customer_id.to_owned()),
            Some(existing) => Ok(decode::<Stored<CustomerAttributes>>(existing)?.record.customer_id),
        }
    }

    /// Records `payment` (pending) unless its attempt exists; returns the attempt as stored.
    pub async fn begin_payment(&self, payment: &Payment) -> Result<Payment, StoreError> {
        let item = Stored::new(
            ItemKey::payment(payment.tenant_id, payment.period, payment.attempt),
            "payment",
            payment,
        )
        .to_item()?;
        match self.put_new_or_read(item).await? {
            None => Ok(payment.clone()),
            Some(existing) => Ok(decode::<Stored<Payment>>(existing)?.record),
        }
    }

    pub async fn get_payment(
        &self,
        tenant: TenantId,
        period: Period,
        attempt: u32,
    ) -> Result<Option<Payment>, StoreError> {
        Ok(self
            .get_item::<Stored<Payment>>(ItemKey::payment(tenant, period, attempt))
            .await?
            .map(|i| i.record))
    }

    /// Every attempt at the tenant's invoice of `period`, first attempt first.
    pub async fn invoice_payments(
        &self,
        tenant: TenantId,
        period: Period,
    ) -> Result<Vec<Payment>, StoreError> {
        let key = Expr::new("PK = :pk AND begins_with(#sk, :prefix)")
            .name("#sk", SK)
            .value(":pk", s(tenant_pk(tenant)))
            .value(":prefix", s(format!("{PAYMENT_SK_PREFIX}{period}#")));
        let items: Vec<Stored<Payment>> = self.query_all(Query::table(key).consistent()).await?;
        Ok(items.into_iter().map(|item| item.record).collect())
    }

    /// Notes the payment intent Stripe made for a pending attempt (its answer was not final).
    pub async fn note_payment_intent(&self, payment: &Payment, intent: &str) -> Result<(), StoreError> {
        let update = Expr::new("SET stripe_payment_intent_id = :pi")
            .value(":pi", s(intent))
            .value(":pending", s(AttemptStatus::Pending.as_str()));
        let condition = Expr::new("attribute_exists(PK) AND #status = :pending").name("#status", "status");
        let _ = self
            .update(
                ItemKey::payment(payment.tenant_id, payment.period, payment.attempt),
                update,
                Some(condition),
                None,
            )
            .await?;
        Ok(())
    }

    /// Records the final answer about an attempt, and moves its invoice with it, with the
    /// platform event of the move, in one transaction. `event`: the webhook event that
    /// brought the answer, if one did.
    pub async fn decide_payment(
        &self,
        payment: &Payment,
        decision: &Decision,
        event: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<Decided, StoreError> {
        let key = ItemKey::payment(payment.tenant_id, payment.period, payment.attempt);
        let invoice_key = ItemKey::invoice(payment.tenant_id, payment.period);
        let (status, intent) = match decision {
            Decision::Succeeded { payment_intent } => (AttemptStatus::Succeeded, payment_intent),
            Decision::Failed { payment_intent, .. } => (AttemptStatus::Failed, payment_intent),
        };
        let mut update = Expr::new("SET #status = :status, processed_at = :now, version = version + :one")
            .name("#status", "status")
            .value(":status", s(status.as_str()))
            .value(":now", s(rfc3339(now)))
            .value(":one", n(1));
        if let Some(intent) = intent {
            update = update.and_set("stripe_payment_intent_id = :pi").value(":pi", s(intent));
        }
        if let Some(event) = event {
            update = update.and_set("decided_by_event = :event").value(":event", s(event));
        }
        if let Decision::Failed { code, message, .. } = decision {
            update = update
                .and_set("failure_code = :code, failure_message = :message")
                .value(":code", s(code))
                .value(":message", s(message));
        }
        // Succeeded is final; a failure only decides a pending attempt.
        let payment_condition = match status {
            AttemptStatus::Succeeded => Expr::new("attribute_exists(PK) AND #status <> :succeeded")
                .value(":succeeded", s(AttemptStatus::Succeeded.as_str())),
            _ => Expr::new("attribute_exists(PK) AND #status = :pending")
                .value(":pending", s(AttemptStatus::Pending.as_str())),
        }
        .name("#status", "status");
        let payment_step = self.update_step(key, update, payment_condition)?;

        let (invoice_status, event_type, event_id) = match decision {
            Decision::Succeeded { .. } => {
                (PaymentStatus::Paid, "invoice.paid", format!("invoice.paid:{}", payment.invoice_id))
            }
            Decision::Failed { .. } => (
                PaymentStatus::Failed,
                "invoice.payment_failed",
                format!("invoice.payment_failed:{}", payment.id),
            ),
        };
        // Paid once, and never back to failed; only a finalized invoice is charged. The
        // invoice's version is its content's lock (drafts recomputed in place) and a finalized
        // invoice's content never changes, so a payment move is guarded by the state it leaves
        // and leaves the version alone.
        let invoice_update =
            Expr::new("SET payment_status = :payment").value(":payment", s(invoice_status.as_str()));
        let invoice_update = match invoice_status {
            PaymentStatus::Paid => invoice_update.and_set("paid_at = :now").value(":now", s(rfc3339(now))),
            _ => invoice_update,
        };
        let invoice_condition = Expr::new(
            "#istatus = :finalized AND (attribute_not_exists(payment_status) OR (payment_status <> :paid AND payment_status <> :refunded AND payment_status <> :partial))",
        )
        .name("#istatus", "status")
        .value(":finalized", s(InvoiceStatus::Finalized.as_str()))
        .value(":paid", s(PaymentStatus::Paid.as_str()))
        .value(":refunded", s(PaymentStatus::Refunded.as_str()))
        .value(":partial", s(PaymentStatus::PartiallyRefunded.as_str()));
        let invoice_step = self.update_step(invoice_key, invoice_update, invoice_condition)?;
        let mut detail = serde_json::json!({
            "invoice_id": payment.invoice_id,
            "tenant_id": payment.tenant_id,
            "period": payment.period.to_string(),
            "payment_id": payment.id,
            "attempt": payment.attempt,
            "amount": { "minor": payment.amount.minor, "currency": payment.amount.currency.to_string() },
        });
        if let Decision::Failed { code, .. } = decision {
            detail["failure_code"] = serde_json::Value::String(code.clone());
        }
        let outbox = outbox_event(event_id, event_type, detail, now);
        let outbox_item =
            Stored::new(ItemKey::outbox(&outbox.event_id), "outbox_event", &outbox).to_item()?;
        let outbox_step = self.put_new(outbox_item)?;

        let mut steps = vec![payment_step.clone(), invoice_step, outbox_step];
        // The partner's commission accrues with the payment, or not at all (`crate::partners`).
        if matches!(decision, Decision::Succeeded { .. }) {
            steps.extend(self.accrual_step_for(payment.tenant_id, payment.period, now).await?);
        }
        match self.transact(steps).await? {
            Ok(()) => return Ok(Decided::Applied),
            Err(cancelled) if cancelled.refused(0) => return Ok(Decided::Unchanged),
            // The invoice is past this answer (paid by another attempt, or its event or its
            // commission is out): the attempt still gets its own answer.
            Err(cancelled) if (1..=3).any(|step| cancelled.refused(step)) => {}
            Err(cancelled) => return Err(cancelled.into()),
        }
        match self.transact(vec![payment_step]).await? {
            Ok(()) => Ok(Decided::Applied),
            Err(cancelled) if cancelled.refused(0) => Ok(Decided::Unchanged),
            Err(cancelled) => Err(cancelled.into()),
        }
    }

    /// Marks a finalized invoice with nothing to charge (a zero total) paid, with its event.
    pub async fn settle_without_charge(
        &self,
        tenant: TenantId,
        period: Period,
        now: OffsetDateTime,
    ) -> Result<Decided, StoreError> {
        let id = invoice_id(tenant, period);
        let update = Expr::new("SET payment_status = :paid, paid_at = :now")
            .value(":paid", s(PaymentStatus::Paid.as_str()))
            .value(":now", s(rfc3339(now)));
        let condition = Expr::new(
            "#istatus = :finalized AND (attribute_not_exists(payment_status) OR payment_status = :open)",
        )
        .name("#istatus", "status")
        .value(":finalized", s(InvoiceStatus::Finalized.as_str()))
        .value(":open", s(PaymentStatus::Open.as_str()));
        let detail = serde_json::json!({ "invoice_id": id, "tenant_id": tenant, "period": period.to_string(), "payment_id": null });
        let outbox = outbox_event(format!("invoice.paid:{id}"), "invoice.paid", detail, now);
        let outbox_item =
            Stored::new(ItemKey::outbox(&outbox.event_id), "outbox_event", &outbox).to_item()?;
        let mut steps = vec![
            self.update_step(ItemKey::invoice(tenant, period), update, condition)?,
            self.put_new(outbox_item)?,
        ];
        // A zero total earns nothing, but the ledger still shows the paid invoice.
        steps.extend(self.accrual_step_for(tenant, period, now).await?);
        match self.transact(steps).await? {
            Ok(()) => Ok(Decided::Applied),
            Err(cancelled) if (0..=2).any(|step| cancelled.refused(step)) => Ok(Decided::Unchanged),
            Err(cancelled) => Err(cancelled.into()),
        }
    }

    /// Whether a Stripe event was applied already.
    pub async fn stripe_event(&self, event_id: &str) -> Result<Option<StripeEventRecord>, StoreError> {
        Ok(self
            .get_item::<Stored<StripeEventRecord>>(ItemKey::stripe_event(event_id))
            .await?
            .map(|i| i.record))
    }

    /// Records an applied Stripe event, once (a second record of the same event is refused
    /// and the first kept).
    pub async fn record_stripe_event(&self, record: &StripeEventRecord) -> Result<bool, StoreError> {
        let item = Stored::new(ItemKey::stripe_event(&record.event_id), "stripe_event", record).to_item()?;
        Ok(self.put_new_or_read(item).await?.is_none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payment_id_names_its_invoice_and_attempt_once() {
        let tenant = TenantId::generate();
        let period = Period::parse("2026-11").expect("period");
        let id = payment_id(tenant, period, 3);
        assert_eq!(id, format!("{tenant}_2026-11_3"));
        assert_eq!(parse_payment_id(&id), Some((tenant, period, 3)));
        assert_eq!(parse_payment_id(&format!("{tenant}_2026-11_03")), None);
        assert_eq!(parse_payment_id(&format!("{tenant}_2026-11_0")), None);
        assert_eq!(parse_payment_id(&format!("{tenant}_2026-11")), None);
        assert_eq!(parse_payment_id("x_y_z"), None);
    }

    #[test]
    fn attempts_sort_in_order_under_their_invoice() {
        assert!(
            payment_sk(Period::parse("2026-11").expect("p"), 9)
                < payment_sk(Period::parse("2026-11").expect("p"), 10)
        );
        assert!(payment_sk(Period::parse("2026-11").expect("p"), 1).starts_with("PAYMENT#2026-11#"));
    }
}
