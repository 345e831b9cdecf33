//! The job-queue backbone: typed jobs in an SQS envelope, one handler trait, and the two ways
//! a handler runs — from an SQS Lambda event (`lambda`) or from a local apalis worker polling
//! SQS (`worker`).

pub mod job;
pub mod jobs;
pub mod lambda;
pub mod sqs;
pub mod worker;

pub use job::{Delivery, Envelope, Job, JobError, JobHandler, Outcome, process_message};
pub use jobs::{BillingJob, ProvisioningJob};
pub use sqs::{QueueError, QueueSettings, ReceivedMessage, SqsQueue, ensure_queue_with_dlq};
