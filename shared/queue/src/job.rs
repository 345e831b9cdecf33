use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::future::Future;
use uuid::Uuid;

/// A unit of queued work. Each queue carries one job enum; `QUEUE` names it in logs.
pub trait Job: Serialize + DeserializeOwned + Send + Sync + 'static {
    const QUEUE: &'static str;
}

/// What travels in an SQS message body: the job plus the id that makes a redelivery
/// recognisable in logs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Envelope<J> {
    pub job_id: Uuid,
    pub job: J,
}

impl<J: Job> Envelope<J> {
    pub fn new(job: J) -> Self {
        Self { job_id: Uuid::now_v7(), job }
    }
}

/// How this attempt reached the handler. `receive_count` is SQS's ApproximateReceiveCount,
/// so a handler can tell its last attempt before the message moves to the dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub message_id: String,
    pub job_id: Option<Uuid>,
    pub receive_count: u32,
    pub max_receive_count: u32,
}

impl Delivery {
    pub fn is_last_attempt(&self) -> bool {
        self.receive_count >= self.max_receive_count
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JobError {
    /// Worth another attempt: the message stays on the queue and SQS redelivers it.
    #[error("retryable: {0}")]
    Retry(String),
    /// No attempt can succeed (the job refers to something gone): acknowledged and logged.
    #[error("discarded: {0}")]
    Discard(String),
    /// A dependency throttled us (ECS ThrottlingException and the like): worth another
    /// attempt, but later. The Lambda adapter backs the message off with a visibility change
    /// instead of letting it come straight back into the same throttling.
    #[error("throttled: {0}")]
    Throttled(String),
}

/// The one trait every queue consumer implements; the Lambda adapter and the apalis worker
/// both call it, so local runs exercise the same code as AWS.
pub trait JobHandler<J: Job>: Send + Sync + 'static {
    fn handle(&self, job: J, delivery: &Delivery) -> impl Future<Output = Result<(), JobError>> + Send;
}

/// The fate of one message once its handler returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Delete the message.
    Done,
    /// Delete the message; it can never succeed.
    Discarded(String),
    /// Leave the message for redelivery (and, after the last attempt, the DLQ).
    Retry(String),
    /// Leave the message for redelivery after a back-off (a dependency throttled us).
    Throttled(String),
}

impl Outcome {
    pub fn acknowledges(&self) -> bool {
        !matches!(self, Outcome::Retry(_) | Outcome::Throttled(_))
    }
}

/// Decodes one message body and runs the handler on it. A body that does not decode is kept
/// for redelivery rather than deleted, so it lands in the DLQ where someone can look at it.
pub async fn process_message<J: Job, H: JobHandler<J>>(
    handler: &H,
    message_id: &str,
    body: &str,
    receive_count: u32,
    max_receive_count: u32,
) -> Outcome {
    let envelope: Envelope<J> = match serde_json::from_str(body) {
        Ok(envelope) => envelope,
        Err(error) => {
            tracing::error!(queue = J::QUEUE, message_id, %error, "undecodable job message");
            return Outcome::Retry(format!("undecodable message: {error}"));
        }
    };
    let delivery = Delivery {
        message_id: message_id.to_owned(),
        job_id: Some(envelope.job_id),
        receive_count,
        max_receive_count,
    };
    let span =
        tracing::info_span!("job", queue = J::QUEUE, job_id = %envelope.job_id, message_id, receive_count);
    match tracing::Instrument::instrument(handler.handle(envelope.job, &delivery), span).await {
        Ok(()) => Outcome::Done,
        Err(JobError::Discard(reason)) => {
            tracing::warn!(queue = J::QUEUE, message_id, %reason, "job discarded");
            Outcome::Discarded(reason)
        }
        Err(JobError::Retry(reason)) => {
            tracing::warn!(queue = J::QUEUE, message_id, %reason, receive_count, "job failed; will retry");
            Outcome::Retry(reason)
        }
        Err(JobError::Throttled(reason)) => {
            tracing::warn!(queue = J::QUEUE, message_id, %reason, receive_count, "job throttled; backing off");
            Outcome::Throttled(reason)
        }
    }
}
