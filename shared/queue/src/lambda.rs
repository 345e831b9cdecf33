use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

use crate::job::{Job, JobHandler, Outcome, process_message};
use crate::sqs::SqsQueue;

/// Time kept back from the invocation's deadline to answer: records still running then are
/// handed back as `batchItemFailures` (and their failure reasons saved) before Lambda kills
/// the invocation, which would otherwise redeliver the whole batch, finished records included.
pub const ANSWER_RESERVE: Duration = Duration::from_secs(10);

/// How a throttled message backs off: `base · 2^(attempt-1)` seconds plus up to `base` of
/// jitter, at most `max` (SQS allows 12 hours; a throttle clears in minutes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base_seconds: u32,
    pub max_seconds: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { base_seconds: 15, max_seconds: 900 }
    }
}

impl Backoff {
    /// The visibility timeout for the `receive_count`-th delivery, with `jitter` in [0, 1).
    pub fn delay_seconds(&self, receive_count: u32, jitter: f64) -> u32 {
        let exponent = receive_count.saturating_sub(1).min(16);
        let delay = self.base_seconds.saturating_mul(1 << exponent);
        let jitter = (f64::from(self.base_seconds) * jitter.clamp(0.0, 1.0)) as u32;
        delay.saturating_add(jitter).min(self.max_seconds)
    }
}

/// What one invocation may spend and where throttled messages go back to.
#[derive(Debug, Clone)]
pub struct BatchLimits {
    /// When to stop waiting for records: the context's deadline less `ANSWER_RESERVE`.
    pub stop_at: Instant,
    /// The queue the records came from, for ChangeMessageVisibility; without it a throttled
    /// message waits out the queue's visibility timeout.
    pub queue: Option<SqsQueue>,
    pub backoff: Backoff,
}

impl BatchLimits {
    /// From `LambdaEvent.context.deadline` (milliseconds since the epoch).
    pub fn from_deadline_ms(deadline_ms: u64, queue: Option<SqsQueue>) -> Self {
        BatchLimits { stop_at: stop_at(deadline_ms, ANSWER_RESERVE), queue, backoff: Backoff::default() }
    }
}

/// The instant `reserve` before the wall-clock deadline `deadline_ms`.
pub fn stop_at(deadline_ms: u64, reserve: Duration) -> Instant {
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or_default();
    let left =
        Duration::from_millis(u64::try_from(u128::from(deadline_ms).saturating_sub(now_ms)).unwrap_or(0));
    Instant::now() + left.saturating_sub(reserve)
}

/// Runs the handler on every record of an SQS event and reports the ones to redeliver as
/// `batchItemFailures` (the function's event source mapping must enable
/// `ReportBatchItemFailures`), so one bad message never fails its whole batch. No deadline.
pub async fn handle_sqs_event<J: Job, H: JobHandler<J>>(
    handler: &H,
    event: SqsEvent,
    max_receive_count: u32,
) -> SqsBatchResponse {
    let limits = BatchLimits {
        stop_at: Instant::now() + Duration::from_secs(365 * 24 * 3600),
        queue: None,
        backoff: Backoff::default(),
    };
    handle_sqs_event_until(handler, event, max_receive_count, &limits).await
}

/// `handle_sqs_event` within `limits`: records still running at `stop_at` are reported as
/// failures (redelivered after the visibility timeout; their provisioning lease keeps a second
/// attempt from doubling the work), and throttled records are made visible again after a
/// back-off instead of coming straight back into the same throttling.
pub async fn handle_sqs_event_until<J: Job, H: JobHandler<J>>(
    handler: &H,
    event: SqsEvent,
    max_receive_count: u32,
    limits: &BatchLimits,
) -> SqsBatchResponse {
    // Records run side by side: one slow job (a container starting) must not push the rest of
    // the batch past the function's timeout.
    let outcomes = futures::future::join_all(event.records.into_iter().map(|record| async move {
        let message_id = record.message_id.clone().unwrap_or_default();
        let receive_count = record
            .attributes
            .get("ApproximateReceiveCount")
            .and_then(|count| count.parse().ok())
            .unwrap_or(1);
        let body = record.body.as_deref().unwrap_or_default();
        let work = process_message(handler, &message_id, body, receive_count, max_receive_count);
        let outcome = match tokio::time::timeout_at(limits.stop_at, work).await {
            Ok(outcome) => outcome,
            Err(_) => {
                tracing::warn!(
                    queue = J::QUEUE,
                    message_id,
                    "the invocation's deadline is near; handing the job back"
                );
                Outcome::Retry("unfinished at the invocation's deadline".into())
            }
        };
        if let (Outcome::Throttled(_), Some(queue), Some(receipt)) =
            (&outcome, &limits.queue, record.receipt_handle.as_deref())
        {
            let delay = limits.backoff.delay_seconds(receive_count, jitter());
            if let Err(error) = queue.retry_after(receipt, i32::try_from(delay).unwrap_or(900)).await {
                tracing::warn!(queue = J::QUEUE, message_id, %error, "could not back the throttled job off");
            }
        }
        (message_id, outcome)
    }))
    .await;
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = outcomes
        .into_iter()
        .filter(|(_, outcome)| !outcome.acknowledges())
        .map(|(message_id, _)| {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = message_id;
            failure
        })
        .collect();
    response
}

/// A number in [0, 1), different per call (spreads the retries of a throttled batch).
fn jitter() -> f64 {
    f64::from(uuid::Uuid::new_v4().as_u128() as u32) / (f64::from(u32::MAX) + 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{Delivery, Envelope, JobError};
    use aws_lambda_events::event::sqs::SqsMessage;
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
    struct Sleep {
        millis: u64,
        throttle: bool,
    }

    impl Job for Sleep {
        const QUEUE: &'static str = "test";
    }

    struct Sleeper;

    impl JobHandler<Sleep> for Sleeper {
        async fn handle(&self, job: Sleep, _: &Delivery) -> Result<(), JobError> {
            tokio::time::sleep(Duration::from_millis(job.millis)).await;
            if job.throttle { Err(JobError::Throttled("Rate exceeded".into())) } else { Ok(()) }
        }
    }

    fn record(id: &str, job: Sleep) -> SqsMessage {
        let mut message = SqsMessage::default();
        message.message_id = Some(id.into());
        message.body = Some(serde_json::to_string(&Envelope::new(job)).expect("json"));
        message.attributes.insert("ApproximateReceiveCount".into(), "1".into());
        message
    }

    fn failures(response: &SqsBatchResponse) -> Vec<&str> {
        response.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn records_still_running_at_the_deadline_are_handed_back_and_the_rest_kept() {
        let mut event = SqsEvent::default();
        event.records = vec![
            record("quick", Sleep { millis: 1_000, throttle: false }),
            record("slow", Sleep { millis: 600_000, throttle: false }),
        ];
        // Lambda's context says 60 s are left; the reserve keeps 10 s to answer.
        let deadline_ms = u64::try_from(
            (SystemTime::now().duration_since(UNIX_EPOCH).expect("clock") + Duration::from_secs(60))
                .as_millis(),
        )
        .expect("ms");
        let limits = BatchLimits::from_deadline_ms(deadline_ms, None);
        let started = Instant::now();
        let response = handle_sqs_event_until(&Sleeper, event, 5, &limits).await;
        assert_eq!(failures(&response), vec!["slow"]);
        let spent = started.elapsed();
        assert!(spent <= Duration::from_secs(50) && spent >= Duration::from_secs(49), "{spent:?}");
    }

    #[tokio::test]
    async fn a_throttled_record_is_a_failure_and_the_others_are_not() {
        let mut event = SqsEvent::default();
        event.records = vec![
            record("ok", Sleep { millis: 0, throttle: false }),
            record("throttled", Sleep { millis: 0, throttle: true }),
        ];
        let response = handle_sqs_event(&Sleeper, event, 5).await;
        assert_eq!(failures(&response), vec!["throttled"]);
    }

    #[test]
    fn the_backoff_doubles_with_jitter_and_stays_under_its_cap() {
        let backoff = Backoff { base_seconds: 15, max_seconds: 900 };
        assert_eq!(backoff.delay_seconds(1, 0.0), 15);
        assert_eq!(backoff.delay_seconds(2, 0.0), 30);
        assert_eq!(backoff.delay_seconds(3, 0.5), 67);
        assert_eq!(backoff.delay_seconds(30, 0.99), 900);
        assert!((0..100).map(|_| jitter()).all(|j| (0.0..1.0).contains(&j)));
    }
}
