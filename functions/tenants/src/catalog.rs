//! The catalogue: plans with their versioned prices, and bundles.
//!
//! Who: reading it takes any permission to read plans, at any scope (platform staff,
//! partners, a tenant's admins; not a customer user nor a container). Changing it is
//! platform staff's (a permission on plans with global scope).
//!
//! A price change is a new version taking effect from the next UTC month, never the current
//! one, so an invoice of a period already running is never re-priced. The version number is
//! the write's condition: of two concurrent changes one wins and the other is told
//! `VERSION_CONFLICT`; the same change sent again (a retry) answers the version it made.

use dotmac_billing::{Bundle, PerCustomer, Period, Price};
use dotmac_domain::{Action, Caller, Denied, Plan, PlanId, Resource, Target, TaskSize, authorize};
use dotmac_store::catalog::in_force;
use dotmac_store::{PriceVersion, PriceWrite, Store, StoreError};
use time::OffsetDateTime;

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error(transparent)]
    Denied(#[from] Denied),
    #[error("no plan {0}")]
    PlanNotFound(PlanId),
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("a plan {0} exists with another definition")]
    PlanExists(PlanId),
    #[error("the price of {plan} is at version {current}, not {expected}")]
    VersionConflict { plan: PlanId, expected: u32, current: u32 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The catalogue as `caller` may read it: every caller holding a permission to read plans,
/// whatever its scope (the catalogue is no tenant's, so each such caller's own reach holds it).
pub fn may_read(caller: &Caller) -> Result<(), Denied> {
    let everywhere_it_reaches = Target {
        tenant_id: caller.tenant_id,
        partner_id: caller.partner_id.as_ref(),
        owner_id: Some(&caller.user_id),
    };
    authorize(caller, Resource::Plan, Action::Read, everywhere_it_reaches)
}

/// Only a permission on plans at global scope changes the catalogue.
pub fn may_change(caller: &Caller, action: Action) -> Result<(), Denied> {
    authorize(caller, Resource::Plan, action, Target::default())
}

/// A plan and its price versions: the one in force now and those scheduled after it.
#[derive(Debug, Clone)]
pub struct PlanPrices {
    pub plan: Plan,
    pub current: Option<PriceVersion>,
    pub scheduled: Vec<PriceVersion>,
}

fn plan_prices(plan: Plan, versions: Vec<PriceVersion>, now: Period) -> PlanPrices {
    let current = in_force(versions.clone(), now);
    // A version for a later period counts only if nothing newer supersedes it there.
    let mut scheduled: Vec<PriceVersion> = versions
        .iter()
        .filter(|v| v.effective_from > now)
        .filter(|v| !versions.iter().any(|w| w.effective_from == v.effective_from && w.version > v.version))
        .cloned()
        .collect();
    scheduled.sort_by_key(|v| v.effective_from);
    PlanPrices { plan, current, scheduled }
}

pub async fn list_plans(
    store: &Store,
    caller: &Caller,
    now: OffsetDateTime,
) -> Result<Vec<PlanPrices>, CatalogError> {
    may_read(caller)?;
    let mut out = Vec::new();
    for plan in store.list_plans().await? {
        let versions = store.price_versions(&plan.id).await?;
        out.push(plan_prices(plan, versions, Period::containing(now)));
    }
    Ok(out)
}

pub async fn get_plan(
    store: &Store,
    caller: &Caller,
    id: &PlanId,
    now: OffsetDateTime,
) -> Result<PlanPrices, CatalogError> {
    may_read(caller)?;
    let plan = store.get_plan(id).await?.ok_or_else(|| CatalogError::PlanNotFound(id.clone()))?;
    let versions = store.price_versions(id).await?;
    Ok(plan_prices(plan, versions, Period::containing(now)))
}

/// The most customers a price's tier bound or package may name (as many as a usage report
/// may state).
const MAX_CUSTOMERS: u64 = 100_000_000;

fn check_price(price: &Price) -> Result<(), CatalogError> {
    price.validate().map_err(|e| CatalogError::Invalid { field: "price", reason: e.to_string() })?;
    let counts: Vec<u64> = match &price.per_customer {
        PerCustomer::Package { size, .. } => vec![*size],
        PerCustomer::Tiered { tiers, .. } => tiers.iter().filter_map(|t| t.up_to).collect(),
    };
    if counts.iter().any(|count| *count > MAX_CUSTOMERS) {
        let reason = "tier bounds and package sizes are at most 100,000,000 customers".to_owned();
        return Err(CatalogError::Invalid { field: "price", reason });
    }
    Ok(())
}

/// Creates a plan with its first price, in effect from the current period (a new plan has no
/// tenants yet, so nothing already running is re-priced). The same definition again answers
/// the plan as it is (`false`: nothing new).
pub async fn create_plan(
    store: &Store,
    caller: &Caller,
    plan: Plan,
    price: Price,
    now: OffsetDateTime,
) -> Result<(PlanPrices, bool), CatalogError> {
    may_change(caller, Action::Create)?;
    if !plan.task_size.is_valid_fargate_size() {
        return Err(CatalogError::Invalid {
            field: "task_size",
            reason: "is not a Fargate cpu/memory pair".into(),
        });
    }
    check_price(&price)?;
    let period = Period::containing(now);
    let first = PriceVersion { plan_id: plan.id.clone(), version: 1, effective_from: period, price };
    let created = match store.create_plan(&plan).await {
        Ok(()) => true,
        Err(StoreError::AlreadyExists) => {
            let existing = store.get_plan(&plan.id).await?;
            if existing.as_ref() != Some(&plan) {
                return Err(CatalogError::PlanExists(plan.id));
            }
            false
        }
        Err(error) => return Err(error.into()),
    };
    // Written after the plan, so a crash in between leaves a plan that a retry completes.
    match store.put_price_version(&first).await? {
        PriceWrite::Written => {}
        // Not a retry of this request: the plan was defined with another first price.
        PriceWrite::Taken(existing) if !created && existing.price != first.price => {
            return Err(CatalogError::PlanExists(plan.id));
        }
        PriceWrite::Taken(_) => {}
    }
    let versions = store.price_versions(&plan.id).await?;
    let answer = plan_prices(plan, versions, period);
    Ok((answer, created))
}

/// A new price version of `plan`, in effect from the period after `now`'s. `expected`, when
/// given, is the version the caller based its change on. `false`: the very same change was
/// made before (a retry), and its version is answered.
pub async fn change_price(
    store: &Store,
    caller: &Caller,
    plan: &PlanId,
    price: Price,
    expected: Option<u32>,
    now: OffsetDateTime,
) -> Result<(PriceVersion, bool), CatalogError> {
    may_change(caller, Action::Update)?;
    check_price(&price)?;
    if store.get_plan(plan).await?.is_none() {
        return Err(CatalogError::PlanNotFound(plan.clone()));
    }
    let effective_from = Period::containing(now).next();
    let versions = store.price_versions(plan).await?;
    let latest = versions.iter().max_by_key(|v| v.version);
    let current = latest.map_or(0, |v| v.version);
    if let Some(latest) = latest
        && latest.price == price
        && latest.effective_from == effective_from
    {
        return Ok((latest.clone(), false));
    }
    if let Some(expected) = expected
        && expected != current
    {
        return Err(CatalogError::VersionConflict { plan: plan.clone(), expected, current });
    }
    let next = PriceVersion { plan_id: plan.clone(), version: current + 1, effective_from, price };
    match store.put_price_version(&next).await? {
        PriceWrite::Written => {
            tracing::info!(%plan, version = next.version, from = %effective_from, "price version written");
            Ok((next, true))
        }
        // Someone else's change took the number: the same change (a concurrent retry) is
        // answered as made, any other is a conflict.
        PriceWrite::Taken(theirs)
            if theirs.price == next.price && theirs.effective_from == effective_from =>
        {
            Ok((*theirs, false))
        }
        PriceWrite::Taken(theirs) => Err(CatalogError::VersionConflict {
            plan: plan.clone(),
            expected: current,
            current: theirs.version,
        }),
    }
}

pub async fn list_bundles(store: &Store, caller: &Caller) -> Result<Vec<Bundle>, CatalogError> {
    may_read(caller)?;
    Ok(store.list_bundles().await?)
}

/// A plan as a request defines it.
pub fn new_plan(id: &str, name: &str, description: &str, task_size: TaskSize) -> Result<Plan, CatalogError> {
    let id = PlanId::parse(id).map_err(|e| CatalogError::Invalid { field: "id", reason: e.reason })?;
    let name = name.trim();
    if !(1..=80).contains(&name.chars().count()) {
        return Err(CatalogError::Invalid { field: "name", reason: "must be 1 to 80 characters".into() });
    }
    if description.chars().count() > 500 {
        return Err(CatalogError::Invalid {
            field: "description",
            reason: "must be at most 500 characters".into(),
        });
    }
    Ok(Plan { id, name: name.to_owned(), description: description.to_owned(), task_size })
}

#[cfg(test)]
mod tests {
    use super::*;
    use dotmac_domain::{Role, TenantId};

    #[test]
    fn the_catalogue_is_read_by_staff_partners_and_tenant_admins_and_changed_by_staff_only() {
        let tenant = TenantId::generate();
        let staff = Caller::new("s", None, &[Role::PlatformAdmin]);
        let admin = Caller::new("a", Some(tenant), &[Role::TenantAdmin]);
        let customer = Caller::new("c", Some(tenant), &[Role::CustomerUser]);
        let machine = Caller::new("m", Some(tenant), &[Role::TenantMachine]);
        let mut partner = Caller::new("p", None, &[Role::Partner]);
        partner.partner_id = Some(dotmac_domain::PartnerId::parse("acme").expect("id"));
        for reader in [&staff, &admin, &partner] {
            assert!(may_read(reader).is_ok(), "{reader:?}");
        }
        for refused in [&customer, &machine] {
            assert!(may_read(refused).is_err(), "{refused:?}");
        }
        assert!(may_change(&staff, Action::Update).is_ok());
        for refused in [&admin, &partner, &customer, &machine] {
            assert!(may_change(refused, Action::Create).is_err(), "{refused:?}");
        }
    }

    #[test]
    fn the_scheduled_versions_are_those_after_now_that_nothing_supersedes() {
        let (_, price) = dotmac_billing::pricing::seed_prices().into_iter().next().expect("seed");
        let plan = dotmac_domain::seed_plans().remove(0);
        let v = |version, from: &str| PriceVersion {
            plan_id: plan.id.clone(),
            version,
            effective_from: Period::parse(from).expect("period"),
            price: price.clone(),
        };
        let versions = vec![v(1, "2000-01"), v(2, "2027-04"), v(3, "2027-04"), v(4, "2027-06")];
        let shown = plan_prices(plan, versions, Period::parse("2027-03").expect("period"));
        assert_eq!(shown.current.map(|c| c.version), Some(1));
        assert_eq!(shown.scheduled.iter().map(|s| s.version).collect::<Vec<_>>(), vec![3, 4]);
    }
}
