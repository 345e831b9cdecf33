//! Runs job handlers locally as apalis workers that poll SQS. apalis 1.0 ships no SQS backend,
//! so `SqsBackend` is one: it long-polls a queue and yields each message as a task, and its
//! acknowledgement layer deletes the message or hands it back to SQS once the task finished.
//! The task itself is `process_message`, the same function the Lambda adapter runs.

use std::collections::{HashSet, VecDeque};
use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use apalis::layers::WorkerBuilderExt;
use apalis_core::backend::finalize::Ephemeral;
use apalis_core::backend::{Backend, BackendConfig};
use apalis_core::error::BoxDynError;
use apalis_core::task::builder::TaskBuilder;
use apalis_core::task::task_id::TaskId;
use apalis_core::task::{ExecutionContext, Task};
use apalis_core::worker::builder::WorkerBuilder;
use apalis_core::worker::context::WorkerContext;
use apalis_core::worker::ext::ack::{Acknowledge, AcknowledgeLayer};
use apalis_core::worker::ext::parallelize::ParallelizeExt;
use futures::FutureExt;
use futures::future::BoxFuture;

pub use apalis_core::error::WorkerError;

use crate::job::{Job, JobHandler, process_message};
use crate::sqs::{QueueError, ReceivedMessage, SqsQueue};

/// How long to wait before polling again after SQS itself failed (throttling, network).
const ERROR_BACKOFF: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy)]
pub struct SqsBackendConfig {
    /// Messages per ReceiveMessage call, 1..=10.
    pub batch_size: i32,
    /// Long-poll wait, 1..=20 seconds; 0 is raised to 1 so an idle worker never spins.
    pub wait_seconds: i32,
    /// How long a failed message stays invisible before SQS redelivers it.
    pub retry_delay_seconds: i32,
    /// Must equal the queue's redrive `maxReceiveCount`, so handlers can tell their last attempt.
    pub max_receive_count: u32,
}

/// Polls an SQS queue and yields each message as an apalis task.
pub struct SqsBackend {
    queue: SqsQueue,
    config: SqsBackendConfig,
    buffer: VecDeque<ReceivedMessage>,
    receive: Option<BoxFuture<'static, Vec<ReceivedMessage>>>,
    release: Option<BoxFuture<'static, ()>>,
    in_flight: InFlight,
}

impl std::fmt::Debug for SqsBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqsBackend")
            .field("queue", &self.queue.url())
            .field("config", &self.config)
            .field("buffered", &self.buffer.len())
            .finish_non_exhaustive()
    }
}

impl SqsBackend {
    pub fn new(queue: SqsQueue, config: SqsBackendConfig) -> Self {
        Self {
            queue,
            config,
            buffer: VecDeque::new(),
            receive: None,
            release: None,
            in_flight: InFlight::default(),
        }
    }

    fn task(&self, message: ReceivedMessage) -> Task<ReceivedMessage> {
        let receipt = Receipt {
            message_id: message.message_id.clone(),
            receipt_handle: message.receipt_handle.clone(),
        };
        // apalis counts the attempt up when the task starts, so it then equals SQS's count.
        let previous_attempts = message.receive_count.saturating_sub(1) as usize;
        TaskBuilder::new(message)
            .task_id(TaskId::from_string(receipt.message_id.clone()))
            .attempt(previous_attempts)
            .max_attempts(self.config.max_receive_count as usize)
            .data(receipt)
            .build()
    }
}

/// Where the acknowledgement layer finds the message a finished task came from.
#[derive(Debug, Clone)]
struct Receipt {
    message_id: String,
    receipt_handle: String,
}

/// Message ids currently buffered or being handled. When a handler outlives the visibility
/// timeout SQS delivers its message again; this keeps that copy from running alongside.
#[derive(Debug, Clone, Default)]
struct InFlight(Arc<Mutex<HashSet<String>>>);

impl InFlight {
    fn claim(&self, message_id: &str) -> bool {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).insert(message_id.to_owned())
    }

    fn release(&self, message_id: &str) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).remove(message_id);
    }
}

async fn receive_batch(queue: SqsQueue, config: SqsBackendConfig) -> Vec<ReceivedMessage> {
    match queue.receive(config.batch_size, config.wait_seconds.max(1)).await {
        Ok(messages) => messages,
        Err(error) => {
            tracing::error!(queue = queue.url(), %error, "polling SQS failed; backing off");
            tokio::time::sleep(ERROR_BACKOFF).await;
            Vec::new()
        }
    }
}

impl Backend for SqsBackend {
    type Task = Task<ReceivedMessage>;
    // SQS failures are logged and retried inside the poll loop; a worker should outlive them.
    type Error = Infallible;

    fn poll_ready(&mut self, _: &mut Context<'_>, _: &WorkerContext) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    // The worker calls this only once its service has a free slot, so SQS is polled only when
    // a message can start right away and a batch waits in the buffer at most briefly.
    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        _: &WorkerContext,
    ) -> Poll<Option<Result<Self::Task, Self::Error>>> {
        loop {
            if let Some(message) = self.buffer.pop_front() {
                return Poll::Ready(Some(Ok(self.task(message))));
            }
            let receive =
                self.receive.get_or_insert_with(|| receive_batch(self.queue.clone(), self.config).boxed());
            let messages = ready!(receive.poll_unpin(cx));
            self.receive = None;
            for message in messages {
                if self.in_flight.claim(&message.message_id) {
                    self.buffer.push_back(message);
                } else {
                    tracing::warn!(
                        queue = self.queue.url(),
                        message_id = message.message_id,
                        "message redelivered while still being handled; is the visibility timeout shorter than the handler?"
                    );
                }
            }
        }
    }

    // A long poll still in flight is dropped rather than awaited, so shutdown does not wait up
    // to `wait_seconds`; messages SQS was about to hand it reappear after their visibility
    // timeout. Buffered messages that never started are made visible again right away.
    fn poll_close(&mut self, cx: &mut Context<'_>, _: &WorkerContext) -> Poll<Result<(), Self::Error>> {
        self.receive = None;
        let release = self.release.get_or_insert_with(|| {
            let queue = self.queue.clone();
            let messages: Vec<_> = self.buffer.drain(..).collect();
            async move {
                for message in messages {
                    if let Err(error) = queue.retry_after(&message.receipt_handle, 0).await {
                        tracing::warn!(queue = queue.url(), message_id = message.message_id, %error, "could not release unstarted message");
                    }
                }
            }
            .boxed()
        });
        ready!(release.poll_unpin(cx));
        self.release = None;
        Poll::Ready(Ok(()))
    }
}

impl BackendConfig for SqsBackend {
    type Args = ReceivedMessage;
    type Id = String;
    type Kind = Ephemeral;
    type Config = SqsBackendConfig;
    type Layer = AcknowledgeLayer<SqsAck>;

    fn config(&self) -> &Self::Config {
        &self.config
    }

    // The backend's layer wraps all user middleware, so it acknowledges the final result of a
    // task, including one that failed by panicking.
    fn middleware(&mut self, _: &mut WorkerContext) -> Self::Layer {
        AcknowledgeLayer::new(SqsAck {
            queue: self.queue.clone(),
            retry_delay_seconds: self.config.retry_delay_seconds,
            in_flight: self.in_flight.clone(),
        })
    }
}

/// The backend's acknowledgement: deletes a message whose task succeeded; otherwise shortens its visibility timeout to the
/// retry delay so SQS redelivers it, and after the last attempt its redrive policy moves it to
/// the dead-letter queue.
#[derive(Debug, Clone)]
pub struct SqsAck {
    queue: SqsQueue,
    retry_delay_seconds: i32,
    in_flight: InFlight,
}

impl<Res> Acknowledge<Res> for SqsAck {
    type Error = QueueError;
    type Future = BoxFuture<'static, Result<(), QueueError>>;

    fn ack(&mut self, result: &Result<Res, BoxDynError>, ctx: &ExecutionContext) -> Self::Future {
        let receipt = ctx.data().get::<Receipt>().cloned();
        let succeeded = result.is_ok();
        let this = self.clone();
        async move {
            let Some(receipt) = receipt else {
                return Ok(());
            };
            let acknowledged = if succeeded {
                this.queue.ack(&receipt.receipt_handle).await
            } else {
                this.queue
                    .retry_after(&receipt.receipt_handle, this.retry_delay_seconds)
                    .await
            };
            this.in_flight.release(&receipt.message_id);
            if let Err(error) = &acknowledged {
                // The message is not lost: SQS redelivers it after its visibility timeout.
                tracing::error!(queue = this.queue.url(), message_id = receipt.message_id, succeeded, %error, "acknowledging message failed");
            }
            acknowledged
        }
        .boxed()
    }
}

/// A message left on the queue for redelivery.
#[derive(Debug, thiserror::Error)]
#[error("message left for redelivery: {0}")]
struct Redeliver(String);

/// Runs `handler` on the queue's messages, up to `concurrency` at once, until `shutdown`
/// resolves.
///
/// One apalis worker suffices: apalis 1.0 runs a worker's tasks concurrently and the
/// concurrency layer bounds them. Each task is spawned on the runtime so handlers use every
/// thread and a panic fails only its own message (which is then redelivered). Once `shutdown`
/// resolves the worker takes no new messages and returns after the tasks in flight have been
/// acknowledged.
pub async fn run_worker<J: Job, H: JobHandler<J>>(
    name: &str,
    queue: SqsQueue,
    config: SqsBackendConfig,
    handler: Arc<H>,
    concurrency: usize,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), WorkerError> {
    let max_receive_count = config.max_receive_count;
    let worker = WorkerBuilder::new(name)
        .backend(SqsBackend::new(queue, config))
        .concurrency(concurrency.max(1))
        .parallelize(tokio::spawn)
        .build(move |message: ReceivedMessage| {
            let handler = Arc::clone(&handler);
            async move {
                let outcome = process_message::<J, H>(
                    &handler,
                    &message.message_id,
                    &message.body,
                    message.receive_count,
                    max_receive_count,
                    // Nothing re-sends throttled jobs here (a local stack, no ECS limits):
                    // a throttle is an ordinary retry.
                    0,
                )
                .await;
                if outcome.acknowledges() { Ok(()) } else { Err(Redeliver(format!("{outcome:?}"))) }
            }
        });
    // Boxing here proves `Send` where the types are concrete; left to callers that spawn
    // `run_worker`, rustc fails with "FnOnce is not general enough" on the spawn executor.
    let run: BoxFuture<'static, Result<(), WorkerError>> =
        worker.run_until(shutdown.map(Ok::<(), WorkerError>)).boxed();
    run.await
}
