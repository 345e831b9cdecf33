//! Dunning, as use cases over the store, the queues and the tenant's lifecycle:
//! - `follow_payment`: after an attempt is decided (by its job or a webhook), the invoice's
//!   dunning converges to its payment state: a failed invoice opens one (`past_due` at
//!   once), a paid one clears it (the tenant `current` again, resumed if it was suspended
//!   for non-payment, and only then). Repeating it changes nothing.
//! - `run_dunning(now)`: the scheduled job: every dunning whose next step is due at `now`
//!   makes that step (see `dotmac_domain::dunning` for the schedule and what each step does).
//!
//! Every move queues an `IssueLicense` (the container's license states the standing), and
//! the step that suspends goes through the lifecycle (`Actor::Billing`, reason
//! `non_payment`), never a direct status write.
//!
//! A payment racing a step ends paid and active: the step is written only while the invoice
//! is unpaid (checked in its transaction); the clearing resumes a tenant suspended for
//! non-payment after it is written, and the suspending step reads the dunning again after
//! suspending and resumes if it was cleared meanwhile. Whichever order the two run in, one of
//! them sees the other's write.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use dotmac_billing::Period;
use dotmac_domain::{BillingStanding, DunningSchedule, SuspensionReason, Tenant, TenantId};
use dotmac_queue::{BillingJob, ProvisioningJob, SqsQueue};
use dotmac_store::{Dunning, DunningStatus, DunningWrite, PaymentStatus};
use time::OffsetDateTime;

use crate::charging::{Payments, PaymentsError};

/// A boxed future (the port is object-safe so the bootstrap can hand in the lifecycle).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why the lifecycle did not suspend or resume.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SuspensionError {
    /// The lifecycle refused it as the tenant stands (not active, being deleted, ...):
    /// nothing to retry.
    #[error("the lifecycle refused: {0}")]
    Refused(String),
    /// The store or the queue failed: try again.
    #[error("{0}")]
    Unavailable(String),
}

/// The tenant lifecycle's suspend and resume for non-payment, as billing may call them
/// (the tenants function's `Lifecycle` with `Actor::Billing`, wired by the bootstrap: a
/// function crate does not depend on another).
pub trait NonPaymentSuspension: Send + Sync {
    fn suspend(&self, tenant: TenantId) -> BoxFuture<'_, Result<Tenant, SuspensionError>>;
    fn resume(&self, tenant: TenantId) -> BoxFuture<'_, Result<Tenant, SuspensionError>>;
}

/// What dunning needs beside the store.
#[derive(Clone)]
pub struct DunningSettings {
    pub schedule: DunningSchedule,
    /// `IssueLicense` after every move.
    pub provisioning: SqsQueue,
    /// The retry's `ChargeInvoice`, queued at once (the charge-due item written with the step
    /// is the safety net the finalizer's sweep queues again).
    pub billing_queue: SqsQueue,
    pub lifecycle: Arc<dyn NonPaymentSuspension>,
}

/// What one run of the dunning job did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct DunningRun {
    /// Dunnings due at the run's time.
    pub due: usize,
    /// Steps made.
    pub stepped: usize,
    /// Tenants suspended for non-payment by this run.
    pub suspended: usize,
}

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stepped {
    /// Step `step` made; the tenant stands at `standing`.
    Step { step: u32, standing: BillingStanding, suspended: bool },
    /// Nothing due, already made, or the invoice is paid.
    Nothing,
}

impl Payments {
    fn dunning(&self) -> &DunningSettings {
        &self.dunning
    }

    /// Converges the invoice's dunning to its payment state (see the module).
    pub async fn follow_payment(
        &self,
        tenant: TenantId,
        period: Period,
        now: OffsetDateTime,
    ) -> Result<(), PaymentsError> {
        let Some(invoice) = self.store.get_invoice(tenant, period).await? else { return Ok(()) };
        match invoice.payment_status {
            Some(PaymentStatus::Failed) => self.start_dunning(tenant, period, now).await,
            // A refund comes after a payment: the invoice was paid, so nothing is owed on it.
            Some(PaymentStatus::Paid | PaymentStatus::Refunded | PaymentStatus::PartiallyRefunded) => {
                self.clear_dunning(tenant, period, now).await
            }
            _ => Ok(()),
        }
    }

    async fn start_dunning(
        &self,
        tenant: TenantId,
        period: Period,
        now: OffsetDateTime,
    ) -> Result<(), PaymentsError> {
        let schedule = &self.dunning().schedule;
        let written = self
            .store
            .start_dunning(tenant, period, schedule.standing_after(0), schedule.due_at(now, 1), now)
            .await?;
        if let DunningWrite::Written { tenant: after, .. } = written {
            tracing::info!(%tenant, %period, standing = after.billing_standing.as_str(), "dunning started");
            self.relicense(tenant).await?;
        }
        Ok(())
    }

    /// Clears the invoice's dunning (it was paid) and lifts a suspension for non-payment once
    /// no other unpaid invoice keeps the tenant suspended. A repeat finds it cleared and still
    /// makes sure of the resume (a crash between the two is healed by the redelivery).
    pub async fn clear_dunning(
        &self,
        tenant: TenantId,
        period: Period,
        now: OffsetDateTime,
    ) -> Result<(), PaymentsError> {
        let standing = match self.store.clear_dunning(tenant, period, now).await? {
            DunningWrite::Written { tenant: after, .. } => {
                tracing::info!(%tenant, %period, standing = after.billing_standing.as_str(), "dunning cleared");
                self.relicense(tenant).await?;
                after.billing_standing
            }
            DunningWrite::Unchanged => match self.store.get_tenant(tenant).await? {
                Some(current) => current.billing_standing,
                None => return Ok(()),
            },
        };
        if standing < BillingStanding::Suspended {
            self.lift_non_payment(tenant).await?;
        }
        Ok(())
    }

    /// Resumes the tenant if (and only if) it is suspended for non-payment.
    async fn lift_non_payment(&self, tenant: TenantId) -> Result<(), PaymentsError> {
        let Some(current) = self.store.get_tenant(tenant).await? else { return Ok(()) };
        if !current.suspended_for.contains(&SuspensionReason::NonPayment) {
            return Ok(());
        }
        match self.dunning().lifecycle.resume(tenant).await {
            Ok(after) => {
                tracing::info!(%tenant, status = %after.status, "suspension for non-payment lifted");
                Ok(())
            }
            Err(SuspensionError::Refused(reason)) => {
                tracing::warn!(%tenant, reason, "the lifecycle refused to lift the suspension for non-payment");
                Ok(())
            }
            Err(SuspensionError::Unavailable(reason)) => Err(PaymentsError::Lifecycle(reason)),
        }
    }

    /// The scheduled dunning job at `now`: every due dunning makes its next step.
    pub async fn run_dunning(&self, now: OffsetDateTime) -> Result<DunningRun, PaymentsError> {
        let due = self.store.dunnings_due(now).await?;
        let mut run = DunningRun { due: due.len(), ..DunningRun::default() };
        for entry in due {
            match self.dunning_step(entry.tenant_id, entry.period, now).await {
                Ok(Stepped::Step { suspended, .. }) => {
                    run.stepped += 1;
                    run.suspended += usize::from(suspended);
                }
                Ok(Stepped::Nothing) => {}
                // One tenant's failure does not hold back the others; the next run retries it.
                Err(error) => {
                    tracing::error!(tenant = %entry.tenant_id, period = %entry.period, %error, "dunning step failed")
                }
            }
        }
        Ok(run)
    }

    /// Makes the invoice's next dunning step if it is due at `now`.
    pub async fn dunning_step(
        &self,
        tenant: TenantId,
        period: Period,
        now: OffsetDateTime,
    ) -> Result<Stepped, PaymentsError> {
        let schedule = self.dunning().schedule.clone();
        let Some(dunning) = self.store.get_dunning(tenant, period).await? else {
            return Ok(Stepped::Nothing);
        };
        if dunning.status != DunningStatus::Open {
            return Ok(Stepped::Nothing);
        }
        if dunning.step >= schedule.steps() {
            // The last step was made and its suspension not confirmed (a crash, a lifecycle
            // that was unavailable): it stays due until it is.
            if dunning.next_at.is_some() {
                let suspended = self.suspend_and_settle(&dunning, now).await?;
                return Ok(Stepped::Step { step: dunning.step, standing: dunning.standing, suspended });
            }
            return Ok(Stepped::Nothing);
        }
        let Some(step) = schedule.next_due(dunning.started_at, dunning.step, now) else {
            return Ok(Stepped::Nothing);
        };
        let standing = schedule.standing_after(step);
        let attempt = DunningSchedule::attempt_of(step);
        // The last step stays due until its suspension is done (`suspend_and_settle`).
        let next_at = match step >= schedule.steps() {
            true => Some(now),
            false => schedule.due_at(dunning.started_at, step + 1),
        };
        let DunningWrite::Written { tenant: after, dunning: written } =
            self.store.advance_dunning(&dunning, step, standing, attempt, next_at, now).await?
        else {
            return Ok(Stepped::Nothing);
        };
        tracing::info!(%tenant, %period, step, attempt, standing = after.billing_standing.as_str(), "dunning step");
        let job = BillingJob::ChargeInvoice { tenant_id: tenant, period: period.to_string(), attempt };
        if let Err(error) = self.dunning().billing_queue.enqueue(job).await {
            tracing::warn!(%tenant, %period, attempt, %error, "the retry is left to the charge sweep");
        }
        self.relicense(tenant).await?;
        let suspended = match written.standing {
            BillingStanding::Suspended => self.suspend_and_settle(&written, now).await?,
            _ => false,
        };
        Ok(Stepped::Step { step, standing: after.billing_standing, suspended })
    }

    /// Suspends the tenant for non-payment through its lifecycle, then takes the dunning
    /// off the due index; resumes at once if a payment cleared the dunning meanwhile.
    async fn suspend_and_settle(
        &self,
        dunning: &Dunning,
        now: OffsetDateTime,
    ) -> Result<bool, PaymentsError> {
        let (tenant, period) = (dunning.tenant_id, dunning.period);
        let suspended = self.suspend_for_non_payment(tenant).await?;
        if !self.store.settle_dunning(dunning).await? {
            // The dunning moved after it was read: a payment cleared it while the suspension
            // was written. That clearing may have read the tenant before it was suspended,
            // so the resume is ours to make.
            let cleared = self
                .store
                .get_dunning(tenant, period)
                .await?
                .is_none_or(|again| again.status == DunningStatus::Cleared);
            if cleared {
                self.clear_dunning(tenant, period, now).await?;
            }
        }
        Ok(suspended)
    }

    async fn suspend_for_non_payment(&self, tenant: TenantId) -> Result<bool, PaymentsError> {
        match self.dunning().lifecycle.suspend(tenant).await {
            Ok(after) => {
                tracing::info!(%tenant, status = %after.status, "suspended for non-payment");
                Ok(true)
            }
            // Not running (failed, being deleted): nothing to stop.
            Err(SuspensionError::Refused(reason)) => {
                tracing::warn!(%tenant, reason, "the lifecycle refused the suspension for non-payment");
                Ok(false)
            }
            Err(SuspensionError::Unavailable(reason)) => Err(PaymentsError::Lifecycle(reason)),
        }
    }

    async fn relicense(&self, tenant: TenantId) -> Result<(), PaymentsError> {
        self.dunning()
            .provisioning
            .enqueue(ProvisioningJob::IssueLicense { tenant_id: tenant })
            .await
            .map(|_| ())
            .map_err(|e| PaymentsError::Lifecycle(format!("queueing the license: {e}")))
    }
}
