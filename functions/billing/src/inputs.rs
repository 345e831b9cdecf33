//! Where the invoice builder's inputs come from: the ONE adapter between the billing use cases
//! and the catalogue (versioned prices, a tenant's plan and bundle spans). Everything else
//! reads `Inputs`.
//!
//! A tenant onboarded before plan spans were recorded has none: it is billed on the plan its
//! record (or the job) names, for the whole period.

use dotmac_billing::{BundleCharge, Period, PlanCharge, Reading};
use dotmac_domain::{PlanId, TenantId};
use dotmac_store::{InvoiceRecord, PlanSpan, PriceVersion, Store, StoreError, Subscriptions, UsageWindow};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use time::OffsetDateTime;

/// Prices in force, cached per worker instance and period: a run prices thousands of tenants
/// on a handful of plans, so each (plan, period) is read once. A price change only ever takes
/// effect from a later period, so a cached (plan, period) entry cannot go stale.
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

/// `[from, to)` clamped to `period`, or `None` when the span misses the period.
fn within(
    period: Period,
    from: OffsetDateTime,
    to: Option<OffsetDateTime>,
) -> Option<(OffsetDateTime, Option<OffsetDateTime>)> {
    let from = from.max(period.start());
    let to = to.filter(|to| *to < period.end());
    match to {
        Some(to) if to <= from => None,
        _ if from >= period.end() => None,
        _ => Some((from, to)),
    }
}

/// The plan spans and bundle charges of `period`, from the tenant's subscriptions.
fn spans_in(
    subscriptions: Subscriptions,
    current_plan: &PlanId,
    period: Period,
) -> (Vec<PlanSpan>, Vec<BundleCharge>) {
    let mut plans: Vec<PlanSpan> = subscriptions
        .plans
        .into_iter()
        .filter_map(|span| {
            within(period, span.from, span.to).map(|(from, to)| PlanSpan { plan_id: span.plan_id, from, to })
        })
        .collect();
    if plans.is_empty() {
        plans.push(PlanSpan { plan_id: current_plan.clone(), from: period.start(), to: None });
    }
    let bundles = subscriptions
        .bundles
        .into_iter()
        .filter_map(|span| {
            within(period, span.from, span.to).map(|(from, to)| BundleCharge {
                code: span.bundle,
                name: span.name,
                monthly: span.monthly,
                from,
                to,
            })
        })
        .collect();
    (plans, bundles)
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
/// period), its invoices of both periods with its subscriptions (one query), and the prices in
/// force (cached). `window` is the usage already read through a caller's fence, when there is one.
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
    // The worker's path reads the invoices and the spans together (one query); a caller that
    // read the invoices through its fence already reads the spans alone.
    let (previous_invoice, current_invoice, subscriptions) = match invoices {
        Some((previous, current)) => (previous, current, store.subscriptions(tenant).await?),
        None => {
            let context = store.invoice_context(tenant, period).await?;
            (context.previous, context.current, context.subscriptions)
        }
    };
    let (spans, bundles) = spans_in(subscriptions, current_plan, period);
    let mut plans = Vec::with_capacity(spans.len());
    for span in spans {
        let price = match prices.cached(&span.plan_id, period) {
            Some(price) => price,
            None => {
                let price = store
                    .price_in_force(&span.plan_id, period)
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

#[cfg(test)]
mod tests {
    use super::*;
    use dotmac_billing::{Currency, Money};
    use dotmac_store::BundleSpan;

    fn at(text: &str) -> OffsetDateTime {
        OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).expect("time")
    }

    fn plan(id: &str) -> PlanId {
        PlanId::parse(id).expect("plan id")
    }

    #[test]
    fn spans_are_clamped_to_the_period_and_those_missing_it_dropped() {
        let period = Period::parse("2026-11").expect("period");
        let subscriptions = Subscriptions {
            plans: vec![
                PlanSpan {
                    plan_id: plan("usage"),
                    from: at("2026-01-10T00:00:00Z"),
                    to: Some(at("2026-11-12T00:00:00Z")),
                },
                PlanSpan { plan_id: plan("scaled"), from: at("2026-11-12T00:00:00Z"), to: None },
            ],
            bundles: vec![
                BundleSpan {
                    bundle: "crm".into(),
                    name: "CRM".into(),
                    monthly: Money::new(4_900, Currency::USD),
                    from: at("2026-09-01T00:00:00Z"),
                    to: Some(at("2026-10-15T00:00:00Z")),
                },
                BundleSpan {
                    bundle: "ai".into(),
                    name: "AI".into(),
                    monthly: Money::new(9_900, Currency::USD),
                    from: at("2026-11-20T00:00:00Z"),
                    to: Some(at("2026-12-05T00:00:00Z")),
                },
            ],
        };
        let (plans, bundles) = spans_in(subscriptions, &plan("enterprise"), period);
        assert_eq!(
            plans,
            vec![
                PlanSpan {
                    plan_id: plan("usage"),
                    from: period.start(),
                    to: Some(at("2026-11-12T00:00:00Z"))
                },
                PlanSpan { plan_id: plan("scaled"), from: at("2026-11-12T00:00:00Z"), to: None },
            ]
        );
        let held: Vec<_> = bundles.iter().map(|b| (b.code.as_str(), b.from, b.to)).collect();
        assert_eq!(
            held,
            vec![("ai", at("2026-11-20T00:00:00Z"), None)],
            "the October CRM span misses November"
        );
    }

    #[test]
    fn a_tenant_without_plan_spans_is_billed_on_its_current_plan_all_period() {
        let period = Period::parse("2026-11").expect("period");
        let (plans, bundles) = spans_in(Subscriptions::default(), &plan("usage"), period);
        assert_eq!(plans, vec![PlanSpan { plan_id: plan("usage"), from: period.start(), to: None }]);
        assert!(bundles.is_empty());
    }
}
