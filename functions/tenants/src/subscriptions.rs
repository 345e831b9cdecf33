//! A tenant's subscriptions, as use cases: adding and removing bundles, changing its plan.
//!
//! Who: platform staff, and the tenant's own admins for its bundles (a permission on
//! subscriptions over the tenant); a partner reads the subscriptions of the tenants it
//! brought but changes none (its built-in role reads only). Changing the plan is platform
//! staff's (a permission on plans with global scope), as the plan sets the container's size
//! and the price.
//!
//! Every change is one transaction conditioned on the tenant's version (see
//! `dotmac_store::subscriptions`), retried on a conflict with the tenant read again, and
//! idempotent: adding a bundle the tenant holds answers the running subscription; removing
//! one it does not hold is `SUBSCRIPTION_NOT_FOUND`; moving to the plan it is on answers the
//! running plan span. Each change (and each repeat) queues the license job, so a lost enqueue
//! is healed by the client's retry.

use dotmac_domain::{Action, Caller, Denied, PlanId, Resource, Target, Tenant, TenantId, authorize};
use dotmac_queue::{ProvisioningJob, SqsQueue};
use dotmac_store::{BundleSpan, PlanSpan, Store, StoreError, Subscriptions};
use time::OffsetDateTime;

/// Attempts of a change before a run of concurrent changes is reported as a conflict.
const ATTEMPTS: usize = 5;

#[derive(Clone)]
pub struct Subscribing {
    pub store: Store,
    pub provisioning: SqsQueue,
}

#[derive(Debug, thiserror::Error)]
pub enum SubscriptionError {
    #[error(transparent)]
    Denied(#[from] Denied),
    #[error("no bundle {0}")]
    BundleNotFound(String),
    #[error("no plan {0}")]
    PlanNotFound(PlanId),
    #[error("the tenant does not hold the bundle {0}")]
    NotSubscribed(String),
    #[error("the tenant is gone")]
    TenantGone,
    #[error("the tenant kept changing; try again")]
    Contended,
    #[error("the license job could not be queued: {0}")]
    QueueUnavailable(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Whether `caller` may `action` the subscriptions of `tenant` (as read through its fence).
pub fn may(caller: &Caller, action: Action, tenant: &Tenant) -> Result<(), Denied> {
    authorize(
        caller,
        Resource::Subscription,
        action,
        Target::tenant(tenant.id).partner(tenant.partner_id.as_ref()),
    )
}

/// What a change answers: the span, and whether this request made it.
#[derive(Debug, Clone)]
pub struct Changed<T> {
    pub span: T,
    pub created: bool,
}

impl Subscribing {
    async fn fresh(&self, id: TenantId) -> Result<Tenant, SubscriptionError> {
        // Gone between the caller's read and now: as good as never there.
        self.store.get_tenant(id).await?.ok_or(SubscriptionError::TenantGone)
    }

    async fn license_again(&self, tenant: TenantId) -> Result<(), SubscriptionError> {
        self.provisioning
            .enqueue(ProvisioningJob::IssueLicense { tenant_id: tenant })
            .await
            .map(|_| ())
            .map_err(|e| SubscriptionError::QueueUnavailable(e.to_string()))
    }

    /// Adds `bundle` to `tenant` (read through the caller's fence).
    pub async fn add_bundle(
        &self,
        caller: &Caller,
        mut tenant: Tenant,
        bundle: &str,
        now: OffsetDateTime,
    ) -> Result<Changed<BundleSpan>, SubscriptionError> {
        may(caller, Action::Create, &tenant)?;
        let offer = self
            .store
            .get_bundle(bundle)
            .await?
            .ok_or_else(|| SubscriptionError::BundleNotFound(bundle.to_owned()))?;
        for _ in 0..ATTEMPTS {
            if tenant.bundles.iter().any(|code| code == bundle) {
                let held = self.store.subscriptions(tenant.id).await?;
                if let Some(span) = held.open_bundle(bundle) {
                    self.license_again(tenant.id).await?;
                    return Ok(Changed { span: span.clone(), created: false });
                }
                return Err(StoreError::Corrupt(format!(
                    "tenant {} holds {bundle} with no running span",
                    tenant.id
                ))
                .into());
            }
            match self.store.add_bundle(&tenant, &offer, now).await {
                Ok(span) => {
                    tracing::info!(tenant_id = %tenant.id, bundle, "bundle added");
                    self.license_again(tenant.id).await?;
                    return Ok(Changed { span, created: true });
                }
                Err(StoreError::VersionConflict { .. }) => tenant = self.fresh(tenant.id).await?,
                Err(error) => return Err(error.into()),
            }
        }
        Err(SubscriptionError::Contended)
    }

    /// Ends the tenant's subscription to `bundle` now.
    pub async fn remove_bundle(
        &self,
        caller: &Caller,
        mut tenant: Tenant,
        bundle: &str,
        now: OffsetDateTime,
    ) -> Result<BundleSpan, SubscriptionError> {
        may(caller, Action::Delete, &tenant)?;
        for _ in 0..ATTEMPTS {
            if !tenant.bundles.iter().any(|code| code == bundle) {
                return Err(SubscriptionError::NotSubscribed(bundle.to_owned()));
            }
            let held = self.store.subscriptions(tenant.id).await?;
            let Some(span) = held.open_bundle(bundle) else {
                return Err(StoreError::Corrupt(format!(
                    "tenant {} holds {bundle} with no running span",
                    tenant.id
                ))
                .into());
            };
            match self.store.remove_bundle(&tenant, span, now).await {
                Ok(ended) => {
                    tracing::info!(tenant_id = %tenant.id, bundle, "bundle removed");
                    self.license_again(tenant.id).await?;
                    return Ok(ended);
                }
                Err(StoreError::VersionConflict { .. }) => tenant = self.fresh(tenant.id).await?,
                Err(error) => return Err(error.into()),
            }
        }
        Err(SubscriptionError::Contended)
    }

    /// Moves the tenant to `plan` from now. (Its container keeps its size until it is next
    /// launched; resizing a running tenant is the lifecycle work's.)
    pub async fn change_plan(
        &self,
        caller: &Caller,
        mut tenant: Tenant,
        plan: &PlanId,
        now: OffsetDateTime,
    ) -> Result<Changed<PlanSpan>, SubscriptionError> {
        authorize(caller, Resource::Plan, Action::Update, Target::default())?;
        if self.store.get_plan(plan).await?.is_none() {
            return Err(SubscriptionError::PlanNotFound(plan.clone()));
        }
        for _ in 0..ATTEMPTS {
            let held = self.store.subscriptions(tenant.id).await?;
            if tenant.plan == *plan {
                let span = held.open_plan().cloned().unwrap_or(PlanSpan {
                    plan_id: plan.clone(),
                    from: tenant.created_at,
                    to: None,
                });
                self.license_again(tenant.id).await?;
                return Ok(Changed { span, created: false });
            }
            match self.store.change_plan(&tenant, held.open_plan(), plan, now).await {
                Ok(span) => {
                    tracing::info!(tenant_id = %tenant.id, %plan, "plan changed");
                    self.license_again(tenant.id).await?;
                    return Ok(Changed { span, created: true });
                }
                Err(StoreError::VersionConflict { .. }) => tenant = self.fresh(tenant.id).await?,
                Err(error) => return Err(error.into()),
            }
        }
        Err(SubscriptionError::Contended)
    }

    /// The tenant's subscriptions, for whoever may read them.
    pub async fn read(&self, caller: &Caller, tenant: &Tenant) -> Result<Subscriptions, SubscriptionError> {
        may(caller, Action::Read, tenant)?;
        Ok(self.store.subscriptions(tenant.id).await?)
    }
}
