//! The 10,000-tenant billing run on DynamoDB Local (section 5), beside the backend's own rate
//! for the same read+write pattern, and the time from a usage report to the upcoming invoice.
//!
//! moto's SQS scans the whole queue on every call, so 10,000 queued jobs would measure moto.
//! The invoice jobs are instead driven in process through the billing worker's Lambda entry
//! point (`handle_sqs_event`, what the deployed function runs for each SQS event), as batches
//! of `BATCH_SIZE` records with `INVOCATIONS` invocations at once (the event source mapping's
//! batch size, and the 5 concurrent invocations Lambda starts an SQS event source with), each
//! invocation an instance of its own (its own price cache). A record the invocation reports
//! failed is delivered again with its receive count one higher, as SQS would, but at once
//! rather than after the visibility timeout. The fan-out (a page of tenants at a time onto the
//! queue) is not part of the figure.

use crate::e2e::{CountAttempts, Server, Stack};
use anyhow::{Context, bail};
use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use aws_sdk_dynamodb::types::{
    AttributeValue, Put, PutRequest, Select, TransactWriteItem, Update, WriteRequest,
};
use dotmac_billing::Period;
use dotmac_domain::{Email, NewTenant, PlanId, Tenant, TenantId, TenantName, TenantSlug, TenantStatus};
use dotmac_queue::{BillingJob, Envelope};
use dotmac_store::{BillingRun, OutboxEvent, UsageReport};
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use time::OffsetDateTime;

/// Tenants of the run unless `DOTMAC_BENCH_BILLING_TENANTS` says otherwise (`make bench`
/// runs the 10,000; a smaller count is for a quick look on a debug build).
pub const TENANTS: usize = 10_000;
pub const TENANTS_VARIABLE: &str = "DOTMAC_BENCH_BILLING_TENANTS";
/// Records per SQS event: the billing worker's event source mapping's `BatchSize`.
pub const BATCH_SIZE: usize = 10;
/// Invocations at once: the concurrency Lambda starts an SQS event source mapping with.
pub const INVOCATIONS: usize = 5;
/// Tenants the bare pattern is run over, once before our run and once after.
const RAW_TENANTS: usize = 2_000;
/// BatchWriteItem calls in flight while seeding.
const SEED_IN_FLIGHT: usize = 8;
pub const REPORTS_TO_UPCOMING: usize = 200;

type Item = HashMap<String, AttributeValue>;

/// The run's tenant count: `DOTMAC_BENCH_BILLING_TENANTS` if it is a positive number, else
/// `TENANTS`.
pub fn tenants() -> usize {
    crate::count_setting(TENANTS_VARIABLE, TENANTS)
}

/// What the run measured.
pub struct RunFigures {
    pub seed_seconds: f64,
    pub run_seconds: f64,
    pub requests_per_tenant: f64,
    pub invoices_written: u64,
    pub redeliveries: u64,
    pub raw_tenants_per_second: f64,
    /// What the run invoiced (drafts of `period`), for the charge phase after it.
    pub tenants: Vec<TenantId>,
    pub period: Period,
}

/// Every string in `value` with `from` replaced by `to` (pairs in order), recursively.
fn substitute(value: &AttributeValue, pairs: &[(String, String)]) -> AttributeValue {
    match value {
        AttributeValue::S(text) => {
            AttributeValue::S(pairs.iter().fold(text.clone(), |text, (from, to)| text.replace(from, to)))
        }
        AttributeValue::M(map) => {
            AttributeValue::M(map.iter().map(|(k, v)| (k.clone(), substitute(v, pairs))).collect())
        }
        AttributeValue::L(list) => AttributeValue::L(list.iter().map(|v| substitute(v, pairs)).collect()),
        other => other.clone(),
    }
}

fn text(item: &Item, name: &str) -> String {
    item.get(name).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default()
}

/// One onboarded tenant as the store writes it, to copy: its items (profile, slug claim, first
/// plan span, `tenant.created` event, usage reports) and what names it in them.
struct Template {
    tenant: TenantId,
    slug: String,
    plan: PlanId,
    items: Vec<Item>,
}

fn slug_of(n: usize, run: &str) -> String {
    format!("bench-{run}-{n:05}")
}

/// A tenant through the store's own writes (onboarding's transaction, two usage reports of
/// `period`), then read back raw.
async fn template(
    stack: &Stack,
    dynamo: &aws_sdk_dynamodb::Client,
    plan: &str,
    period: Period,
    run: &str,
    n: usize,
) -> anyhow::Result<Template> {
    let store = &stack.platform.store;
    let slug = slug_of(n, run);
    let mut tenant = Tenant::onboard(
        NewTenant {
            name: TenantName::parse("Bench ISP")?,
            slug: TenantSlug::parse(&slug)?,
            plan: PlanId::parse(plan)?,
            contact_email: Email::parse("ops@bench.example")?,
            partner_id: None,
        },
        period.start() - time::Duration::days(30),
    );
    tenant.status = TenantStatus::Active;
    store.create_tenant(&tenant).await?;
    for (day, count) in [(1, 400u64), (15, 900)] {
        let report = UsageReport {
            report_id: format!("hourly-{day:02}"),
            tenant_id: tenant.id,
            customer_count: count,
            observed_at: period.start() + time::Duration::days(day),
            received_at: period.start() + time::Duration::days(day) + time::Duration::seconds(2),
        };
        store.record_usage(&report).await?;
    }
    let mut items = query_all(
        dynamo
            .query()
            .table_name(store.table())
            .key_condition_expression("PK = :pk")
            .expression_attribute_values(":pk", AttributeValue::S(format!("TENANT#{}", tenant.id))),
    )
    .await?;
    let claim = dynamo
        .get_item()
        .table_name(store.table())
        .key("PK", AttributeValue::S(format!("SLUG#{slug}")))
        .key("SK", AttributeValue::S("SLUG".into()))
        .send()
        .await?
        .item
        .context("the slug claim")?;
    items.push(claim);
    Ok(Template { tenant: tenant.id, slug, plan: tenant.plan, items })
}

async fn query_all(
    query: aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder,
) -> anyhow::Result<Vec<Item>> {
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let page = query.clone().set_exclusive_start_key(start).send().await.context("Query")?;
        items.extend(page.items.unwrap_or_default());
        match page.last_evaluated_key {
            Some(last) => start = Some(last),
            None => return Ok(items),
        }
    }
}

/// Writes `items` with BatchWriteItem, 25 a call, `SEED_IN_FLIGHT` calls at once, resending
/// what comes back unprocessed.
async fn batch_write(dynamo: &aws_sdk_dynamodb::Client, table: &str, items: Vec<Item>) -> anyhow::Result<()> {
    let chunks: Arc<Mutex<VecDeque<Vec<Item>>>> =
        Arc::new(Mutex::new(items.chunks(25).map(<[Item]>::to_vec).collect()));
    let mut writers = tokio::task::JoinSet::new();
    for _ in 0..SEED_IN_FLIGHT {
        let (dynamo, table, chunks) = (dynamo.clone(), table.to_owned(), chunks.clone());
        writers.spawn(async move {
            loop {
                let Some(chunk) = chunks.lock().unwrap_or_else(PoisonError::into_inner).pop_front() else {
                    return anyhow::Ok(());
                };
                let mut requests: Vec<WriteRequest> = chunk
                    .into_iter()
                    .map(|item| {
                        let put = PutRequest::builder().set_item(Some(item)).build()?;
                        anyhow::Ok(WriteRequest::builder().put_request(put).build())
                    })
                    .collect::<anyhow::Result<_>>()?;
                for _ in 0..20 {
                    let output = dynamo
                        .batch_write_item()
                        .request_items(&table, requests)
                        .send()
                        .await
                        .context("BatchWriteItem")?;
                    requests =
                        output.unprocessed_items.and_then(|mut left| left.remove(&table)).unwrap_or_default();
                    if requests.is_empty() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                if !requests.is_empty() {
                    bail!("BatchWriteItem left {} items unprocessed", requests.len());
                }
            }
        });
    }
    while let Some(joined) = writers.join_next().await {
        joined??;
    }
    Ok(())
}

/// The seeded tenants: id and plan.
struct Seeded {
    tenants: Vec<(TenantId, PlanId)>,
    templates: Vec<Template>,
}

/// 10,000 active tenants over the three seeded plans, each a copy of a template onboarded by
/// the store (so every item has the real shape) with its own id, slug and customer counts.
async fn seed(stack: &Stack, dynamo: &aws_sdk_dynamodb::Client, period: Period) -> anyhow::Result<Seeded> {
    let run = &uuid::Uuid::new_v4().simple().to_string()[..6];
    let mut templates = Vec::new();
    for (n, plan) in ["usage", "scaled", "enterprise"].into_iter().enumerate() {
        templates.push(template(stack, dynamo, plan, period, run, tenants() + n).await?);
    }
    let count = tenants();
    let mut items = Vec::with_capacity(count * templates[0].items.len());
    let mut tenants = Vec::with_capacity(count);
    for n in 0..count {
        let template = &templates[n % templates.len()];
        let id = TenantId::generate();
        let pairs = [(template.tenant.to_string(), id.to_string()), (template.slug.clone(), slug_of(n, run))];
        for item in &template.items {
            let mut copy: Item = item.iter().map(|(k, v)| (k.clone(), substitute(v, &pairs))).collect();
            if text(&copy, "entity") == "usage_report" {
                // Counts spread over every tier of every plan.
                let base: u64 = copy
                    .get("customer_count")
                    .and_then(|v| v.as_n().ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let count = base + (n as u64 * 37) % 4_000;
                copy.insert("customer_count".into(), AttributeValue::N(count.to_string()));
            }
            items.push(copy);
        }
        tenants.push((id, template.plan.clone()));
    }
    batch_write(dynamo, stack.platform.store.table(), items).await?;
    Ok(Seeded { tenants, templates })
}

/// Opens a run of `period` whose fan-out is done (its jobs are driven here), counting `total`.
async fn open_run(stack: &Stack, id: &str, period: Period, total: usize) -> anyhow::Result<()> {
    let now = OffsetDateTime::now_utc();
    let run = BillingRun {
        id: id.to_owned(),
        period,
        tenant_ids: Vec::new(),
        requested_by: "bench".into(),
        created_at: now,
        cursor: None,
        fanned_out: true,
        tenants_total: total as u64,
        invoiced: 0,
        failed: 0,
    };
    let event = OutboxEvent {
        event_id: uuid::Uuid::now_v7().to_string(),
        detail_type: "billing.cycle_started".into(),
        source: "dotmac.platform".into(),
        detail: json!({ "id": id, "period": period.to_string() }).to_string(),
        created_at: now,
        published: true,
    };
    stack.platform.store.open_billing_run(&run, &event).await?;
    Ok(())
}

/// Runs the tenants' invoice jobs through `INVOCATIONS` billing-worker instances, `BATCH_SIZE`
/// records an invocation, redelivering failed records; the redeliveries, or an error if a
/// job used up its receive count.
async fn drive(
    instances: Vec<dotmac_platform::Platform>,
    run_id: &str,
    period: Period,
    tenants: &[(TenantId, PlanId)],
) -> anyhow::Result<u64> {
    let jobs = tenants
        .iter()
        .map(|(tenant, plan)| BillingJob::InvoiceTenant {
            run_id: run_id.to_owned(),
            tenant_id: *tenant,
            period: period.to_string(),
            plan: plan.clone(),
            partner_id: None,
        })
        .collect();
    drive_jobs(instances, jobs).await
}

/// Runs `jobs` as the billing queue's consumer would get them (see the module's comment):
/// `INVOCATIONS` instances (one per entry of `instances`), `BATCH_SIZE` records an
/// invocation, failed records delivered again; the redeliveries.
pub async fn drive_jobs(
    instances: Vec<dotmac_platform::Platform>,
    jobs: Vec<BillingJob>,
) -> anyhow::Result<u64> {
    let max_receive_count = instances.first().context("an instance")?.config.billing.max_receive_count;
    let pending: VecDeque<(String, String, u32)> = jobs
        .into_iter()
        .enumerate()
        .map(|(n, job)| Ok((format!("m-{n}"), serde_json::to_string(&Envelope::new(job))?, 1)))
        .collect::<anyhow::Result<_>>()?;
    let left = Arc::new(AtomicUsize::new(pending.len()));
    let pending = Arc::new(Mutex::new(pending));
    let redeliveries = Arc::new(AtomicU64::new(0));
    let mut invocations = tokio::task::JoinSet::new();
    for platform in instances {
        let (left, pending, redeliveries) = (left.clone(), pending.clone(), redeliveries.clone());
        invocations.spawn(async move {
            let worker = platform.billing_worker();
            loop {
                let batch: Vec<(String, String, u32)> = {
                    let mut pending = pending.lock().unwrap_or_else(PoisonError::into_inner);
                    let take = pending.len().min(BATCH_SIZE);
                    pending.drain(..take).collect()
                };
                if batch.is_empty() {
                    if left.load(Ordering::Acquire) == 0 {
                        return anyhow::Ok(());
                    }
                    // Another invocation's records may still come back.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
                let mut event = SqsEvent::default();
                event.records = batch
                    .iter()
                    .map(|(id, body, receive_count)| {
                        let mut message = SqsMessage::default();
                        message.message_id = Some(id.clone());
                        message.body = Some(body.clone());
                        message.attributes = HashMap::from([(
                            "ApproximateReceiveCount".to_owned(),
                            receive_count.to_string(),
                        )]);
                        message
                    })
                    .collect();
                let answer = dotmac_queue::lambda::handle_sqs_event::<BillingJob, _>(
                    &worker,
                    event,
                    max_receive_count,
                )
                .await;
                let failed: Vec<&String> =
                    answer.batch_item_failures.iter().map(|f| &f.item_identifier).collect();
                let mut again = Vec::new();
                for (id, body, receive_count) in batch {
                    if !failed.contains(&&id) {
                        left.fetch_sub(1, Ordering::AcqRel);
                    } else if receive_count >= max_receive_count {
                        bail!("job {id} failed {receive_count} times (it would be in the DLQ)");
                    } else {
                        redeliveries.fetch_add(1, Ordering::Relaxed);
                        again.push((id, body, receive_count + 1));
                    }
                }
                pending.lock().unwrap_or_else(PoisonError::into_inner).extend(again);
            }
        });
    }
    while let Some(joined) = invocations.join_next().await {
        joined??;
    }
    Ok(redeliveries.load(Ordering::Relaxed))
}

/// Invoices of `period` that `run_id` wrote, counted by the platform's invoice index.
async fn invoices_written(
    dynamo: &aws_sdk_dynamodb::Client,
    table: &str,
    period: Period,
    run_id: &str,
) -> anyhow::Result<u64> {
    let mut count = 0u64;
    let mut start = None;
    loop {
        let page = dynamo
            .query()
            .table_name(table)
            .index_name("GSI1")
            .key_condition_expression("GSI1PK = :pk AND begins_with(GSI1SK, :period)")
            .filter_expression("run_id = :run")
            .expression_attribute_values(":pk", AttributeValue::S("INVOICES".into()))
            .expression_attribute_values(":period", AttributeValue::S(format!("{period}#")))
            .expression_attribute_values(":run", AttributeValue::S(run_id.into()))
            .select(Select::Count)
            .set_exclusive_start_key(start)
            .send()
            .await
            .context("Query (count)")?;
        count += u64::try_from(page.count).unwrap_or(0);
        match page.last_evaluated_key {
            Some(last) => start = Some(last),
            None => return Ok(count),
        }
    }
}

/// Tenants/s of the worker's request pattern with nothing of ours around it, `INVOCATIONS ×
/// BATCH_SIZE` tenants in flight: per tenant the usage Query (GSI1, descending), the
/// invoices-and-subscriptions Query (the partition's `INVOICE#<previous>` to
/// `SUBSCRIPTION#~`, consistent) and one TransactWriteItems of a real invoice item, a run
/// mark and the run counter's ADD. The invoices go to a partition of their own per pass
/// (`BENCH_RAW#<pass>#<tenant>`), so they never sit in the tenants' query ranges.
async fn raw_pattern(
    dynamo: &aws_sdk_dynamodb::Client,
    table: &str,
    period: Period,
    tenants: &[(TenantId, PlanId)],
    invoice: &Item,
    pass: &str,
) -> anyhow::Result<f64> {
    let s = |v: String| AttributeValue::S(v);
    let run_pk = format!("BILLING_RUN#raw-{pass}");
    let mut run = HashMap::from([
        ("PK".to_owned(), s(run_pk.clone())),
        ("SK".to_owned(), s("RUN".into())),
        ("entity".to_owned(), s("billing_run".into())),
        ("invoiced".to_owned(), AttributeValue::N("0".into())),
    ]);
    run.insert("period".into(), s(period.to_string()));
    dynamo.put_item().table_name(table).set_item(Some(run)).send().await.context("PutItem (run)")?;
    let template_tenant = text(invoice, "tenant_id");
    let last_ms = (period.end().unix_timestamp_nanos() / 1_000_000 - 1).max(0);
    let usage_to = format!("{last_ms:015}#~");
    let invoices_from = format!("INVOICE#{}", period.previous());
    let queue = Arc::new(Mutex::new(tenants.iter().map(|(t, _)| *t).collect::<VecDeque<_>>()));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..INVOCATIONS * BATCH_SIZE {
        let (dynamo, table, queue) = (dynamo.clone(), table.to_owned(), queue.clone());
        let (invoice, template_tenant, run_pk, pass) =
            (invoice.clone(), template_tenant.clone(), run_pk.clone(), pass.to_owned());
        let (usage_to, invoices_from) = (usage_to.clone(), invoices_from.clone());
        workers.spawn(async move {
            loop {
                let Some(tenant) = queue.lock().unwrap_or_else(PoisonError::into_inner).pop_front() else {
                    return anyhow::Ok(());
                };
                let pk = format!("TENANT#{tenant}");
                dynamo
                    .query()
                    .table_name(&table)
                    .index_name("GSI1")
                    .key_condition_expression("GSI1PK = :pk AND GSI1SK <= :to")
                    .expression_attribute_values(":pk", s(format!("{pk}#USAGE")))
                    .expression_attribute_values(":to", s(usage_to.clone()))
                    .scan_index_forward(false)
                    .limit(1_000)
                    .send()
                    .await
                    .context("Query (usage)")?;
                dynamo
                    .query()
                    .table_name(&table)
                    .key_condition_expression("PK = :pk AND SK BETWEEN :from AND :to")
                    .expression_attribute_values(":pk", s(pk.clone()))
                    .expression_attribute_values(":from", s(invoices_from.clone()))
                    .expression_attribute_values(":to", s("SUBSCRIPTION#~".into()))
                    .consistent_read(true)
                    .send()
                    .await
                    .context("Query (invoices and subscriptions)")?;
                let pairs = [(template_tenant.clone(), tenant.to_string())];
                let mut item: Item =
                    invoice.iter().map(|(k, v)| (k.clone(), substitute(v, &pairs))).collect();
                item.insert("PK".into(), s(format!("BENCH_RAW#{pass}#{tenant}")));
                item.insert("GSI1PK".into(), s(format!("BENCH_RAW_INVOICES#{pass}")));
                let mark = HashMap::from([
                    ("PK".to_owned(), s(run_pk.clone())),
                    ("SK".to_owned(), s(pk.clone())),
                    ("entity".to_owned(), s("billing_run_item".into())),
                    ("tenant_id".to_owned(), s(tenant.to_string())),
                    ("outcome".to_owned(), s("invoiced".into())),
                    ("at".to_owned(), s("2026-12-01T00:00:00Z".into())),
                ]);
                let put = |item: Item| -> anyhow::Result<TransactWriteItem> {
                    Ok(TransactWriteItem::builder()
                        .put(
                            Put::builder()
                                .table_name(&table)
                                .set_item(Some(item))
                                .condition_expression("attribute_not_exists(PK)")
                                .build()?,
                        )
                        .build())
                };
                let count = TransactWriteItem::builder()
                    .update(
                        Update::builder()
                            .table_name(&table)
                            .key("PK", s(run_pk.clone()))
                            .key("SK", s("RUN".into()))
                            .update_expression("ADD invoiced :one")
                            .condition_expression("attribute_exists(PK)")
                            .expression_attribute_values(":one", AttributeValue::N("1".into()))
                            .build()?,
                    )
                    .build();
                dynamo
                    .transact_write_items()
                    .set_transact_items(Some(vec![put(item)?, put(mark)?, count]))
                    .send()
                    .await
                    .context("TransactWriteItems")?;
            }
        });
    }
    while let Some(joined) = workers.join_next().await {
        joined??;
    }
    Ok(tenants.len() as f64 / started.elapsed().as_secs_f64().max(f64::EPSILON))
}

/// The whole billing-run measurement on the stack (its DynamoDB on DynamoDB Local).
pub async fn run_10k(stack: &Stack, sdk: &aws_config::SdkConfig) -> anyhow::Result<RunFigures> {
    let dynamo = aws_sdk_dynamodb::Client::new(sdk);
    let table = stack.platform.store.table().to_owned();
    let period = Period::containing(OffsetDateTime::now_utc()).previous();

    crate::progress(format!(
        "section 5: seeding {} tenants (BatchWriteItem copies of onboarded ones)",
        tenants()
    ));
    let began = Instant::now();
    let seeded = seed(stack, &dynamo, period).await?;
    let seed_seconds = began.elapsed().as_secs_f64();

    // A real invoice item for the bare pattern: the worker invoices the templates first.
    let warm_up = format!("bench-warm-up-{}", uuid::Uuid::new_v4().simple());
    let templates: Vec<(TenantId, PlanId)> =
        seeded.templates.iter().map(|t| (t.tenant, t.plan.clone())).collect();
    open_run(stack, &warm_up, period, templates.len()).await?;
    drive(vec![stack.platform.clone()], &warm_up, period, &templates).await?;
    let invoice = dynamo
        .get_item()
        .table_name(&table)
        .key("PK", AttributeValue::S(format!("TENANT#{}", templates[0].0)))
        .key("SK", AttributeValue::S(format!("INVOICE#{period}")))
        .send()
        .await?
        .item
        .context("the warm-up invoice")?;

    let raw_set = &seeded.tenants[..RAW_TENANTS.min(seeded.tenants.len())];
    crate::progress(format!(
        "section 5: the bare read+write pattern, {} tenants, before ours",
        raw_set.len()
    ));
    let raw_before = raw_pattern(&dynamo, &table, period, raw_set, &invoice, "before").await?;

    let attempts = Arc::new(AtomicU64::new(0));
    let counted = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(sdk).interceptor(CountAttempts(attempts.clone())).build(),
    );
    let instances: Vec<dotmac_platform::Platform> = (0..INVOCATIONS)
        .map(|_| {
            let mut instance = stack.platform.clone();
            instance.store = dotmac_store::Store::new(counted.clone(), &table);
            // Each Lambda instance caches prices on its own.
            instance.prices = Default::default();
            instance
        })
        .collect();
    let count = seeded.tenants.len();
    let run_id = format!("bench-{}", uuid::Uuid::new_v4().simple());
    open_run(stack, &run_id, period, count).await?;
    crate::progress(format!(
        "section 5: billing run over {count} tenants ({INVOCATIONS} invocations × {BATCH_SIZE} records)"
    ));
    let began = Instant::now();
    let redeliveries = drive(instances, &run_id, period, &seeded.tenants).await?;
    let run_seconds = began.elapsed().as_secs_f64();
    let requests = attempts.load(Ordering::Relaxed);

    crate::progress(format!("section 5: the bare read+write pattern, {} tenants, after ours", raw_set.len()));
    let raw_after = raw_pattern(&dynamo, &table, period, raw_set, &invoice, "after").await?;

    let invoices = invoices_written(&dynamo, &table, period, &run_id).await?;
    let run = stack.platform.store.get_billing_run(&run_id).await?.context("the run")?;
    if invoices != count as u64 || run.invoiced != count as u64 || run.failed != 0 {
        bail!(
            "{invoices} invoices read back, the run counts {} invoiced and {} failed, of {count}",
            run.invoiced,
            run.failed
        );
    }
    Ok(RunFigures {
        seed_seconds,
        run_seconds,
        requests_per_tenant: requests as f64 / count as f64,
        invoices_written: invoices,
        redeliveries,
        raw_tenants_per_second: raw_before.max(raw_after),
        tenants: seeded.tenants.iter().map(|(tenant, _)| *tenant).collect(),
        period,
    })
}

/// Milliseconds from each usage report's 2xx to a `GET .../invoices/upcoming` answering with
/// its count (each report a new peak, so the upcoming invoice's billable count names the
/// newest report it counts), `REPORTS_TO_UPCOMING` of them one after another.
pub async fn report_to_upcoming(server: &Server, stack: &Stack, token: &str) -> anyhow::Result<Vec<f64>> {
    let mut tenant = Tenant::onboard(
        NewTenant {
            name: TenantName::parse("Upcoming ISP")?,
            slug: TenantSlug::parse(&format!(
                "upcoming-{}",
                &uuid::Uuid::new_v4().simple().to_string()[..10]
            ))?,
            plan: PlanId::parse("usage")?,
            contact_email: Email::parse("ops@upcoming.example")?,
            partner_id: None,
        },
        OffsetDateTime::now_utc(),
    );
    tenant.status = TenantStatus::Active;
    stack.platform.store.create_tenant(&tenant).await?;
    let report_url = format!("{}/v1/usage", server.base);
    let upcoming_url = format!("{}/v1/tenants/{}/invoices/upcoming", server.base, tenant.id);
    let mut waits = Vec::with_capacity(REPORTS_TO_UPCOMING);
    for n in 0..REPORTS_TO_UPCOMING {
        let count = 1_000 + n as u64;
        let observed = OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339)?;
        let body = json!({ "tenant_id": tenant.id, "report_id": format!("latency-{n}"), "customer_count": count, "observed_at": observed });
        let response = server.http.post(&report_url).bearer_auth(token).json(&body).send().await?;
        let status = response.status();
        if !status.is_success() {
            bail!("POST /v1/usage answered {status}: {}", response.text().await.unwrap_or_default());
        }
        let accepted = Instant::now();
        let deadline = accepted + Duration::from_secs(30);
        loop {
            let response = server.http.get(&upcoming_url).bearer_auth(token).send().await?;
            let status = response.status();
            let upcoming: Value = response.json().await?;
            if !status.is_success() {
                bail!("GET upcoming answered {status}: {upcoming}");
            }
            if upcoming["billable_customers"].as_u64() == Some(count) {
                waits.push(accepted.elapsed().as_secs_f64() * 1000.0);
                break;
            }
            if Instant::now() > deadline {
                bail!("report {n} never showed in the upcoming invoice: {upcoming}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    Ok(waits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_renames_the_tenant_everywhere_and_keeps_everything_else() {
        let item = HashMap::from([
            ("PK".to_owned(), AttributeValue::S("TENANT#abc".into())),
            ("count".to_owned(), AttributeValue::N("7".into())),
            (
                "nested".to_owned(),
                AttributeValue::M(HashMap::from([(
                    "ids".to_owned(),
                    AttributeValue::L(vec![AttributeValue::S("abc and slug-1".into())]),
                )])),
            ),
        ]);
        let pairs = [("abc".to_owned(), "xyz".to_owned()), ("slug-1".to_owned(), "slug-2".to_owned())];
        let copy: Item = item.iter().map(|(k, v)| (k.clone(), substitute(v, &pairs))).collect();
        assert_eq!(copy["PK"], AttributeValue::S("TENANT#xyz".into()));
        assert_eq!(copy["count"], AttributeValue::N("7".into()));
        assert_eq!(
            copy["nested"],
            AttributeValue::M(HashMap::from([(
                "ids".to_owned(),
                AttributeValue::L(vec![AttributeValue::S("xyz and slug-2".into())]),
            )]))
        );
    }
}
