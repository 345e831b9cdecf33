//! The billing worker: `BillingJob`s off the billing queue (SQS event source in AWS, the local
//! apalis worker in the dev server), run by the use cases of `invoicing`.

use dotmac_billing::Period;
use dotmac_queue::{BillingJob, Delivery, JobError, JobHandler};
use time::OffsetDateTime;

use crate::invoicing::{Billing, BillingError};

#[derive(Debug, Clone)]
pub struct BillingWorker {
    pub billing: Billing,
}

impl JobHandler<BillingJob> for BillingWorker {
    async fn handle(&self, job: BillingJob, delivery: &Delivery) -> Result<(), JobError> {
        let now = OffsetDateTime::now_utc();
        match job {
            BillingJob::FanOut { run_id } => match self.billing.fan_out(&run_id).await {
                Ok(()) => Ok(()),
                Err(BillingError::NoRun(id)) => Err(JobError::Discard(format!("no billing run {id}"))),
                Err(error) => Err(JobError::Retry(error.to_string())),
            },
            BillingJob::InvoiceTenant { run_id, tenant_id, period, plan, partner_id } => {
                let Ok(period) = Period::parse(&period) else {
                    let reason = format!("{period:?} is not a period");
                    return self.fail(&run_id, tenant_id, &reason, now).await;
                };
                match self
                    .billing
                    .invoice_tenant(Some(&run_id), tenant_id, partner_id, &plan, period, now)
                    .await
                {
                    Ok(_) => Ok(()),
                    Err(BillingError::Unbillable(reason)) => {
                        self.fail(&run_id, tenant_id, &reason, now).await
                    }
                    // A job of a run that does not exist can never be counted anywhere.
                    Err(BillingError::NoRun(id)) => Err(JobError::Discard(format!("no billing run {id}"))),
                    Err(error) => {
                        let reason = error.to_string();
                        // The last attempt leaves its reason on the run before SQS moves the
                        // job to the dead-letter queue, so the run's progress shows it.
                        if delivery.is_last_attempt()
                            && let Err(error) =
                                self.billing.record_failure(&run_id, tenant_id, &reason, now).await
                        {
                            tracing::error!(%tenant_id, %error, "could not record the failure on the run");
                        }
                        Err(JobError::Retry(reason))
                    }
                }
            }
            // Charges are the payments worker's (`dotmac_payments`); the deployed billing worker
            // routes them there first (`dotmac_platform`). One arriving here was routed
            // wrong: retried, so it ends in the dead-letter queue where it shows, never lost.
            BillingJob::ChargeInvoice { tenant_id, period, attempt } => Err(JobError::Retry(format!(
                "ChargeInvoice {tenant_id} {period} #{attempt} reached the invoicing worker"
            ))),
        }
    }
}

impl BillingWorker {
    /// A tenant no attempt can invoice: recorded failed on its run, the job acknowledged.
    async fn fail(
        &self,
        run_id: &str,
        tenant: dotmac_domain::TenantId,
        reason: &str,
        now: OffsetDateTime,
    ) -> Result<(), JobError> {
        self.billing
            .record_failure(run_id, tenant, reason, now)
            .await
            .map_err(|e| JobError::Retry(e.to_string()))?;
        Err(JobError::Discard(reason.to_owned()))
    }
}
