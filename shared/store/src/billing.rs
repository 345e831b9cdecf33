//! Billing runs and invoices.
//!
//! Layout (one table, as everything else):
//! - invoice: `TENANT#<id>` / `INVOICE#<YYYY-MM>`: one per tenant and period, its key derived
//!   from both, so no run, redelivery or race can make a second one. Also in GSI1 under
//!   `INVOICES` / `<YYYY-MM>#<tenant>` (the platform's list, and the finalizer's drafts).
//! - run: `BILLING_RUN#<id>` / `RUN`: period, fan-out cursor, counters (tenants total,
//!   invoiced, failed).
//! - run item: `BILLING_RUN#<id>` / `TENANT#<tenant>`: what the run did for the tenant
//!   (`invoiced`, or `failed` with the reason), written in the same transaction as the counter
//!   it moves, so a redelivered job never counts twice.
//! - invoice number: `INVOICE_NUMBER` / `COUNTER`: the last number given, moved in the same
//!   transaction as the invoice it numbers, so numbers have no gaps.
//! - outbox: `OUTBOX` / `<event id>`: a domain event written with the state change it
//!   announces, for a publisher to send to EventBridge (`billing.cycle_started`, and the
//!   payments' `invoice.paid` / `invoice.payment_failed`).
//! - payments, Stripe customers, charges due: see `crate::payments`.

use aws_sdk_dynamodb::types::AttributeValue;
use dotmac_billing::{InvoiceDraft, Period, PlanCharge};
use dotmac_domain::{Fence, PartnerId, Tenant, TenantId};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::dynamo::{Expr, ITEM_EXISTS, ITEM_IS_NEW, Item, Query, decode_cursor};
use crate::fence::Fenced;
use crate::keys::{GSI1, GSI1PK, GSI1SK, ItemKey, SK, Stored, n, s, tenant_pk};
use crate::tenants::Page;
use crate::usage::{UsageReport, UsageWindow};
use crate::{Store, StoreError};

pub const INVOICES_GSI1PK: &str = "INVOICES";
pub(crate) const INVOICE_SK_PREFIX: &str = "INVOICE#";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InvoiceStatus {
    /// Recomputed in place by later runs until finalized.
    Draft,
    /// Numbered; never changed again.
    Finalized,
}

impl InvoiceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            InvoiceStatus::Draft => "draft",
            InvoiceStatus::Finalized => "finalized",
        }
    }
}

/// The invoice id: the tenant and the period, so it is the same whoever computes it.
pub fn invoice_id(tenant: TenantId, period: Period) -> String {
    format!("{tenant}_{period}")
}

/// The tenant and period an invoice id names.
pub fn parse_invoice_id(id: &str) -> Option<(TenantId, Period)> {
    let (tenant, period) = id.split_once('_')?;
    Some((TenantId::parse(tenant).ok()?, Period::parse(period).ok()?))
}

/// An invoice as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceRecord {
    pub id: String,
    pub tenant_id: TenantId,
    #[serde(default)]
    pub partner_id: Option<PartnerId>,
    pub period: Period,
    pub status: InvoiceStatus,
    /// Given on finalization: sequential per platform, no gaps.
    #[serde(default)]
    pub number: Option<u64>,
    /// The computed content: lines, billable customers, total.
    pub content: InvoiceDraft,
    /// The plan spans and price versions it was computed from (re-rating reads them).
    pub plan_charges: Vec<PlanCharge>,
    /// The run that last computed it.
    #[serde(default)]
    pub run_id: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub finalized_at: Option<OffsetDateTime>,
    /// Set on finalization (`open`), then moved by its payments (`crate::payments`).
    #[serde(default)]
    pub payment_status: Option<crate::payments::PaymentStatus>,
    /// When a payment (or a zero total) settled it; written with `payment_status = paid`.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub paid_at: Option<OffsetDateTime>,
    /// What its credit notes refunded so far, in minor units (`crate::partners`).
    #[serde(default)]
    pub refunded_minor: i64,
    pub version: u64,
}

type InvoiceItem = Stored<InvoiceRecord>;

fn invoice_sk(period: Period) -> String {
    format!("{INVOICE_SK_PREFIX}{period}")
}

impl ItemKey {
    pub(crate) fn invoice(tenant: TenantId, period: Period) -> Self {
        ItemKey::from_parts(tenant_pk(tenant), invoice_sk(period))
    }

    pub(crate) fn billing_run(id: &str) -> Self {
        ItemKey::from_parts(format!("BILLING_RUN#{id}"), "RUN")
    }

    pub(crate) fn billing_run_item(id: &str, tenant: TenantId) -> Self {
        ItemKey::from_parts(format!("BILLING_RUN#{id}"), format!("TENANT#{tenant}"))
    }

    pub(crate) fn invoice_number() -> Self {
        ItemKey::from_parts("INVOICE_NUMBER", "COUNTER")
    }

    pub(crate) fn outbox(event_id: &str) -> Self {
        ItemKey::from_parts("OUTBOX", event_id)
    }
}

fn invoice_item(record: &InvoiceRecord) -> Result<Item, StoreError> {
    Stored::new(ItemKey::invoice(record.tenant_id, record.period), "invoice", record)
        .indexed(INVOICES_GSI1PK, format!("{}#{}", record.period, record.tenant_id))
        .to_item()
}

/// A billing run: one period, its fan-out progress and its counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BillingRun {
    pub id: String,
    pub period: Period,
    /// Only these tenants (all active ones when empty).
    #[serde(default)]
    pub tenant_ids: Vec<TenantId>,
    pub requested_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// The opaque cursor of the tenants list after the last page fanned out (absent, not
    /// NULL, before the first: the fan-out's condition tests for the attribute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    #[serde(default)]
    pub fanned_out: bool,
    #[serde(default)]
    pub tenants_total: u64,
    #[serde(default)]
    pub invoiced: u64,
    #[serde(default)]
    pub failed: u64,
}

type RunItem = Stored<BillingRun>;

/// What a run did for one tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunTenant {
    pub tenant_id: TenantId,
    pub outcome: RunOutcome,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    Invoiced,
    Failed,
}

type RunTenantItem = Stored<RunTenant>;

/// What `Store::invoice_context` reads for one invoice.
#[derive(Debug, Clone, Default)]
pub struct InvoiceContext {
    pub previous: Option<InvoiceRecord>,
    pub current: Option<InvoiceRecord>,
    pub subscriptions: crate::Subscriptions,
}

/// A domain event waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEvent {
    pub event_id: String,
    /// EventBridge `detail-type` (`billing.cycle_started`).
    pub detail_type: String,
    pub source: String,
    /// The event's `detail`, as JSON text.
    pub detail: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(default)]
    pub published: bool,
}

/// Whether a run was opened by this request or existed already (a scheduled run's id is
/// derived from its period, so the schedule firing twice opens one run).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opened {
    Created,
    Existed(Box<BillingRun>),
}

/// What the invoice's write expects to find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// No invoice yet.
    New,
    /// A draft at this version.
    Draft(u64),
    /// Nothing is written to the invoice (it is finalized, or unchanged): only the run's
    /// bookkeeping.
    Untouched,
}

/// What writing an invoice did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    Done,
    /// The run had already counted this tenant (a redelivered job): nothing changed.
    AlreadyCounted,
    /// The invoice changed since it was read (another run, a finalization): read again.
    InvoiceChanged,
    /// The job names a run that does not exist: nothing was written.
    NoRun,
}

/// What finalizing did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finalized {
    Numbered(u64),
    /// The invoice changed since it was read (recomputed, or finalized by someone else).
    InvoiceChanged,
}

/// A filter of the invoice list.
#[derive(Debug, Clone, Default)]
pub struct InvoiceFilter {
    pub status: Option<InvoiceStatus>,
    pub period: Option<Period>,
}

impl InvoiceFilter {
    fn expression(&self, partner: Option<&PartnerId>) -> Option<Expr> {
        let mut parts: Vec<&str> = Vec::new();
        let mut expr = Expr::new("");
        if let Some(status) = self.status {
            parts.push("#status = :status");
            expr = expr.name("#status", "status").value(":status", s(status.as_str()));
        }
        if let Some(partner) = partner {
            parts.push("partner_id = :partner");
            expr = expr.value(":partner", s(partner.as_str()));
        }
        (!parts.is_empty()).then(|| expr.with_text(parts.join(" AND ")))
    }
}

const MAX_FINALIZE_ATTEMPTS: usize = 20;

impl Store {
    /// Records a new run and its `billing.cycle_started` event in one transaction.
    pub async fn open_billing_run(
        &self,
        run: &BillingRun,
        event: &OutboxEvent,
    ) -> Result<Opened, StoreError> {
        let item = Stored::new(ItemKey::billing_run(&run.id), "billing_run", run).to_item()?;
        let event_item = Stored::new(ItemKey::outbox(&event.event_id), "outbox_event", event).to_item()?;
        match self.transact(vec![self.put_new(item)?, self.put_new(event_item)?]).await? {
            Ok(()) => Ok(Opened::Created),
            Err(cancelled) if cancelled.refused(0) => {
                let existing = self.get_billing_run(&run.id).await?.ok_or(StoreError::AlreadyExists)?;
                Ok(Opened::Existed(Box::new(existing)))
            }
            Err(cancelled) => Err(cancelled.into()),
        }
    }

    /// The platform's own events (no tenant's, such as `billing.cycle_started`) not yet
    /// published, oldest first (their ids are time-ordered). Published ones stay in the
    /// partition, flagged, as the record of what went out; a run opens a few a month.
    pub async fn unpublished_platform_events(&self, limit: i32) -> Result<Vec<OutboxEvent>, StoreError> {
        let key = Expr::new("PK = :pk").value(":pk", s("OUTBOX"));
        let pending = Expr::new("published = :no").value(":no", AttributeValue::Bool(false));
        let mut query = Query::table(key).filter(Some(pending)).consistent();
        let mut events = Vec::new();
        // The filter applies after each page's limit, so pages are read until `limit` is met.
        loop {
            let (page, last) = self.query_page::<Stored<OutboxEvent>>(query.clone()).await?;
            events.extend(page.into_iter().map(|item| item.record));
            match last {
                Some(last) if events.len() < usize::try_from(limit).unwrap_or(0) => {
                    query = query.start(Some(last))
                }
                _ => break,
            }
        }
        events.truncate(usize::try_from(limit).unwrap_or(0));
        Ok(events)
    }

    /// Flags a platform event published (repeating it changes nothing).
    pub async fn mark_platform_event_published(&self, event_id: &str) -> Result<(), StoreError> {
        let update = Expr::new("SET published = :yes").value(":yes", AttributeValue::Bool(true));
        let exists = Expr::new(crate::dynamo::ITEM_EXISTS);
        let _ = self.update(ItemKey::outbox(event_id), update, Some(exists), None).await?;
        Ok(())
    }

    pub async fn get_billing_run(&self, id: &str) -> Result<Option<BillingRun>, StoreError> {
        Ok(self.get_item::<RunItem>(ItemKey::billing_run(id)).await?.map(|item| item.record))
    }

    /// The tenants a run failed, with their reasons.
    pub async fn billing_run_failures(&self, id: &str) -> Result<Vec<RunTenant>, StoreError> {
        let key = Expr::new("PK = :pk AND begins_with(SK, :tenant)")
            .value(":pk", s(format!("BILLING_RUN#{id}")))
            .value(":tenant", s("TENANT#"));
        let failed = Expr::new("outcome = :failed").value(":failed", s("failed"));
        let items: Vec<RunTenantItem> = self.query_all(Query::table(key).filter(Some(failed))).await?;
        Ok(items.into_iter().map(|item| item.record).collect())
    }

    /// Moves the run's fan-out from `from` (the cursor it was read with) to `to`, adding
    /// `added` tenants; refused (`false`) when someone else moved it first, so a page is
    /// counted once however many fan-outs race.
    pub async fn advance_fan_out(
        &self,
        run_id: &str,
        from: Option<&str>,
        to: Option<&str>,
        added: u64,
    ) -> Result<bool, StoreError> {
        let mut update = Expr::new("SET fanned_out = :done ADD tenants_total :added")
            .value(":done", AttributeValue::Bool(to.is_none()))
            .value(":added", n(i64::try_from(added).unwrap_or(i64::MAX)));
        update = match to {
            Some(to) => update
                .with_text("SET fanned_out = :done, #cursor = :to ADD tenants_total :added")
                .value(":to", s(to)),
            None => update.with_text("SET fanned_out = :done ADD tenants_total :added REMOVE #cursor"),
        }
        .name("#cursor", "cursor");
        let condition = match from {
            Some(from) => Expr::new("#cursor = :from AND fanned_out = :false").value(":from", s(from)),
            None => Expr::new("attribute_not_exists(#cursor) AND fanned_out = :false"),
        }
        .name("#cursor", "cursor")
        .value(":false", AttributeValue::Bool(false));
        let done = self.update(ItemKey::billing_run(run_id), update, Some(condition), None).await?;
        Ok(done.is_ok())
    }

    /// A tenant's usage from the report in force at `from` to the last one before `to`,
    /// newest first from one descending query: typically one request for two periods.
    pub async fn usage_since(
        &self,
        tenant: TenantId,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> Result<UsageWindow, StoreError> {
        let pk = format!("{}#USAGE", tenant_pk(tenant));
        let last_ms = (to.unix_timestamp_nanos() / 1_000_000 - 1).max(0);
        let key = Expr::new("GSI1PK = :pk AND GSI1SK <= :to")
            .value(":pk", s(&pk))
            .value(":to", s(format!("{last_ms:015}#~")));
        let mut query = Query::index(GSI1, key).descending().limit(1_000);
        let mut window = UsageWindow::default();
        loop {
            let (items, last) = self.query_page::<Stored<UsageReport>>(query.clone()).await?;
            for item in items {
                if item.record.observed_at < from {
                    window.carried_in = Some(item.record);
                    window.reports.reverse();
                    return Ok(window);
                }
                window.reports.push(item.record);
            }
            match last {
                Some(last) => query = query.start(Some(last)),
                None => {
                    window.reports.reverse();
                    return Ok(window);
                }
            }
        }
    }

    /// The tenant's invoices of `period` and of the period before, strongly consistent, in
    /// one query: `(previous, current)`.
    pub async fn invoices_around(
        &self,
        tenant: TenantId,
        period: Period,
    ) -> Result<(Option<InvoiceRecord>, Option<InvoiceRecord>), StoreError> {
        let key = Expr::new("PK = :pk AND SK BETWEEN :previous AND :current")
            .value(":pk", s(tenant_pk(tenant)))
            .value(":previous", s(invoice_sk(period.previous())))
            .value(":current", s(invoice_sk(period)));
        let items: Vec<InvoiceItem> = self.query_all(Query::table(key).consistent()).await?;
        let mut previous = None;
        let mut current = None;
        for item in items {
            if item.record.period == period {
                current = Some(item.record);
            } else {
                previous = Some(item.record);
            }
        }
        Ok((previous, current))
    }

    /// Everything of the tenant's own partition an invoice of `period` is built from, in ONE
    /// strongly consistent query: its invoices of `period` and the period before, and every
    /// subscription span. Sort keys `INVOICE#<previous>` through `SUBSCRIPTION#~` hold them;
    /// the few items between (the profile, custom roles) are skipped.
    pub async fn invoice_context(
        &self,
        tenant: TenantId,
        period: Period,
    ) -> Result<InvoiceContext, StoreError> {
        let mut items: Vec<Item> = Vec::new();
        let mut start = None;
        loop {
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("PK = :pk AND SK BETWEEN :from AND :to")
                .expression_attribute_values(":pk", s(tenant_pk(tenant)))
                .expression_attribute_values(":from", s(invoice_sk(period.previous())))
                .expression_attribute_values(
                    ":to",
                    s(format!("{}~", crate::subscriptions::SUBSCRIPTION_SK_PREFIX)),
                )
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| StoreError::dynamo("Query", e))?;
            items.extend(output.items.unwrap_or_default());
            match output.last_evaluated_key {
                Some(last) => start = Some(last),
                None => break,
            }
        }
        let (invoices, others): (Vec<Item>, Vec<Item>) = items.into_iter().partition(|item| {
            item.get(SK).and_then(|sk| sk.as_s().ok()).is_some_and(|sk| sk.starts_with(INVOICE_SK_PREFIX))
        });
        let mut context = InvoiceContext {
            subscriptions: crate::Subscriptions::among(others)?,
            ..InvoiceContext::default()
        };
        for item in invoices {
            let record = crate::dynamo::decode::<InvoiceItem>(item)?.record;
            if record.period == period {
                context.current = Some(record);
            } else if record.period == period.previous() {
                context.previous = Some(record);
            }
        }
        Ok(context)
    }

    pub async fn get_invoice(
        &self,
        tenant: TenantId,
        period: Period,
    ) -> Result<Option<InvoiceRecord>, StoreError> {
        Ok(self.get_item::<InvoiceItem>(ItemKey::invoice(tenant, period)).await?.map(|item| item.record))
    }

    fn invoice_put(
        &self,
        record: &InvoiceRecord,
        expected: Expected,
    ) -> Result<Option<aws_sdk_dynamodb::types::TransactWriteItem>, StoreError> {
        let item = invoice_item(record)?;
        let condition = match expected {
            Expected::Untouched => return Ok(None),
            Expected::New => Expr::new(ITEM_IS_NEW),
            Expected::Draft(version) => Expr::new("#status = :draft AND version = :version")
                .name("#status", "status")
                .value(":draft", s(InvoiceStatus::Draft.as_str()))
                .value(":version", n(i64::try_from(version).unwrap_or(i64::MAX))),
        };
        Ok(Some(self.put_step(item, Some(condition))?))
    }

    /// Writes a tenant's invoice (unless `Expected::Untouched`) and, for a run, marks the
    /// tenant invoiced and counts it, all in one transaction: a redelivered job finds the
    /// mark and changes nothing (`AlreadyCounted`); a tenant an earlier attempt marked failed
    /// moves from `failed` to `invoiced`.
    pub async fn write_invoice(
        &self,
        record: &InvoiceRecord,
        expected: Expected,
        run_id: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<Written, StoreError> {
        let Some(run_id) = run_id else {
            let Some(put) = self.invoice_put(record, expected)? else { return Ok(Written::Done) };
            return Ok(match self.transact(vec![put]).await? {
                Ok(()) => Written::Done,
                Err(cancelled) if cancelled.refused(0) => Written::InvoiceChanged,
                Err(cancelled) => return Err(cancelled.into()),
            });
        };
        let mark =
            RunTenant { tenant_id: record.tenant_id, outcome: RunOutcome::Invoiced, reason: None, at: now };
        let mark_item =
            Stored::new(ItemKey::billing_run_item(run_id, record.tenant_id), "billing_run_item", &mark)
                .to_item()?;
        // First as a tenant the run has not seen, then as one an earlier attempt failed.
        for earlier_failure in [false, true] {
            let mut steps = Vec::new();
            let put = self.invoice_put(record, expected)?;
            let has_invoice = put.is_some();
            steps.extend(put);
            let (mark_condition, counters) = if earlier_failure {
                (
                    Expr::new("outcome = :failed").value(":failed", s("failed")),
                    Expr::new("ADD invoiced :one, failed :minus_one")
                        .value(":one", n(1))
                        .value(":minus_one", n(-1)),
                )
            } else {
                (Expr::new(ITEM_IS_NEW), Expr::new("ADD invoiced :one").value(":one", n(1)))
            };
            steps.push(self.put_step(mark_item.clone(), Some(mark_condition))?);
            steps.push(self.update_step(ItemKey::billing_run(run_id), counters, Expr::new(ITEM_EXISTS))?);
            let (invoice_step, mark_step) = if has_invoice { (Some(0), 1) } else { (None, 0) };
            match self.transact(steps).await? {
                Ok(()) => return Ok(Written::Done),
                Err(cancelled) if invoice_step.is_some_and(|step| cancelled.refused(step)) => {
                    return Ok(Written::InvoiceChanged);
                }
                Err(cancelled) if cancelled.refused(mark_step) => continue,
                Err(cancelled) if cancelled.refused(mark_step + 1) => return Ok(Written::NoRun),
                Err(cancelled) => return Err(cancelled.into()),
            }
        }
        Ok(Written::AlreadyCounted)
    }

    /// Marks a tenant failed in a run, with the reason, once (a tenant already marked keeps
    /// its mark and the counters stay).
    pub async fn record_run_failure(
        &self,
        run_id: &str,
        tenant: TenantId,
        reason: &str,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let mark = RunTenant {
            tenant_id: tenant,
            outcome: RunOutcome::Failed,
            reason: Some(reason.to_owned()),
            at: now,
        };
        let item =
            Stored::new(ItemKey::billing_run_item(run_id, tenant), "billing_run_item", &mark).to_item()?;
        let steps = vec![
            self.put_new(item)?,
            self.update_step(
                ItemKey::billing_run(run_id),
                Expr::new("ADD failed :one").value(":one", n(1)),
                Expr::new(ITEM_EXISTS),
            )?,
        ];
        match self.transact(steps).await? {
            Ok(()) => Ok(true),
            Err(cancelled) if cancelled.refused(0) => Ok(false),
            Err(cancelled) => Err(cancelled.into()),
        }
    }

    /// Finalizes `record` (a draft at `record.version - 1`, recomputed and marked finalized
    /// by the caller) with the next invoice number: the counter and the invoice move in one
    /// transaction, so a number is used exactly when an invoice takes it. Concurrent
    /// finalizers race on the counter's value; the loser reads it again.
    pub async fn finalize_invoice(
        &self,
        record: &InvoiceRecord,
        read_version: u64,
    ) -> Result<Finalized, StoreError> {
        for _ in 0..MAX_FINALIZE_ATTEMPTS {
            let last: u64 = self
                .read_item(ItemKey::invoice_number(), crate::dynamo::Read::Consistent, None)
                .await?
                .and_then(|item| item.get("last").and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok()))
                .unwrap_or(0);
            let number = last + 1;
            let mut numbered = record.clone();
            numbered.number = Some(number);
            let counter_condition = if last == 0 {
                Expr::new("attribute_not_exists(#last) OR #last = :zero").value(":zero", n(0))
            } else {
                Expr::new("#last = :last").value(":last", n(i64::try_from(last).unwrap_or(i64::MAX)))
            }
            .name("#last", "last");
            let counter = self.update_step(
                ItemKey::invoice_number(),
                Expr::new("SET #last = :number, entity = :entity")
                    .name("#last", "last")
                    .value(":number", n(i64::try_from(number).unwrap_or(i64::MAX)))
                    .value(":entity", s("invoice_number")),
                counter_condition,
            )?;
            let Some(put) = self.invoice_put(&numbered, Expected::Draft(read_version))? else {
                return Ok(Finalized::InvoiceChanged);
            };
            // The charge is due in the same transaction: no finalized invoice without it.
            let due = self.put_step(
                crate::payments::charge_due_item(record.tenant_id, record.period, record.updated_at)?,
                None,
            )?;
            match self.transact(vec![counter, put, due]).await? {
                Ok(()) => return Ok(Finalized::Numbered(number)),
                Err(cancelled) if cancelled.refused(1) => return Ok(Finalized::InvoiceChanged),
                Err(cancelled) if cancelled.refused(0) => continue,
                Err(cancelled) => return Err(cancelled.into()),
            }
        }
        Err(StoreError::Dynamo {
            operation: "TransactWriteItems",
            message: format!("the invoice number stayed contended after {MAX_FINALIZE_ATTEMPTS} attempts"),
        })
    }

    /// Every draft of `period` (the finalizer's list).
    pub async fn draft_invoices(&self, period: Period) -> Result<Vec<InvoiceRecord>, StoreError> {
        let key = Expr::new("GSI1PK = :pk AND begins_with(GSI1SK, :period)")
            .value(":pk", s(INVOICES_GSI1PK))
            .value(":period", s(format!("{period}#")));
        let filter = InvoiceFilter { status: Some(InvoiceStatus::Draft), period: None }.expression(None);
        let items: Vec<InvoiceItem> = self.query_all(Query::index(GSI1, key).filter(filter)).await?;
        Ok(items.into_iter().map(|item| item.record).collect())
    }

    /// The platform's invoices, newest period first (`partner`: only that partner's tenants').
    async fn list_all_invoices(
        &self,
        filter: &InvoiceFilter,
        partner: Option<&PartnerId>,
        limit: i32,
        cursor: Option<&str>,
    ) -> Result<Page<InvoiceRecord>, StoreError> {
        let start = cursor
            .map(|cursor| -> Result<Item, StoreError> {
                let sort = decode_cursor(cursor)?;
                let (period, tenant) = sort.split_once('#').ok_or(StoreError::BadCursor)?;
                let period = Period::parse(period).map_err(|_| StoreError::BadCursor)?;
                let tenant = TenantId::parse(tenant).map_err(|_| StoreError::BadCursor)?;
                let mut start = ItemKey::invoice(tenant, period).into_item();
                start.insert(GSI1PK.to_owned(), s(INVOICES_GSI1PK));
                start.insert(GSI1SK.to_owned(), s(sort));
                Ok(start)
            })
            .transpose()?;
        let key = match filter.period {
            Some(period) => Expr::new("GSI1PK = :pk AND begins_with(GSI1SK, :period)")
                .value(":period", s(format!("{period}#"))),
            None => Expr::new("GSI1PK = :pk"),
        }
        .value(":pk", s(INVOICES_GSI1PK));
        let query =
            Query::index(GSI1, key).filter(filter.expression(partner)).descending().limit(limit).start(start);
        self.page(query, GSI1SK, |item: InvoiceItem| item.record).await
    }

    /// One tenant's invoices, newest first.
    async fn list_tenant_invoices(
        &self,
        tenant: TenantId,
        filter: &InvoiceFilter,
        limit: i32,
        cursor: Option<&str>,
    ) -> Result<Page<InvoiceRecord>, StoreError> {
        let start = cursor
            .map(|cursor| -> Result<Item, StoreError> {
                let sk = decode_cursor(cursor)?;
                let period = sk.strip_prefix(INVOICE_SK_PREFIX).and_then(|p| Period::parse(p).ok());
                let period = period.ok_or(StoreError::BadCursor)?;
                Ok(ItemKey::invoice(tenant, period).into_item())
            })
            .transpose()?;
        let key = match filter.period {
            Some(period) => Expr::new("PK = :pk AND SK = :sk").value(":sk", s(invoice_sk(period))),
            None => {
                Expr::new("PK = :pk AND begins_with(SK, :invoice)").value(":invoice", s(INVOICE_SK_PREFIX))
            }
        }
        .value(":pk", s(tenant_pk(tenant)));
        let query = Query::table(key).filter(filter.expression(None)).descending().limit(limit).start(start);
        self.page(query, SK, |item: InvoiceItem| item.record).await
    }
}

impl Fenced<'_> {
    /// `tenant` as the caller read it (through this fence, e.g. by the admission).
    pub(crate) fn reaches(&self, tenant: &Tenant) -> Result<(), StoreError> {
        let inside = match self.fence() {
            Fence::Global => true,
            Fence::Tenant(own) => *own == tenant.id,
            Fence::Partner(partner) => tenant.partner_id.as_ref() == Some(partner),
            Fence::Nothing => false,
        };
        if inside { Ok(()) } else { Err(StoreError::OutOfFence { key: tenant_pk(tenant.id) }) }
    }

    pub async fn get_invoice(
        &self,
        tenant: &Tenant,
        period: Period,
    ) -> Result<Option<InvoiceRecord>, StoreError> {
        self.reaches(tenant)?;
        self.store().get_invoice(tenant.id, period).await
    }

    /// Every attempt at the tenant's invoice of `period`.
    pub async fn invoice_payments(
        &self,
        tenant: &Tenant,
        period: Period,
    ) -> Result<Vec<crate::payments::Payment>, StoreError> {
        self.reaches(tenant)?;
        self.store().invoice_payments(tenant.id, period).await
    }

    pub async fn invoices_around(
        &self,
        tenant: &Tenant,
        period: Period,
    ) -> Result<(Option<InvoiceRecord>, Option<InvoiceRecord>), StoreError> {
        self.reaches(tenant)?;
        self.store().invoices_around(tenant.id, period).await
    }

    pub async fn usage_since(
        &self,
        tenant: &Tenant,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> Result<UsageWindow, StoreError> {
        self.reaches(tenant)?;
        self.store().usage_since(tenant.id, from, to).await
    }

    pub async fn list_tenant_invoices(
        &self,
        tenant: &Tenant,
        filter: &InvoiceFilter,
        limit: i32,
        cursor: Option<&str>,
    ) -> Result<Page<InvoiceRecord>, StoreError> {
        self.reaches(tenant)?;
        self.store().list_tenant_invoices(tenant.id, filter, limit, cursor).await
    }

    /// Every tenant's invoices the fence reaches: all for global scope, a partner's tenants'
    /// for a partner.
    pub async fn list_invoices(
        &self,
        filter: &InvoiceFilter,
        limit: i32,
        cursor: Option<&str>,
    ) -> Result<Page<InvoiceRecord>, StoreError> {
        match self.fence() {
            Fence::Global => self.store().list_all_invoices(filter, None, limit, cursor).await,
            Fence::Partner(partner) => {
                self.store().list_all_invoices(filter, Some(partner), limit, cursor).await
            }
            Fence::Tenant(_) | Fence::Nothing => {
                Err(StoreError::OutOfFence { key: INVOICES_GSI1PK.to_owned() })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invoice_id_names_its_tenant_and_period_and_nothing_else_is_one() {
        let tenant = TenantId::generate();
        let period = Period::parse("2027-03").expect("period");
        let id = invoice_id(tenant, period);
        assert_eq!(parse_invoice_id(&id), Some((tenant, period)));
        assert_eq!(parse_invoice_id("nope"), None);
        assert_eq!(parse_invoice_id(&format!("{tenant}_2027-13")), None);
        assert_eq!(parse_invoice_id(&tenant.to_string()), None);
    }
}
