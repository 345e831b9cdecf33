//! Section 5's reconcile rows: one fleet reconcile pass (`ReconcileFleet`, as the schedule
//! runs it) over `tenants` tenants provisioned for real on the emulator (secret, task
//! definition, running task each), timed, with every ECS request of the pass counted.

use crate::e2e::{CountAttempts, Stack};
use anyhow::{Context, bail};
use dotmac_domain::{Email, NewTenant, PlanId, Tenant, TenantName, TenantSlug};
use dotmac_queue::{Delivery, JobHandler, ProvisioningJob};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use time::OffsetDateTime;

/// Tenants the pass runs over (the 1,000) unless `DOTMAC_BENCH_RECONCILE_TENANTS`
/// says otherwise: each is provisioned for real first (its ECS calls on moto).
pub const TENANTS: usize = 1_000;
pub const TENANTS_VARIABLE: &str = "DOTMAC_BENCH_RECONCILE_TENANTS";

pub fn tenants() -> usize {
    crate::count_setting(TENANTS_VARIABLE, TENANTS)
}

/// Provisioning jobs run at once while the fleet is seeded (the local server's worker count).
const SEEDING_CONCURRENCY: usize = 8;

pub struct ReconcilePass {
    pub seconds: f64,
    pub ecs_calls: u64,
    /// Tenants the pass looked at (the stack's earlier tenants included).
    pub examined: usize,
    pub repaired: usize,
    pub seeding_seconds: f64,
}

/// Provisions `tenants` tenants (each through the provisioner's own job, as SQS would hand
/// it over), then runs one reconcile pass with an ECS client that counts its requests.
pub async fn reconcile_pass(stack: &Stack, tenants: usize) -> anyhow::Result<ReconcilePass> {
    let seeding = Instant::now();
    let provisioner = Arc::new(stack.platform.provisioner());
    let mut jobs = tokio::task::JoinSet::new();
    let mut failures = Vec::new();
    for n in 0..tenants {
        let tenant = Tenant::onboard(
            NewTenant {
                name: TenantName::parse("Fleet ISP")?,
                slug: TenantSlug::parse(&format!(
                    "fleet-{n}-{}",
                    &uuid::Uuid::new_v4().simple().to_string()[..8]
                ))?,
                plan: PlanId::parse("usage")?,
                contact_email: Email::parse("ops@fleet.example")?,
                partner_id: None,
            },
            OffsetDateTime::now_utc(),
        );
        stack.platform.store.create_tenant(&tenant).await?;
        while jobs.len() >= SEEDING_CONCURRENCY {
            if let Some(Ok(Err(error))) = jobs.join_next().await {
                failures.push(error);
            }
        }
        let provisioner = provisioner.clone();
        jobs.spawn(async move {
            let delivery = Delivery {
                message_id: uuid::Uuid::new_v4().to_string(),
                job_id: None,
                receive_count: 1,
                max_receive_count: 5,
                throttles: 0,
                resends_throttled: false,
            };
            provisioner
                .handle(ProvisioningJob::ProvisionTenant { tenant_id: tenant.id }, &delivery)
                .await
                .map_err(|e| format!("{e:?}"))
        });
    }
    while let Some(joined) = jobs.join_next().await {
        if let Ok(Err(error)) = joined {
            failures.push(error);
        }
    }
    if let Some(first) = failures.first() {
        bail!("{} of {tenants} tenants not provisioned, first: {first}", failures.len());
    }
    let seeding_seconds = seeding.elapsed().as_secs_f64();

    let calls = Arc::new(AtomicU64::new(0));
    let ecs =
        aws_sdk_ecs::config::Builder::from(&stack.sdk).interceptor(CountAttempts(calls.clone())).build();
    let mut counted = stack.platform.clone();
    counted.ecs = aws_sdk_ecs::Client::from_conf(ecs);
    let scheduled_at = OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339)?;
    let started = Instant::now();
    let report = counted
        .provisioner()
        .reconcile_fleet(&scheduled_at, None)
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))
        .context("the reconcile pass")?;
    Ok(ReconcilePass {
        seconds: started.elapsed().as_secs_f64(),
        ecs_calls: calls.load(Ordering::Relaxed),
        examined: report.examined,
        repaired: report.repaired,
        seeding_seconds,
    })
}
