//! Section 5: the store-bound figures with DynamoDB on DynamoDB Local (everything else on the
//! emulator), each beside the backend's own rate for the same kind of request measured in the
//! same run with nothing of ours around it, so our share of what the backend allows shows.
//!
//! It runs in a child process of the bench: the SDK reads `AWS_ENDPOINT_URL_DYNAMODB` from the
//! environment like the platform does in production, so only the environment changes.

use crate::billing_run;
use crate::charging_run;
use crate::e2e::{self, Server};
use crate::report::{Better, Row};
use anyhow::{Context, bail};
use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const SECTION: &str =
    "5 store-bound: DynamoDB on DynamoDB Local (in memory, same machine), the rest on moto";
pub const CHILD_ARG: &str = "on-dynamodb-local";

const INGEST_BATCHES: usize = 200;
const BATCH: usize = 100;
/// Batches in flight at once; each is written 16 reports at a time by the usage function.
const INGEST_CLIENTS: usize = 4;
/// The raw writer keeps as many requests in flight as the ingestion does (clients × 16).
const RAW_IN_FLIGHT: usize = INGEST_CLIENTS * 16;
const GET_REQUESTS: usize = 3_000;
const GET_CONNECTIONS: usize = 16;

/// The 200-onboardings rows of this section (section 4 has the same on moto).
const ONBOARD200_ROWS: [&str; 8] = [
    "ddb.onboard200_wall_s",
    "ddb.onboard200_p50_s",
    "ddb.onboard200_p99_s",
    "ddb.onboard200_rate",
    "ddb.onboard200_post_p50_s",
    "ddb.onboard200_post_p99_s",
    "ddb.onboard200_retries",
    "ddb.onboard200_task_count_errors",
];
const RECONCILE_ROWS: [&str; 2] = ["fleet.reconcile_1000_s", "fleet.reconcile_1000_ecs_calls"];

/// Every row of the section, each with its anchor; filled in by `rows`.
fn planned() -> Vec<(&'static str, String, &'static str, Better, String)> {
    let workers = std::env::var("DOTMAC_WORKER_CONCURRENCY").ok().and_then(|v| v.parse().ok()).unwrap_or(4);
    let mut rows: Vec<_> = store_rows()
        .into_iter()
        .map(|(id, name, unit, better, anchor)| (id, name, unit, better, anchor.to_owned()))
        .collect();
    rows.extend(crate::onboarding_planned(
        ONBOARD200_ROWS,
        workers,
        "DynamoDB Local; SQS, ECS and Secrets Manager on moto (one Python process)",
    ));
    let reconcile = group(crate::reconcile::tenants());
    rows.push((
        RECONCILE_ROWS[0],
        format!("fleet reconcile: one pass over {reconcile} running tenants (and the section's others), DynamoDB Local, ECS on moto"),
        "s",
        Better::Lower,
        "ListTasks pages + DescribeTasks batches of 100 for the cluster; one tenant page per 100".into(),
    ));
    rows.push((
        RECONCILE_ROWS[1],
        format!("fleet reconcile over {reconcile}: ECS requests of the pass (SDK interceptor)"),
        "calls",
        Better::Lower,
        "about 2 per 100 tasks when nothing drifted".into(),
    ));
    rows
}

/// The store-bound rows, each with its anchor.
fn store_rows() -> Vec<(&'static str, String, &'static str, Better, &'static str)> {
    let tenants = group(billing_run::tenants());
    let webhook_events = group(charging_run::webhook_events(billing_run::tenants()));
    let lago = "Lago ~10,000 events/s over REST batches (vendor figure); goal ≥ 80 % of the raw rate";
    let get_anchor = "AWS Rust + DynamoDB warm p50 5.1 / p99 20.1 ms at 300 req/s (serverless-rust-demo)";
    vec![
        (
            "usage.ingest_reports_per_s",
            format!("usage ingestion: POST /v1/usage, batches of {BATCH}, {INGEST_CLIENTS} clients"),
            "reports/s",
            Better::Higher,
            lago,
        ),
        (
            "usage.raw_conditional_puts_per_s",
            format!("backend's own rate: bare conditional PutItems, {RAW_IN_FLIGHT} in flight"),
            "puts/s",
            Better::Higher,
            "the ceiling the ingestion is measured against",
        ),
        (
            "usage.ingest_share_pct",
            "usage ingestion as a share of the raw conditional-put rate".into(),
            "%",
            Better::Higher,
            "goal ≥ 80 %",
        ),
        (
            "ddb.get_tenant_rps",
            format!(
                "GET /v1/tenants/{{id}} with a token: rate ({GET_REQUESTS} requests, {GET_CONNECTIONS} connections)"
            ),
            "req/s",
            Better::Higher,
            get_anchor,
        ),
        ("ddb.get_tenant_p50_ms", "GET /v1/tenants/{id}: p50".into(), "ms", Better::Lower, get_anchor),
        ("ddb.get_tenant_p99_ms", "GET /v1/tenants/{id}: p99".into(), "ms", Better::Lower, get_anchor),
        (
            "ddb.raw_batch_get_p50_ms",
            format!(
                "backend's own latency: the same BatchGetItem shape bare, p50 ({GET_CONNECTIONS} in flight)"
            ),
            "ms",
            Better::Lower,
            "the part of the GET that is DynamoDB Local's",
        ),
        (
            "billing.report_to_upcoming_p99_ms",
            format!(
                "usage report's 2xx to its count in GET /v1/tenants/{{id}}/invoices/upcoming, p99 of {}",
                billing_run::REPORTS_TO_UPCOMING
            ),
            "ms",
            Better::Lower,
            "Lago < 2 s",
        ),
        (
            "billing.run_10k_s",
            format!(
                "billing run: {} tenants' invoice jobs through the worker's SQS entry point in process ({} invocations × {} records; no SQS, no fan-out)",
                tenants,
                billing_run::INVOCATIONS,
                billing_run::BATCH_SIZE
            ),
            "s",
            Better::Lower,
            "no published anchor; the share of the bare pattern below is the goal",
        ),
        (
            "billing.requests_per_tenant",
            "billing run: DynamoDB requests per tenant (counted by an SDK interceptor, retries and price reads included)"
                .into(),
            "req",
            Better::Lower,
            "designed for 3 (usage query, invoices + subscriptions query, one transaction); goal ≤ 3",
        ),
        (
            "billing.invoices_written",
            "billing run: invoices written (read back from the invoice index)".into(),
            "invoices",
            Better::Higher,
            "one per tenant",
        ),
        (
            "billing.run_redeliveries",
            "billing run: records the worker reported failed and got again".into(),
            "records",
            Better::Lower,
            "0 wanted",
        ),
        (
            "billing.raw_pattern_tenants_per_s",
            format!(
                "backend's own rate: per tenant the GSI Query + Query + TransactWriteItems bare, {} in flight",
                billing_run::INVOCATIONS * billing_run::BATCH_SIZE
            ),
            "tenants/s",
            Better::Higher,
            "the ceiling the run is measured against",
        ),
        (
            "billing.run_share_pct",
            "billing run's tenants/s as a share of the bare pattern's".into(),
            "%",
            Better::Higher,
            "goal ≥ 70 %",
        ),
        (
            "billing.seed_10k_s",
            "setup, not in the run: seeding the tenants (BatchWriteItem copies of onboarded ones, their usage)".into(),
            "s",
            Better::Lower,
            "not a figure of the platform's",
        ),
        (
            "billing.charge_10k_s",
            format!(
                "charge phase: {tenants} finalized invoices' ChargeInvoice jobs through the worker's SQS entry point in process ({} invocations × {} records), Stripe = the local Stripe double over HTTP, DynamoDB = DynamoDB Local",
                billing_run::INVOCATIONS,
                billing_run::BATCH_SIZE
            ),
            "s",
            Better::Lower,
            "no published anchor; the double answers one request at a time (Python, one lock)",
        ),
        (
            "billing.stripe_calls_per_tenant",
            format!("charge phase: Stripe API requests per tenant ({tenants} first charges; counted by the Stripe double for the bench's two keys, retries included)"),
            "req",
            Better::Lower,
            "3 by design for a first charge: create the customer, read its default payment method, one confirmed PaymentIntent",
        ),
        (
            "billing.charge_requests_per_tenant",
            "charge phase: DynamoDB requests per tenant on DynamoDB Local (SDK interceptor, retries included)".into(),
            "req",
            Better::Lower,
            "no published anchor",
        ),
        (
            "billing.invoices_paid",
            "charge phase: confirmations the Stripe double accepted: succeeded, or processing (bank debit) for the webhooks below to decide; one customer and one intent per tenant checked".into(),
            "invoices",
            Better::Higher,
            "one per tenant",
        ),
        (
            "billing.finalize_10k_s",
            format!("setup, not in the charge phase: finalizing the {tenants} invoices (Billing::finalize, 2 at once: one invoice-number counter, DynamoDB Local; charge jobs to a bench queue on moto SQS)"),
            "s",
            Better::Lower,
            "not a figure of the issue's",
        ),
        (
            "webhook.verify_us",
            format!("webhook: Stripe-Signature check alone (shared/stripe verify, HMAC-SHA256), per event, best of 5 passes over {webhook_events} events; in memory, no backend"),
            "µs",
            Better::Lower,
            "the pure part of the per-event figure below",
        ),
        (
            "webhook.apply_us",
            format!("webhook: verify + dedupe + apply per event (Payments::apply_webhook in process, one at a time, {webhook_events} payment_intent.succeeded each deciding a payment Stripe left processing: attempt and invoice paid, outbox event, dunning followed), DynamoDB on DynamoDB Local"),
            "µs",
            Better::Lower,
            "no published anchor; Stripe waits up to ~10 s for an endpoint's 2xx",
        ),
        (
            "webhook.store_us",
            "webhook: the store work of one event (dedupe read, payment read, the decision's transaction, the dunning's read, the event record) = the figure above minus the signature check, DynamoDB Local".into(),
            "µs",
            Better::Lower,
            "dominated by the backend's round trips",
        ),
        (
            "webhook.events_per_s",
            format!(
                "webhook end to end: signed deliveries POSTed to the local server's POST /v1/webhooks/stripe, {} connections, {webhook_events} events each deciding a processing payment, DynamoDB on DynamoDB Local",
                charging_run::WEBHOOK_CONNECTIONS,
            ),
            "events/s",
            Better::Higher,
            "no published anchor",
        ),
    ]
}

/// The rows of the charge phase and of the webhooks, each reported or failed together.
const CHARGE_ROWS: [&str; 5] = [
    "billing.charge_10k_s",
    "billing.stripe_calls_per_tenant",
    "billing.charge_requests_per_tenant",
    "billing.invoices_paid",
    "billing.finalize_10k_s",
];
const WEBHOOK_ROWS: [&str; 4] =
    ["webhook.verify_us", "webhook.apply_us", "webhook.store_us", "webhook.events_per_s"];

/// Rows whose count is the billing run's: they say so when it is not the 10,000.
fn counted_by_the_run(id: &str) -> bool {
    id.starts_with("billing.") && id != "billing.report_to_upcoming_p99_ms" || id.starts_with("webhook.")
}

/// 10000 as "10,000".
fn group(n: usize) -> String {
    // `format_value` shows three significant digits: a count under 1,000 as it is.
    if n < 1_000 { n.to_string() } else { crate::report::format_value(n as f64) }
}

/// The section's rows as missing, with `note` (the child could not run).
pub fn missing_rows(note: &str) -> Vec<Row> {
    planned()
        .into_iter()
        .map(|(id, name, unit, better, anchor)| Row::missing(id, SECTION, name, unit, better, anchor, note))
        .collect()
}

/// Runs in the child: the stack on DynamoDB Local, then each figure.
pub async fn rows() -> Vec<Row> {
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let mut measured: HashMap<&str, Result<f64, String>> = HashMap::new();
    let mut notes: HashMap<&str, String> = HashMap::new();
    match measure(&sdk, &mut measured, &mut notes).await {
        Ok(()) => {}
        Err(error) => {
            let note = format!("failed: {error:#}");
            for (id, ..) in planned() {
                measured.entry(id).or_insert_with(|| Err(note.clone()));
            }
        }
    }
    let count = billing_run::tenants();
    let mut rows: Vec<Row> = planned()
        .into_iter()
        .map(|(id, name, unit, better, anchor)| match measured.remove(id) {
            Some(Ok(value)) => Row::measured(id, SECTION, name, value, unit, better, anchor),
            Some(Err(note)) => Row::missing(id, SECTION, name, unit, better, anchor, note),
            None => Row::missing(id, SECTION, name, unit, better, anchor, "not measured"),
        })
        .collect();
    for row in &mut rows {
        let note = notes.remove(row.id.as_str());
        let scaled = (count != billing_run::TENANTS && counted_by_the_run(&row.id) && row.value.is_some())
            .then(|| {
                format!(
                    "{} tenants ({}), not the issue's 10,000",
                    group(count),
                    billing_run::TENANTS_VARIABLE
                )
            });
        let joined: Vec<String> = [row.note.take(), scaled, note].into_iter().flatten().collect();
        if !joined.is_empty() {
            row.note = Some(joined.join("; "));
        }
    }
    rows
}

async fn measure(
    sdk: &aws_config::SdkConfig,
    measured: &mut HashMap<&'static str, Result<f64, String>>,
    notes: &mut HashMap<&'static str, String>,
) -> anyhow::Result<()> {
    crate::progress("section 5: resources (DynamoDB on DynamoDB Local, the rest on moto)");
    let stack = e2e::prepare_stack(sdk).await?;
    let server = Server::start(&stack).await?;
    let (token, tenant) = e2e::active_tenant(&server).await?;
    let dynamo = aws_sdk_dynamodb::Client::new(sdk);
    let table = stack.platform.store.table().to_owned();

    // DynamoDB Local is a JVM: its first thousands of requests run slower (JIT), so it is
    // warmed up first, and the raw rate is taken before and after ours, the higher counting.
    crate::progress("section 5: warming DynamoDB Local up (5,000 conditional PutItems)");
    raw_conditional_puts(&dynamo, &table, 5_000).await?;
    crate::progress(format!(
        "section 5: raw conditional PutItems, {} before and after ours",
        INGEST_BATCHES * BATCH
    ));
    let raw_before = raw_conditional_puts(&dynamo, &table, INGEST_BATCHES * BATCH).await;
    crate::progress(format!("section 5: usage ingestion, {INGEST_BATCHES} batches of {BATCH}"));
    let ingest = ingest(&server, &token, &tenant).await;
    let raw_after = raw_conditional_puts(&dynamo, &table, INGEST_BATCHES * BATCH).await;
    let raw = match (raw_before, raw_after) {
        (Ok(before), Ok(after)) => Ok(before.max(after)),
        (Err(error), _) | (_, Err(error)) => Err(error),
    };
    if let (Ok(ours), Ok(raw)) = (&ingest, &raw) {
        measured.insert("usage.ingest_share_pct", Ok(100.0 * ours / raw.max(f64::EPSILON)));
    }
    measured.insert("usage.raw_conditional_puts_per_s", raw.map_err(|e| format!("failed: {e:#}")));
    measured.insert("usage.ingest_reports_per_s", ingest.map_err(|e| format!("failed: {e:#}")));

    crate::progress(format!("section 5: GET /v1/tenants/{{id}}, 300 warm-up + {GET_REQUESTS} requests"));
    let path = format!("/v1/tenants/{tenant}");
    let limit = Duration::from_secs(120);
    let load = match e2e::load(&server, &path, Some(&token), 300, GET_CONNECTIONS, limit).await {
        Ok(_) => e2e::load(&server, &path, Some(&token), GET_REQUESTS, GET_CONNECTIONS, limit).await,
        Err(error) => Err(error),
    };
    match load {
        Ok(load) if load.ok == load.requests && load.requests == load.planned => {
            measured.insert("ddb.get_tenant_rps", Ok(load.per_second));
            measured.insert("ddb.get_tenant_p50_ms", Ok(load.latency_ms.p50));
            measured.insert("ddb.get_tenant_p99_ms", Ok(load.latency_ms.p99));
        }
        Ok(load) => {
            let note =
                format!("failed: {} of {} sent, {} answered 2xx", load.requests, load.planned, load.ok);
            for id in ["ddb.get_tenant_rps", "ddb.get_tenant_p50_ms", "ddb.get_tenant_p99_ms"] {
                measured.insert(id, Err(note.clone()));
            }
        }
        Err(error) => {
            for id in ["ddb.get_tenant_rps", "ddb.get_tenant_p50_ms", "ddb.get_tenant_p99_ms"] {
                measured.insert(id, Err(format!("failed: {error:#}")));
            }
        }
    }
    let raw_get = raw_batch_gets(&dynamo, &table, &tenant, GET_REQUESTS).await;
    measured.insert("ddb.raw_batch_get_p50_ms", raw_get.map_err(|e| format!("failed: {e:#}")));

    crate::progress(format!(
        "section 5: {} usage reports, each until the upcoming invoice counts it",
        billing_run::REPORTS_TO_UPCOMING
    ));
    let waits = billing_run::report_to_upcoming(&server, &stack, &token)
        .await
        .and_then(|waits| crate::report::summarize(&waits).context("no report").map(|summary| summary.p99));
    measured.insert("billing.report_to_upcoming_p99_ms", waits.map_err(|e| format!("failed: {e:#}")));

    crate::progress(format!(
        "section 5: {} concurrent onboardings (at most {} s)",
        crate::CONCURRENT_ONBOARDINGS,
        crate::ONBOARDING_LIMIT.as_secs()
    ));
    let onboardings =
        e2e::concurrent_onboardings(&server, crate::CONCURRENT_ONBOARDINGS, crate::ONBOARDING_LIMIT).await;
    crate::record_onboardings(&stack, ONBOARD200_ROWS, onboardings, measured, notes).await;
    // What follows drives its jobs itself: the server's workers and schedules stop first.
    server.shutdown().await;

    // Before the billing run: its seeded tenants are copies with no task, which a pass would
    // relaunch.
    let reconcile = crate::reconcile::tenants();
    crate::progress(format!("section 5: fleet reconcile: provisioning {reconcile} tenants, then one pass"));
    match crate::reconcile::reconcile_pass(&stack, reconcile).await {
        Ok(pass) => {
            let mut note = format!(
                "{} tenants examined, {} repaired; seeding took {:.0} s",
                pass.examined, pass.repaired, pass.seeding_seconds
            );
            if reconcile != crate::reconcile::TENANTS {
                note = format!(
                    "{} tenants ({}), not the issue's 1,000; {note}",
                    group(reconcile),
                    crate::reconcile::TENANTS_VARIABLE
                );
            }
            crate::progress(format!(
                "section 5: reconcile pass {:.1} s, {} ECS calls; {note}",
                pass.seconds, pass.ecs_calls
            ));
            measured.insert(RECONCILE_ROWS[0], Ok(pass.seconds));
            measured.insert(RECONCILE_ROWS[1], Ok(pass.ecs_calls as f64));
            notes.insert(RECONCILE_ROWS[0], note.clone());
            notes.insert(RECONCILE_ROWS[1], note);
        }
        Err(error) => {
            for id in RECONCILE_ROWS {
                measured.insert(id, Err(format!("failed: {error:#}")));
            }
        }
    }

    let run = billing_run::run_10k(&stack, sdk).await;
    match &run {
        Ok(run) => {
            let ours = run.tenants.len() as f64 / run.run_seconds.max(f64::EPSILON);
            measured.insert("billing.run_10k_s", Ok(run.run_seconds));
            measured.insert("billing.requests_per_tenant", Ok(run.requests_per_tenant));
            measured.insert("billing.invoices_written", Ok(run.invoices_written as f64));
            measured.insert("billing.run_redeliveries", Ok(run.redeliveries as f64));
            measured.insert("billing.raw_pattern_tenants_per_s", Ok(run.raw_tenants_per_second));
            measured.insert(
                "billing.run_share_pct",
                Ok(100.0 * ours / run.raw_tenants_per_second.max(f64::EPSILON)),
            );
            measured.insert("billing.seed_10k_s", Ok(run.seed_seconds));
        }
        Err(error) => {
            let note = format!("failed: {error:#}");
            for id in [
                "billing.run_10k_s",
                "billing.requests_per_tenant",
                "billing.invoices_written",
                "billing.run_redeliveries",
                "billing.raw_pattern_tenants_per_s",
                "billing.run_share_pct",
                "billing.seed_10k_s",
            ] {
                measured.insert(id, Err(note.clone()));
            }
        }
    }
    let Ok(run) = run else {
        for id in CHARGE_ROWS.into_iter().chain(WEBHOOK_ROWS) {
            measured.insert(id, Err("not measured: the billing run failed".into()));
        }
        return Ok(());
    };
    match charging_run::charge_all(&stack, sdk, &run.tenants, run.period).await {
        Ok(charge) => {
            measured.insert("billing.charge_10k_s", Ok(charge.charge_seconds));
            measured.insert("billing.stripe_calls_per_tenant", Ok(charge.stripe_calls_per_tenant));
            notes.insert("billing.stripe_calls_per_tenant", charge.stripe_calls_by_endpoint.clone());
            measured.insert("billing.charge_requests_per_tenant", Ok(charge.dynamo_requests_per_tenant));
            measured.insert("billing.invoices_paid", Ok(charge.paid as f64));
            measured.insert("billing.finalize_10k_s", Ok(charge.finalize_seconds));
            notes.insert("billing.charge_10k_s", format!("{} records redelivered", charge.redeliveries));
            match charging_run::webhooks(&stack, &run.tenants, run.period).await {
                Ok(hooks) => {
                    measured.insert("webhook.verify_us", Ok(hooks.verify_us));
                    measured.insert("webhook.apply_us", Ok(hooks.apply_us));
                    measured.insert("webhook.store_us", Ok((hooks.apply_us - hooks.verify_us).max(0.0)));
                    measured.insert("webhook.events_per_s", Ok(hooks.events_per_second));
                    notes.insert("webhook.apply_us", hooks.outcomes.clone());
                    notes.insert("webhook.events_per_s", hooks.outcomes);
                }
                Err(error) => {
                    for id in WEBHOOK_ROWS {
                        measured.insert(id, Err(format!("failed: {error:#}")));
                    }
                }
            }
        }
        Err(error) => {
            let note = format!("failed: {error:#}");
            for id in CHARGE_ROWS.into_iter().chain(WEBHOOK_ROWS) {
                measured.insert(id, Err(note.clone()));
            }
        }
    }
    drop(stack);
    Ok(())
}

/// Reports/s through the HTTP API: `INGEST_CLIENTS` clients each posting batches in turn;
/// every report must come back `accepted` (a duplicate or refusal would flatter the rate).
async fn ingest(server: &Server, token: &str, tenant: &str) -> anyhow::Result<f64> {
    let url = Arc::new(format!("{}/v1/usage", server.base));
    let token = Arc::new(token.to_owned());
    let tenant = Arc::new(tenant.to_owned());
    let run = uuid::Uuid::new_v4().simple().to_string();
    let observed = time::OffsetDateTime::now_utc() - time::Duration::minutes(5);
    let observed = observed.format(&time::format_description::well_known::Rfc3339)?;
    let started = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for client in 0..INGEST_CLIENTS {
        let (http, url, token, tenant) = (server.http.clone(), url.clone(), token.clone(), tenant.clone());
        let (run, observed) = (run.clone(), observed.clone());
        clients.spawn(async move {
            let mut accepted = 0usize;
            for batch in (client..INGEST_BATCHES).step_by(INGEST_CLIENTS) {
                let reports: Vec<Value> = (0..BATCH)
                    .map(|i| {
                        json!({
                            "report_id": format!("bench-{run}-{batch}-{i}"),
                            "customer_count": 500 + i,
                            "observed_at": observed,
                        })
                    })
                    .collect();
                let response = http
                    .post(url.as_str())
                    .bearer_auth(token.as_str())
                    .json(&json!({ "tenant_id": tenant.as_str(), "reports": reports }))
                    .send()
                    .await?;
                let status = response.status();
                let answer: Value = response.json().await?;
                if !status.is_success() {
                    bail!("POST /v1/usage answered {status}: {answer}");
                }
                accepted += answer["accepted"].as_u64().map_or(0, |n| n as usize);
            }
            anyhow::Ok(accepted)
        });
    }
    let mut accepted = 0;
    while let Some(joined) = clients.join_next().await {
        accepted += joined??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    if accepted != INGEST_BATCHES * BATCH {
        bail!("{accepted} of {} reports accepted", INGEST_BATCHES * BATCH);
    }
    Ok(accepted as f64 / elapsed.max(f64::EPSILON))
}

/// Puts/s of bare conditional PutItems shaped like a usage report (its key, index key and
/// fields), `RAW_IN_FLIGHT` at a time: what the backend allows for the ingestion's request.
async fn raw_conditional_puts(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    total: usize,
) -> anyhow::Result<f64> {
    let s = |v: String| AttributeValue::S(v);
    let partition = uuid::Uuid::new_v4().simple().to_string();
    let started = Instant::now();
    let mut writers = tokio::task::JoinSet::new();
    for writer in 0..RAW_IN_FLIGHT {
        let (client, table, partition) = (client.clone(), table.to_owned(), partition.clone());
        writers.spawn(async move {
            for n in (writer..total).step_by(RAW_IN_FLIGHT) {
                let report = format!("raw-{n}");
                let record = HashMap::from([
                    ("tenant_id".to_owned(), s(partition.clone())),
                    ("report_id".to_owned(), s(report.clone())),
                    ("customer_count".to_owned(), AttributeValue::N((500 + n % 100).to_string())),
                    ("observed_at".to_owned(), s("2026-12-01T10:00:00Z".into())),
                    ("received_at".to_owned(), s("2026-12-01T10:00:01Z".into())),
                ]);
                client
                    .put_item()
                    .table_name(&table)
                    .item("PK", s(format!("TENANT#{partition}")))
                    .item("SK", s(format!("USAGE#{report}")))
                    .item("GSI1PK", s(format!("TENANT#{partition}#USAGE")))
                    .item("GSI1SK", s(format!("{:015}#{report}", 1_764_583_200_000u64)))
                    .item("entity", s("usage_report".into()))
                    .item("record", AttributeValue::M(record))
                    .condition_expression("attribute_not_exists(PK)")
                    .return_values_on_condition_check_failure(
                        aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure::AllOld,
                    )
                    .send()
                    .await
                    .context("PutItem")?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(joined) = writers.join_next().await {
        joined??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64().max(f64::EPSILON))
}

/// p50 ms of bare BatchGetItems of five keys of the tenant's partition (the admission read's
/// shape: deny entry, session, user, roles, tenant), `GET_CONNECTIONS` in flight.
async fn raw_batch_gets(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    tenant: &str,
    total: usize,
) -> anyhow::Result<f64> {
    use aws_sdk_dynamodb::types::KeysAndAttributes;
    let key = |pk: String, sk: &str| {
        HashMap::from([
            ("PK".to_owned(), AttributeValue::S(pk)),
            ("SK".to_owned(), AttributeValue::S(sk.into())),
        ])
    };
    let keys = KeysAndAttributes::builder()
        .set_keys(Some(vec![
            key(format!("TENANT#{tenant}"), "PROFILE"),
            key("DENY#bench".into(), "DENY"),
            key("SESSION#bench".into(), "SESSION"),
            key("PLATFORM".into(), "USER#bench"),
            key(format!("TENANT#{tenant}"), "ROLES"),
        ]))
        .consistent_read(true)
        .build()?;
    let per_worker = total / GET_CONNECTIONS;
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..GET_CONNECTIONS {
        let (client, table, keys) = (client.clone(), table.to_owned(), keys.clone());
        workers.spawn(async move {
            let mut latencies = Vec::with_capacity(per_worker);
            for _ in 0..per_worker {
                let began = Instant::now();
                client
                    .batch_get_item()
                    .request_items(&table, keys.clone())
                    .send()
                    .await
                    .context("BatchGetItem")?;
                latencies.push(began.elapsed().as_secs_f64() * 1000.0);
            }
            anyhow::Ok(latencies)
        });
    }
    let mut latencies = Vec::with_capacity(total);
    while let Some(joined) = workers.join_next().await {
        latencies.extend(joined??);
    }
    Ok(crate::report::summarize(&latencies).context("no request")?.p50)
}

/// Runs the section in a child process pointed at a DynamoDB Local this process started.
pub fn run_in_child(root: &std::path::Path, work: &std::path::Path) -> Vec<Row> {
    let attempt = || -> anyhow::Result<Vec<Row>> {
        let local = crate::dynamodb_local::start(root)?;
        let out = work.join("dynamodb-local-rows.json");
        let _ = std::fs::remove_file(&out);
        let status = std::process::Command::new(std::env::current_exe()?)
            .arg(CHILD_ARG)
            .arg(&out)
            .env("AWS_ENDPOINT_URL_DYNAMODB", &local.endpoint)
            .status()
            .context("running the section-5 child")?;
        if !status.success() {
            bail!("the section-5 child failed ({status})");
        }
        let rows: Vec<Row> = serde_json::from_slice(&std::fs::read(&out)?)?;
        drop(local);
        Ok(rows)
    };
    attempt().unwrap_or_else(|error| missing_rows(&format!("failed: {error:#}")))
}
