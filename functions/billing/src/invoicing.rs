//! The billing use cases, over their dependencies and the caller; no HTTP here (the routes, the
//! worker and the schedules call the same functions).
//!
//! - `open_run`: a platform admin (or the schedule) opens a run for a period: the run and its
//!   `billing.cycle_started` event in one transaction (the outbox), then one `FanOut` job.
//! - `fan_out`: a page of tenants at a time, one `InvoiceTenant` job each, the run's cursor
//!   moved by a conditional write after each page: a crash resumes from the last page (whose
//!   jobs may go out twice; duplicates change nothing), racing fan-outs count each page once.
//! - `invoice_tenant`: the tenant's invoice of the period, written once per tenant and period
//!   (draft recomputed in place, finalized never touched), with the run's mark and counter.
//! - `finalize`: recompute a draft one last time and number it (gapless, see the store).

use dotmac_billing::{Adjustment, InvoiceInputs, Period, Usage, build_invoice, re_rating};
use dotmac_domain::{
    Action, Caller, Denied, PartnerId, PlanId, Resource, Target, Tenant, TenantId, TenantStatus, authorize,
};
use dotmac_queue::{BillingJob, QueueError, SqsQueue};
use dotmac_store::{
    BillingRun, Expected, Finalized, InvoiceRecord, InvoiceStatus, Opened, OutboxEvent, PaymentStatus, Store,
    StoreError, Written, invoice_id,
};
use serde_json::json;
use time::{Duration, OffsetDateTime};

use crate::inputs::{InputError, Inputs, PriceCache, gather};

/// Tenants read per fan-out page.
const FAN_OUT_PAGE: i32 = 100;
/// Attempts at a write that lost a race (another run, a finalization) before giving up.
const WRITE_ATTEMPTS: usize = 5;

/// What the billing use cases need, built once per instance.
#[derive(Debug, Clone)]
pub struct Billing {
    pub store: Store,
    pub queue: SqsQueue,
    /// How long after its period ends a draft waits before the finalizer numbers it.
    pub grace: Duration,
    pub prices: PriceCache,
}

#[derive(Debug, thiserror::Error)]
pub enum BillingError {
    #[error(transparent)]
    Denied(#[from] Denied),
    #[error("{0}")]
    Invalid(&'static str, String),
    #[error("no billing run {0}")]
    NoRun(String),
    #[error("no invoice {0}")]
    NoInvoice(String),
    /// Nothing a retry can change (a plan without a price, mixed currencies): the tenant is
    /// recorded as failed in its run with this reason.
    #[error("{0}")]
    Unbillable(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

impl From<InputError> for BillingError {
    fn from(error: InputError) -> Self {
        match error {
            InputError::Store(error) => BillingError::Store(error),
            unbillable @ InputError::NoPrice(..) => BillingError::Unbillable(unbillable.to_string()),
        }
    }
}

/// Who may open runs, read them and finalize invoices: platform staff only.
fn platform_staff(caller: &Caller, action: Action) -> Result<(), BillingError> {
    if !caller.has_global_scope() {
        return Err(Denied { resource: Resource::Invoice, action }.into());
    }
    authorize(caller, Resource::Invoice, action, Target::default())?;
    Ok(())
}

/// The period a run bills by default: the one just ended.
pub fn default_period(now: OffsetDateTime) -> Period {
    Period::containing(now).previous()
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// The seed's `billing.cycle_started` event (`id`, `start`, `end`, `customer_count`), in the
/// outbox beside the run. `customer_count` is not known when a run opens (the run counts
/// them as it goes): it is `null`; `GET /v1/billing/runs/{id}` has the figures.
fn cycle_started(run: &BillingRun) -> OutboxEvent {
    let detail = json!({
        "id": run.id,
        "period": run.period.to_string(),
        "start": rfc3339(run.period.start()),
        "end": rfc3339(run.period.end()),
        "customer_count": null,
    });
    OutboxEvent {
        event_id: uuid::Uuid::now_v7().to_string(),
        detail_type: "billing.cycle_started".into(),
        source: "dotmac.platform".into(),
        detail: detail.to_string(),
        created_at: run.created_at,
        published: false,
    }
}

impl Billing {
    /// Opens a run (`id` given by the schedule, derived from its period; new otherwise) and
    /// queues its fan-out. A run that exists already is returned as it is, its fan-out queued
    /// again if it never finished (a crash after opening).
    async fn open(&self, run: BillingRun) -> Result<BillingRun, BillingError> {
        let event = cycle_started(&run);
        let run = match self.store.open_billing_run(&run, &event).await? {
            Opened::Created => {
                tracing::info!(run_id = run.id, period = %run.period, "billing run opened");
                run
            }
            Opened::Existed(existing) => *existing,
        };
        if !run.fanned_out {
            self.queue.enqueue(BillingJob::FanOut { run_id: run.id.clone() }).await?;
        }
        Ok(run)
    }

    /// `POST /v1/billing/runs`: a platform admin opens a run of `period` (default: the one just
    /// ended; the current one is allowed, its invoices stay drafts), for `tenant_ids` or every
    /// active tenant.
    pub async fn open_run(
        &self,
        caller: &Caller,
        period: Option<Period>,
        tenant_ids: Vec<TenantId>,
        now: OffsetDateTime,
    ) -> Result<BillingRun, BillingError> {
        platform_staff(caller, Action::Create)?;
        let period = period.unwrap_or_else(|| default_period(now));
        if period > Period::containing(now) {
            return Err(BillingError::Invalid("period", "a run bills an ended or the current period".into()));
        }
        if tenant_ids.len() > 100 {
            return Err(BillingError::Invalid("tenant_ids", "names at most 100 tenants".into()));
        }
        let run = BillingRun {
            id: uuid::Uuid::now_v7().to_string(),
            period,
            tenant_ids,
            requested_by: caller.user_id.clone(),
            created_at: now,
            cursor: None,
            fanned_out: false,
            tenants_total: 0,
            invoiced: 0,
            failed: 0,
        };
        self.open(run).await
    }

    /// The monthly schedule: the run of the period just ended, once (its id is the period's).
    pub async fn scheduled_run(&self, now: OffsetDateTime) -> Result<BillingRun, BillingError> {
        let period = default_period(now);
        let run = BillingRun {
            id: format!("scheduled-{period}"),
            period,
            tenant_ids: Vec::new(),
            requested_by: "schedule".into(),
            created_at: now,
            cursor: None,
            fanned_out: false,
            tenants_total: 0,
            invoiced: 0,
            failed: 0,
        };
        self.open(run).await
    }

    pub async fn run(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<(BillingRun, Vec<dotmac_store::RunTenant>), BillingError> {
        platform_staff(caller, Action::Read)?;
        let run = self.store.get_billing_run(id).await?.ok_or_else(|| BillingError::NoRun(id.to_owned()))?;
        let failures = if run.failed > 0 { self.store.billing_run_failures(id).await? } else { Vec::new() };
        Ok((run, failures))
    }

    /// The `FanOut` job: queues the run's tenants a page at a time from its recorded cursor.
    pub async fn fan_out(&self, run_id: &str) -> Result<(), BillingError> {
        let mut lost = 0;
        loop {
            let Some(run) = self.store.get_billing_run(run_id).await? else {
                return Err(BillingError::NoRun(run_id.to_owned()));
            };
            if run.fanned_out {
                return Ok(());
            }
            let page = self.store.list_tenants(FAN_OUT_PAGE, run.cursor.as_deref()).await?;
            let period = run.period.to_string();
            let jobs: Vec<BillingJob> = page
                .items
                .iter()
                .filter(|t| billable(t) && (run.tenant_ids.is_empty() || run.tenant_ids.contains(&t.id)))
                .map(|t| BillingJob::InvoiceTenant {
                    run_id: run.id.clone(),
                    tenant_id: t.id,
                    period: period.clone(),
                    plan: t.plan.clone(),
                    partner_id: t.partner_id.clone(),
                })
                .collect();
            let queued = self.queue.enqueue_all(jobs).await?;
            // Counted only by the fan-out that moves the cursor; one that lost the race reads
            // the run again and carries on from where the winner left it.
            let moved = self
                .store
                .advance_fan_out(run_id, run.cursor.as_deref(), page.next_cursor.as_deref(), queued as u64)
                .await?;
            if moved && page.next_cursor.is_none() {
                tracing::info!(run_id, "billing run fanned out");
                return Ok(());
            }
            // Another fan-out moving the cursor each time is progress; never moving it is not.
            lost = if moved { 0 } else { lost + 1 };
            if lost >= WRITE_ATTEMPTS {
                return Err(StoreError::VersionConflict { expected: 0 }.into());
            }
        }
    }

    /// The `InvoiceTenant` job: the tenant's invoice of `period`, for `run_id`.
    pub async fn invoice_tenant(
        &self,
        run_id: Option<&str>,
        tenant: TenantId,
        partner: Option<PartnerId>,
        plan: &PlanId,
        period: Period,
        now: OffsetDateTime,
    ) -> Result<InvoiceRecord, BillingError> {
        for _ in 0..WRITE_ATTEMPTS {
            let inputs = gather(&self.store, &self.prices, tenant, plan, period, None, None).await?;
            let current = inputs.current_invoice.clone();
            let (record, expected) = match compute(&inputs, tenant, partner.clone(), run_id, now)? {
                Computed { record, .. }
                    if current.as_ref().is_some_and(|c| c.status == InvoiceStatus::Finalized) =>
                {
                    // A finalized invoice is never edited: the run only counts it.
                    let finalized = current.clone().unwrap_or(record);
                    (finalized, Expected::Untouched)
                }
                Computed { mut record, .. } => match &current {
                    Some(draft)
                        if draft.content == record.content && draft.plan_charges == record.plan_charges =>
                    {
                        (draft.clone(), Expected::Untouched)
                    }
                    Some(draft) => {
                        record.created_at = draft.created_at;
                        record.version = draft.version + 1;
                        (record, Expected::Draft(draft.version))
                    }
                    None => (record, Expected::New),
                },
            };
            match self.store.write_invoice(&record, expected, run_id, now).await? {
                Written::Done | Written::AlreadyCounted => return Ok(record),
                Written::InvoiceChanged => continue,
                Written::NoRun => return Err(BillingError::NoRun(run_id.unwrap_or_default().to_owned())),
            }
        }
        Err(StoreError::VersionConflict { expected: 0 }.into())
    }

    /// Records `tenant` failed in `run_id` (the job's last attempt, or an unbillable tenant).
    pub async fn record_failure(
        &self,
        run_id: &str,
        tenant: TenantId,
        reason: &str,
        now: OffsetDateTime,
    ) -> Result<(), BillingError> {
        self.store.record_run_failure(run_id, tenant, reason, now).await?;
        Ok(())
    }

    /// Finalizes the tenant's invoice of `period`: recomputed a last time (late reports still
    /// count while it is a draft), then numbered. Finalizing a finalized invoice answers it.
    pub async fn finalize(
        &self,
        tenant: TenantId,
        period: Period,
        now: OffsetDateTime,
    ) -> Result<InvoiceRecord, BillingError> {
        let id = invoice_id(tenant, period);
        for _ in 0..WRITE_ATTEMPTS {
            let (previous, current) = self.store.invoices_around(tenant, period).await?;
            let Some(current) = current else { return Err(BillingError::NoInvoice(id)) };
            if current.status == InvoiceStatus::Finalized {
                return Ok(current);
            }
            let plan = current
                .plan_charges
                .last()
                .and_then(|p| PlanId::parse(&p.plan_id).ok())
                .ok_or_else(|| BillingError::Unbillable(format!("invoice {id} records no plan")))?;
            let inputs = gather(
                &self.store,
                &self.prices,
                tenant,
                &plan,
                period,
                None,
                Some((previous, Some(current.clone()))),
            )
            .await?;
            let Computed { mut record, .. } =
                compute(&inputs, tenant, current.partner_id.clone(), current.run_id.as_deref(), now)?;
            record.status = InvoiceStatus::Finalized;
            record.finalized_at = Some(now);
            record.payment_status = Some(PaymentStatus::Open);
            record.created_at = current.created_at;
            record.version = current.version + 1;
            match self.store.finalize_invoice(&record, current.version).await? {
                Finalized::Numbered(number) => {
                    tracing::info!(invoice = id, number, "invoice finalized");
                    record.number = Some(number);
                    // The charge-due item went in with the finalization; this only saves the
                    // sweep's wait. A failed enqueue is left to the sweep (`finalize_due`).
                    let charge = BillingJob::ChargeInvoice {
                        tenant_id: tenant,
                        period: period.to_string(),
                        attempt: 1,
                    };
                    if let Err(error) = self.queue.enqueue(charge).await {
                        tracing::warn!(invoice = id, %error, "the charge is left to the next sweep");
                    }
                    return Ok(record);
                }
                Finalized::InvoiceChanged => continue,
            }
        }
        Err(StoreError::VersionConflict { expected: 0 }.into())
    }

    /// `POST /v1/invoices/{id}/finalize`: a platform admin finalizes a draft early.
    pub async fn finalize_early(
        &self,
        caller: &Caller,
        tenant: TenantId,
        period: Period,
        now: OffsetDateTime,
    ) -> Result<InvoiceRecord, BillingError> {
        platform_staff(caller, Action::Update)?;
        self.finalize(tenant, period, now).await
    }

    /// The finalizer's schedule: every draft whose period ended more than the grace period
    /// ago (of the last three periods) is finalized. Returns how many were.
    pub async fn finalize_due(&self, now: OffsetDateTime) -> Result<usize, BillingError> {
        let mut period = Period::containing(now).previous();
        let mut finalized = 0;
        for _ in 0..3 {
            if period.end() + self.grace <= now {
                for draft in self.store.draft_invoices(period).await? {
                    self.finalize(draft.tenant_id, draft.period, now).await?;
                    finalized += 1;
                }
            }
            period = period.previous();
        }
        self.queue_due_charges().await?;
        Ok(finalized)
    }

    /// Queues a `ChargeInvoice` for every charge still due (`Store::charges_due`): the safety
    /// net behind the enqueue that follows a finalization. A charge already under way is
    /// queued again harmlessly (the job is idempotent per invoice and attempt).
    pub async fn queue_due_charges(&self) -> Result<usize, BillingError> {
        let jobs: Vec<BillingJob> = self
            .store
            .charges_due()
            .await?
            .into_iter()
            .map(|due| BillingJob::ChargeInvoice {
                tenant_id: due.tenant_id,
                period: due.period.to_string(),
                attempt: due.attempt,
            })
            .collect();
        let count = jobs.len();
        if count > 0 {
            self.queue.enqueue_all(jobs).await?;
        }
        Ok(count)
    }

    /// What the current period would cost now: computed, not stored. `tenant` was read
    /// through the caller's fence, and so are its usage and invoices.
    pub async fn upcoming(
        &self,
        store: dotmac_store::Fenced<'_>,
        tenant: &Tenant,
        now: OffsetDateTime,
    ) -> Result<InvoiceRecord, BillingError> {
        let period = Period::containing(now);
        let usage = store.usage_since(tenant, period.previous().start(), period.end()).await?;
        let invoices = store.invoices_around(tenant, period).await?;
        let inputs =
            gather(&self.store, &self.prices, tenant.id, &tenant.plan, period, Some(usage), Some(invoices))
                .await?;
        Ok(compute(&inputs, tenant.id, tenant.partner_id.clone(), None, now)?.record)
    }
}

/// Which tenants a run bills: the active ones, and the suspended (they served customers).
fn billable(tenant: &Tenant) -> bool {
    matches!(tenant.status, TenantStatus::Active | TenantStatus::Suspended)
}

struct Computed {
    record: InvoiceRecord,
}

/// The invoice `inputs` make, as a new draft (version 1): with the re-rating of the previous
/// period when that one is finalized and its usage changed since.
fn compute(
    inputs: &Inputs,
    tenant: TenantId,
    partner: Option<PartnerId>,
    run_id: Option<&str>,
    now: OffsetDateTime,
) -> Result<Computed, BillingError> {
    let unbillable = |e: dotmac_billing::InvoiceError| BillingError::Unbillable(e.to_string());
    let mut adjustments: Vec<Adjustment> = Vec::new();
    if let Some(previous) = inputs.previous_invoice.as_ref().filter(|p| p.status == InvoiceStatus::Finalized)
    {
        let billed = previous.content.plan_total().map_err(|e| BillingError::Unbillable(e.to_string()))?;
        let corrected = Usage::Readings(inputs.readings.clone());
        if let Some(adjustment) = re_rating(
            previous.period,
            &previous.plan_charges,
            previous.content.billable_customers,
            billed,
            &corrected,
        )
        .map_err(unbillable)?
        {
            adjustments.push(adjustment);
        }
    }
    let content = build_invoice(&InvoiceInputs {
        period: inputs.period,
        plans: inputs.plans.clone(),
        usage: Usage::Readings(inputs.readings.clone()),
        bundles: inputs.bundles.clone(),
        adjustments,
    })
    .map_err(unbillable)?;
    Ok(Computed {
        record: InvoiceRecord {
            id: invoice_id(tenant, inputs.period),
            tenant_id: tenant,
            partner_id: partner,
            period: inputs.period,
            status: InvoiceStatus::Draft,
            number: None,
            content,
            plan_charges: inputs.plans.clone(),
            run_id: run_id.map(str::to_owned),
            created_at: now,
            updated_at: now,
            finalized_at: None,
            payment_status: None,
            paid_at: None,
            refunded_minor: 0,
            version: 1,
        },
    })
}
