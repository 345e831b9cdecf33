//! ECS throttling, produced by a small proxy that answers every ECS call as AWS does when the
//! account's request rate is exceeded (HTTP 400, `ThrottlingException`): the provisioner
//! reports it as throttling, and the SQS adapter backs the message off with
//! ChangeMessageVisibility instead of leaving it to the queue's visibility timeout.

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use dotmac_domain::TenantStatus;
use dotmac_queue::lambda::{Backoff, BatchLimits, handle_sqs_event_until};
use dotmac_queue::{JobError, JobHandler, ProvisioningJob};
use dotmac_tests::TestStack;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::provisioner::{delivery, onboarded};

/// An ECS endpoint that throttles everything; counts the calls it refused.
async fn throttling_ecs(stack: &TestStack) -> (aws_sdk_ecs::Client, Arc<AtomicUsize>) {
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
    let config = aws_sdk_ecs::config::Builder::from(&stack.sdk)
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
    let (ecs, calls) = throttling_ecs(&stack).await;
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

#[tokio::test]
async fn a_throttled_message_backs_off_with_a_visibility_change() {
    let stack = TestStack::new(&[]).await;
    let tenant = onboarded(&stack, "usage").await;
    let queue = stack.platform.provisioning.clone();
    queue.enqueue(ProvisioningJob::ProvisionTenant { tenant_id: tenant.id }).await.expect("enqueued");
    let received = queue.receive(1, 5).await.expect("received");
    let message = received.first().expect("the job");

    let mut record = SqsMessage::default();
    record.message_id = Some(message.message_id.clone());
    record.receipt_handle = Some(message.receipt_handle.clone());
    record.body = Some(message.body.clone());
    record.attributes.insert("ApproximateReceiveCount".into(), message.receive_count.to_string());
    let mut event = SqsEvent::default();
    event.records = vec![record];

    let (ecs, _) = throttling_ecs(&stack).await;
    let mut platform = stack.platform.clone();
    platform.ecs = ecs;
    let limits = BatchLimits {
        stop_at: tokio::time::Instant::now() + Duration::from_secs(60),
        queue: Some(queue.clone()),
        backoff: Backoff { base_seconds: 1, max_seconds: 2 },
    };
    let response = handle_sqs_event_until(&platform.provisioner(), event, 5, &limits).await;
    let failed: Vec<_> = response.batch_item_failures.iter().map(|f| f.item_identifier.clone()).collect();
    assert_eq!(failed, vec![message.message_id.clone()], "handed back for a later attempt");

    // The queue's own visibility timeout is 120 s: seeing the message again within seconds
    // means the adapter changed its visibility to the back-off.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let again = queue.receive(1, 1).await.expect("receive");
        if let Some(redelivered) = again.first() {
            assert_eq!(redelivered.message_id, message.message_id);
            assert_eq!(redelivered.receive_count, message.receive_count + 1);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the throttled message did not come back after its back-off"
        );
    }
}
