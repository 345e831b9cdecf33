use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use serde::Serialize;
use std::collections::HashMap;

use crate::job::{Envelope, Job};

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("SQS call {operation} failed: {message}")]
    Sqs { operation: &'static str, message: String },
    /// A job that does not encode, or a received body that does not decode.
    #[error("job message could not be encoded or decoded: {0}")]
    Encode(#[from] serde_json::Error),
}

impl QueueError {
    fn sqs<E: std::error::Error>(operation: &'static str, error: E) -> Self {
        let mut message = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        QueueError::Sqs { operation, message }
    }
}

/// The longest `DelaySeconds` SQS accepts on a message (15 minutes).
pub const MAX_DELAY_SECONDS: u32 = 900;

/// A message taken off the queue, still invisible to other consumers until acknowledged or
/// its visibility timeout runs out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    pub message_id: String,
    pub receipt_handle: String,
    pub body: String,
    pub receive_count: u32,
}

/// One SQS queue. Cheap to clone: the SDK client is shared.
#[derive(Debug, Clone)]
pub struct SqsQueue {
    client: Client,
    url: String,
}

impl SqsQueue {
    pub fn new(client: Client, url: impl Into<String>) -> Self {
        Self { client, url: url.into() }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Sends a job and returns the SQS message id.
    pub async fn enqueue<J: Job>(&self, job: J) -> Result<String, QueueError> {
        self.send(&Envelope::new(job)).await
    }

    pub async fn send<T: Serialize>(&self, body: &T) -> Result<String, QueueError> {
        self.send_delayed(body, 0).await
    }

    /// Sends a message that stays invisible for `delay_seconds` (at most `MAX_DELAY_SECONDS`,
    /// SQS's limit: more is clamped to it), returning its message id.
    pub async fn send_delayed<T: Serialize>(
        &self,
        body: &T,
        delay_seconds: u32,
    ) -> Result<String, QueueError> {
        let body = serde_json::to_string(body)?;
        let delay = i32::try_from(delay_seconds.min(MAX_DELAY_SECONDS)).unwrap_or(0);
        let output = self
            .client
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            // Left out when 0, so the queue's own delay applies (and FIFO queues, which refuse
            // per-message delays, still take the message).
            .set_delay_seconds((delay > 0).then_some(delay))
            .send()
            .await
            .map_err(|e| QueueError::sqs("SendMessage", e))?;
        Ok(output.message_id().unwrap_or_default().to_owned())
    }

    /// Sends `jobs` in batches of ten (`SendMessageBatch`); an entry SQS refuses is sent again
    /// once, and a second refusal fails the call (the caller retries: every job tolerates a
    /// duplicate). Answers how many were sent.
    pub async fn enqueue_all<J: Job>(&self, jobs: Vec<J>) -> Result<usize, QueueError> {
        use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
        let mut sent = 0;
        let envelopes: Vec<String> = jobs
            .into_iter()
            .map(|job| serde_json::to_string(&Envelope::new(job)))
            .collect::<Result<_, _>>()?;
        for chunk in envelopes.chunks(10) {
            let mut pending: Vec<(String, &String)> =
                chunk.iter().enumerate().map(|(i, body)| (i.to_string(), body)).collect();
            for attempt in 0..2 {
                let entries = pending
                    .iter()
                    .map(|(id, body)| {
                        SendMessageBatchRequestEntry::builder()
                            .id(id)
                            .message_body(body.as_str())
                            .build()
                            .map_err(|e| QueueError::sqs("SendMessageBatch", e))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let output = self
                    .client
                    .send_message_batch()
                    .queue_url(&self.url)
                    .set_entries(Some(entries))
                    .send()
                    .await
                    .map_err(|e| QueueError::sqs("SendMessageBatch", e))?;
                sent += output.successful().len();
                let failed: Vec<&str> = output.failed().iter().map(|f| f.id()).collect();
                if failed.is_empty() {
                    break;
                }
                if attempt == 1 {
                    return Err(QueueError::Sqs {
                        operation: "SendMessageBatch",
                        message: format!("{} entries refused twice", failed.len()),
                    });
                }
                pending.retain(|(id, _)| failed.contains(&id.as_str()));
            }
        }
        Ok(sent)
    }

    /// Long-polls for up to `max` messages (1..=10).
    pub async fn receive(&self, max: i32, wait_seconds: i32) -> Result<Vec<ReceivedMessage>, QueueError> {
        let output = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max.clamp(1, 10))
            .wait_time_seconds(wait_seconds.clamp(0, 20))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|e| QueueError::sqs("ReceiveMessage", e))?;
        Ok(output
            .messages
            .unwrap_or_default()
            .into_iter()
            .filter_map(|message| {
                let receive_count = message
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|count| count.parse().ok())
                    .unwrap_or(1);
                Some(ReceivedMessage {
                    message_id: message.message_id?,
                    receipt_handle: message.receipt_handle?,
                    body: message.body.unwrap_or_default(),
                    receive_count,
                })
            })
            .collect())
    }

    /// Deletes a handled message.
    pub async fn ack(&self, receipt_handle: &str) -> Result<(), QueueError> {
        self.client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(receipt_handle)
            .send()
            .await
            .map_err(|e| QueueError::sqs("DeleteMessage", e))?;
        Ok(())
    }

    /// Makes a failed message visible again after `delay_seconds` instead of the queue's full
    /// visibility timeout, so retries back off without waiting minutes.
    pub async fn retry_after(&self, receipt_handle: &str, delay_seconds: i32) -> Result<(), QueueError> {
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(delay_seconds.clamp(0, 43_200))
            .send()
            .await
            .map_err(|e| QueueError::sqs("ChangeMessageVisibility", e))?;
        Ok(())
    }

    /// Messages waiting (visible) on the queue; used by readiness and tests.
    pub async fn approximate_depth(&self) -> Result<u64, QueueError> {
        let output = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await
            .map_err(|e| QueueError::sqs("GetQueueAttributes", e))?;
        Ok(output
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::ApproximateNumberOfMessages))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }
}

/// The settings a work queue is created with; `infra/template.yaml` declares the same ones.
#[derive(Debug, Clone, Copy)]
pub struct QueueSettings {
    pub visibility_timeout_seconds: u32,
    pub max_receive_count: u32,
}

/// Creates (or finds) a queue and its dead-letter queue `<name>-dlq` with a redrive policy.
/// Idempotent: CreateQueue with the same attributes returns the existing queue. Used by the
/// local bootstrap and the tests; in AWS, CloudFormation owns the queues.
pub async fn ensure_queue_with_dlq(
    client: &Client,
    name: &str,
    settings: QueueSettings,
) -> Result<(SqsQueue, SqsQueue), QueueError> {
    let dlq_url = client
        .create_queue()
        .queue_name(format!("{name}-dlq"))
        .attributes(QueueAttributeName::MessageRetentionPeriod, "1209600")
        .send()
        .await
        .map_err(|e| QueueError::sqs("CreateQueue", e))?
        .queue_url
        .unwrap_or_default();
    let dlq_arn = client
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| QueueError::sqs("GetQueueAttributes", e))?
        .attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
        .unwrap_or_default();
    let redrive = serde_json::json!({
        "deadLetterTargetArn": dlq_arn,
        "maxReceiveCount": settings.max_receive_count,
    })
    .to_string();
    let attributes = HashMap::from([
        (QueueAttributeName::VisibilityTimeout, settings.visibility_timeout_seconds.to_string()),
        (QueueAttributeName::RedrivePolicy, redrive),
    ]);
    let url = client
        .create_queue()
        .queue_name(name)
        .set_attributes(Some(attributes))
        .send()
        .await
        .map_err(|e| QueueError::sqs("CreateQueue", e))?
        .queue_url
        .unwrap_or_default();
    Ok((SqsQueue::new(client.clone(), url), SqsQueue::new(client.clone(), dlq_url)))
}
