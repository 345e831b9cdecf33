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
    let mut failures = Vec::new();
    for record in event.records {
        let message_id = record.message_id.clone().unwrap_or_default();
        let receive_count = record
            .attributes
            .get("ApproximateReceiveCount")
            .and_then(|count| count.parse().ok())
            .unwrap_or(1);
        let body = record.body.as_deref().unwrap_or_default();
        let outcome = process_message(handler, &message_id, body, receive_count, max_receive_count).await;
        if !outcome.acknowledges() {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = message_id;
            failures.push(failure);
        }
    }
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = failures;
    response
}
