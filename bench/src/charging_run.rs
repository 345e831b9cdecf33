//! Section 5, after the billing run: its invoices finalized and charged through the Stripe test
//! double (`local/stripe_double.py`, started by `local/stack.sh`), then Stripe's webhooks for
//! those charges verified, deduplicated and applied, in process and over HTTP.
//!
//! The charges are the billing queue's `ChargeInvoice` jobs (what a finalization queues),
//! driven in process through the billing worker's Lambda entry point exactly as the run's
//! invoice jobs are (`billing_run::drive_jobs`). The Stripe client talks to the double over
//! HTTP as it would to Stripe, under a secret key of the bench's own: the double keeps each
//! key's objects and request count apart (an account per key), so its read-back counts this
//! run's Stripe calls only. The finalizations' own enqueues go to a queue of the bench's, so
//! the stack's billing queue stays empty.

use crate::billing_run;
use crate::e2e::{CountAttempts, Server, Stack};
use anyhow::{Context, bail};
use dotmac_billing::Period;
use dotmac_domain::TenantId;
use dotmac_payments::Applied;
use dotmac_queue::BillingJob;
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;
use time::OffsetDateTime;

/// Finalizations in flight while preparing the charges (setup, not timed). Invoice numbers
/// come from one counter, so finalizations contend on it: the finalizer's schedule runs them
/// one after another, and 16 at once used up `finalize_invoice`'s attempts on DynamoDB Local.
const FINALIZE_IN_FLIGHT: usize = 2;
/// Webhook events per measurement (in process, then over HTTP), each deciding a payment of
/// its own.
pub const WEBHOOK_EVENTS: usize = 2_000;

/// The tenants whose charge Stripe leaves `processing` (a bank debit, as the double settles
/// them under a `processing` key), so that their webhook decides the payment: the first
/// `2 × WEBHOOK_EVENTS`, at most half of the run.
pub fn settled_later(tenants: &[TenantId]) -> &[TenantId] {
    &tenants[..2 * webhook_events(tenants.len())]
}

/// The events of each webhook pass in a run of `tenants`: half of those settled later.
pub fn webhook_events(tenants: usize) -> usize {
    WEBHOOK_EVENTS.min(tenants / 4)
}
/// Rounds of the pure signature check over every event, the best counting.
const VERIFY_ROUNDS: usize = 5;
/// Connections posting deliveries at once (Stripe delivers concurrently).
pub const WEBHOOK_CONNECTIONS: usize = 16;

/// What the charge phase measured.
pub struct ChargeFigures {
    pub finalize_seconds: f64,
    pub charge_seconds: f64,
    pub stripe_calls_per_tenant: f64,
    pub stripe_calls_by_endpoint: String,
    pub dynamo_requests_per_tenant: f64,
    pub paid: u64,
    pub redeliveries: u64,
}

/// The Stripe double's read-back for one key (`GET /_double/summary`).
async fn double_summary(http: &reqwest::Client, base: &str, key: &str) -> anyhow::Result<Value> {
    let response = http
        .get(format!("{base}/_double/summary"))
        .bearer_auth(key)
        .send()
        .await
        .context("the Stripe double's summary")?;
    let status = response.status();
    let body: Value = response.json().await?;
    if !status.is_success() {
        bail!("the Stripe double's summary answered {status}: {body}");
    }
    if body.get("requests").and_then(Value::as_u64).is_none() {
        bail!("{base} counts no requests (`requests` in /_double/summary): not the project's Stripe double?");
    }
    Ok(body)
}

/// Finalizes every invoice of the run (setup), then charges them all through the double.
pub async fn charge_all(
    stack: &Stack,
    sdk: &aws_config::SdkConfig,
    tenants: &[TenantId],
    period: Period,
) -> anyhow::Result<ChargeFigures> {
    let api_base = stack.platform.config.stripe.api_base.trim_end_matches('/').to_owned();
    // Only ever the local double: the bench's traffic stays on 127.0.0.1.
    let local = ["http://127.0.0.1:", "http://localhost:"].iter().any(|p| api_base.starts_with(p));
    if !local {
        bail!(
            "needs the local Stripe double (DOTMAC_STRIPE_API_BASE is {api_base}; local/stack.sh starts the double)"
        );
    }
    let http = reqwest::Client::new();
    let stripe_key = format!("sk_test_bench_{}", uuid::Uuid::new_v4().simple());
    // The double's customers under this key pay by bank debit: their charges stay
    // `processing` for the webhooks below to decide.
    let processing_key = format!("sk_test_bench_processing_{}", uuid::Uuid::new_v4().simple());
    // Fails here, before the setup, when the double (or its counter) is not there.
    double_summary(&http, &api_base, &stripe_key).await?;

    // The finalizations queue their `ChargeInvoice` onto a queue of the bench's: the jobs
    // are driven below, and the stack's billing queue (its workers') is left out of it.
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let queue = sqs
        .create_queue()
        .queue_name(format!("bench-charges-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]))
        .send()
        .await
        .context("CreateQueue (the finalizations' charge jobs)")?;
    let queue_url = queue.queue_url.context("the queue's URL")?;
    let mut finalizer = stack.platform.clone();
    finalizer.billing_queue = dotmac_queue::SqsQueue::new(sqs.clone(), queue_url.clone());
    crate::progress(format!("section 5: finalizing {} invoices (setup)", tenants.len()));
    // moto's SendMessage slows as its queue deepens (about 10/s empty, 4/s past 7,000 on a
    // 2-core machine): a consumer keeps the queue shallow, as the billing worker would.
    let (stop_drain, drain) = drain(finalizer.billing_queue.clone());
    let began = Instant::now();
    let pending = Arc::new(Mutex::new(tenants.iter().copied().collect::<VecDeque<_>>()));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..FINALIZE_IN_FLIGHT {
        let (billing, pending) = (finalizer.billing(), pending.clone());
        workers.spawn(async move {
            loop {
                let Some(tenant) = pending.lock().unwrap_or_else(PoisonError::into_inner).pop_front() else {
                    return anyhow::Ok(());
                };
                billing
                    .finalize(tenant, period, OffsetDateTime::now_utc())
                    .await
                    .with_context(|| format!("finalizing {tenant}'s invoice"))?;
            }
        });
    }
    while let Some(joined) = workers.join_next().await {
        joined??;
    }
    let finalize_seconds = began.elapsed().as_secs_f64();
    let _ = stop_drain.send(true);
    let _ = drain.await;
    let _ = sqs.delete_queue().queue_url(&queue_url).send().await;

    let attempts = Arc::new(AtomicU64::new(0));
    let counted = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(sdk).interceptor(CountAttempts(attempts.clone())).build(),
    );
    let table = stack.platform.store.table().to_owned();
    let instances = |key: &str| {
        let settings =
            dotmac_stripe::StripeSettings { secret_key: key.to_owned(), api_base: api_base.clone() };
        (0..billing_run::INVOCATIONS)
            .map(|_| {
                let mut instance = stack.platform.clone();
                instance.store = dotmac_store::Store::new(counted.clone(), &table);
                // Each Lambda instance has its own client (and connection pool).
                instance.stripe = Some(dotmac_stripe::Stripe::new(&settings)?);
                anyhow::Ok(instance)
            })
            .collect::<anyhow::Result<Vec<_>>>()
    };
    let jobs = |tenants: &[TenantId]| {
        tenants
            .iter()
            .map(|&tenant_id| BillingJob::ChargeInvoice { tenant_id, period: period.to_string(), attempt: 1 })
            .collect()
    };
    let later = settled_later(tenants);
    let now = &tenants[later.len()..];
    crate::progress(format!(
        "section 5: charging {} invoices through the Stripe double ({} invocations × {} records; {} of them by bank debit, left processing for their webhooks)",
        tenants.len(),
        billing_run::INVOCATIONS,
        billing_run::BATCH_SIZE,
        later.len()
    ));
    let began = Instant::now();
    let mut redeliveries = billing_run::drive_jobs(instances(&processing_key)?, jobs(later)).await?;
    redeliveries += billing_run::drive_jobs(instances(&stripe_key)?, jobs(now)).await?;
    let charge_seconds = began.elapsed().as_secs_f64();
    let dynamo_requests = attempts.load(Ordering::Relaxed);

    let card = double_summary(&http, &api_base, &stripe_key).await?;
    let debit = double_summary(&http, &api_base, &processing_key).await?;
    let count = |field: &str| {
        [&card, &debit]
            .iter()
            .map(|summary| summary.get(field).and_then(Value::as_u64).unwrap_or(0))
            .sum::<u64>()
    };
    let n = tenants.len() as u64;
    let accepted = count("succeeded") + count("processing");
    if count("customers") != n
        || count("payment_intents") != n
        || accepted != n
        || count("processing") != later.len() as u64
    {
        bail!(
            "the double holds {} customers, {} payment intents, {} succeeded and {} processing for {n} invoices ({} by debit)",
            count("customers"),
            count("payment_intents"),
            count("succeeded"),
            count("processing"),
            later.len()
        );
    }
    let mut by_endpoint: std::collections::BTreeMap<String, u64> = Default::default();
    for summary in [&card, &debit] {
        for (endpoint, requests) in
            summary.get("requests_by_endpoint").and_then(Value::as_object).into_iter().flatten()
        {
            *by_endpoint.entry(endpoint.clone()).or_default() += requests.as_u64().unwrap_or(0);
        }
    }
    let by_endpoint = by_endpoint.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ");
    Ok(ChargeFigures {
        finalize_seconds,
        charge_seconds,
        stripe_calls_per_tenant: count("requests") as f64 / n.max(1) as f64,
        stripe_calls_by_endpoint: by_endpoint,
        dynamo_requests_per_tenant: dynamo_requests as f64 / n.max(1) as f64,
        paid: accepted,
        redeliveries,
    })
}

/// Takes every message off `queue` until told to stop (the charge jobs it holds are driven
/// by the bench itself).
fn drain(queue: dotmac_queue::SqsQueue) -> (tokio::sync::watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move {
        while !*stopped.borrow() {
            match queue.receive(10, 1).await {
                Ok(batch) => {
                    for message in batch {
                        let _ = queue.ack(&message.receipt_handle).await;
                    }
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
            }
        }
    });
    (stop, task)
}

/// What the webhook measurements came to.
pub struct WebhookFigures {
    pub verify_us: f64,
    pub apply_us: f64,
    pub events_per_second: f64,
    /// Outcomes of the in-process pass and of the HTTP pass (`applied`, `unchanged`, ...).
    pub outcomes: String,
}

/// A `payment_intent.succeeded` event for `payment`, as Stripe sends it (the fields of
/// Stripe's event and payment-intent objects the platform reads, and a few it does not).
fn succeeded_event(event_id: &str, payment: &dotmac_store::Payment) -> anyhow::Result<Vec<u8>> {
    let intent = payment.stripe_payment_intent_id.as_deref().context("a charged payment has an intent")?;
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let body = json!({
        "id": event_id,
        "object": "event",
        "api_version": "2025-09-30.clover",
        "created": now,
        "livemode": false,
        "pending_webhooks": 1,
        "request": { "id": null, "idempotency_key": null },
        "type": "payment_intent.succeeded",
        "data": { "object": {
            "id": intent,
            "object": "payment_intent",
            "amount": payment.amount.minor,
            "amount_received": payment.amount.minor,
            "currency": payment.amount.currency.to_string().to_ascii_lowercase(),
            "customer": payment.stripe_customer_id,
            "payment_method": payment.stripe_payment_method_id,
            "status": "succeeded",
            "metadata": {
                "payment_id": payment.id,
                "invoice_id": payment.invoice_id,
                "tenant_id": payment.tenant_id.to_string(),
                "attempt": payment.attempt.to_string(),
            },
        }},
    });
    Ok(serde_json::to_vec(&body)?)
}

fn tally(outcomes: &HashMap<String, usize>) -> String {
    let mut parts: Vec<String> = outcomes.iter().map(|(k, v)| format!("{k} {v}")).collect();
    parts.sort();
    parts.join(", ")
}

/// Webhooks for the first `WEBHOOK_EVENTS` charged invoices: the pure signature check, the
/// whole `Payments::apply_webhook` in process one event after another, then fresh events
/// POSTed signed to the local server's `POST /v1/webhooks/stripe`.
pub async fn webhooks(stack: &Stack, tenants: &[TenantId], period: Period) -> anyhow::Result<WebhookFigures> {
    let secret = stack
        .platform
        .config
        .stripe
        .webhook_secret
        .clone()
        .context("no DOTMAC_STRIPE_WEBHOOK_SECRET (local/stack.sh sets it)")?;
    let store = &stack.platform.store;
    // Each pass decides payments of its own: the first half in process, the second over HTTP.
    let (first, second) = settled_later(tenants).split_at(webhook_events(tenants.len()));
    let mut passes = Vec::new();
    for half in [first, second] {
        let mut payments = Vec::with_capacity(half.len());
        for &tenant in half {
            let payment =
                store.get_payment(tenant, period, 1).await?.context("the charged invoice's payment")?;
            if payment.status != dotmac_store::AttemptStatus::Pending {
                bail!("{}'s payment is {:?}, not left to the webhook", payment.id, payment.status);
            }
            payments.push(payment);
        }
        passes.push(payments);
    }
    let run = &uuid::Uuid::new_v4().simple().to_string()[..12];
    let events = |pass: &str, payments: &[dotmac_store::Payment]| -> anyhow::Result<Vec<Vec<u8>>> {
        payments
            .iter()
            .enumerate()
            .map(|(n, payment)| succeeded_event(&format!("evt_bench{run}{pass}{n:06}"), payment))
            .collect()
    };

    // 1. The signature check alone (HMAC-SHA256 and the header), in memory.
    let in_process = events("p", &passes[0])?;
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let signed: Vec<String> = in_process.iter().map(|body| dotmac_stripe::sign(&secret, now, body)).collect();
    let mut verify_us = f64::INFINITY;
    for _ in 0..VERIFY_ROUNDS {
        let began = Instant::now();
        for (body, signature) in in_process.iter().zip(&signed) {
            dotmac_stripe::verify(
                Some(std::hint::black_box(signature.as_str())),
                std::hint::black_box(body),
                &secret,
                now,
                dotmac_stripe::DEFAULT_TOLERANCE_SECONDS,
            )?;
        }
        verify_us = verify_us.min(began.elapsed().as_secs_f64() * 1e6 / in_process.len().max(1) as f64);
    }

    // 2. The whole use case in process, one event after another: verify, the dedupe read,
    //    the payment read and decision, the event's record.
    crate::progress(format!("section 5: {} webhook events applied in process, one by one", in_process.len()));
    let payments_use_case = stack.platform.payments();
    let mut outcomes: HashMap<String, usize> = HashMap::new();
    let began = Instant::now();
    for body in &in_process {
        let now = OffsetDateTime::now_utc();
        let signature = dotmac_stripe::sign(&secret, now.unix_timestamp(), body);
        let applied = payments_use_case.apply_webhook(Some(&signature), body, now).await?;
        if applied != Applied::Applied {
            bail!("a webhook for a payment left to it answered {}", applied.as_str());
        }
        *outcomes.entry(format!("in process {}", applied.as_str())).or_default() += 1;
    }
    let apply_us = began.elapsed().as_secs_f64() * 1e6 / in_process.len().max(1) as f64;

    // 3. End to end: fresh events, signed at sending, POSTed by `WEBHOOK_CONNECTIONS` clients.
    let over_http = Arc::new(Mutex::new(events("h", &passes[1])?.into_iter().collect::<VecDeque<_>>()));
    let total = passes[1].len();
    crate::progress(format!(
        "section 5: {total} signed webhook deliveries to POST /v1/webhooks/stripe, {WEBHOOK_CONNECTIONS} connections"
    ));
    let server = Server::start(stack).await?;
    let url = Arc::new(format!("{}/v1/webhooks/stripe", server.base));
    let secret = Arc::new(secret);
    let began = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..WEBHOOK_CONNECTIONS {
        let (http, url, secret, queue) =
            (server.http.clone(), url.clone(), secret.clone(), over_http.clone());
        clients.spawn(async move {
            let mut seen: HashMap<String, usize> = HashMap::new();
            loop {
                let Some(body) = queue.lock().unwrap_or_else(PoisonError::into_inner).pop_front() else {
                    return anyhow::Ok(seen);
                };
                let signature =
                    dotmac_stripe::sign(&secret, OffsetDateTime::now_utc().unix_timestamp(), &body);
                let response = http
                    .post(url.as_str())
                    .header("content-type", "application/json; charset=utf-8")
                    .header("user-agent", "Stripe/1.0 (+https://stripe.com/docs/webhooks)")
                    .header("stripe-signature", signature)
                    .body(body)
                    .send()
                    .await?;
                let status = response.status();
                let answer: Value = response.json().await?;
                if !status.is_success() {
                    bail!("POST /v1/webhooks/stripe answered {status}: {answer}");
                }
                let outcome = answer["outcome"].as_str().unwrap_or("?").to_owned();
                *seen.entry(format!("over HTTP {outcome}")).or_default() += 1;
            }
        });
    }
    let mut delivered = 0;
    while let Some(joined) = clients.join_next().await {
        for (outcome, n) in joined?? {
            delivered += n;
            *outcomes.entry(outcome).or_default() += n;
        }
    }
    let elapsed = began.elapsed().as_secs_f64();
    server.shutdown().await;
    if delivered != total {
        bail!("{delivered} of {total} deliveries answered");
    }
    // Every event decides a payment left pending: anything but `applied` is a wrong figure.
    if outcomes.keys().any(|k| !k.ends_with("applied")) {
        bail!("webhooks for payments left to them did not all apply: {}", tally(&outcomes));
    }
    Ok(WebhookFigures {
        verify_us,
        apply_us,
        events_per_second: total as f64 / elapsed.max(f64::EPSILON),
        outcomes: tally(&outcomes),
    })
}
