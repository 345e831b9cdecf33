//! Suspend, resume and delete, as use cases: no HTTP here, so billing (a suspension for
//! non-payment, lifted on payment), a webhook or a job goes through exactly what the routes
//! call.
//!
//! Each is one version-checked write of the tenant with its event (`Store::transition_tenant`)
//! followed by the job that makes the compute match (`ProvisioningJob::SuspendTenant`, ...).
//! The job converges to the status the record holds, so a late or duplicate job does nothing
//! wrong. Repeating a request that is already in effect (suspend a tenant suspended for that
//! reason, resume an active one, delete one being deleted) changes nothing, writes no event
//! and queues the job again: a request whose job was lost (the queue failed after the write)
//! is healed by sending it again.

use dotmac_domain::{
    Action, Caller, Denied, LifecycleError, Resource, SuspensionReason, Target, Tenant, TenantId,
    TenantStatus, authorize,
};
use dotmac_queue::{ProvisioningJob, SqsQueue};
use dotmac_store::{Store, StoreError, TenantRecord};
use time::OffsetDateTime;

/// Who asks for a lifecycle change.
#[derive(Debug, Clone, Copy)]
pub enum Actor<'a> {
    /// A signed-in caller: platform staff only (see `authorized`).
    Caller(&'a Caller),
    /// Billing's dunning, with no user behind it: it may only suspend for non-payment and
    /// lift that reason.
    Billing,
}

#[derive(Debug, thiserror::Error)]
pub enum TenantLifecycleError {
    #[error(transparent)]
    Denied(#[from] Denied),
    #[error("billing suspends and resumes for non_payment only")]
    NotBillingsReason,
    #[error("tenant {0} does not exist")]
    NotFound(TenantId),
    /// Refused by the lifecycle: the tenant's status (and reasons) as they are.
    #[error("{error}")]
    Conflict { error: LifecycleError, tenant: Box<Tenant> },
    #[error("the tenant kept changing; try again")]
    Contended,
    #[error("the provisioning queue refused the job: {0}")]
    QueueUnavailable(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the lifecycle use cases need.
#[derive(Clone)]
pub struct Lifecycle {
    pub store: Store,
    pub provisioning: SqsQueue,
}

/// Suspending, resuming and deleting are the platform's decisions: a tenant's own admin may
/// not suspend (or lift a suspension of) its own tenant, which would undo a suspension for
/// non-payment, nor delete it. Only a caller whose permission reaches every tenant passes
/// (`Target::default()` names no tenant, so no tenant or partner scope covers it).
pub fn authorized(caller: &Caller, action: Action) -> Result<(), Denied> {
    authorize(caller, Resource::Tenant, action, Target::default())
}

fn billing_reason(actor: Actor<'_>, reason: Option<SuspensionReason>) -> Result<(), TenantLifecycleError> {
    match actor {
        Actor::Caller(caller) => Ok(authorized(caller, Action::Update)?),
        Actor::Billing if reason == Some(SuspensionReason::NonPayment) => Ok(()),
        Actor::Billing => Err(TenantLifecycleError::NotBillingsReason),
    }
}

/// How often a change is retried when another writer (a job's lease, another request) moved
/// the tenant between its read and its write.
const ATTEMPTS: usize = 5;

impl Lifecycle {
    pub async fn suspend(
        &self,
        actor: Actor<'_>,
        id: TenantId,
        reason: SuspensionReason,
    ) -> Result<Tenant, TenantLifecycleError> {
        billing_reason(actor, Some(reason))?;
        let tenant = self.change(id, |tenant, now| tenant.suspend(reason, now)).await?;
        self.queue(ProvisioningJob::SuspendTenant { tenant_id: id }).await?;
        Ok(tenant)
    }

    /// Lifts the suspension reasons `reason` lifts (`SuspensionReason::lifted_by`); the
    /// tenant runs again once none is left.
    pub async fn resume(
        &self,
        actor: Actor<'_>,
        id: TenantId,
        reason: Option<SuspensionReason>,
    ) -> Result<Tenant, TenantLifecycleError> {
        billing_reason(actor, reason)?;
        let tenant = self.change(id, |tenant, now| tenant.resume(reason, now)).await?;
        if tenant.status == TenantStatus::Active {
            self.queue(ProvisioningJob::ResumeTenant { tenant_id: id, version: tenant.version }).await?;
        }
        Ok(tenant)
    }

    /// Starts the delete saga; the record stays, `deleted` at the end, for billing history.
    pub async fn delete(&self, caller: &Caller, id: TenantId) -> Result<Tenant, TenantLifecycleError> {
        authorized(caller, Action::Delete)?;
        let tenant = self.change(id, |tenant, now| tenant.begin_deprovisioning(now)).await?;
        self.queue(ProvisioningJob::DeprovisionTenant { tenant_id: id }).await?;
        Ok(tenant)
    }

    /// Applies `change` to the tenant as stored and saves it with its event, retrying on a
    /// concurrent write. A change that is already in effect (`None`) writes nothing.
    async fn change(
        &self,
        id: TenantId,
        change: impl Fn(&mut Tenant, OffsetDateTime) -> Result<Option<dotmac_domain::DomainEvent>, LifecycleError>,
    ) -> Result<Tenant, TenantLifecycleError> {
        for _ in 0..ATTEMPTS {
            let Some(mut record): Option<TenantRecord> = self.store.get_tenant_record(id).await? else {
                return Err(TenantLifecycleError::NotFound(id));
            };
            let before = record.tenant.clone();
            let event = match change(&mut record.tenant, OffsetDateTime::now_utc()) {
                Ok(Some(event)) => event,
                Ok(None) => return Ok(record.tenant),
                Err(error) => return Err(TenantLifecycleError::Conflict { error, tenant: Box::new(before) }),
            };
            match self.store.transition_tenant(&mut record, event).await {
                Ok(envelope) => {
                    tracing::info!(tenant_id = %id, event = %envelope.event_type, sequence = envelope.sequence, "tenant changed");
                    return Ok(record.tenant);
                }
                Err(StoreError::VersionConflict { .. }) => continue,
                Err(error) => return Err(error.into()),
            }
        }
        Err(TenantLifecycleError::Contended)
    }

    async fn queue(&self, job: ProvisioningJob) -> Result<(), TenantLifecycleError> {
        self.provisioning
            .enqueue(job)
            .await
            .map(|_| ())
            .map_err(|e| TenantLifecycleError::QueueUnavailable(e.to_string()))
    }
}
