//! Where the invoice builder's inputs come from: the ONE adapter between the billing use cases
//! and the catalogue (prices, subscriptions). Everything else reads `Inputs`.
//!
//! TEMPORARY SOURCE (until the catalogue's store API lands: `Store::price_in_force` and
//! `Store::subscriptions`): the price of a plan is the seed's (`seed_prices`) as version 1;
//! the tenant is on its current plan (the one the job or the tenant record names) for the
//! whole period; it holds no bundles. At the merge, `price_in_force` and `plan_spans` below
//! call the store instead; their signatures already are the catalogue's shapes.

use dotmac_billing::pricing::seed_prices;
use dotmac_billing::{BundleCharge, Period, PlanCharge, Price, Reading};
use dotmac_domain::{PlanId, TenantId};
use dotmac_store::{InvoiceRecord, Store, StoreError, UsageWindow};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use time::OffsetDateTime;

/// A plan's price as the catalogue versions it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceVersion {
    pub plan_id: PlanId,
    pub version: u32,
    pub effective_from: Period,
    pub price: Price,
}

/// The part of a period a tenant was on a plan (the catalogue's `PlanSpan`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanSpan {
    pub plan_id: PlanId,
    pub from: OffsetDateTime,
    pub to: Option<OffsetDateTime>,
}

/// Prices in force, cached per worker instance and period: a run prices thousands of tenants
/// on a handful of plans, so each (plan, period) is read once.
#[derive(Debug, Clone, Default)]
pub struct PriceCache(Arc<Mutex<HashMap<(PlanId, Period), PriceVersion>>>);

impl PriceCache {
    fn cached(&self, plan: &PlanId, period: Period) -> Option<PriceVersion> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).get(&(plan.clone(), period)).cloned()
    }

    fn keep(&self, price: &PriceVersion, period: Period) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((price.plan_id.clone(), period), price.clone());
    }
}

/// Why inputs could not be gathered.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("plan {0} has no price in force for {1}")]
    NoPrice(PlanId, Period),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Everything one invoice of `period` is computed from.
#[derive(Debug, Clone)]
pub struct Inputs {
    pub period: Period,
    pub plans: Vec<PlanCharge>,
    pub bundles: Vec<BundleCharge>,
    /// Reports from the one in force when the previous period began through this period's
    /// end: this period's billable count, and the previous period's re-rating.
    pub readings: Vec<Reading>,
    pub previous_invoice: Option<InvoiceRecord>,
    pub current_invoice: Option<InvoiceRecord>,
}

/// The catalogue's price of `plan` in force for `period` (TEMPORARY: the seed's, version 1).
async fn price_in_force(
    _store: &Store,
    plan: &PlanId,
    period: Period,
) -> Result<Option<PriceVersion>, StoreError> {
    Ok(seed_prices().into_iter().find(|(id, _)| *id == plan.as_str()).map(|(_, price)| PriceVersion {
        plan_id: plan.clone(),
        version: 1,
        effective_from: period,
        price,
    }))
}

/// The tenant's plan spans and bundles (TEMPORARY: its current plan all period, no bundles).
async fn subscriptions(
    _store: &Store,
    _tenant: TenantId,
    current_plan: &PlanId,
    period: Period,
) -> Result<(Vec<PlanSpan>, Vec<BundleCharge>), StoreError> {
    Ok((vec![PlanSpan { plan_id: current_plan.clone(), from: period.start(), to: None }], Vec::new()))
}

pub(crate) fn readings_of(window: &UsageWindow) -> Vec<Reading> {
    window
        .carried_in
        .iter()
        .chain(&window.reports)
        .map(|r| Reading {
            report_id: r.report_id.clone(),
            observed_at: r.observed_at,
            customer_count: r.customer_count,
        })
        .collect()
}

/// Gathers `period`'s inputs for `tenant`: its usage (one query spanning the previous and this
/// period), its invoices of both periods (one query), its subscriptions and the prices in force
/// (cached). `window` is the usage already read through a caller's fence, when there is one.
pub async fn gather(
    store: &Store,
    prices: &PriceCache,
    tenant: TenantId,
    current_plan: &PlanId,
    period: Period,
    usage: Option<UsageWindow>,
    invoices: Option<(Option<InvoiceRecord>, Option<InvoiceRecord>)>,
) -> Result<Inputs, InputError> {
    let usage = match usage {
        Some(usage) => usage,
        None => store.usage_since(tenant, period.previous().start(), period.end()).await?,
    };
    let (previous_invoice, current_invoice) = match invoices {
        Some(invoices) => invoices,
        None => store.invoices_around(tenant, period).await?,
    };
    let (spans, bundles) = subscriptions(store, tenant, current_plan, period).await?;
    let mut plans = Vec::with_capacity(spans.len());
    for span in spans {
        let price = match prices.cached(&span.plan_id, period) {
            Some(price) => price,
            None => {
                let price = price_in_force(store, &span.plan_id, period)
                    .await?
                    .ok_or_else(|| InputError::NoPrice(span.plan_id.clone(), period))?;
                prices.keep(&price, period);
                price
            }
        };
        plans.push(PlanCharge {
            plan_id: span.plan_id.to_string(),
            price_version: price.version,
            price: price.price,
            from: span.from,
            to: span.to,
        });
    }
    Ok(Inputs { period, plans, bundles, readings: readings_of(&usage), previous_invoice, current_invoice })
}
