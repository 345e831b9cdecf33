//! Metering, as a use case: a tenant's container (or a platform admin on its behalf) reports
//! how many customers it served at a moment. No HTTP here: a job or a test calls the same.
//!
//! Each report is idempotent by its `report_id`: the same id with the same values is accepted
//! again and counted once; the same id with other values is a conflict and changes nothing.
//! A batch answers per report, never all-or-nothing.
//!
//! A period's figure (`period_usage`) follows the aggregation of the price in force for the
//! tenant's plan in that period, as the billing worker prices it.

use dotmac_billing::{Aggregation, Period, Reading, billable_count};
use dotmac_domain::{Action, Caller, Denied, Resource, Role, Target, Tenant, TenantId, authorize};
use dotmac_store::{Recorded, Store, StoreError, UsageReport, UsageWindow};
use futures::StreamExt;
use time::{Duration, OffsetDateTime};

/// At most this many reports in one request.
pub const MAX_BATCH: usize = 100;
/// The largest customer count a report may state.
pub const MAX_CUSTOMERS: u64 = 100_000_000;
/// Reports recorded at once from one batch.
const CONCURRENT_WRITES: usize = 16;

/// How far from the server's clock `observed_at` may be.
#[derive(Debug, Clone, Copy)]
pub struct ReportingWindow {
    pub max_future: Duration,
    pub max_age: Duration,
}

/// A report as sent, before it is checked.
#[derive(Debug, Clone)]
pub struct SentReport {
    pub report_id: String,
    pub customer_count: u64,
    pub observed_at: String,
}

/// What became of one report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Accepted,
    Duplicate,
    /// Another report holds this id; the recorded one is returned.
    Conflict(Box<UsageReport>),
    Invalid {
        field: &'static str,
        reason: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum MeteringError {
    #[error(transparent)]
    Denied(#[from] Denied),
    #[error("usage is reported by the tenant's own container, or by platform staff")]
    NotAReporter,
    #[error("{0}")]
    NoTenant(&'static str),
    #[error("a batch holds 1 to {MAX_BATCH} reports")]
    BatchSize,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The tenant a caller reports for: a container's own (naming another is refused), or the one
/// platform staff name.
pub fn reporting_tenant(caller: &Caller, named: Option<TenantId>) -> Result<TenantId, MeteringError> {
    let is_container = caller.roles.iter().any(|role| role.builtin() == Some(Role::TenantMachine));
    if !is_container && !caller.has_global_scope() {
        return Err(MeteringError::NotAReporter);
    }
    let tenant = match (named, caller.tenant_id) {
        (Some(named), _) => named,
        (None, Some(own)) if is_container => own,
        (None, _) => return Err(MeteringError::NoTenant("name the tenant_id the usage is for")),
    };
    authorize(caller, Resource::Usage, Action::Create, Target::tenant(tenant))?;
    Ok(tenant)
}

fn is_report_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// Checks one report against the rules and the window; the report to record, or why not.
pub fn check(
    sent: &SentReport,
    tenant: TenantId,
    window: ReportingWindow,
    now: OffsetDateTime,
) -> Result<UsageReport, Outcome> {
    let invalid = |field, reason: &str| Outcome::Invalid { field, reason: reason.to_owned() };
    if !is_report_id(&sent.report_id) {
        return Err(invalid("report_id", "must be 1 to 64 of A-Z, a-z, 0-9, '.', '_', ':' and '-'"));
    }
    if sent.customer_count > MAX_CUSTOMERS {
        return Err(invalid("customer_count", "must be at most 100,000,000"));
    }
    let observed_at =
        OffsetDateTime::parse(&sent.observed_at, &time::format_description::well_known::Rfc3339)
            .map_err(|_| invalid("observed_at", "must be an RFC 3339 timestamp with its offset"))?;
    if observed_at > now + window.max_future {
        let reason =
            format!("is more than {} s ahead of the platform's clock", window.max_future.whole_seconds());
        return Err(Outcome::Invalid { field: "observed_at", reason });
    }
    if observed_at < now - window.max_age {
        let reason = format!("is more than {} days old", window.max_age.whole_days());
        return Err(Outcome::Invalid { field: "observed_at", reason });
    }
    Ok(UsageReport {
        report_id: sent.report_id.clone(),
        tenant_id: tenant,
        customer_count: sent.customer_count,
        observed_at,
        received_at: now,
    })
}

/// Records `reports` for `tenant`, each on its own: the answer holds one outcome per report,
/// in order. A store failure fails the request (the client retries; recorded reports answer
/// `Duplicate` then), so nothing is ever counted twice or silently dropped.
pub async fn report_usage(
    store: &Store,
    caller: &Caller,
    tenant: TenantId,
    reports: &[SentReport],
    window: ReportingWindow,
    now: OffsetDateTime,
) -> Result<Vec<Outcome>, MeteringError> {
    if reports.is_empty() || reports.len() > MAX_BATCH {
        return Err(MeteringError::BatchSize);
    }
    let fence = caller.fence();
    let recorded: Vec<Result<Outcome, StoreError>> = futures::stream::iter(reports.iter().cloned())
        .map(|sent| {
            // Owned per report: the futures run concurrently and borrow nothing.
            let (store, fence) = (store.clone(), fence.clone());
            async move {
                let report = match check(&sent, tenant, window, now) {
                    Ok(report) => report,
                    Err(outcome) => return Ok(outcome),
                };
                Ok(match store.fenced(fence).record_usage(&report).await? {
                    Recorded::Accepted => Outcome::Accepted,
                    Recorded::Duplicate => Outcome::Duplicate,
                    Recorded::Conflict(existing) => Outcome::Conflict(existing),
                })
            }
        })
        .buffered(CONCURRENT_WRITES)
        .collect()
        .await;
    let outcomes = recorded.into_iter().collect::<Result<Vec<_>, _>>()?;
    let accepted = outcomes.iter().filter(|o| **o == Outcome::Accepted).count();
    tracing::info!(%tenant, reports = outcomes.len(), accepted, "usage reported");
    Ok(outcomes)
}

/// A period's usage so far, as `GET /v1/tenants/{id}/usage` shows it.
#[derive(Debug, Clone)]
pub struct PeriodFigure {
    pub period: Period,
    /// The aggregation of the price in force (`max` when the plan has no price then).
    pub aggregation: Aggregation,
    /// The price version that aggregation comes from, if the plan has one in force.
    pub price_version: Option<u32>,
    pub billable_customers: u64,
    pub usage: UsageWindow,
}

/// `period`'s reports for `tenant` (read through the caller's fence: the tenant was read
/// through it too) and its billable figure under the aggregation of the price in force for
/// the tenant's plan in that period, the price the billing run uses. The two reads are
/// independent, so they go out together.
pub async fn period_usage(
    store: &Store,
    caller: &Caller,
    tenant: &Tenant,
    period: Period,
) -> Result<PeriodFigure, MeteringError> {
    let fenced = store.fenced(caller.fence());
    let (usage, price) = futures::try_join!(
        fenced.usage_between(tenant, period.start(), period.end()),
        // The catalogue is not tenant data: every caller who reads usage may read plans.
        store.price_in_force(&tenant.plan, period),
    )?;
    let aggregation = price.as_ref().map_or_else(Aggregation::default, |p| p.price.aggregation);
    let readings: Vec<Reading> = usage
        .carried_in
        .iter()
        .chain(&usage.reports)
        .map(|r| Reading {
            report_id: r.report_id.clone(),
            observed_at: r.observed_at,
            customer_count: r.customer_count,
        })
        .collect();
    Ok(PeriodFigure {
        period,
        aggregation,
        price_version: price.map(|p| p.version),
        billable_customers: billable_count(aggregation, &period, &readings),
        usage,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const WINDOW: ReportingWindow =
        ReportingWindow { max_future: Duration::minutes(5), max_age: Duration::days(35) };

    fn sent(id: &str, count: u64, at: &str) -> SentReport {
        SentReport { report_id: id.into(), customer_count: count, observed_at: at.into() }
    }

    fn field_of(outcome: Result<UsageReport, Outcome>) -> Option<&'static str> {
        match outcome {
            Err(Outcome::Invalid { field, .. }) => Some(field),
            _ => None,
        }
    }

    #[test]
    fn a_report_is_checked_field_by_field_and_against_the_window() {
        let now = datetime!(2027-03-15 12:00 UTC);
        let tenant = TenantId::generate();
        let ok = check(&sent("r-1", 500, "2027-03-15T11:00:00Z"), tenant, WINDOW, now).expect("valid");
        assert_eq!((ok.customer_count, ok.observed_at), (500, datetime!(2027-03-15 11:00 UTC)));
        assert!(
            check(&sent("r-1", 5, "2027-03-15T13:00:00+01:00"), tenant, WINDOW, now).is_ok(),
            "offsets count"
        );
        let cases = [
            (sent("", 1, "2027-03-15T11:00:00Z"), "report_id"),
            (sent("has space", 1, "2027-03-15T11:00:00Z"), "report_id"),
            (sent(&"x".repeat(65), 1, "2027-03-15T11:00:00Z"), "report_id"),
            (sent("r", MAX_CUSTOMERS + 1, "2027-03-15T11:00:00Z"), "customer_count"),
            (sent("r", 1, "2027-03-15 11:00"), "observed_at"),
            (sent("r", 1, "2027-03-15T12:05:01Z"), "observed_at"),
            (sent("r", 1, "2027-02-08T11:59:59Z"), "observed_at"),
        ];
        for (report, field) in cases {
            assert_eq!(field_of(check(&report, tenant, WINDOW, now)), Some(field), "{report:?}");
        }
        assert!(check(&sent("r", 1, "2027-03-15T12:05:00Z"), tenant, WINDOW, now).is_ok(), "the edge is in");
    }

    #[test]
    fn only_a_container_for_itself_or_staff_naming_a_tenant_report() {
        let own = TenantId::generate();
        let other = TenantId::generate();
        let container = Caller::new("machine:x", Some(own), &[Role::TenantMachine]);
        assert_eq!(reporting_tenant(&container, None).ok(), Some(own));
        assert!(matches!(reporting_tenant(&container, Some(other)), Err(MeteringError::Denied(_))));
        let admin = Caller::new("u", Some(own), &[Role::TenantAdmin]);
        assert!(matches!(reporting_tenant(&admin, None), Err(MeteringError::NotAReporter)));
        let staff = Caller::new("s", None, &[Role::PlatformAdmin]);
        assert_eq!(reporting_tenant(&staff, Some(other)).ok(), Some(other));
        assert!(matches!(reporting_tenant(&staff, None), Err(MeteringError::NoTenant(_))));
    }
}
