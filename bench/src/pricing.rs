//! Section 3: pricing and invoice building in memory, per tenant: the worker's pure step
//! (aggregation of the period's readings, tiers, minimum, prorated plan spans and bundles,
//! adjustments) for 10,000 tenants shaped like the seed's, on one core.

use crate::report::{Better, Row};
use dotmac_billing::pricing::seed_prices;
use dotmac_billing::{
    Adjustment, BundleCharge, InvoiceInputs, Money, Period, PlanCharge, Reading, Usage, build_invoice,
    seed_bundles,
};
use std::hint::black_box;
use std::time::Instant;

const TENANTS: usize = 10_000;
/// Readings per tenant and period (a container reporting about twice a day).
const READINGS: usize = 60;
const ROUNDS: usize = 5;

/// `TENANTS` tenants' inputs: the three seed plans in turn, 0–5,000 customers, a third with a
/// plan change mid-period, every other with a bundle added mid-period, a tenth with an
/// adjustment.
fn tenants(period: Period) -> Vec<InvoiceInputs> {
    let prices = seed_prices();
    let bundles = seed_bundles();
    let day = time::Duration::days(1);
    (0..TENANTS)
        .map(|n| {
            let (plan, price) = &prices[n % prices.len()];
            let readings = (0..READINGS)
                .map(|r| Reading {
                    report_id: format!("t{n}-r{r}"),
                    observed_at: period.start() + time::Duration::hours(12 * r as i64),
                    customer_count: ((n * 37 + r * 11) % 5_001) as u64,
                })
                .collect();
            let charge = |plan: &str, price: &dotmac_billing::Price, from, to| PlanCharge {
                plan_id: plan.to_owned(),
                price_version: 1,
                price: price.clone(),
                from,
                to,
            };
            let plans = if n % 3 == 0 {
                let (next_plan, next_price) = &prices[(n + 1) % prices.len()];
                let change = period.start() + day * 12;
                vec![
                    charge(plan, price, period.start(), Some(change)),
                    charge(next_plan, next_price, change, None),
                ]
            } else {
                vec![charge(plan, price, period.start(), None)]
            };
            let bundles = if n % 2 == 0 {
                let bundle = &bundles[n % bundles.len()];
                vec![BundleCharge {
                    code: bundle.code.clone(),
                    name: bundle.name.clone(),
                    monthly: bundle.monthly,
                    from: period.start() + day * 9,
                    to: None,
                }]
            } else {
                Vec::new()
            };
            let adjustments = if n % 10 == 0 {
                vec![Adjustment {
                    description: "late reports".into(),
                    amount: Money::new(-1_250, price.currency),
                    source_period: period.previous(),
                }]
            } else {
                Vec::new()
            };
            InvoiceInputs { period, plans, usage: Usage::Readings(readings), bundles, adjustments }
        })
        .collect()
}

pub fn rows(section: &str) -> Vec<Row> {
    let period = match Period::parse("2026-11") {
        Ok(period) => period,
        Err(error) => return vec![missing(section, &format!("failed: {error}"))],
    };
    let inputs = tenants(period);
    let mut best = f64::INFINITY;
    for _ in 0..ROUNDS {
        let began = Instant::now();
        for tenant in &inputs {
            if let Err(error) = black_box(build_invoice(black_box(tenant))) {
                return vec![missing(section, &format!("failed: {error}"))];
            }
        }
        best = best.min(began.elapsed().as_secs_f64() * 1e6 / TENANTS as f64);
    }
    vec![Row::measured(
        "pricing.invoice_per_tenant_us",
        section,
        format!(
            "price + build the invoice of {TENANTS} tenants ({READINGS} readings, spans, bundles): per tenant, best of {ROUNDS}"
        ),
        best,
        "µs",
        Better::Lower,
        "no published anchor; the run's DynamoDB round trips are ~1,000× this",
    )]
}

fn missing(section: &str, note: &str) -> Row {
    Row::missing(
        "pricing.invoice_per_tenant_us",
        section,
        "price + build the invoice of 10,000 tenants: per tenant",
        "µs",
        Better::Lower,
        "no published anchor",
        note,
    )
}
