//! Onboarding an ISP, as a use case: no HTTP in it, so a queue job, a webhook or a portal page
//! onboards exactly as `POST /v1/tenants` does.

use dotmac_domain::{
    Action, Caller, Denied, NewTenant, PlanId, Resource, Target, Tenant, TenantStatus, authorize,
};
use dotmac_queue::{ProvisioningJob, SqsQueue};
use dotmac_store::{Store, StoreError};
use time::OffsetDateTime;

/// What onboarding needs.
#[derive(Clone)]
pub struct Onboarding {
    pub store: Store,
    pub provisioning: SqsQueue,
}

#[derive(Debug, thiserror::Error)]
pub enum OnboardingError {
    #[error(transparent)]
    Denied(#[from] Denied),
    #[error("no plan {0} exists")]
    UnknownPlan(PlanId),
    #[error("the slug {0} is already taken")]
    SlugTaken(String),
    #[error("the provisioning queue refused the job: {0}")]
    QueueUnavailable(String),
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for OnboardingError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::SlugTaken(slug) => OnboardingError::SlugTaken(slug),
            other => OnboardingError::Store(other),
        }
    }
}

/// The tenant as the caller may onboard it: a partner's onboardings are its own, and only
/// whoever may create tenants there gets through.
pub fn authorized(caller: &Caller, mut new: NewTenant) -> Result<NewTenant, Denied> {
    if new.partner_id.is_none() {
        new.partner_id = caller.partner_id.clone();
    }
    authorize(caller, Resource::Tenant, Action::Create, Target::default().partner(new.partner_id.as_ref()))?;
    Ok(new)
}

impl Onboarding {
    /// Writes the tenant (with its slug claim) and queues its provisioning. `request_ref`
    /// names the keyed request doing it (caller, `Idempotency-Key`, body): a retry of that
    /// same request after a crash that lost its answer gets the tenant it created.
    pub async fn onboard(
        &self,
        caller: &Caller,
        new: NewTenant,
        request_ref: Option<&str>,
    ) -> Result<Tenant, OnboardingError> {
        let new = authorized(caller, new)?;
        if self.store.get_plan(&new.plan).await?.is_none() {
            return Err(OnboardingError::UnknownPlan(new.plan));
        }
        let tenant = Tenant::onboard(new, OffsetDateTime::now_utc());
        match self.store.fenced(caller.fence()).create_tenant(&tenant, request_ref).await {
            Ok(()) => {}
            Err(StoreError::SlugTaken(slug)) => {
                return self
                    .retried(caller, &slug, request_ref)
                    .await?
                    .ok_or(OnboardingError::SlugTaken(slug));
            }
            Err(error) => return Err(error.into()),
        }
        if let Err(error) =
            self.provisioning.enqueue(ProvisioningJob::ProvisionTenant { tenant_id: tenant.id }).await
        {
            // Without its job the tenant would sit in `provisioning` forever: take it back so
            // the client's retry starts clean.
            if let Err(undo) = self.store.delete_new_tenant(&tenant).await {
                tracing::error!(tenant_id = %tenant.id, error = %undo, "tenant left without a provisioning job");
            }
            return Err(OnboardingError::QueueUnavailable(error.to_string()));
        }
        tracing::info!(tenant_id = %tenant.id, slug = %tenant.slug, "tenant onboarded; provisioning queued");
        Ok(tenant)
    }

    /// The same keyed request ran before and created this slug's tenant, but its answer was
    /// never saved (it crashed in between): that tenant, with its job queued again in case
    /// that was what was lost (the provisioner takes duplicates in its stride).
    async fn retried(
        &self,
        caller: &Caller,
        slug: &str,
        request_ref: Option<&str>,
    ) -> Result<Option<Tenant>, OnboardingError> {
        let Some(request_ref) = request_ref else { return Ok(None) };
        let Some((id, Some(created_by))) = self.store.slug_claim(slug).await? else { return Ok(None) };
        if created_by != request_ref {
            return Ok(None);
        }
        let Some(tenant) = self.store.fenced(caller.fence()).get_tenant(id).await? else { return Ok(None) };
        if tenant.status == TenantStatus::Provisioning {
            self.provisioning
                .enqueue(ProvisioningJob::ProvisionTenant { tenant_id: id })
                .await
                .map_err(|e| OnboardingError::QueueUnavailable(e.to_string()))?;
        }
        tracing::info!(tenant_id = %id, "retried onboarding recognised; answering with its tenant");
        Ok(Some(tenant))
    }
}
