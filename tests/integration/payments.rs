//! Charging finalized invoices through Stripe, end to end over HTTP: the emulator for AWS and
//! the project's Stripe double (`local/stripe_double.py`, started by `local/stack.sh`) for
//! Stripe, which async-stripe talks to as it would to Stripe. No Stripe trait is mocked.
//!
//! Every test uses a secret key of its own, and the double keeps each key's objects apart (a
//! Stripe account per key), so its read-back (`/_double/summary`) counts only this test's
//! customers, charges and webhook deliveries.
#![allow(clippy::inconsistent_digit_grouping)]

use dotmac_billing::Period;
use dotmac_domain::{Email, NewTenant, PlanId, Tenant, TenantId, TenantName, TenantSlug, TenantStatus};
use dotmac_platform::{Handler, Platform};
use dotmac_queue::{BillingJob, Envelope, ReceivedMessage, process_message};
use dotmac_store::{AttemptStatus, Payment, PaymentStatus, UsageReport, invoice_id, payment_id};
use dotmac_tests::{TestApp, TestStack};
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;
use time::OffsetDateTime;

/// The Stripe double as one key (one account) sees it.
pub(crate) struct Double {
    base: String,
    pub(crate) key: String,
    http: reqwest::Client,
}

impl Double {
    pub(crate) fn for_new_key() -> Double {
        let base = std::env::var("DOTMAC_STRIPE_API_BASE")
            .ok()
            .filter(|v| !v.is_empty())
            .expect("DOTMAC_STRIPE_API_BASE is not set: run through `local/stack.sh with-emulator` (it starts the Stripe double)");
        let key = format!("sk_test_{}", uuid::Uuid::new_v4().simple());
        Double { base, key, http: dotmac_tests::http_client() }
    }

    pub(crate) async fn post(&self, path: &str, form: &[(&str, &str)]) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .form(form)
            .send()
            .await
            .expect("the Stripe double answers");
        let status = response.status().as_u16();
        (status, response.json().await.expect("json"))
    }

    /// A local server charging through a fresh key of the double, its webhook endpoint
    /// registered with that key's account.
    pub(crate) async fn serving() -> (Double, TestApp) {
        let double = Double::for_new_key();
        let app = TestApp::spawn_with(&[("DOTMAC_STRIPE_SECRET_KEY", double.key.as_str())]).await;
        double.register_endpoint(&app.url("/v1/webhooks/stripe")).await;
        (double, app)
    }

    /// A webhook endpoint of this key's account, as `POST /v1/webhook_endpoints` on Stripe.
    pub(crate) async fn register_endpoint(&self, url: &str) {
        let (status, endpoint) =
            self.post("/v1/webhook_endpoints", &[("url", url), ("enabled_events[0]", "*")]).await;
        assert_eq!(status, 200, "{endpoint}");
    }

    pub(crate) async fn summary(&self) -> Value {
        let response = self
            .http
            .get(format!("{}/_double/summary", self.base))
            .bearer_auth(&self.key)
            .send()
            .await
            .expect("summary");
        response.json().await.expect("json")
    }

    /// Waits until the double has delivered an event of `kind` and our endpoint answered 2xx,
    /// and returns the event's id.
    async fn delivered(&self, kind: &str, times: usize) -> String {
        let summary = wait_until(&format!("{times} accepted {kind} deliveries"), || async {
            let summary = self.summary().await;
            let accepted = summary["deliveries"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|d| {
                    d["type"] == kind && d["status"].as_u64().is_some_and(|s| (200..300).contains(&s))
                })
                .count();
            (accepted >= times).then_some(summary)
        })
        .await;
        let deliveries = summary["deliveries"].as_array().expect("deliveries");
        let refused: Vec<_> = deliveries.iter().filter(|d| d["status"] != 200).collect();
        assert!(refused.is_empty(), "every delivery was accepted: {refused:?}");
        deliveries
            .iter()
            .find(|d| d["type"] == kind)
            .and_then(|d| d["event"].as_str())
            .expect("event id")
            .to_owned()
    }
}

/// Polls `probe` until it answers `Some`, for at most 30 s (then fails, naming `what`).
pub(crate) async fn wait_until<T, F, Fut>(what: &str, probe: F) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(tokio::time::Instant::now() < deadline, "never saw {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// An active tenant on `plan` with `customers` reported mid last period (the usage plan:
/// 500 customers are 250.00).
pub(crate) async fn billed_tenant(platform: &Platform, customers: u64) -> TenantId {
    billed_tenant_of(platform, customers, None).await
}

/// `billed_tenant`, brought by `partner` when given.
async fn billed_tenant_of(
    platform: &Platform,
    customers: u64,
    partner: Option<dotmac_domain::PartnerId>,
) -> TenantId {
    let slug = format!("pay-{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let mut tenant = Tenant::onboard(
        NewTenant {
            name: TenantName::parse("Paying ISP").expect("name"),
            slug: TenantSlug::parse(&slug).expect("slug"),
            plan: PlanId::parse("usage").expect("plan"),
            contact_email: Email::parse("ops@paying.example").expect("email"),
            partner_id: partner,
        },
        OffsetDateTime::now_utc(),
    );
    tenant.status = TenantStatus::Active;
    platform.store.create_tenant(&tenant).await.expect("tenant");
    let report = UsageReport {
        report_id: "peak".into(),
        tenant_id: tenant.id,
        customer_count: customers,
        observed_at: last_period().start() + time::Duration::days(10),
        received_at: OffsetDateTime::now_utc(),
    };
    platform.store.record_usage(&report).await.expect("report");
    tenant.id
}

pub(crate) fn last_period() -> Period {
    Period::containing(OffsetDateTime::now_utc()).previous()
}

/// Computes and finalizes the tenant's invoice of last period (no run: the use case directly).
pub(crate) async fn finalized_invoice(platform: &Platform, tenant: TenantId) -> String {
    let billing = platform.billing();
    let period = last_period();
    billing
        .invoice_tenant(
            None,
            tenant,
            None,
            &PlanId::parse("usage").expect("plan"),
            period,
            OffsetDateTime::now_utc(),
        )
        .await
        .expect("invoiced");
    let invoice = billing.finalize(tenant, period, OffsetDateTime::now_utc()).await.expect("finalized");
    assert_eq!(invoice.payment_status, Some(PaymentStatus::Open));
    invoice.id
}

/// Every message the billing queue holds now.
pub(crate) async fn take(platform: &Platform) -> Vec<ReceivedMessage> {
    let mut taken = Vec::new();
    loop {
        let batch = platform.billing_queue.receive(10, 0).await.expect("receive");
        if batch.is_empty() {
            return taken;
        }
        taken.extend(batch);
    }
}

/// Runs the billing worker on one message as the SQS adapter does (not acknowledged: a test
/// may deliver it again).
pub(crate) async fn run(platform: &Platform, message: &ReceivedMessage) {
    let outcome = process_message::<BillingJob, _>(
        &platform.billing_worker(),
        &message.message_id,
        &message.body,
        message.receive_count,
        platform.config.billing.max_receive_count,
        0,
    )
    .await;
    assert!(outcome.acknowledges(), "{outcome:?} for {}", message.body);
}

pub(crate) fn charge_jobs(messages: &[ReceivedMessage]) -> Vec<&ReceivedMessage> {
    messages
        .iter()
        .filter(|m| {
            serde_json::from_str::<Envelope<BillingJob>>(&m.body)
                .is_ok_and(|e| matches!(e.job, BillingJob::ChargeInvoice { .. }))
        })
        .collect()
}

async fn payments_of(platform: &Platform, tenant: TenantId) -> Vec<Payment> {
    platform.store.invoice_payments(tenant, last_period()).await.expect("payments")
}

/// Serves the payments function's routes (the webhook) of `platform` on a free port, as the
/// Lambda would, without any worker: the test decides which jobs run.
pub(crate) async fn serve_payments(platform: &Platform) -> String {
    let router = platform.router(Handler::Payments).expect("payments routes");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, router).await.expect("serves") });
    format!("{address}/v1/webhooks/stripe")
}

fn webhook_secret(platform: &Platform) -> String {
    platform.config.stripe.webhook_secret.clone().expect("the stack sets DOTMAC_STRIPE_WEBHOOK_SECRET")
}

async fn post_webhook(
    http: &reqwest::Client,
    url: &str,
    signature: Option<&str>,
    body: &str,
) -> (u16, Value) {
    let mut request = http.post(url).header("content-type", "application/json").body(body.to_owned());
    if let Some(signature) = signature {
        request = request.header("stripe-signature", signature);
    }
    let response = request.send().await.expect("webhook answered");
    let status = response.status().as_u16();
    (status, response.json().await.expect("json"))
}

/// Last period's invoice of `tenant`, billed by a run, finalized and paid, all through the
/// API (the run's worker and the charge are the server's): its id and the finalized invoice.
async fn paid_over_http(app: &TestApp, token: &str, tenant: TenantId) -> (String, Value) {
    let period = last_period();
    let id = invoice_id(tenant, period);
    let (status, run) = app
        .send(
            http::Method::POST,
            "/v1/billing/runs",
            Some(token),
            Some(&json!({"period": period.to_string(), "tenant_ids": [tenant]})),
        )
        .await;
    assert_eq!(status, 202, "{run}");
    wait_until("the draft", || async {
        let (status, _) = app.get_json(token, &format!("/v1/invoices/{id}")).await;
        (status == 200).then_some(())
    })
    .await;
    let (status, invoice) =
        app.send(http::Method::POST, &format!("/v1/invoices/{id}/finalize"), Some(token), None).await;
    assert_eq!(status, 200, "{invoice}");
    wait_until("the invoice paid", || async {
        let (status, payments) = app.get_json(token, &format!("/v1/invoices/{id}/payments")).await;
        assert_eq!(status, 200, "{payments}");
        (payments["payment_status"] == "paid").then_some(())
    })
    .await;
    (id, invoice)
}

#[tokio::test]
async fn a_finalized_invoice_is_charged_and_paid_end_to_end_over_http() {
    let (double, app) = Double::serving().await;
    let platform = &app.stack.platform;
    let tenant = billed_tenant(platform, 500).await;
    let token = app.admin_token().await;
    let period = last_period();
    let id = invoice_id(tenant, period);

    let (_, invoice) = paid_over_http(&app, &token, tenant).await;
    assert_eq!(invoice["total"]["minor"], 250_00);
    let (_, paid) = app.get_json(&token, &format!("/v1/invoices/{id}/payments")).await;
    let items = paid["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{paid}");
    assert_eq!(items[0]["id"], payment_id(tenant, period, 1));
    assert_eq!(items[0]["status"], "succeeded");
    assert_eq!(items[0]["amount"]["minor"], 250_00);
    assert!(items[0]["stripe_payment_intent_id"].as_str().is_some_and(|pi| pi.starts_with("pi_")));
    assert!(items[0]["processed_at"].is_string());
    // The invoice itself says so.
    let (status, invoice) = app.get_json(&token, &format!("/v1/invoices/{id}")).await;
    assert_eq!(status, 200, "{invoice}");
    assert_eq!((invoice["payment_status"].as_str(), invoice["paid_at"].is_string()), (Some("paid"), true));

    // The double signed and delivered payment_intent.succeeded to the server, which took it.
    let event = double.delivered("payment_intent.succeeded", 1).await;
    let recorded = wait_until("the event recorded", || async {
        platform.store.stripe_event(&event).await.expect("read")
    })
    .await;
    assert!(["applied", "unchanged"].contains(&recorded.outcome.as_str()), "{recorded:?}");
    let summary = double.summary().await;
    assert_eq!(
        (summary["customers"].as_u64(), summary["payment_intents"].as_u64()),
        (Some(1), Some(1)),
        "{summary}"
    );
    assert_eq!(summary["succeeded"], 1);
    // `invoice.paid` went into the platform outbox, once.
    assert!(platform.store.stripe_customer(tenant).await.expect("read").is_some());
    app.shutdown().await;
}

#[tokio::test]
async fn a_charge_runs_once_whatever_is_repeated_and_the_webhook_decides_after_a_crash() {
    let double = Double::for_new_key();
    let stack = TestStack::new(&[("DOTMAC_STRIPE_SECRET_KEY", double.key.as_str())]).await;
    let platform = &stack.platform;
    let endpoint = serve_payments(platform).await;
    double.register_endpoint(&endpoint).await;

    // 1. The same ChargeInvoice delivered twice (and a sweep queuing a third copy): one
    //    customer, one payment intent, one payment, the invoice paid.
    let tenant = billed_tenant(platform, 500).await;
    finalized_invoice(platform, tenant).await;
    let queued = take(platform).await;
    let charges = charge_jobs(&queued);
    assert_eq!(charges.len(), 1, "the finalization queued its charge");
    run(platform, charges[0]).await;
    run(platform, charges[0]).await;
    assert_eq!(platform.billing().queue_due_charges().await.expect("sweep"), 0, "nothing is due once paid");
    let payments = payments_of(platform, tenant).await;
    assert_eq!(payments.len(), 1);
    assert_eq!(payments[0].status, AttemptStatus::Succeeded);
    let invoice = platform.store.get_invoice(tenant, last_period()).await.expect("read").expect("invoice");
    assert_eq!(invoice.payment_status, Some(PaymentStatus::Paid));
    let event = double.delivered("payment_intent.succeeded", 1).await;
    // The same webhook again (Stripe redelivers): a duplicate, nothing moves.
    let (status, _) = double.post(&format!("/_double/events/{event}/resend"), &[]).await;
    assert_eq!(status, 200);
    double.delivered("payment_intent.succeeded", 2).await;
    assert_eq!(payments_of(platform, tenant).await, payments, "a redelivered webhook changes nothing");

    // A late `payment_failed` about the same intent (out of order) never un-pays it.
    let secret = webhook_secret(platform);
    let intent = payments[0].stripe_payment_intent_id.clone().expect("intent");
    let late = json!({
        "id": format!("evt_late_{}", uuid::Uuid::new_v4().simple()), "object": "event", "type": "payment_intent.payment_failed",
        "created": OffsetDateTime::now_utc().unix_timestamp(),
        "data": {"object": {"id": intent, "object": "payment_intent", "amount": 250_00, "currency": "usd",
            "metadata": {"payment_id": payments[0].id}, "status": "requires_payment_method",
            "last_payment_error": {"type": "card_error", "code": "card_declined", "message": "declined"}}}
    })
    .to_string();
    let signature = dotmac_stripe::sign(&secret, OffsetDateTime::now_utc().unix_timestamp(), late.as_bytes());
    let http = dotmac_tests::http_client();
    let (status, answer) = post_webhook(&http, &endpoint, Some(&signature), &late).await;
    assert_eq!((status, answer["outcome"].as_str()), (200, Some("unchanged")), "{answer}");
    let invoice = platform.store.get_invoice(tenant, last_period()).await.expect("read").expect("invoice");
    assert_eq!(invoice.payment_status, Some(PaymentStatus::Paid));
    assert_eq!(payments_of(platform, tenant).await[0].status, AttemptStatus::Succeeded);

    // 2. A crash after Stripe charged and before our answer was written: the attempt is
    //    pending, Stripe has the charge. The webhook decides it; the retried job then gets
    //    Stripe's stored answer for its idempotency key: still one payment intent.
    let second = billed_tenant(platform, 500).await;
    finalized_invoice(platform, second).await;
    let queued = take(platform).await;
    let payments_uc = platform.payments();
    let customer = payments_uc.customer(second, OffsetDateTime::now_utc()).await.expect("customer");
    let period = last_period();
    let pending = Payment {
        id: payment_id(second, period, 1),
        invoice_id: invoice_id(second, period),
        tenant_id: second,
        period,
        attempt: 1,
        amount: dotmac_billing::Money::new(250_00, dotmac_billing::Currency::USD),
        status: AttemptStatus::Pending,
        stripe_customer_id: customer.clone(),
        stripe_payment_method_id: Some("pm_card_visa".into()),
        stripe_payment_intent_id: None,
        failure_code: None,
        failure_message: None,
        created_at: OffsetDateTime::now_utc(),
        processed_at: None,
        decided_by_event: None,
        version: 1,
    };
    platform.store.begin_payment(&pending).await.expect("pending");
    let stripe = platform.stripe.clone().expect("a Stripe client");
    let metadata = std::collections::HashMap::from([
        ("payment_id".to_owned(), pending.id.clone()),
        ("invoice_id".to_owned(), pending.invoice_id.clone()),
        ("tenant_id".to_owned(), second.to_string()),
        ("attempt".to_owned(), "1".to_owned()),
    ]);
    let outcome = stripe
        .charge(dotmac_stripe::Charge {
            customer: &customer,
            payment_method: "pm_card_visa",
            amount: 250_00,
            currency: "USD",
            description: format!("DotMac invoice {}", pending.invoice_id),
            metadata,
            idempotency_key: &dotmac_payments::charging::charge_key(second, period, 1),
        })
        .await
        .expect("charged");
    assert!(matches!(outcome, dotmac_stripe::ChargeOutcome::Succeeded { .. }), "{outcome:?}");
    let decided = wait_until("the webhook deciding the attempt", || async {
        let payments = payments_of(platform, second).await;
        (payments[0].status == AttemptStatus::Succeeded).then_some(payments)
    })
    .await;
    assert!(decided[0].decided_by_event.is_some(), "the webhook, not a job, decided it");
    for message in charge_jobs(&queued) {
        run(platform, message).await;
    }
    let summary = double.summary().await;
    assert_eq!(summary["payment_intents"], 2, "one intent per invoice: {summary}");
    assert_eq!(summary["customers"], 2, "one customer per tenant: {summary}");
    let invoice = platform.store.get_invoice(second, period).await.expect("read").expect("invoice");
    assert_eq!(invoice.payment_status, Some(PaymentStatus::Paid));
}

#[tokio::test]
async fn a_declined_card_fails_the_attempt_and_the_invoice() {
    let double = Double::for_new_key();
    let stack = TestStack::new(&[("DOTMAC_STRIPE_SECRET_KEY", double.key.as_str())]).await;
    let platform = &stack.platform;
    let endpoint = serve_payments(platform).await;
    double.register_endpoint(&endpoint).await;
    let tenant = billed_tenant(platform, 500).await;
    // The tenant's customer, with a card that declines (Stripe's test card, as on Stripe:
    // `invoice_settings[default_payment_method]`).
    let customer = platform.payments().customer(tenant, OffsetDateTime::now_utc()).await.expect("customer");
    let (status, updated) = double
        .post(
            &format!("/v1/customers/{customer}"),
            &[("invoice_settings[default_payment_method]", "pm_card_chargeDeclined")],
        )
        .await;
    assert_eq!(status, 200, "{updated}");
    finalized_invoice(platform, tenant).await;
    let queued = take(platform).await;
    for message in charge_jobs(&queued) {
        run(platform, message).await;
        run(platform, message).await;
    }
    let payments = payments_of(platform, tenant).await;
    assert_eq!(payments.len(), 1);
    assert_eq!(payments[0].status, AttemptStatus::Failed);
    assert_eq!(payments[0].failure_code.as_deref(), Some("generic_decline"));
    let invoice = platform.store.get_invoice(tenant, last_period()).await.expect("read").expect("invoice");
    assert_eq!(invoice.payment_status, Some(PaymentStatus::Failed));
    // Stripe's own webhook about it arrives too, and changes nothing.
    let event = double.delivered("payment_intent.payment_failed", 1).await;
    let recorded = wait_until("the event recorded", || async {
        platform.store.stripe_event(&event).await.expect("read")
    })
    .await;
    assert_eq!(recorded.outcome, "unchanged");
    let summary = double.summary().await;
    assert_eq!(
        (summary["declined"].as_u64(), summary["payment_intents"].as_u64()),
        (Some(1), Some(1)),
        "{summary}"
    );
    // Nothing stays due: dunning (not this job) schedules the next attempt.
    assert!(platform.store.charges_due().await.expect("due").iter().all(|d| d.tenant_id != tenant));
}

#[tokio::test]
async fn the_webhook_answers_exactly_what_is_wrong_with_a_signature() {
    let double = Double::for_new_key();
    let stack = TestStack::new(&[("DOTMAC_STRIPE_SECRET_KEY", double.key.as_str())]).await;
    let endpoint = serve_payments(&stack.platform).await;
    let secret = webhook_secret(&stack.platform);
    let http = dotmac_tests::http_client();
    let body = json!({"id": format!("evt_{}", uuid::Uuid::new_v4().simple()), "object": "event", "type": "customer.created",
        "created": 1, "data": {"object": {"id": "cus_1", "object": "customer"}}})
    .to_string();
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let expect_refused = |answer: (u16, Value), reason: &str| {
        assert_eq!(answer.0, 400, "{reason}: {}", answer.1);
        assert_eq!(answer.1["error"]["code"], "WEBHOOK_SIGNATURE_INVALID", "{}", answer.1);
        assert_eq!(answer.1["error"]["details"]["reason"], reason, "{}", answer.1);
    };
    expect_refused(post_webhook(&http, &endpoint, None, &body).await, "missing");
    expect_refused(post_webhook(&http, &endpoint, Some("nonsense"), &body).await, "malformed");
    expect_refused(post_webhook(&http, &endpoint, Some(&format!("t={now}")), &body).await, "no_v1_signature");
    let good = dotmac_stripe::sign(&secret, now, body.as_bytes());
    expect_refused(
        post_webhook(&http, &endpoint, Some(&good), &body.replace("cus_1", "cus_2")).await,
        "mismatch",
    );
    let wrong = dotmac_stripe::sign("whsec_not_ours", now, body.as_bytes());
    expect_refused(post_webhook(&http, &endpoint, Some(&wrong), &body).await, "mismatch");
    let stale = dotmac_stripe::sign(&secret, now - 301, body.as_bytes());
    expect_refused(post_webhook(&http, &endpoint, Some(&stale), &body).await, "stale");
    // Several v1 values (a secret being rolled): one matching is enough.
    let good_v1 = good.split_once("v1=").map(|(_, v)| v.to_owned()).expect("v1");
    let wrong_v1 = wrong.split_once("v1=").map(|(_, v)| v.to_owned()).expect("v1");
    let both = format!("t={now},v1={wrong_v1},v1={good_v1}");
    let (status, answer) = post_webhook(&http, &endpoint, Some(&both), &body).await;
    assert_eq!((status, answer["outcome"].as_str()), (200, Some("ignored")), "{answer}");
    // The same event again: a duplicate.
    let (status, answer) = post_webhook(&http, &endpoint, Some(&good), &body).await;
    assert_eq!((status, answer["outcome"].as_str()), (200, Some("duplicate")), "{answer}");
    // Signed, but not an event.
    let garbage = "[1, 2";
    let signed = dotmac_stripe::sign(&secret, now, garbage.as_bytes());
    let (status, answer) = post_webhook(&http, &endpoint, Some(&signed), garbage).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (400, Some("MALFORMED_REQUEST")), "{answer}");
}

#[tokio::test]
async fn stripes_own_python_library_signs_webhooks_our_endpoint_accepts_and_verifies_ours() {
    let double = Double::for_new_key();
    let stack = TestStack::new(&[("DOTMAC_STRIPE_SECRET_KEY", double.key.as_str())]).await;
    let endpoint = serve_payments(&stack.platform).await;
    let secret = webhook_secret(&stack.platform);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = root.join(".venv-stripe/bin/python");
    assert!(
        python.exists(),
        "the Stripe venv is missing: run through `local/stack.sh with-emulator` (it creates .venv-stripe)"
    );
    let script = root.join("tests/interop/sign_webhook_with_stripe.py");
    let body = json!({"id": format!("evt_{}", uuid::Uuid::new_v4().simple()), "object": "event", "type": "customer.created",
        "created": 1, "data": {"object": {"id": "cus_1", "object": "customer"}}})
    .to_string();
    let sign = |timestamp: Option<i64>| {
        let mut command = std::process::Command::new(&python);
        command.arg(&script).args(["sign", secret.as_str(), body.as_str()]);
        if let Some(t) = timestamp {
            command.arg(t.to_string());
        }
        let output = command.output().expect("python runs");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).expect("text")
    };
    let http = dotmac_tests::http_client();
    let header = sign(None);
    assert!(header.starts_with("t=") && header.contains(",v1="), "{header}");
    let (status, answer) = post_webhook(&http, &endpoint, Some(&header), &body).await;
    assert_eq!(
        (status, answer["outcome"].as_str()),
        (200, Some("ignored")),
        "Stripe's signature is accepted: {answer}"
    );
    let (status, answer) =
        post_webhook(&http, &endpoint, Some(&header), &body.replace("cus_1", "cus_9")).await;
    assert_eq!(
        (status, answer["error"]["details"]["reason"].as_str()),
        (400, Some("mismatch")),
        "tampered: {answer}"
    );
    let stale = sign(Some(OffsetDateTime::now_utc().unix_timestamp() - 600));
    let (status, answer) = post_webhook(&http, &endpoint, Some(&stale), &body).await;
    assert_eq!(
        (status, answer["error"]["details"]["reason"].as_str()),
        (400, Some("stale")),
        "stale: {answer}"
    );

    // And Stripe's library verifies the signatures we (and the double) compute.
    let ours = dotmac_stripe::sign(&secret, OffsetDateTime::now_utc().unix_timestamp(), body.as_bytes());
    let verified = std::process::Command::new(&python)
        .arg(&script)
        .args(["verify", secret.as_str(), body.as_str(), ours.as_str()])
        .output()
        .expect("python runs");
    assert!(verified.status.success(), "{}", String::from_utf8_lossy(&verified.stderr));
    let tampered = std::process::Command::new(&python)
        .arg(&script)
        .args(["verify", secret.as_str(), &body.replace("cus_1", "cus_9"), ours.as_str()])
        .output()
        .expect("python runs");
    assert!(!tampered.status.success(), "Stripe's library refuses a tampered body");
}

#[tokio::test]
async fn the_stripe_client_gets_the_same_answer_for_a_repeated_key_and_a_refusal_for_other_params() {
    let double = Double::for_new_key();
    let stripe = dotmac_stripe::Stripe::new(&dotmac_stripe::StripeSettings {
        secret_key: double.key.clone(),
        api_base: double.base.clone(),
    })
    .expect("client");
    let tenant = TenantId::generate().to_string();
    let first = stripe.create_customer(&tenant, "ISP", "customer-key").await.expect("created");
    let again = stripe.create_customer(&tenant, "ISP", "customer-key").await.expect("replayed");
    assert_eq!(first, again, "same key, same params: the same customer");
    assert_eq!(stripe.default_payment_method(&first).await.expect("read").as_deref(), Some("pm_card_visa"));
    let refused = stripe.create_customer(&tenant, "Another name", "customer-key").await;
    assert!(
        matches!(&refused, Err(dotmac_stripe::StripeCallError::Refused { kind, .. }) if kind == "idempotency_error"),
        "{refused:?}"
    );
    let charge = |amount: i64| dotmac_stripe::Charge {
        customer: &first,
        payment_method: "pm_card_visa",
        amount,
        currency: "USD",
        description: "test".into(),
        metadata: Default::default(),
        idempotency_key: "charge-key",
    };
    let paid = stripe.charge(charge(1_00)).await.expect("charged");
    let replayed = stripe.charge(charge(1_00)).await.expect("replayed");
    assert_eq!(paid, replayed);
    let other = stripe.charge(charge(2_00)).await;
    assert!(
        matches!(&other, Err(dotmac_stripe::StripeCallError::Refused { kind, .. }) if kind == "idempotency_error"),
        "{other:?}"
    );
    let summary = double.summary().await;
    assert_eq!(
        (summary["customers"].as_u64(), summary["payment_intents"].as_u64()),
        (Some(1), Some(1)),
        "{summary}"
    );
}

/// `minor × percent / 100`, rounded half away from zero (the commission of one line).
fn commission_of(minor: i64, percent: i64) -> i64 {
    let product = minor * percent;
    let (quotient, remainder) = (product / 100, product % 100);
    if remainder.abs() * 2 >= 100 { quotient + product.signum() } else { quotient }
}

#[tokio::test]
async fn a_partner_earns_on_a_paid_invoice_and_a_refund_claws_it_back_through_a_credit_note() {
    let (double, app) = Double::serving().await;
    let platform = &app.stack.platform;
    let admin = app.admin_token().await;
    let partner = format!("resell-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);

    // The partner, through the API: rates validated at the edge, one override for the plan.
    let mut body = json!({ "id": partner, "name": "Resell Ltd", "contact_email": "ops@resell.example", "commission_rate": "101" });
    let answer = app.exchange(http::Method::POST, "/v1/partners", Some(&admin), Some(&body)).await;
    answer.assert_error(422, "VALIDATION_FAILED");
    assert_eq!(answer.json["error"]["details"]["field"], "commission_rate", "{}", answer.text);
    body["commission_rate"] = json!("10");
    body["plan_rates"] = json!({ "usage": "20" });
    let (status, created) = app.send(http::Method::POST, "/v1/partners", Some(&admin), Some(&body)).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(
        (created["commission_rate"].clone(), created["plan_rates"]["usage"].clone()),
        (json!("10"), json!("20"))
    );
    let answer = app.exchange(http::Method::POST, "/v1/partners", Some(&admin), Some(&body)).await;
    answer.assert_error(409, "ALREADY_EXISTS");

    app.create_user(&format!("sales@{partner}.example"), None, Some(&partner), &["partner"]).await;
    let seller = app.token_for(&format!("sales@{partner}.example"), dotmac_tests::USER_PASSWORD).await;
    app.create_user(&format!("sales@other-{partner}.example"), None, Some("other-reseller"), &["partner"])
        .await;
    let stranger =
        app.token_for(&format!("sales@other-{partner}.example"), dotmac_tests::USER_PASSWORD).await;
    let (status, own) = app.get_json(&seller, &format!("/v1/partners/{partner}")).await;
    assert_eq!((status, own["id"].clone()), (200, json!(partner)), "a partner's staff read their partner");
    app.exchange(http::Method::GET, &format!("/v1/partners/{partner}"), Some(&stranger), None)
        .await
        .assert_error(404, "PARTNER_NOT_FOUND");
    app.exchange(http::Method::GET, &format!("/v1/partners/{partner}/commissions"), Some(&stranger), None)
        .await
        .assert_error(404, "PARTNER_NOT_FOUND");
    let stale = json!({ "name": "Resell Group", "version": 7 });
    app.exchange(http::Method::PATCH, &format!("/v1/partners/{partner}"), Some(&admin), Some(&stale))
        .await
        .assert_error(409, "VERSION_CONFLICT");
    app.exchange(
        http::Method::PATCH,
        &format!("/v1/partners/{partner}"),
        Some(&seller),
        Some(&json!({ "name": "Mine" })),
    )
    .await
    .assert_error(403, "FORBIDDEN");

    // A tenant it brought is billed, finalized and paid through Stripe, as in the first test.
    let tenant =
        billed_tenant_of(platform, 500, Some(dotmac_domain::PartnerId::parse(&partner).expect("id"))).await;
    let period = last_period();
    let (id, invoice) = paid_over_http(&app, &admin, tenant).await;
    assert_eq!(invoice["total"]["minor"], 250_00, "{invoice}");
    // 20% (the plan's override, not the default 10%) of each line, rounded once per line.
    let expected: i64 = invoice["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .map(|l| l["amount"]["minor"].as_i64().expect("minor"))
        .filter(|minor| *minor > 0)
        .map(|minor| commission_of(minor, 20))
        .sum();
    assert!(expected > 0);
    let month = Period::containing(OffsetDateTime::now_utc()).to_string();
    let statement_path = format!("/v1/partners/{partner}/commissions?period={month}");
    let (status, statement) = app.get_json(&seller, &statement_path).await;
    assert_eq!(status, 200, "{statement}");
    let entries = statement["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 1, "one accrual, written with the payment: {statement}");
    assert_eq!((entries[0]["kind"].clone(), entries[0]["invoice_id"].clone()), (json!("accrual"), json!(id)));
    assert_eq!(entries[0]["amount"]["minor"], expected, "{statement}");
    assert_eq!(entries[0]["base"]["minor"], 250_00);
    assert_eq!(statement["totals"][0]["net"], expected);
    // A later change of rates does not rewrite what was earned (the rate is snapshotted).
    let (status, changed) = app
        .send(
            http::Method::PATCH,
            &format!("/v1/partners/{partner}"),
            Some(&admin),
            Some(&json!({ "commission_rate": "50", "plan_rates": {}, "version": 1 })),
        )
        .await;
    assert_eq!((status, changed["version"].clone()), (200, json!(2)), "{changed}");
    let (_, again) = app.get_json(&admin, &statement_path).await;
    assert_eq!(again["entries"][0]["amount"]["minor"], expected);

    // Refunds: platform staff only.
    let refunds = format!("/v1/invoices/{id}/refunds");
    let tenant_admin = app
        .user_token(&format!("admin@{partner}-tenant.example"), tenant, dotmac_domain::Role::TenantAdmin)
        .await;
    let part = json!({ "amount": 100_00, "reason": "service outage credit" });
    for token in [&seller, &tenant_admin] {
        app.exchange(http::Method::POST, &refunds, Some(token), Some(&part))
            .await
            .assert_error(403, "FORBIDDEN");
    }
    let keyed = || {
        app.http
            .post(app.url(&refunds))
            .bearer_auth(&admin)
            .header("idempotency-key", "refund-outage-1")
            .json(&part)
    };
    let first = keyed().send().await.expect("refund");
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.expect("json");
    assert_eq!(first["payment_status"], "partially_refunded", "{first}");
    assert_eq!(first["credit_note"]["sequence"], 1);
    assert_eq!(first["credit_note"]["amount"]["minor"], 100_00);
    let clawed_first = -((expected * 100_00 * 2 + 250_00) / (250_00 * 2));
    assert_eq!(first["commission_reversed"]["minor"], clawed_first, "the refunded share: {first}");
    let replay = keyed().send().await.expect("refund again");
    assert_eq!(replay.headers().get("idempotent-replayed").map(|v| v.as_bytes()), Some(&b"true"[..]));
    assert_eq!(replay.json::<Value>().await.expect("json"), first, "a retry gets the first answer");
    let too_much = json!({ "amount": 150_01, "reason": "too much" });
    let answer = app.exchange(http::Method::POST, &refunds, Some(&admin), Some(&too_much)).await;
    answer.assert_error(409, "REFUND_EXCEEDS_PAID");
    assert_eq!(answer.json["error"]["details"]["refundable"], 150_00, "{}", answer.text);
    let (status, rest) =
        app.send(http::Method::POST, &refunds, Some(&admin), Some(&json!({ "reason": "cancelled" }))).await;
    assert_eq!(status, 201, "{rest}");
    assert_eq!(
        (rest["payment_status"].clone(), rest["credit_note"]["amount"]["minor"].clone()),
        (json!("refunded"), json!(150_00))
    );
    assert_eq!(
        rest["commission_reversed"]["minor"],
        -expected - clawed_first,
        "the rest of the commission: {rest}"
    );
    app.exchange(http::Method::POST, &refunds, Some(&admin), Some(&json!({ "reason": "again" })))
        .await
        .assert_error(409, "REFUND_EXCEEDS_PAID");

    // The tenant sees its credit notes; the partner's statement nets to zero.
    let (status, notes) = app.get_json(&tenant_admin, &format!("/v1/invoices/{id}/credit-notes")).await;
    assert_eq!(status, 200, "{notes}");
    assert_eq!(notes["refunded"]["minor"], 250_00);
    let numbers: Vec<_> =
        notes["items"].as_array().expect("items").iter().map(|n| n["sequence"].clone()).collect();
    assert_eq!(numbers, vec![json!(1), json!(2)], "{notes}");
    let (_, statement) = app.get_json(&seller, &statement_path).await;
    let kinds: Vec<_> =
        statement["entries"].as_array().expect("entries").iter().map(|e| e["kind"].clone()).collect();
    assert_eq!(kinds, vec![json!("accrual"), json!("clawback"), json!("clawback")], "{statement}");
    assert_eq!(statement["totals"][0]["accrued"], expected);
    assert_eq!(
        statement["totals"][0]["net"], 0,
        "a full refund reverses the commission exactly: {statement}"
    );

    // Stripe made exactly two refunds (the keyed retry was answered from our record).
    let summary = double.summary().await;
    assert_eq!(
        (summary["refunds"].as_u64(), summary["refunded"].as_u64()),
        (Some(2), Some(250_00)),
        "{summary}"
    );
    let stored = platform.store.get_invoice(tenant, period).await.expect("read").expect("invoice");
    assert_eq!((stored.payment_status, stored.refunded_minor), (Some(PaymentStatus::Refunded), 250_00));
    app.shutdown().await;
}

/// A refund made outside the platform (Stripe's dashboard) reaches the books through its
/// `charge.refunded` webhook, and one of ours made after it takes the next place; whichever
/// of our request and its webhook records ours first, it is recorded once.
#[tokio::test]
async fn a_refund_made_in_stripes_dashboard_becomes_a_credit_note_through_its_webhook() {
    let (double, app) = Double::serving().await;
    let platform = &app.stack.platform;
    let tenant = billed_tenant(platform, 500).await;
    let admin = app.admin_token().await;
    let (id, _) = paid_over_http(&app, &admin, tenant).await;
    let intent = payments_of(platform, tenant).await[0].stripe_payment_intent_id.clone().expect("intent");

    // In the dashboard: a refund with none of our metadata.
    let (status, outside) =
        double.post("/v1/refunds", &[("payment_intent", &intent), ("amount", "4000")]).await;
    assert_eq!(status, 200, "{outside}");
    let notes_path = format!("/v1/invoices/{id}/credit-notes");
    let notes = wait_until("the dashboard refund's credit note", || async {
        let (status, notes) = app.get_json(&admin, &notes_path).await;
        assert_eq!(status, 200, "{notes}");
        notes["items"].as_array().is_some_and(|items| items.len() == 1).then_some(notes)
    })
    .await;
    let note = &notes["items"][0];
    assert_eq!(
        (note["stripe_refund_id"].clone(), note["sequence"].clone()),
        (outside["id"].clone(), json!(1))
    );
    assert_eq!(
        (note["amount"]["minor"].clone(), notes["refunded"]["minor"].clone()),
        (json!(40_00), json!(40_00))
    );
    let (_, invoice) = app.get_json(&admin, &format!("/v1/invoices/{id}")).await;
    assert_eq!(invoice["payment_status"], "partially_refunded", "{invoice}");

    // What is left is what Stripe has left: ours refunds the rest at the next place.
    let (status, ours) = app
        .send(
            http::Method::POST,
            &format!("/v1/invoices/{id}/refunds"),
            Some(&admin),
            Some(&json!({ "reason": "the rest" })),
        )
        .await;
    assert_eq!(status, 201, "{ours}");
    assert_eq!(
        (ours["credit_note"]["sequence"].clone(), ours["credit_note"]["amount"]["minor"].clone()),
        (json!(2), json!(210_00))
    );
    assert_eq!(ours["payment_status"], "refunded");
    // Both charge.refunded deliveries were taken (ours found its refund recorded, or
    // recorded it first), and nothing was recorded twice.
    double.delivered("charge.refunded", 2).await;
    let (_, notes) = app.get_json(&admin, &notes_path).await;
    let items = notes["items"].as_array().expect("items");
    assert_eq!(items.len(), 2, "{notes}");
    assert_eq!(notes["refunded"]["minor"], 250_00);
    let summary = double.summary().await;
    assert_eq!(
        (summary["refunds"].as_u64(), summary["refunded"].as_u64()),
        (Some(2), Some(250_00)),
        "{summary}"
    );
    let stored = platform.store.get_invoice(tenant, last_period()).await.expect("read").expect("invoice");
    assert_eq!((stored.payment_status, stored.refunded_minor), (Some(PaymentStatus::Refunded), 250_00));
    app.shutdown().await;
}
