//! Dunning end to end: the emulator for AWS (DynamoDB, SQS, ECS, Secrets Manager) and the
//! project's Stripe double for Stripe, the invoice's history read over HTTP. A declined card
//! starts it; the scheduled job, run as of the schedule event's time ("day N"), retries and
//! degrades the tenant (past_due, restricted, suspended with its task stopped); a payment
//! brings it back (active, task running, bundles in its license). And the race between a
//! late payment and a dunning step, in every order, ends paid and active.

use crate::payments::{Double, charge_jobs, finalized_invoice, last_period, run, serve_payments, take};
use crate::provisioner::{delivery, tenant_task_arns};
use dotmac_domain::{
    BillingStanding, Email, NewTenant, PlanId, SuspensionReason, Tenant, TenantId, TenantName, TenantSlug,
    TenantStatus,
};
use dotmac_platform::{Handler, Platform};
use dotmac_queue::{Envelope, JobHandler, ProvisioningJob};
use dotmac_store::{AttemptStatus, DunningStatus, PaymentStatus, UsageReport};
use dotmac_tests::TestStack;
use serde_json::{Value, json};
use time::{Duration, OffsetDateTime};

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339).expect("format")
}

/// The dunning schedule's run as EventBridge Scheduler sends it, fired at `at`.
async fn dunning_at(platform: &Platform, at: OffsetDateTime) {
    let mut event: Value =
        serde_json::from_str(include_str!("../../events/schedule-dunning.json")).expect("sample event");
    event["time"] = json!(rfc3339(at));
    platform.run_schedule_event(Handler::Dunning, &event).await.expect("the dunning run");
}

/// Runs every job the provisioning queue holds, as the provisioner's event source would.
async fn provision_jobs(stack: &TestStack) -> Vec<ProvisioningJob> {
    provision_jobs_losing(stack, |_| false).await
}

/// As `provision_jobs`, but the jobs `lost` picks are taken off the queue without running (a
/// crash right after the write that queued them, as far as the tenant can tell).
async fn provision_jobs_losing(
    stack: &TestStack,
    lost: fn(&ProvisioningJob) -> bool,
) -> Vec<ProvisioningJob> {
    let provisioner = stack.platform.provisioner();
    let mut ran = Vec::new();
    loop {
        let batch = stack.platform.provisioning.receive(10, 0).await.expect("receive");
        if batch.is_empty() {
            return ran;
        }
        for message in batch {
            let envelope: Envelope<ProvisioningJob> = serde_json::from_str(&message.body).expect("a job");
            if !lost(&envelope.job) {
                provisioner.handle(envelope.job.clone(), &delivery(1, 5)).await.expect("the job ran");
            }
            stack.platform.provisioning.ack(&message.receipt_handle).await.expect("ack");
            ran.push(envelope.job);
        }
    }
}

/// Runs every charge the billing queue holds (each twice: SQS delivers at least once).
async fn charges(platform: &Platform) -> usize {
    let queued = take(platform).await;
    let jobs = charge_jobs(&queued);
    for message in &jobs {
        run(platform, message).await;
        run(platform, message).await;
    }
    jobs.len()
}

async fn tenant(platform: &Platform, id: TenantId) -> Tenant {
    platform.store.get_tenant(id).await.expect("read").expect("tenant")
}

/// The license in the tenant's secret: (billing_status, bundles).
async fn license(stack: &TestStack, id: TenantId) -> (String, Vec<String>) {
    let secret = stack.platform.tenant_secrets().read(id).await.expect("secret").expect("a secret");
    let token = secret.license.expect("a license");
    let claims = stack.platform.keys.verify_license(&token, id).expect("a valid license");
    (claims.billing_status, claims.bundles)
}

/// A provisioned tenant (task running, license written) holding two premium bundles, with
/// 500 customers reported last period.
async fn provisioned_with_bundles(stack: &TestStack) -> TenantId {
    let slug = format!("dun-{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let mut tenant = Tenant::onboard(
        NewTenant {
            name: TenantName::parse("Dunned ISP").expect("name"),
            slug: TenantSlug::parse(&slug).expect("slug"),
            plan: PlanId::parse("usage").expect("plan"),
            contact_email: Email::parse("ops@dunned.example").expect("email"),
            partner_id: None,
        },
        OffsetDateTime::now_utc(),
    );
    tenant.bundles = vec!["crm".into(), "ai".into()];
    stack.platform.store.create_tenant(&tenant).await.expect("tenant");
    stack
        .platform
        .provisioner()
        .handle(ProvisioningJob::ProvisionTenant { tenant_id: tenant.id }, &delivery(1, 5))
        .await
        .expect("provisioned");
    let report = UsageReport {
        report_id: "peak".into(),
        tenant_id: tenant.id,
        customer_count: 500,
        observed_at: last_period().start() + Duration::days(10),
        received_at: OffsetDateTime::now_utc(),
    };
    stack.platform.store.record_usage(&report).await.expect("report");
    tenant.id
}

/// The tenant's Stripe customer gets `method` as its default payment method (on the double,
/// as on Stripe).
async fn card(double: &Double, platform: &Platform, id: TenantId, method: &str) {
    let customer = platform.payments().customer(id, OffsetDateTime::now_utc()).await.expect("customer");
    let (status, updated) = double
        .post(&format!("/v1/customers/{customer}"), &[("invoice_settings[default_payment_method]", method)])
        .await;
    assert_eq!(status, 200, "{updated}");
}

async fn history(http: &reqwest::Client, base: &str, token: &str, invoice: &str) -> Value {
    let response = http
        .get(format!("{base}/v1/invoices/{invoice}/payments"))
        .bearer_auth(token)
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), 200);
    response.json().await.expect("json")
}

#[tokio::test]
async fn a_decline_retries_degrades_suspends_and_a_payment_brings_the_tenant_back() {
    let double = Double::for_new_key();
    let stack = TestStack::new(&[("DOTMAC_STRIPE_SECRET_KEY", double.key.as_str())]).await;
    let platform = &stack.platform;
    let webhook = serve_payments(platform).await;
    double.register_endpoint(&webhook).await;
    let base = webhook.trim_end_matches("/v1/webhooks/stripe").to_owned();
    let http = dotmac_tests::http_client();
    let token = stack.staff_token(&platform.keys).await;
    let id = provisioned_with_bundles(&stack).await;
    assert_eq!(tenant_task_arns(&stack, &tenant(platform, id).await).await.len(), 1, "its task runs");
    assert_eq!(license(&stack, id).await, ("current".to_owned(), vec!["ai".to_owned(), "crm".to_owned()]));

    // The first charge is declined: the dunning starts, the tenant is past_due at once and
    // its license says so (bundles kept).
    card(&double, platform, id, "pm_card_chargeDeclined").await;
    let invoice = finalized_invoice(platform, id).await;
    assert_eq!(charges(platform).await, 1);
    let dunning = platform.store.get_dunning(id, last_period()).await.expect("read").expect("a dunning");
    let started = dunning.started_at;
    assert_eq!(
        (dunning.status, dunning.step, dunning.standing),
        (DunningStatus::Open, 0, BillingStanding::PastDue)
    );
    assert_eq!(tenant(platform, id).await.billing_standing, BillingStanding::PastDue);
    assert!(provision_jobs(&stack).await.contains(&ProvisioningJob::IssueLicense { tenant_id: id }));
    assert_eq!(license(&stack, id).await, ("past_due".to_owned(), vec!["ai".to_owned(), "crm".to_owned()]));
    let seen = history(&http, &base, &token, &invoice).await;
    assert_eq!(seen["payment_status"], "failed", "{seen}");
    assert_eq!(
        (seen["dunning"]["status"].clone(), seen["dunning"]["standing"].clone()),
        (json!("open"), json!("past_due")),
        "{seen}"
    );

    // Day 2: nothing is due yet.
    dunning_at(platform, started + Duration::days(2)).await;
    assert_eq!(platform.store.get_dunning(id, last_period()).await.expect("read").expect("d").step, 0);
    assert_eq!(charges(platform).await, 0, "no retry before day 3");

    // Day 3: the first retry (attempt 2), declined; still past_due. The run delivered twice
    // makes the step once.
    dunning_at(platform, started + Duration::days(3)).await;
    dunning_at(platform, started + Duration::days(3)).await;
    let dunning = platform.store.get_dunning(id, last_period()).await.expect("read").expect("d");
    assert_eq!((dunning.step, dunning.standing, dunning.history.len()), (1, BillingStanding::PastDue, 2));
    assert_eq!(charges(platform).await, 1, "the retry, queued once");
    provision_jobs(&stack).await;

    // Day 5: the second retry, declined; restricted: the license drops the premium bundles.
    dunning_at(platform, started + Duration::days(5)).await;
    assert_eq!(tenant(platform, id).await.billing_standing, BillingStanding::Restricted);
    assert_eq!(charges(platform).await, 1);
    provision_jobs(&stack).await;
    assert_eq!(license(&stack, id).await, ("restricted".to_owned(), Vec::<String>::new()));
    assert_eq!(tenant(platform, id).await.bundles.len(), 2, "the bundles stay on the tenant");

    // Day 7: the last retry is queued and the tenant suspended for non-payment through the
    // lifecycle: its task stops, its data stays.
    dunning_at(platform, started + Duration::days(7)).await;
    let suspended = tenant(platform, id).await;
    assert_eq!(
        (suspended.status, suspended.suspended_for.clone()),
        (TenantStatus::Suspended, vec![SuspensionReason::NonPayment])
    );
    assert_eq!(suspended.billing_standing, BillingStanding::Suspended);
    // Its suspend job is lost: the task runs on until the reconcile (the fleet's 5-minute
    // pass, or the one tenant's, as here) stops it for the suspended record.
    let jobs =
        provision_jobs_losing(&stack, |job| matches!(job, ProvisioningJob::SuspendTenant { .. })).await;
    assert!(jobs.contains(&ProvisioningJob::SuspendTenant { tenant_id: id }), "{jobs:?}");
    assert_eq!(tenant_task_arns(&stack, &suspended).await.len(), 1, "the lost job stopped nothing");
    assert!(platform.provisioner().reconcile_tenant(id).await.expect("reconcile"), "a repair");
    assert!(tenant_task_arns(&stack, &suspended).await.is_empty(), "its task stopped");
    assert_eq!(tenant(platform, id).await.status, TenantStatus::Suspended);
    assert!(
        platform
            .store
            .dunnings_due(started + Duration::days(30))
            .await
            .expect("due")
            .iter()
            .all(|d| d.tenant_id != id),
        "no step left"
    );

    // The payment: the tenant's new card, and the day-7 retry succeeds. The dunning clears,
    // the tenant is current and active, its task runs and its license has its bundles back.
    card(&double, platform, id, "pm_card_visa").await;
    assert_eq!(charges(platform).await, 1);
    let paid = platform.store.get_invoice(id, last_period()).await.expect("read").expect("invoice");
    assert_eq!(paid.payment_status, Some(PaymentStatus::Paid));
    let back = tenant(platform, id).await;
    assert_eq!((back.status, back.billing_standing), (TenantStatus::Active, BillingStanding::Current));
    assert!(back.suspended_for.is_empty());
    let jobs = provision_jobs(&stack).await;
    assert!(
        jobs.iter().any(|j| matches!(j, ProvisioningJob::ResumeTenant { tenant_id, .. } if *tenant_id == id)),
        "{jobs:?}"
    );
    assert_eq!(tenant_task_arns(&stack, &tenant(platform, id).await).await.len(), 1, "its task runs again");
    assert_eq!(license(&stack, id).await, ("current".to_owned(), vec!["ai".to_owned(), "crm".to_owned()]));

    // The invoice's history over HTTP: four attempts (three declined), and every dunning step.
    let seen = history(&http, &base, &token, &invoice).await;
    assert_eq!(seen["payment_status"], "paid", "{seen}");
    let statuses: Vec<&str> =
        seen["items"].as_array().expect("items").iter().map(|p| p["status"].as_str().unwrap_or("")).collect();
    assert_eq!(statuses, ["failed", "failed", "failed", "succeeded"], "{seen}");
    let steps: Vec<(String, String)> = seen["dunning"]["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|e| {
            (e["kind"].as_str().unwrap_or("").to_owned(), e["standing"].as_str().unwrap_or("").to_owned())
        })
        .collect();
    let expected = [
        ("started", "past_due"),
        ("step", "past_due"),
        ("step", "restricted"),
        ("step", "suspended"),
        ("cleared", "current"),
    ];
    assert_eq!(steps, expected.map(|(k, s)| (k.to_owned(), s.to_owned())), "{seen}");
    assert_eq!(seen["dunning"]["status"], "cleared");

    // Every step is an event in the tenant's log (published to EventBridge from there).
    let events = platform
        .store
        .tenant_events(id, dotmac_store::EventOrder::OldestFirst, 100, None)
        .await
        .expect("events");
    let kinds: Vec<&str> = events.items.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "tenant.dunning_step").count(), 4, "{kinds:?}");
    assert!(
        kinds.contains(&"tenant.suspended")
            && kinds.contains(&"tenant.resumed")
            && kinds.contains(&"tenant.dunning_cleared"),
        "{kinds:?}"
    );
    // A later run, and the payment's redelivery, change nothing.
    let settled = tenant(platform, id).await.version;
    dunning_at(platform, started + Duration::days(40)).await;
    platform
        .payments()
        .follow_payment(id, last_period(), OffsetDateTime::now_utc())
        .await
        .expect("follow again");
    assert_eq!(tenant(platform, id).await.version, settled);
}

/// An active tenant (not provisioned: the lifecycle's record is what the race is about) whose
/// invoice was declined and whose dunning stands at its step before the last (restricted).
async fn restricted(double: &Double, platform: &Platform) -> (TenantId, OffsetDateTime) {
    let id = crate::payments::billed_tenant(platform, 500).await;
    card(double, platform, id, "pm_card_chargeDeclined").await;
    finalized_invoice(platform, id).await;
    charges(platform).await;
    let started =
        platform.store.get_dunning(id, last_period()).await.expect("read").expect("dunning").started_at;
    for day in [3, 5] {
        platform
            .payments()
            .dunning_step(id, last_period(), started + Duration::days(day))
            .await
            .expect("step");
        charges(platform).await;
    }
    assert_eq!(tenant(platform, id).await.billing_standing, BillingStanding::Restricted);
    (id, started)
}

#[tokio::test]
async fn a_late_payment_racing_the_suspending_step_ends_paid_and_active_whatever_the_order() {
    let double = Double::for_new_key();
    let stack = TestStack::new(&[("DOTMAC_STRIPE_SECRET_KEY", double.key.as_str())]).await;
    let platform = &stack.platform;
    let payments = platform.payments();
    let period = last_period();

    // 1. The payment is recorded (the invoice paid) but its dunning not cleared yet (the
    //    payment's follow-up has not run) when the last step runs: the step's transaction
    //    checks the invoice unpaid and refuses; nothing is suspended.
    let (id, started) = restricted(&double, platform).await;
    let attempt = platform.store.invoice_payments(id, period).await.expect("payments").len() as u32 + 1;
    let mut pending = platform.store.invoice_payments(id, period).await.expect("p").remove(0);
    pending.attempt = attempt;
    pending.id = dotmac_store::payment_id(id, period, attempt);
    pending.status = AttemptStatus::Pending;
    pending.failure_code = None;
    pending.failure_message = None;
    let pending = platform.store.begin_payment(&pending).await.expect("begun");
    let decision = dotmac_store::Decision::Succeeded { payment_intent: None };
    platform.store.decide_payment(&pending, &decision, None, OffsetDateTime::now_utc()).await.expect("paid");
    let stepped = payments.dunning_step(id, period, started + Duration::days(7)).await.expect("step");
    assert_eq!(stepped, dotmac_payments::Stepped::Nothing, "the invoice is paid: no step");
    assert_eq!(tenant(platform, id).await.status, TenantStatus::Active);
    payments.follow_payment(id, period, OffsetDateTime::now_utc()).await.expect("the follow-up");
    let after = tenant(platform, id).await;
    assert_eq!((after.status, after.billing_standing), (TenantStatus::Active, BillingStanding::Current));

    // 2. The step suspends first, the payment lands after: it resumes the tenant.
    let (id, started) = restricted(&double, platform).await;
    payments.dunning_step(id, period, started + Duration::days(7)).await.expect("step");
    assert_eq!(tenant(platform, id).await.status, TenantStatus::Suspended);
    card(&double, platform, id, "pm_card_visa").await;
    charges(platform).await;
    let after = tenant(platform, id).await;
    assert_eq!((after.status, after.billing_standing), (TenantStatus::Active, BillingStanding::Current));

    // 3. Both at once, several times over: whichever interleaving, paid and active.
    for _ in 0..3 {
        let (id, started) = restricted(&double, platform).await;
        card(&double, platform, id, "pm_card_visa").await;
        let attempt = platform.store.invoice_payments(id, period).await.expect("p").len() as u32 + 1;
        let (step, paid) = tokio::join!(
            payments.dunning_step(id, period, started + Duration::days(7)),
            payments.charge_invoice(id, period, attempt, OffsetDateTime::now_utc()),
        );
        step.expect("step");
        assert_eq!(paid.expect("charged"), dotmac_payments::Charged::Paid);
        let invoice = platform.store.get_invoice(id, period).await.expect("read").expect("invoice");
        assert_eq!(invoice.payment_status, Some(PaymentStatus::Paid));
        let after = tenant(platform, id).await;
        assert_eq!(
            (after.status, after.billing_standing, after.suspended_for.clone()),
            (TenantStatus::Active, BillingStanding::Current, vec![]),
            "{after:?}"
        );
    }

    // 4. Billing lifts only its own reason: a tenant an admin also suspended stays suspended
    //    (for admin) after its payment.
    let (id, started) = restricted(&double, platform).await;
    payments.dunning_step(id, period, started + Duration::days(7)).await.expect("step");
    platform
        .lifecycle()
        .suspend(
            dotmac_tenants::Actor::Caller(&dotmac_domain::Caller::new(
                "platform-admin",
                None,
                &[dotmac_domain::Role::PlatformAdmin],
            )),
            id,
            SuspensionReason::Admin,
        )
        .await
        .expect("admin suspension");
    card(&double, platform, id, "pm_card_visa").await;
    charges(platform).await;
    let after = tenant(platform, id).await;
    assert_eq!(
        (after.status, after.suspended_for.clone(), after.billing_standing),
        (TenantStatus::Suspended, vec![SuspensionReason::Admin], BillingStanding::Current)
    );
}
