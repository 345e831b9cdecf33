use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

use crate::job::{Envelope, Job, JobHandler, Outcome, process_message};
use crate::sqs::{MAX_DELAY_SECONDS, QueueError, SqsQueue};

/// Time kept back from the invocation's deadline to answer: records still running then are
/// handed back as `batchItemFailures` (and their failure reasons saved) before Lambda kills
/// the invocation, which would otherwise redeliver the whole batch, finished records included.
pub const ANSWER_RESERVE: Duration = Duration::from_secs(10);

/// How long a throttled job waits before its re-sent copy is delivered: `base · 2^(n-1)`
/// seconds for its `n`-th throttle, plus up to `base` of jitter, at most `max` (and never more
/// than SQS's `DelaySeconds` limit, `MAX_DELAY_SECONDS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base_seconds: u32,
    pub max_seconds: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { base_seconds: 15, max_seconds: MAX_DELAY_SECONDS }
    }
}

impl Backoff {
    /// The delay before the `throttle`-th re-sent copy, with `jitter` in [0, 1).
    pub fn delay_seconds(&self, throttle: u32, jitter: f64) -> u32 {
        let exponent = throttle.saturating_sub(1).min(16);
        let delay = self.base_seconds.saturating_mul(1 << exponent);
        let jitter = (f64::from(self.base_seconds) * jitter.clamp(0.0, 1.0)) as u32;
        delay.saturating_add(jitter).min(self.max_seconds).min(MAX_DELAY_SECONDS)
    }
}

/// Where throttled jobs are re-sent, how late, and how often at most.
#[derive(Debug, Clone)]
pub struct Resend {
    /// The queue the records came from.
    pub queue: SqsQueue,
    pub backoff: Backoff,
    /// Re-sends of one job before a throttle counts as a failed attempt (0: never re-send).
    pub max_resends: u32,
}

/// What one invocation may spend and where throttled jobs go back to.
#[derive(Debug, Clone)]
pub struct BatchLimits {
    /// When to stop waiting for records: the context's deadline less `ANSWER_RESERVE`.
    pub stop_at: Instant,
    /// Without it a throttled job fails its attempt like any other (its receive count grows).
    pub throttled: Option<Resend>,
}

impl BatchLimits {
    /// From `LambdaEvent.context.deadline` (milliseconds since the epoch).
    pub fn from_deadline_ms(deadline_ms: u64, throttled: Option<Resend>) -> Self {
        BatchLimits { stop_at: stop_at(deadline_ms, ANSWER_RESERVE), throttled }
    }
}

/// How long re-sending a throttled job may take: well inside `ANSWER_RESERVE`, so a re-send
/// started just before `stop_at` still ends before the invocation's deadline.
const RESEND_TIMEOUT: Duration = Duration::from_secs(5);

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
    let limits =
        BatchLimits { stop_at: Instant::now() + Duration::from_secs(365 * 24 * 3600), throttled: None };
    handle_sqs_event_until(handler, event, max_receive_count, &limits).await
}

/// `handle_sqs_event` within `limits`: records still running at `stop_at` are reported as
/// failures (redelivered after the visibility timeout; their provisioning lease keeps a second
/// attempt from doubling the work), and a throttled job is re-sent as a new, delayed message
/// (see `resend`) instead of being redelivered: a redelivery would use up one of the receive
/// counts that send a healthy job to the dead-letter queue.
pub async fn handle_sqs_event_until<J: Job, H: JobHandler<J>>(
    handler: &H,
    event: SqsEvent,
    max_receive_count: u32,
    limits: &BatchLimits,
) -> SqsBatchResponse {
    let max_resends = limits.throttled.as_ref().map_or(0, |resend| resend.max_resends);
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
        let work = process_message(handler, &message_id, body, receive_count, max_receive_count, max_resends);
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
        let outcome = match (outcome, &limits.throttled) {
            (Outcome::Throttled(reason), Some(throttled)) => {
                match tokio::time::timeout(RESEND_TIMEOUT, resend::<J>(throttled, body)).await {
                    Ok(Ok(copy)) => {
                        tracing::info!(queue = J::QUEUE, message_id, copy, "throttled job re-sent with a delay");
                        Outcome::Resent(reason)
                    }
                    // The original stays in the batch's failures, so the job is not lost: SQS
                    // redelivers it after the visibility timeout (using a receive count).
                    Ok(Err(error)) => {
                        tracing::error!(queue = J::QUEUE, message_id, %error, "could not re-send the throttled job");
                        Outcome::Throttled(reason)
                    }
                    Err(_) => {
                        tracing::error!(queue = J::QUEUE, message_id, "re-sending the throttled job timed out");
                        Outcome::Throttled(reason)
                    }
                }
            }
            (outcome, _) => outcome,
        };
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

/// Sends a throttled job's copy, its throttle count one higher, delayed by the back-off. The
/// caller drops the original from the batch's failures only once this succeeded; a crash in
/// between leaves both, and the job runs twice, which every job tolerates (they are
/// idempotent: the provisioner adopts the tenant's existing task).
async fn resend<J: Job>(throttled: &Resend, body: &str) -> Result<String, QueueError> {
    let mut envelope: Envelope<J> = serde_json::from_str(body)?;
    envelope.throttles = envelope.throttles.saturating_add(1);
    let delay = throttled.backoff.delay_seconds(envelope.throttles, jitter());
    throttled.queue.send_delayed(&envelope, delay).await
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
    async fn without_a_queue_to_re_send_to_a_throttled_record_is_a_failure_and_the_others_are_not() {
        let mut event = SqsEvent::default();
        event.records = vec![
            record("ok", Sleep { millis: 0, throttle: false }),
            record("throttled", Sleep { millis: 0, throttle: true }),
        ];
        let response = handle_sqs_event(&Sleeper, event, 5).await;
        assert_eq!(failures(&response), vec!["throttled"]);
    }

    /// The outcome of one throttled attempt of a job already re-sent `throttles` times, when
    /// the caller re-sends up to `max_resends` times.
    async fn throttled_outcome(throttles: u32, max_resends: u32) -> (Outcome, bool) {
        let mut envelope = Envelope::new(Sleep { millis: 0, throttle: true });
        envelope.throttles = throttles;
        let body = serde_json::to_string(&envelope).expect("json");
        let outcome = process_message(&Sleeper, "m", &body, 1, 5, max_resends).await;
        let delivery = Delivery {
            message_id: "m".into(),
            job_id: Some(envelope.job_id),
            receive_count: 5,
            max_receive_count: 5,
            throttles,
            resends_throttled: throttles < max_resends,
        };
        (outcome, delivery.ends_the_job(&JobError::Throttled("Rate exceeded".into())))
    }

    #[tokio::test]
    async fn a_throttle_is_re_sent_within_its_budget_and_an_ordinary_retry_past_it() {
        let (within, ends) = throttled_outcome(2, 3).await;
        assert!(matches!(within, Outcome::Throttled(_)), "{within:?}");
        assert!(!ends, "a throttle that will be re-sent never ends the job, even on the last receive");
        let (past, ends) = throttled_outcome(3, 3).await;
        assert!(matches!(&past, Outcome::Retry(reason) if reason.contains("after 3 re-sends")), "{past:?}");
        assert!(ends, "past its budget, the last receive ends the job");
        let (never, _) = throttled_outcome(0, 0).await;
        assert!(matches!(never, Outcome::Retry(_)), "no budget, no re-send: {never:?}");
    }

    #[test]
    fn the_throttle_count_is_left_out_of_a_first_send() {
        let envelope = Envelope::new(Sleep { millis: 0, throttle: false });
        let body = serde_json::to_value(&envelope).expect("json");
        assert!(body.get("throttles").is_none(), "{body}");
        let mut again = envelope.clone();
        again.throttles = 4;
        let decoded: Envelope<Sleep> =
            serde_json::from_str(&serde_json::to_string(&again).expect("json")).expect("decodes");
        assert_eq!(decoded.throttles, 4);
    }

    #[test]
    fn the_backoff_doubles_with_jitter_and_stays_under_its_cap() {
        let backoff = Backoff { base_seconds: 15, max_seconds: 900 };
        assert_eq!(backoff.delay_seconds(1, 0.0), 15);
        assert_eq!(backoff.delay_seconds(2, 0.0), 30);
        assert_eq!(backoff.delay_seconds(3, 0.5), 67);
        assert_eq!(backoff.delay_seconds(30, 0.99), 900);
        let unbounded = Backoff { base_seconds: 600, max_seconds: 43_200 };
        assert_eq!(unbounded.delay_seconds(3, 0.0), MAX_DELAY_SECONDS, "SQS delays a message 900 s at most");
        assert!((0..100).map(|_| jitter()).all(|j| (0.0..1.0).contains(&j)));
    }
}
