//! The billing run and its invoices on the emulator: one invoice per tenant and period whatever
//! is repeated, redelivered, raced or crashed; gapless numbers under concurrent finalizers;
//! late reports as adjustments; the upcoming invoice; the HTTP routes end to end.
//!
//! Most tests run the worker by hand on a stack with no server (`TestStack`), taking the billing
//! queue's messages one by one: so a test decides exactly which job runs, twice, or never
//! finishes, as a crash or a redelivery would.
//!
//! Amounts in cents are written dollars_cents (250_00 is 250.00), so they read as invoices do.
#![allow(clippy::inconsistent_digit_grouping)]

use dotmac_billing::Period;
use dotmac_domain::{
    Caller, Email, NewTenant, PlanId, Role, Tenant, TenantId, TenantName, TenantSlug, TenantStatus,
};
use dotmac_platform::Platform;
use dotmac_queue::{BillingJob, Envelope, Outcome, ReceivedMessage, process_message};
use dotmac_store::{InvoiceFilter, InvoiceRecord, InvoiceStatus, UsageReport};
use dotmac_tests::{TestApp, TestStack};
use http::Method;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use time::{Duration, OffsetDateTime};

fn staff() -> Caller {
    Caller::new("staff-billing-test", None, &[Role::PlatformAdmin])
}

/// An active tenant on `plan`, written straight to the store (no container needed to bill it).
/// Onboarded at the start of the last period, so both that period and the current one bill it
/// for whole months, whatever today's date.
async fn active_tenant(platform: &Platform, plan: &str) -> TenantId {
    let slug = format!("isp-{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let mut tenant = Tenant::onboard(
        NewTenant {
            name: TenantName::parse("Billed ISP").expect("name"),
            slug: TenantSlug::parse(&slug).expect("slug"),
            plan: PlanId::parse(plan).expect("plan"),
            contact_email: Email::parse("ops@billed.example").expect("email"),
            partner_id: None,
        },
        last_period().start(),
    );
    tenant.status = TenantStatus::Active;
    platform.store.create_tenant(&tenant).await.expect("tenant");
    tenant.id
}

/// What full-month line amounts (minor units) come to for a tenant onboarded through the API
/// at `onboarded` (an RFC 3339 time) in the current period: billed by whole days from its
/// onboarding day, each line rounded once, half away from zero.
fn month_from_onboarding(full_month_lines: &[i64], onboarded: &Value) -> i64 {
    let onboarded = OffsetDateTime::parse(
        onboarded.as_str().expect("created_at"),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("an RFC 3339 time");
    let period = Period::containing(OffsetDateTime::now_utc());
    let days = (period.end() - period.start()).whole_days();
    let billed = (period.end() - onboarded.replace_time(time::Time::MIDNIGHT)).whole_days().min(days);
    full_month_lines.iter().map(|minor| (2 * minor * billed + days) / (2 * days)).sum()
}

async fn record(platform: &Platform, tenant: TenantId, id: &str, count: u64, at: OffsetDateTime) {
    let report = UsageReport {
        report_id: id.into(),
        tenant_id: tenant,
        customer_count: count,
        observed_at: at,
        received_at: OffsetDateTime::now_utc(),
    };
    platform.store.record_usage(&report).await.expect("report");
}

/// Takes every message the billing queue holds right now.
async fn take(platform: &Platform) -> Vec<ReceivedMessage> {
    let mut taken = Vec::new();
    loop {
        let batch = platform.billing_queue.receive(10, 0).await.expect("receive");
        if batch.is_empty() {
            return taken;
        }
        taken.extend(batch);
    }
}

/// Runs the worker on one message as the SQS adapter would, acknowledging it when done.
async fn handle(platform: &Platform, message: &ReceivedMessage, ack: bool) -> Outcome {
    let worker = platform.billing_worker();
    let outcome = process_message::<BillingJob, _>(
        &worker,
        &message.message_id,
        &message.body,
        message.receive_count,
        platform.config.billing.max_receive_count,
        0,
    )
    .await;
    if ack && outcome.acknowledges() {
        platform.billing_queue.ack(&message.receipt_handle).await.expect("ack");
    }
    outcome
}

/// Runs the worker until the billing queue is empty (fan-outs queue more work as they go).
async fn drain(platform: &Platform) -> usize {
    let mut handled = 0;
    loop {
        let messages = take(platform).await;
        if messages.is_empty() {
            return handled;
        }
        for message in &messages {
            let outcome = handle(platform, message, true).await;
            assert!(outcome.acknowledges(), "{outcome:?} for {}", message.body);
            handled += 1;
        }
    }
}

async fn invoices_of(platform: &Platform, period: Period) -> Vec<InvoiceRecord> {
    let filter = InvoiceFilter { status: None, period: Some(period) };
    let page = platform
        .store
        .fenced(dotmac_domain::Fence::Global)
        .list_invoices(&filter, 100, None)
        .await
        .expect("invoices");
    assert!(page.next_cursor.is_none(), "one page holds a test's invoices");
    page.items
}

/// The invoices without their payment status and time, which charging them moves
/// (`payments.rs`).
fn unpaid(mut invoices: Vec<InvoiceRecord>) -> Vec<InvoiceRecord> {
    for invoice in &mut invoices {
        invoice.payment_status = None;
        invoice.paid_at = None;
    }
    invoices
}

fn last_period() -> Period {
    Period::containing(OffsetDateTime::now_utc()).previous()
}

#[tokio::test]
async fn a_run_invoices_each_active_tenant_once_and_a_second_run_or_a_redelivery_changes_nothing() {
    let stack = TestStack::new(&[]).await;
    let platform = &stack.platform;
    let period = last_period();
    let mid = period.start() + Duration::days(10);
    // The seed's three example tenants, and one not yet active (never billed).
    let mut expected = Vec::new();
    for (plan, customers, cents) in
        [("usage", 500, 250_00), ("scaled", 1_200, 420_00), ("enterprise", 3_000, 999_00)]
    {
        let tenant = active_tenant(platform, plan).await;
        record(platform, tenant, "peak", customers, mid).await;
        expected.push((tenant, cents));
    }
    let mut pending = Tenant::onboard(
        NewTenant {
            name: TenantName::parse("Not Yet").expect("name"),
            slug: TenantSlug::parse("not-yet-live").expect("slug"),
            plan: PlanId::parse("usage").expect("plan"),
            contact_email: Email::parse("ops@notyet.example").expect("email"),
            partner_id: None,
        },
        OffsetDateTime::now_utc(),
    );
    pending.status = TenantStatus::Provisioning;
    platform.store.create_tenant(&pending).await.expect("pending tenant");

    let billing = platform.billing();
    let run = billing.open_run(&staff(), None, Vec::new(), OffsetDateTime::now_utc()).await.expect("run");
    assert_eq!(run.period, period, "the period just ended by default");
    assert!(drain(platform).await >= 4, "one fan-out and three invoices");
    let (done, failures) = billing.run(&staff(), &run.id).await.expect("run");
    assert!(done.fanned_out && failures.is_empty(), "{done:?} {failures:?}");
    assert_eq!((done.tenants_total, done.invoiced, done.failed), (3, 3, 0), "{done:?}");
    let invoices = invoices_of(platform, period).await;
    assert_eq!(invoices.len(), 3, "one invoice per active tenant: {invoices:?}");
    for (tenant, cents) in &expected {
        let invoice = invoices.iter().find(|i| i.tenant_id == *tenant).expect("its invoice");
        assert_eq!(invoice.content.total.minor, *cents, "{invoice:?}");
        assert_eq!((invoice.status, invoice.version, invoice.number), (InvoiceStatus::Draft, 1, None));
        assert_eq!(invoice.plan_charges[0].price_version, 1, "the invoice records its price version");
    }
    // The outbox holds the run's billing.cycle_started.
    let outbox = platform
        .store
        .client()
        .query()
        .table_name(platform.store.table())
        .key_condition_expression("PK = :pk")
        .expression_attribute_values(":pk", aws_sdk_dynamodb::types::AttributeValue::S("OUTBOX".into()))
        .send()
        .await
        .expect("outbox");
    let details: Vec<Value> = outbox
        .items()
        .iter()
        .filter_map(|item| item.get("detail").and_then(|d| d.as_s().ok()))
        .map(|d| serde_json::from_str(d).expect("json"))
        .collect();
    assert!(
        details.iter().any(|d| d["id"] == json!(run.id)
            && d["start"]
                == json!(
                    period.start().format(&time::format_description::well_known::Rfc3339).expect("time")
                )),
        "{details:?}"
    );

    // The same job again (a redelivery): the run counts nothing twice, the invoice stays.
    let job = BillingJob::InvoiceTenant {
        run_id: run.id.clone(),
        tenant_id: expected[0].0,
        period: period.to_string(),
        plan: PlanId::parse("usage").expect("plan"),
        partner_id: None,
    };
    platform.billing_queue.send(&Envelope::new(job)).await.expect("send");
    drain(platform).await;
    let (again, _) = billing.run(&staff(), &run.id).await.expect("run");
    assert_eq!((again.tenants_total, again.invoiced, again.failed), (3, 3, 0), "{again:?}");

    // A second run of the same period: its own counts, still one invoice per tenant, unchanged.
    let second =
        billing.open_run(&staff(), Some(period), Vec::new(), OffsetDateTime::now_utc()).await.expect("run");
    drain(platform).await;
    let (second, _) = billing.run(&staff(), &second.id).await.expect("run");
    assert_eq!((second.tenants_total, second.invoiced), (3, 3));
    let after = invoices_of(platform, period).await;
    assert_eq!(after, invoices, "nothing changed, not even a version");
}

#[tokio::test]
async fn two_runs_at_once_with_every_job_delivered_twice_make_one_invoice_each() {
    let stack = TestStack::new(&[]).await;
    let platform = &stack.platform;
    let period = last_period();
    let mut tenants = Vec::new();
    for i in 0..4u64 {
        let tenant = active_tenant(platform, "usage").await;
        record(platform, tenant, "r", 100 * (i + 1), period.start() + Duration::hours(5)).await;
        tenants.push(tenant);
    }
    let billing = platform.billing();
    let (now, caller) = (OffsetDateTime::now_utc(), staff());
    let (a, b) = tokio::join!(
        billing.open_run(&caller, Some(period), Vec::new(), now),
        billing.open_run(&caller, Some(period), Vec::new(), now)
    );
    let (a, b) = (a.expect("run a"), b.expect("run b"));
    // The two fan-outs, each twice and all at once.
    let fan_outs = take(platform).await;
    assert_eq!(fan_outs.len(), 2);
    let twice: Vec<_> = fan_outs.iter().chain(&fan_outs).collect();
    futures::future::join_all(twice.iter().map(|m| handle(platform, m, false))).await;
    for message in &fan_outs {
        platform.billing_queue.ack(&message.receipt_handle).await.expect("ack");
    }
    // Every invoice job (some queued twice by the racing fan-outs), each handled twice at once.
    let jobs = take(platform).await;
    assert!(jobs.len() >= 8, "at least one job per tenant and run: {}", jobs.len());
    let outcomes =
        futures::future::join_all(jobs.iter().chain(&jobs).map(|m| handle(platform, m, false))).await;
    assert!(outcomes.iter().all(Outcome::acknowledges), "{outcomes:?}");
    let invoices = invoices_of(platform, period).await;
    assert_eq!(invoices.len(), 4, "{invoices:?}");
    assert_eq!(
        invoices.iter().map(|i| i.tenant_id).collect::<BTreeSet<_>>(),
        tenants.iter().copied().collect()
    );
    for run in [a, b] {
        let (run, _) = billing.run(&staff(), &run.id).await.expect("run");
        assert_eq!((run.tenants_total, run.invoiced, run.failed), (4, 4, 0), "{run:?}");
    }
}

#[tokio::test]
async fn a_worker_killed_mid_run_resumes_with_no_gap_and_no_duplicate() {
    let stack = TestStack::new(&[]).await;
    let platform = &stack.platform;
    let period = last_period();
    for _ in 0..5 {
        let tenant = active_tenant(platform, "scaled").await;
        record(platform, tenant, "r", 1_200, period.start() + Duration::days(3)).await;
    }
    let billing = platform.billing();
    let run =
        billing.open_run(&staff(), Some(period), Vec::new(), OffsetDateTime::now_utc()).await.expect("run");
    let fan_out = take(platform).await;
    assert_eq!(fan_out.len(), 1);
    handle(platform, &fan_out[0], true).await;
    let jobs = take(platform).await;
    assert_eq!(jobs.len(), 5);
    // The worker finishes two jobs, a third is written but the process dies before SQS hears
    // of it, and the other two never start.
    handle(platform, &jobs[0], true).await;
    handle(platform, &jobs[1], true).await;
    handle(platform, &jobs[2], false).await;
    let (mid, _) = billing.run(&staff(), &run.id).await.expect("run");
    assert_eq!(mid.invoiced, 3, "{mid:?}");
    // After the crash the unacknowledged messages come back (visibility timeout, made
    // immediate here) and a new worker takes them.
    for message in &jobs[2..] {
        platform.billing_queue.retry_after(&message.receipt_handle, 0).await.expect("visible again");
    }
    drain(platform).await;
    let (done, _) = billing.run(&staff(), &run.id).await.expect("run");
    assert_eq!((done.tenants_total, done.invoiced, done.failed), (5, 5, 0), "{done:?}");
    let invoices = invoices_of(platform, period).await;
    assert_eq!(invoices.len(), 5);
    assert!(invoices.iter().all(|i| i.content.total.minor == 420_00 && i.version == 1), "{invoices:?}");
    // A fan-out delivered again after it finished adds nothing.
    let again = Envelope::new(BillingJob::FanOut { run_id: run.id.clone() });
    platform.billing_queue.send(&again).await.expect("send");
    drain(platform).await;
    let (after, _) = billing.run(&staff(), &run.id).await.expect("run");
    assert_eq!((after.tenants_total, after.invoiced), (5, 5));
}

#[tokio::test]
async fn concurrent_finalizers_number_invoices_without_gaps_or_repeats() {
    let stack = TestStack::new(&[]).await;
    let platform = &stack.platform;
    let period = last_period();
    let mut tenants = Vec::new();
    for _ in 0..6 {
        let tenant = active_tenant(platform, "usage").await;
        record(platform, tenant, "r", 700, period.start() + Duration::days(1)).await;
        tenants.push(tenant);
    }
    let billing = platform.billing();
    billing.open_run(&staff(), Some(period), Vec::new(), OffsetDateTime::now_utc()).await.expect("run");
    drain(platform).await;
    // Every invoice finalized by three finalizers at once.
    let now = OffsetDateTime::now_utc();
    let attempts = tenants.iter().flat_map(|t| [*t, *t, *t]).map(|t| billing.finalize(t, period, now));
    let finalized = futures::future::join_all(attempts).await;
    let numbers: BTreeSet<u64> =
        finalized.into_iter().map(|f| f.expect("finalized").number.expect("numbered")).collect();
    assert_eq!(numbers, (1..=6).collect::<BTreeSet<u64>>(), "one number each, no gap");
    let invoices = invoices_of(platform, period).await;
    assert!(invoices.iter().all(|i| i.status == InvoiceStatus::Finalized && i.finalized_at.is_some()));
    assert_eq!(invoices.iter().filter_map(|i| i.number).collect::<BTreeSet<_>>(), numbers);
    // The schedule finds nothing more, and a run after finalization changes nothing.
    assert_eq!(billing.finalize_due(now + Duration::days(40)).await.expect("due"), 0);
    billing.open_run(&staff(), Some(period), Vec::new(), now).await.expect("run");
    drain(platform).await;
    assert_eq!(
        unpaid(invoices_of(platform, period).await),
        unpaid(invoices),
        "a finalized invoice is never edited (its payment status moves: the payments tests)"
    );
}

#[tokio::test]
async fn drafts_are_finalized_by_the_schedule_only_once_their_grace_has_passed() {
    let stack = TestStack::new(&[("DOTMAC_BILLING_GRACE_SECONDS", "86400")]).await;
    let platform = &stack.platform;
    let period = last_period();
    let tenant = active_tenant(platform, "usage").await;
    record(platform, tenant, "r", 500, period.start() + Duration::days(1)).await;
    let billing = platform.billing();
    billing.open_run(&staff(), Some(period), Vec::new(), OffsetDateTime::now_utc()).await.expect("run");
    drain(platform).await;
    // Within the grace period a late report (still observed in the period) counts.
    record(platform, tenant, "late", 600, period.end() - Duration::hours(1)).await;
    assert_eq!(billing.finalize_due(period.end() + Duration::hours(23)).await.expect("due"), 0);
    assert_eq!(billing.finalize_due(period.end() + Duration::hours(25)).await.expect("due"), 1);
    let invoice = platform.store.get_invoice(tenant, period).await.expect("read").expect("invoice");
    assert_eq!((invoice.status, invoice.content.billable_customers), (InvoiceStatus::Finalized, 600));
    assert_eq!(invoice.content.total.minor, 250_00 + 40_00, "recomputed with the late report");
}

#[tokio::test]
async fn a_late_report_after_finalization_lands_as_an_adjustment_on_the_next_invoice() {
    let stack = TestStack::new(&[]).await;
    let platform = &stack.platform;
    let period = last_period();
    let current = period.next();
    let tenant = active_tenant(platform, "usage").await;
    record(platform, tenant, "before", 500, period.end() - Duration::hours(2)).await;
    let billing = platform.billing();
    let now = OffsetDateTime::now_utc();
    billing.open_run(&staff(), Some(period), Vec::new(), now).await.expect("run");
    drain(platform).await;
    let finalized = billing.finalize(tenant, period, now).await.expect("finalized");
    assert_eq!(finalized.content.total.minor, 250_00);
    // A report observed in the finalized period arrives late: 700 customers, not 500.
    record(platform, tenant, "late", 700, period.end() - Duration::hours(1)).await;
    billing.open_run(&staff(), Some(current), Vec::new(), now).await.expect("run of the current period");
    drain(platform).await;
    let untouched = platform.store.get_invoice(tenant, period).await.expect("read").expect("invoice");
    assert_eq!(
        unpaid(vec![untouched]),
        unpaid(vec![finalized]),
        "the finalized invoice is never edited (its payment status moves: the payments tests)"
    );
    let next = platform.store.get_invoice(tenant, current).await.expect("read").expect("the next invoice");
    let adjustment: Vec<_> = next
        .content
        .lines
        .iter()
        .filter(|l| matches!(l.kind, dotmac_billing::InvoiceLineKind::Adjustment { source_period } if source_period == period))
        .collect();
    assert_eq!(adjustment.len(), 1, "{next:?}");
    assert_eq!(adjustment[0].amount.minor, 80_00, "200 more customers at 0.40");
    // The current period's own charge: the 700 carried in.
    assert_eq!(next.content.total.minor, 250_00 + 80_00 + 80_00, "{next:?}");
    // Recomputed again, the adjustment is not counted twice.
    billing.open_run(&staff(), Some(current), Vec::new(), now).await.expect("again");
    drain(platform).await;
    let again = platform.store.get_invoice(tenant, current).await.expect("read").expect("invoice");
    assert_eq!(again.content, next.content);
    // And a negative one: a report lowering the finalized period's peak cannot (max keeps the
    // peak), so the re-rating rule itself is property-tested in shared/billing.
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339).expect("time")
}

#[tokio::test]
async fn through_the_api_a_run_is_read_its_invoices_listed_finalized_and_the_upcoming_one_follows_reports() {
    let app = TestApp::spawn().await;
    let admin = app.admin_token().await;
    let tenant = app.onboarded_tenant(&admin).await;
    app.wait_for_tenant(&admin, &tenant.to_string(), std::time::Duration::from_secs(60), |t| {
        t["status"] == "active"
    })
    .await;
    let other = app.onboarded_tenant(&admin).await;
    let tenant_admin = app.user_token("admin@billed.example", tenant, Role::TenantAdmin).await;
    let other_admin = app.user_token("admin@other.example", other, Role::TenantAdmin).await;

    // A report now: the upcoming invoice counts it at once.
    let report = json!({ "tenant_id": tenant, "report_id": "now-1", "customer_count": 1_200, "observed_at": rfc3339(OffsetDateTime::now_utc() - Duration::seconds(5)) });
    let (status, body) = app.send(Method::POST, "/v1/usage", Some(&admin), Some(&report)).await;
    assert_eq!(status, 202, "{body}");
    let upcoming = format!("/v1/tenants/{tenant}/invoices/upcoming");
    let (status, body) = app.get_json(&tenant_admin, &upcoming).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["status"].clone(), body["billable_customers"].clone()),
        (json!("upcoming"), json!(1_200))
    );
    // 500 × 0.50 + 700 × 0.40 a month, from the tenant's onboarding day.
    let (_, profile) = app.get_json(&admin, &format!("/v1/tenants/{tenant}")).await;
    let month_so_far = month_from_onboarding(&[250_00, 280_00], &profile["created_at"]);
    assert_eq!(body["total"]["minor"], json!(month_so_far), "{body}");
    let (status, _) = app.get_json(&other_admin, &upcoming).await;
    assert_eq!(status, 403, "another tenant's admin never sees it");

    // A run of the current period, as an operator checking the month so far.
    let period = Period::containing(OffsetDateTime::now_utc()).to_string();
    let (status, run) = app
        .send(
            Method::POST,
            "/v1/billing/runs",
            Some(&admin),
            Some(&json!({ "period": period, "tenant_ids": [tenant] })),
        )
        .await;
    assert_eq!(status, 202, "{run}");
    let (status, _) = app.send(Method::POST, "/v1/billing/runs", Some(&tenant_admin), Some(&json!({}))).await;
    assert_eq!(status, 403, "only platform staff run billing");
    let run_path = format!("/v1/billing/runs/{}", run["id"].as_str().expect("id"));
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    let run = loop {
        let (status, run) = app.get_json(&admin, &run_path).await;
        assert_eq!(status, 200, "{run}");
        if run["invoiced"] == json!(1) {
            break run;
        }
        assert!(tokio::time::Instant::now() < deadline, "the run never invoiced the tenant: {run}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!((run["tenants_total"].clone(), run["failed"].clone()), (json!(1), json!(0)), "{run}");

    let (status, list) =
        app.get_json(&tenant_admin, &format!("/v1/invoices?tenant_id={tenant}&status=draft")).await;
    assert_eq!(status, 200, "{list}");
    let items = list["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{list}");
    let id = items[0]["id"].as_str().expect("id").to_owned();
    let (status, _) = app.get_json(&other_admin, &format!("/v1/invoices?tenant_id={tenant}")).await;
    assert_eq!(status, 403);
    let (status, invoice) = app.get_json(&tenant_admin, &format!("/v1/invoices/{id}")).await;
    assert_eq!(status, 200, "{invoice}");
    assert_eq!(invoice["lines"].as_array().map(Vec::len), Some(2), "two tiers: {invoice}");
    assert_eq!(invoice["price_versions"], json!([{ "plan_id": "usage", "version": 1 }]));
    let (status, _) = app.get_json(&other_admin, &format!("/v1/invoices/{id}")).await;
    assert!(matches!(status, 403 | 404), "{status}");

    // Finalized early by a platform admin: numbered; again, the same answer.
    let finalize = format!("/v1/invoices/{id}/finalize");
    let (status, _) = app.send(Method::POST, &finalize, Some(&tenant_admin), None).await;
    assert_eq!(status, 403);
    let (status, first) = app.send(Method::POST, &finalize, Some(&admin), None).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!((first["status"].clone(), first["number"].is_u64()), (json!("finalized"), true), "{first}");
    let (_, second) = app.send(Method::POST, &finalize, Some(&admin), None).await;
    assert_eq!(second["number"], first["number"]);
    let (status, all) = app.get_json(&admin, &format!("/v1/invoices?status=finalized&period={period}")).await;
    assert_eq!(status, 200, "{all}");
    assert!(all["items"].as_array().expect("items").iter().any(|i| i["id"] == json!(id)), "{all}");
    app.shutdown().await;
}

/// The sample events in `events/` run the way Lambda runs them: the schedule's event opens the
/// period's run once however often it fires, and the SQS record of a billing job invoices its
/// tenant and counts it on its run, once, redelivered or not.
#[tokio::test]
async fn the_sample_schedule_and_billing_job_events_run_as_lambda_runs_them() {
    let stack = TestStack::new(&[]).await;
    let platform = &stack.platform;
    // The schedule's event carries nothing the run needs: it bills the period just ended.
    let schedule: Value =
        serde_json::from_str(include_str!("../../events/schedule-billing-cycle.json")).expect("event");
    assert_eq!(schedule["source"], "aws.scheduler");
    platform.run_schedule(dotmac_platform::Handler::BillingCycle).await.expect("first firing");
    platform.run_schedule(dotmac_platform::Handler::BillingCycle).await.expect("second firing");
    let scheduled = format!("scheduled-{}", last_period());
    let (run, _) = platform.billing().run(&staff(), &scheduled).await.expect("the scheduled run");
    assert_eq!(run.period, last_period());
    // A firing that finds its run not fanned out yet queues the fan-out again (a crash after
    // opening is resumed so); once fanned out, a firing queues nothing.
    drain(platform).await;
    let (run, _) = platform.billing().run(&staff(), &scheduled).await.expect("the scheduled run");
    assert!(run.fanned_out && run.tenants_total == 0, "{run:?}");
    platform.run_schedule(dotmac_platform::Handler::BillingCycle).await.expect("a later firing");
    assert!(take(platform).await.is_empty(), "nothing queued by a firing after the fan-out");

    // The sample job names tenant ...bb and run scheduled-2026-11: both made to exist here.
    let event: aws_lambda_events::event::sqs::SqsEvent =
        serde_json::from_str(include_str!("../../events/sqs-billing-job.json")).expect("event");
    let body: Value = serde_json::from_str(event.records[0].body.as_deref().expect("body")).expect("job");
    let tenant_id = TenantId::parse(body["job"]["tenant_id"].as_str().expect("tenant")).expect("id");
    let period = Period::parse(body["job"]["period"].as_str().expect("period")).expect("period");
    let mut tenant = Tenant::onboard(
        NewTenant {
            name: TenantName::parse("Sample ISP").expect("name"),
            slug: TenantSlug::parse("sample-isp").expect("slug"),
            plan: PlanId::parse("usage").expect("plan"),
            contact_email: Email::parse("ops@sample.example").expect("email"),
            partner_id: None,
        },
        OffsetDateTime::now_utc(),
    );
    (tenant.id, tenant.status) = (tenant_id, TenantStatus::Active);
    platform.store.create_tenant(&tenant).await.expect("tenant");
    let sample_run = dotmac_store::BillingRun {
        id: body["job"]["run_id"].as_str().expect("run").to_owned(),
        period,
        tenant_ids: Vec::new(),
        requested_by: "schedule".into(),
        created_at: OffsetDateTime::now_utc(),
        cursor: None,
        fanned_out: true,
        tenants_total: 1,
        invoiced: 0,
        failed: 0,
    };
    let outbox = dotmac_store::OutboxEvent {
        event_id: uuid::Uuid::now_v7().to_string(),
        detail_type: "billing.cycle_started".into(),
        source: "dotmac.billing".into(),
        detail: "{}".into(),
        created_at: OffsetDateTime::now_utc(),
        published: false,
    };
    // The sample's run may be this month's scheduled run itself (its period just ended).
    platform.store.open_billing_run(&sample_run, &outbox).await.expect("run");
    let (before, _) = platform.billing().run(&staff(), &sample_run.id).await.expect("run");
    record(platform, tenant_id, "sample", 500, period.start() + Duration::days(2)).await;
    let worker = platform.billing_worker();
    for _ in 0..2 {
        let answer = dotmac_queue::lambda::handle_sqs_event(&worker, event.clone(), 5).await;
        assert!(answer.batch_item_failures.is_empty(), "{:?}", answer.batch_item_failures);
    }
    let invoice = platform.store.get_invoice(tenant_id, period).await.expect("read").expect("invoice");
    assert_eq!(invoice.content.total.minor, 250_00);
    let (run, _) = platform.billing().run(&staff(), &sample_run.id).await.expect("run");
    assert_eq!((run.invoiced - before.invoiced, run.failed), (1, 0), "delivered twice, counted once");

    // A job naming a run that does not exist is acknowledged and dropped, never retried.
    let stray = BillingJob::InvoiceTenant {
        run_id: "no-such-run".into(),
        tenant_id,
        period: period.to_string(),
        plan: PlanId::parse("usage").expect("plan"),
        partner_id: None,
    };
    platform.billing_queue.send(&Envelope::new(stray)).await.expect("send");
    let messages = take(platform).await;
    assert_eq!(messages.len(), 1);
    let outcome = handle(platform, &messages[0], true).await;
    assert!(matches!(outcome, Outcome::Discarded(_)), "{outcome:?}");
}

/// `billing.cycle_started` read back from EventBridge: a rule on the stack's bus sends the
/// platform's events to an SQS queue (the tenant-events test's helpers), a run is opened
/// through the API, and the dev server's publisher loop takes the event out of the outbox.
#[tokio::test]
async fn opening_a_run_publishes_billing_cycle_started_to_eventbridge_in_the_versioned_envelope() {
    let app = TestApp::spawn().await;
    let (sqs, url) = crate::lifecycle::events_queue(&app.stack).await;
    let admin = app.admin_token().await;
    let (status, run) = app.send(Method::POST, "/v1/billing/runs", Some(&admin), Some(&json!({}))).await;
    assert_eq!(status, 202, "{run}");
    let run_id = run["id"].as_str().expect("the run's id").to_owned();
    let period = last_period();
    assert_eq!(run["period"], json!(period.to_string()), "the default: the period just ended");

    let ours = |all: &[Value]| {
        all.iter()
            .filter(|e| e["type"] == "billing.cycle_started" && e["data"]["id"] == json!(run_id))
            .cloned()
            .collect::<Vec<_>>()
    };
    let all = crate::lifecycle::received(&sqs, &url, |all| !ours(all).is_empty()).await;
    let events = ours(&all);
    assert_eq!(events.len(), 1, "published once: {all:?}");
    let event = &events[0];
    assert_eq!(event["version"], json!(1), "{event}");
    assert!(event["id"].as_str().is_some_and(|id| uuid::Uuid::parse_str(id).is_ok()), "{event}");
    let occurred_at = event["occurred_at"].as_str().expect("occurred_at");
    OffsetDateTime::parse(occurred_at, &time::format_description::well_known::Rfc3339).expect("RFC 3339");
    assert!(event.get("tenant_id").is_none(), "a platform event names no tenant: {event}");
    // The seed's event: id, start, end and customer_count (not known when a run opens: null;
    // the run's counters have the figures).
    assert_eq!(
        event["data"],
        json!({
            "id": run_id,
            "period": period.to_string(),
            "start": rfc3339(period.start()),
            "end": rfc3339(period.end()),
            "customer_count": null,
        }),
        "{event}"
    );
    // Marked published: it does not wait in the outbox any more.
    let pending = app.stack.platform.store.unpublished_platform_events(200).await.expect("outbox");
    assert!(pending.iter().all(|e| e.event_id != event["id"].as_str().unwrap_or_default()), "{pending:?}");
    app.shutdown().await;
}

/// `GET /v1/invoices/{id}/html`: the invoice a run wrote, as a page its readers can print,
/// with the figures of the JSON answer; refused to another tenant's admin as the JSON is.
#[tokio::test]
async fn an_invoice_prints_as_an_html_page_for_its_readers_only() {
    let app = TestApp::spawn().await;
    let admin = app.admin_token().await;
    let tenant = app.onboarded_tenant(&admin).await;
    app.wait_for_tenant(&admin, &tenant.to_string(), std::time::Duration::from_secs(60), |t| {
        t["status"] == "active"
    })
    .await;
    let other = app.onboarded_tenant(&admin).await;
    let tenant_admin = app.user_token("admin@printed.example", tenant, Role::TenantAdmin).await;
    let other_admin = app.user_token("admin@elsewhere.example", other, Role::TenantAdmin).await;
    let report = json!({ "tenant_id": tenant, "report_id": "print-1", "customer_count": 1_200, "observed_at": rfc3339(OffsetDateTime::now_utc() - Duration::seconds(5)) });
    let (status, body) = app.send(Method::POST, "/v1/usage", Some(&admin), Some(&report)).await;
    assert_eq!(status, 202, "{body}");
    let period = Period::containing(OffsetDateTime::now_utc());
    let body = json!({ "period": period.to_string(), "tenant_ids": [tenant] });
    let (status, run) = app.send(Method::POST, "/v1/billing/runs", Some(&admin), Some(&body)).await;
    assert_eq!(status, 202, "{run}");
    let run_path = format!("/v1/billing/runs/{}", run["id"].as_str().expect("id"));
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while app.get_json(&admin, &run_path).await.1["invoiced"] != json!(1) {
        assert!(tokio::time::Instant::now() < deadline, "the run never invoiced the tenant");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let id = dotmac_store::invoice_id(tenant, period);
    let (status, invoice) = app.get_json(&tenant_admin, &format!("/v1/invoices/{id}")).await;
    assert_eq!(status, 200, "{invoice}");

    let page = app.exchange(Method::GET, &format!("/v1/invoices/{id}/html"), Some(&tenant_admin), None).await;
    assert_eq!(page.status, 200, "{}", page.text);
    let content_type = page.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    assert!(page.headers.contains_key("content-security-policy"), "{:?}", page.headers);
    assert!(page.text.starts_with("<!doctype html>"), "{}", page.text);
    let total = format!(
        "{} {}",
        invoice["total"]["amount"].as_str().expect("total"),
        invoice["total"]["currency"].as_str().expect("currency")
    );
    let (_, profile) = app.get_json(&admin, &format!("/v1/tenants/{tenant}")).await;
    let month_so_far = month_from_onboarding(&[250_00, 280_00], &profile["created_at"]);
    assert_eq!(invoice["total"]["minor"], json!(month_so_far), "{invoice}");
    assert!(page.text.contains(&format!("<td class=\"n\">{total}</td></tr></tfoot>")), "{}", page.text);
    for line in invoice["lines"].as_array().expect("lines") {
        let description = line["description"].as_str().expect("description");
        assert!(page.text.contains(&format!("<td>{description}</td>")), "{description}: {}", page.text);
    }
    assert!(page.text.contains(&id), "{}", page.text);

    let refused =
        app.exchange(Method::GET, &format!("/v1/invoices/{id}/html"), Some(&other_admin), None).await;
    assert!(matches!(refused.status, 403 | 404), "{refused:?}");
    assert!(refused.json["error"]["code"].is_string(), "an error is the JSON envelope: {refused:?}");
    assert!(!refused.text.contains(&total), "{refused:?}");
    let anonymous = app.exchange(Method::GET, &format!("/v1/invoices/{id}/html"), None, None).await;
    assert_eq!(anonymous.status, 401, "{anonymous:?}");
    app.shutdown().await;
}
