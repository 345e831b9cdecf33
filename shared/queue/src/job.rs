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
    /// How many times the job was throttled and re-sent as a new message. It travels with the
    /// job because a re-sent message starts again at receive count 1, so SQS's count cannot
    /// bound the re-sends. Left out while 0, so a first send's body is what it always was.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub throttles: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl<J: Job> Envelope<J> {
    pub fn new(job: J) -> Self {
        Self { job_id: Uuid::now_v7(), job, throttles: 0 }
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
    /// Throttled re-sends before this delivery (`Envelope::throttles`).
    pub throttles: u32,
    /// Whether a `JobError::Throttled` from this attempt is re-sent as a new message (the
    /// Lambda adapter, within its re-send budget) instead of failing like `Retry`.
    pub resends_throttled: bool,
}

impl Delivery {
    pub fn is_last_attempt(&self) -> bool {
        self.receive_count >= self.max_receive_count
    }

    /// Whether failing this attempt with `error` ends the job: SQS delivers it no more (this
    /// was its last receive) and it is not re-sent either. A handler cleans up for good only
    /// then; a throttle that will be re-sent is not the end, whatever the receive count says.
    pub fn ends_the_job(&self, error: &JobError) -> bool {
        match error {
            JobError::Discard(_) => true,
            JobError::Retry(_) => self.is_last_attempt(),
            JobError::Throttled(_) => !self.resends_throttled && self.is_last_attempt(),
        }
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
    /// attempt, but later. The Lambda adapter re-sends the job with a delay, so a burst of
    /// throttles does not use up the receive count that sends a job to the dead-letter queue;
    /// past its re-send budget (or where nothing re-sends, the local worker) it is a `Retry`.
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
    /// A dependency throttled us and the job may be re-sent: the adapter re-sends it with a
    /// delay, and the message stays for redelivery only if that fails.
    Throttled(String),
    /// Delete the message: a throttled job's copy is on the queue, delayed.
    Resent(String),
}

impl Outcome {
    pub fn acknowledges(&self) -> bool {
        !matches!(self, Outcome::Retry(_) | Outcome::Throttled(_))
    }
}

/// Decodes one message body and runs the handler on it. A body that does not decode is kept
/// for redelivery rather than deleted, so it lands in the DLQ where someone can look at it.
/// `max_throttle_resends` is how often the caller re-sends a throttled job (0: never); a
/// throttle beyond it is a plain `Retry`.
pub async fn process_message<J: Job, H: JobHandler<J>>(
    handler: &H,
    message_id: &str,
    body: &str,
    receive_count: u32,
    max_receive_count: u32,
    max_throttle_resends: u32,
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
        throttles: envelope.throttles,
        resends_throttled: envelope.throttles < max_throttle_resends,
    };
    let throttles = envelope.throttles;
    let span = tracing::info_span!(
        "job",
        queue = J::QUEUE,
        job_id = %envelope.job_id,
        message_id,
        receive_count,
        throttles
    );
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
        Err(JobError::Throttled(reason)) if delivery.resends_throttled => {
            tracing::warn!(queue = J::QUEUE, message_id, %reason, throttles, "job throttled; re-sending it later");
            Outcome::Throttled(reason)
        }
        Err(JobError::Throttled(reason)) => {
            tracing::warn!(queue = J::QUEUE, message_id, %reason, receive_count, throttles, "job throttled past its re-sends; will retry");
            Outcome::Retry(format!("throttled after {throttles} re-sends: {reason}"))
        }
    }
}
