//! The apalis SQS worker against a real SQS API (moto). Needs `AWS_ENDPOINT_URL`, e.g.
//! `moto_server -p 4599` and `AWS_ENDPOINT_URL=http://127.0.0.1:4599 AWS_ACCESS_KEY_ID=test
//! AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 cargo test -p dotmac-queue`.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_sdk_sqs::types::QueueAttributeName;
use dotmac_queue::sqs::{QueueSettings, ensure_queue_with_dlq};
use dotmac_queue::worker::{SqsBackendConfig, WorkerError, run_worker};
use dotmac_queue::{Delivery, Envelope, Job, JobError, JobHandler, ReceivedMessage, SqsQueue};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout};

const DEADLINE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Echo(u32);

impl Job for Echo {
    const QUEUE: &'static str = "apalis-worker-test";
}

/// Records every call, then takes `delay`; fails with `JobError::Retry` when `fail` is set and
/// panics on the first attempt when `panic_once` is.
#[derive(Default)]
struct Recorder {
    fail: bool,
    panic_once: bool,
    delay: Duration,
    calls: Mutex<Vec<(Echo, Delivery)>>,
    finished: AtomicUsize,
}

impl Recorder {
    fn calls(&self) -> Vec<(Echo, Delivery)> {
        self.calls.lock().unwrap().clone()
    }
}

impl JobHandler<Echo> for Recorder {
    async fn handle(&self, job: Echo, delivery: &Delivery) -> Result<(), JobError> {
        self.calls.lock().unwrap().push((job, delivery.clone()));
        sleep(self.delay).await;
        self.finished.fetch_add(1, Ordering::SeqCst);
        if self.panic_once && delivery.receive_count == 1 {
            panic!("handler panicked on purpose");
        }
        if self.fail { Err(JobError::Retry("always fails".into())) } else { Ok(()) }
    }
}

async fn sqs_client() -> aws_sdk_sqs::Client {
    assert!(
        std::env::var_os("AWS_ENDPOINT_URL").is_some(),
        "AWS_ENDPOINT_URL is unset: start `moto_server -p 4599` and set AWS_ENDPOINT_URL=http://127.0.0.1:4599 \
         (plus AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_REGION)"
    );
    let config = aws_config::defaults(BehaviorVersion::latest()).load().await;
    aws_sdk_sqs::Client::new(&config)
}

async fn queues(settings: QueueSettings) -> (SqsQueue, SqsQueue) {
    let name = format!("apalis-worker-{}", uuid::Uuid::new_v4());
    ensure_queue_with_dlq(&sqs_client().await, &name, settings).await.expect("create queue")
}

fn config(max_receive_count: u32) -> SqsBackendConfig {
    SqsBackendConfig { batch_size: 10, wait_seconds: 1, retry_delay_seconds: 1, max_receive_count }
}

struct RunningWorker {
    stop: oneshot::Sender<()>,
    join: JoinHandle<Result<(), WorkerError>>,
}

impl RunningWorker {
    fn start(queue: SqsQueue, config: SqsBackendConfig, handler: Arc<Recorder>) -> Self {
        let (stop, stopped) = oneshot::channel();
        let join = tokio::spawn(async move {
            run_worker::<Echo, _>("test-worker", queue, config, handler, 2, async {
                let _ = stopped.await;
            })
            .await
        });
        Self { stop, join }
    }

    async fn shutdown(self) {
        let _ = self.stop.send(());
        timeout(Duration::from_secs(10), self.join)
            .await
            .expect("worker did not stop within 10s of shutdown")
            .expect("worker task panicked")
            .expect("worker returned an error");
    }
}

/// Polls `check` until it yields a value or the deadline passes.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {DEADLINE:?} waiting for {what}");
        sleep(Duration::from_millis(100)).await;
    }
}

async fn attribute(queue: &SqsQueue, name: QueueAttributeName) -> u64 {
    queue
        .client()
        .get_queue_attributes()
        .queue_url(queue.url())
        .attribute_names(name.clone())
        .send()
        .await
        .expect("get queue attributes")
        .attributes()
        .and_then(|attributes| attributes.get(&name))
        .and_then(|value| value.parse().ok())
        .expect("attribute present")
}

/// Waits for the first message on the dead-letter queue.
async fn dead_letter(dlq: &SqsQueue) -> ReceivedMessage {
    eventually("a message on the dead-letter queue", || async {
        dlq.receive(10, 1).await.expect("receive from DLQ").pop()
    })
    .await
}

#[tokio::test]
async fn handles_each_job_once_and_deletes_it() {
    let settings = QueueSettings { visibility_timeout_seconds: 30, max_receive_count: 3 };
    let (queue, dlq) = queues(settings).await;
    for n in 1..=3 {
        queue.enqueue(Echo(n)).await.expect("enqueue");
    }
    let handler = Arc::new(Recorder::default());
    let worker = RunningWorker::start(queue.clone(), config(3), handler.clone());

    eventually("three handled jobs", || async { (handler.calls().len() >= 3).then_some(()) }).await;
    worker.shutdown().await;

    let mut jobs: Vec<u32> = handler.calls().into_iter().map(|(job, _)| job.0).collect();
    jobs.sort_unstable();
    assert_eq!(jobs, [1, 2, 3], "each job handled exactly once");
    for (_, delivery) in handler.calls() {
        assert_eq!(delivery.receive_count, 1);
        assert!(!delivery.is_last_attempt());
    }
    // Deleted, not merely hidden: nothing visible and nothing in flight.
    assert_eq!(attribute(&queue, QueueAttributeName::ApproximateNumberOfMessages).await, 0);
    assert_eq!(attribute(&queue, QueueAttributeName::ApproximateNumberOfMessagesNotVisible).await, 0);
    assert_eq!(attribute(&dlq, QueueAttributeName::ApproximateNumberOfMessages).await, 0);
}

#[tokio::test]
async fn failing_job_is_retried_then_dead_lettered() {
    let settings = QueueSettings { visibility_timeout_seconds: 1, max_receive_count: 2 };
    let (queue, dlq) = queues(settings).await;
    queue.enqueue(Echo(7)).await.expect("enqueue");
    let handler = Arc::new(Recorder { fail: true, ..Recorder::default() });
    let worker = RunningWorker::start(queue.clone(), config(2), handler.clone());

    let dead = dead_letter(&dlq).await;
    worker.shutdown().await;

    let envelope: Envelope<Echo> = serde_json::from_str(&dead.body).expect("DLQ body is the job envelope");
    assert_eq!(envelope.job, Echo(7));
    let attempts: Vec<(u32, bool)> = handler
        .calls()
        .iter()
        .map(|(job, delivery)| {
            assert_eq!(*job, Echo(7));
            assert_eq!(delivery.job_id, Some(envelope.job_id));
            (delivery.receive_count, delivery.is_last_attempt())
        })
        .collect();
    assert_eq!(attempts, [(1, false), (2, true)]);
    assert_eq!(attribute(&queue, QueueAttributeName::ApproximateNumberOfMessages).await, 0);
}

#[tokio::test]
async fn undecodable_message_is_kept_for_the_dead_letter_queue() {
    let settings = QueueSettings { visibility_timeout_seconds: 1, max_receive_count: 2 };
    let (queue, dlq) = queues(settings).await;
    let body = "{not a job";
    queue
        .client()
        .send_message()
        .queue_url(queue.url())
        .message_body(body)
        .send()
        .await
        .expect("send raw message");
    let handler = Arc::new(Recorder::default());
    let worker = RunningWorker::start(queue.clone(), config(2), handler.clone());

    let dead = dead_letter(&dlq).await;
    worker.shutdown().await;

    assert_eq!(dead.body, body);
    assert!(handler.calls().is_empty(), "the handler never sees an undecodable message");
}

#[tokio::test]
async fn shutdown_lets_the_running_job_finish_and_be_deleted() {
    let settings = QueueSettings { visibility_timeout_seconds: 30, max_receive_count: 3 };
    let (queue, _dlq) = queues(settings).await;
    queue.enqueue(Echo(1)).await.expect("enqueue");
    let handler = Arc::new(Recorder { delay: Duration::from_secs(2), ..Recorder::default() });
    let worker = RunningWorker::start(queue.clone(), config(3), handler.clone());

    eventually("the job to start", || async { (!handler.calls().is_empty()).then_some(()) }).await;
    worker.shutdown().await;

    assert_eq!(handler.finished.load(Ordering::SeqCst), 1, "shutdown waited for the running job");
    assert_eq!(handler.calls().len(), 1);
    assert_eq!(attribute(&queue, QueueAttributeName::ApproximateNumberOfMessagesNotVisible).await, 0);
    assert_eq!(attribute(&queue, QueueAttributeName::ApproximateNumberOfMessages).await, 0);
}

#[tokio::test]
async fn panicking_handler_fails_only_its_message() {
    let settings = QueueSettings { visibility_timeout_seconds: 30, max_receive_count: 3 };
    let (queue, dlq) = queues(settings).await;
    queue.enqueue(Echo(1)).await.expect("enqueue");
    let handler = Arc::new(Recorder { panic_once: true, ..Recorder::default() });
    let worker = RunningWorker::start(queue.clone(), config(3), handler.clone());

    // Redelivered after the 1s retry delay rather than the 30s visibility timeout, and
    // handled by the same worker, which survived the panic.
    eventually("the second attempt", || async { (handler.calls().len() >= 2).then_some(()) }).await;
    worker.shutdown().await;

    let counts: Vec<u32> = handler.calls().iter().map(|(_, d)| d.receive_count).collect();
    assert_eq!(counts, [1, 2]);
    assert_eq!(attribute(&queue, QueueAttributeName::ApproximateNumberOfMessagesNotVisible).await, 0);
    assert_eq!(attribute(&queue, QueueAttributeName::ApproximateNumberOfMessages).await, 0);
    assert_eq!(attribute(&dlq, QueueAttributeName::ApproximateNumberOfMessages).await, 0);
}
