use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};

use crate::job::{Job, JobHandler, process_message};

/// Runs the handler on every record of an SQS event and reports the ones to redeliver as
/// `batchItemFailures` (the function's event source mapping must enable
/// `ReportBatchItemFailures`), so one bad message never fails its whole batch.
pub async fn handle_sqs_event<J: Job, H: JobHandler<J>>(
    handler: &H,
    event: SqsEvent,
    max_receive_count: u32,
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
        let outcome = process_message(handler, &message_id, body, receive_count, max_receive_count).await;
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
