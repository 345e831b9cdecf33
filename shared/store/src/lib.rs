//! DynamoDB persistence for the platform's single table.
//!
//! Every tenant-owned item's key leads with `TENANT#<id>` so IAM leading-key conditions can
//! fence a tenant's rows; platform-level items (plans, slug claims, users of platform staff,
//! idempotency records) have their own prefixes.

mod error;
pub mod idempotency;
pub mod keys;
pub mod plans;
pub mod schema;
pub mod sessions;
pub mod tenants;
pub mod throttle;
pub mod users;

pub use error::StoreError;
pub use idempotency::{Begin, IdempotencyKey, SavedResponse};
pub use sessions::Rotation;
pub use tenants::{Lease, Page, TenantRecord};
pub use throttle::WindowCount;
pub use users::UserRecord;

use aws_sdk_dynamodb::Client;

/// The platform table. Cheap to clone: the SDK client is shared.
#[derive(Debug, Clone)]
pub struct Store {
    client: Client,
    table: String,
}

impl Store {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Readiness probe: the table exists and answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
            .map_err(|e| StoreError::dynamo("DescribeTable", e))?;
        Ok(())
    }
}
