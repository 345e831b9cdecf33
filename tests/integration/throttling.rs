//! ECS throttling, produced by a small proxy that answers every ECS call as AWS does when the
//! account's request rate is exceeded (HTTP 400, `ThrottlingException`): the provisioner
//! reports it as throttling, and the SQS adapter re-sends the job as a new, delayed message
//! and lets the event source mapping delete the original, so a burst of throttles uses none of
//! the receive counts that would move a healthy job to the dead-letter queue.

use dotmac_domain::{Tenant, TenantStatus};
use dotmac_queue::lambda::{Backoff, BatchLimits, Resend, handle_sqs_event_until};
use dotmac_queue::{
    Envelope, JobError, JobHandler, ProvisioningJob, QueueSettings, ReceivedMessage, SqsQueue,
    ensure_queue_with_dlq,
};
use dotmac_tests::{TestStack, sqs_event};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::time::Instant;

use crate::provisioner::{delivery, onboarded, tenant_task_arns};

/// An ECS client whose every call is throttled (same credentials and region as `sdk`); counts
/// the calls it refused.
pub(crate) async fn throttling_ecs(sdk: &aws_config::SdkConfig) -> (aws_sdk_ecs::Client, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let app = axum::Router::new().fallback(move || {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            (
                http::StatusCode::BAD_REQUEST,
                [("content-type", "application/x-amz-json-1.1"), ("x-amzn-requestid", "throttled")],
                r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#,
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    let config = aws_sdk_ecs::config::Builder::from(sdk)
        .endpoint_url(url)
        // One attempt per call: the SDK's own retries would only slow the test down.
        .retry_config(aws_sdk_ecs::config::retry::RetryConfig::standard().with_max_attempts(1))
        .build();
    (aws_sdk_ecs::Client::from_conf(config), calls)
}

#[tokio::test]
async fn ecs_throttling_is_reported_as_throttling_and_the_lease_is_freed() {
    let stack = TestStack::new(&[]).await;
    let tenant = onboarded(&stack, "usage").await;
    let (ecs, calls) = throttling_ecs(&stack.sdk).await;
    let mut platform = stack.platform.clone();
    platform.ecs = ecs;
    let outcome = platform
        .provisioner()
        .handle(ProvisioningJob::ProvisionTenant { tenant_id: tenant.id }, &delivery(1, 5))
        .await;
    assert!(
        matches!(&outcome, Err(JobError::Throttled(reason)) if reason.contains("ThrottlingException")),
        "{outcome:?}"
    );
    assert!(calls.load(Ordering::SeqCst) >= 1, "the proxy answered");
    let record = stack.platform.store.get_tenant_record(tenant.id).await.expect("get").expect("exists");
    assert_eq!(record.tenant.status, TenantStatus::Provisioning, "a throttle is not a failure");
    assert!(record.lease.is_none(), "the next attempt may start at once");
}

/// A tenant whose job waits on a queue of the test's own (with its dead-letter queue), a
/// platform whose ECS throttles everything, and the adapter's limits re-sending to that queue
/// (1 s delays) up to `max_resends` times.
struct Scene {
    stack: TestStack,
    tenant: Tenant,
    queue: SqsQueue,
    dlq: SqsQueue,
    job_id: uuid::Uuid,
    throttled: dotmac_platform::Platform,
    refused: Arc<AtomicUsize>,
    limits: BatchLimits,
}

impl Scene {
    async fn new(settings: QueueSettings, max_resends: u32) -> Scene {
        let stack = TestStack::new(&[]).await;
        let tenant = onboarded(&stack, "usage").await;
        let client = aws_sdk_sqs::Client::new(&stack.sdk);
        let name =
            format!("{}-throttled-{}", stack.local.prefix, &uuid::Uuid::new_v4().simple().to_string()[..6]);
        let (queue, dlq) = ensure_queue_with_dlq(&client, &name, settings).await.expect("queues");
        let envelope = Envelope::new(ProvisioningJob::ProvisionTenant { tenant_id: tenant.id });
        queue.send(&envelope).await.expect("enqueued");
        let (ecs, refused) = throttling_ecs(&stack.sdk).await;
        let mut throttled = stack.platform.clone();
        throttled.ecs = ecs;
        let limits = BatchLimits {
            stop_at: Instant::now() + Duration::from_secs(60),
            throttled: Some(Resend {
                queue: queue.clone(),
                backoff: Backoff { base_seconds: 1, max_seconds: 1 },
                max_resends,
            }),
        };
        Scene { stack, tenant, queue, dlq, job_id: envelope.job_id, throttled, refused, limits }
    }
}

/// The next message, waiting up to `within` for it (a re-sent copy is delayed).
async fn next_message(queue: &SqsQueue, within: Duration) -> ReceivedMessage {
    let deadline = Instant::now() + within;
    loop {
        if let Some(message) = queue.receive(1, 1).await.expect("receive").into_iter().next() {
            return message;
        }
        assert!(Instant::now() < deadline, "no message came back within {within:?}");
    }
}

/// One invocation as Lambda's event source mapping runs it: the function answers, and the
/// mapping deletes every message it did not report as failed. Returns the failed message ids.
async fn invoke(
    platform: &dotmac_platform::Platform,
    queue: &SqsQueue,
    message: &ReceivedMessage,
    max_receive_count: u32,
    limits: &BatchLimits,
) -> Vec<String> {
    let event = sqs_event(std::slice::from_ref(message));
    let response = handle_sqs_event_until(&platform.provisioner(), event, max_receive_count, limits).await;
    let failed: Vec<String> = response.batch_item_failures.into_iter().map(|f| f.item_identifier).collect();
    if !failed.contains(&message.message_id) {
        queue.ack(&message.receipt_handle).await.expect("deleted as the event source mapping does");
    }
    failed
}

fn envelope(message: &ReceivedMessage) -> Envelope<ProvisioningJob> {
    serde_json::from_str(&message.body).expect("a job envelope")
}

#[tokio::test]
async fn a_throttled_job_comes_back_with_its_receive_count_unused_and_runs_once_ecs_recovers() {
    // Two receives before the dead-letter queue: the job is throttled three times, more than
    // that, and must still be on the queue (not in the DLQ) afterwards.
    let max_receive_count = 2;
    let Scene { stack, tenant, queue, dlq, job_id, throttled, refused, limits } =
        Scene::new(QueueSettings { visibility_timeout_seconds: 30, max_receive_count }, 5).await;

    for throttle in 0..3 {
        let message = next_message(&queue, Duration::from_secs(10)).await;
        assert_eq!(message.receive_count, 1, "throttle {throttle}: a fresh message, no receive used");
        let sent = envelope(&message);
        assert_eq!((sent.job_id, sent.throttles), (job_id, throttle), "the same job, its throttles counted");
        let failed = invoke(&throttled, &queue, &message, max_receive_count, &limits).await;
        assert!(failed.is_empty(), "throttle {throttle}: re-sent, so not a failure: {failed:?}");
        // The copy waits out its back-off before anyone sees it.
        let at_once = queue.receive(1, 0).await.expect("receive");
        assert!(at_once.is_empty(), "throttle {throttle}: the re-sent copy is delayed, not visible at once");
    }
    assert!(refused.load(Ordering::SeqCst) >= 3, "ECS was asked, and throttled, each time");
    let stored = stack.platform.store.get_tenant(tenant.id).await.expect("get").expect("exists");
    assert_eq!(stored.status, TenantStatus::Provisioning, "throttles never fail the tenant");

    // ECS recovers: the next delivery provisions the tenant, once.
    let message = next_message(&queue, Duration::from_secs(10)).await;
    assert_eq!((message.receive_count, envelope(&message).throttles), (1, 3));
    let failed = invoke(&stack.platform, &queue, &message, max_receive_count, &limits).await;
    assert!(failed.is_empty(), "{failed:?}");
    let stored = stack.platform.store.get_tenant(tenant.id).await.expect("get").expect("exists");
    assert_eq!(stored.status, TenantStatus::Active, "{stored:?}");
    assert_eq!(tenant_task_arns(&stack, &tenant).await.len(), 1, "one task: the job ran once");
    assert!(queue.receive(1, 2).await.expect("receive").is_empty(), "nothing left on the queue");
    assert!(dlq.receive(1, 0).await.expect("receive").is_empty(), "nothing in the dead-letter queue");
}

#[tokio::test]
async fn past_its_re_sends_a_throttled_job_fails_normally_and_reaches_the_dlq() {
    // One receive before the DLQ, one re-send allowed: the second throttle is the end.
    let max_receive_count = 1;
    let Scene { stack, tenant, queue, dlq, job_id, throttled, limits, .. } =
        Scene::new(QueueSettings { visibility_timeout_seconds: 1, max_receive_count }, 1).await;

    let first = next_message(&queue, Duration::from_secs(10)).await;
    let failed = invoke(&throttled, &queue, &first, max_receive_count, &limits).await;
    assert!(failed.is_empty(), "within the budget: re-sent ({failed:?})");
    let stored = stack.platform.store.get_tenant(tenant.id).await.expect("get").expect("exists");
    assert_eq!(
        stored.status,
        TenantStatus::Provisioning,
        "a re-sent job is not given up, last receive or not"
    );

    let second = next_message(&queue, Duration::from_secs(10)).await;
    assert_eq!(envelope(&second).throttles, 1);
    let failed = invoke(&throttled, &queue, &second, max_receive_count, &limits).await;
    assert_eq!(failed, vec![second.message_id.clone()], "past the budget: an ordinary failure");
    let stored = stack.platform.store.get_tenant(tenant.id).await.expect("get").expect("exists");
    assert_eq!(stored.status, TenantStatus::Failed, "its last attempt gave the tenant up");
    assert!(stored.failure_reason.as_deref().is_some_and(|r| r.contains("throttled")), "{stored:?}");

    // SQS moves it to the DLQ on the receive after its visibility timeout; no copy was sent.
    let deadline = Instant::now() + Duration::from_secs(15);
    let dead = loop {
        assert!(queue.receive(1, 1).await.expect("receive").is_empty(), "no re-sent copy, no redelivery");
        if let Some(dead) = dlq.receive(1, 0).await.expect("receive").into_iter().next() {
            break dead;
        }
        assert!(Instant::now() < deadline, "the job never reached the dead-letter queue");
    };
    assert_eq!((envelope(&dead).job_id, envelope(&dead).throttles), (job_id, 1));
}
