//! DynamoDB persistence for the platform's single table.
//!
//! Every tenant-owned item's key (its profile, users, roles, health) leads with `TENANT#<id>`,
//! and handlers reach them through `Store::fenced`, which refuses keys outside the caller's
//! tenant. Platform-level items (plans, slug claims, platform staff, idempotency records)
//! have their own prefixes.

mod error;
pub mod fence;
pub mod heartbeats;
pub mod idempotency;
pub mod keys;
pub mod plans;
pub mod roles;
pub mod schema;
pub mod sessions;
pub mod tenants;
pub mod throttle;
pub mod users;

pub use error::StoreError;
pub use fence::Fenced;
pub use heartbeats::{HealthStatus, Heartbeat};
pub use idempotency::{Begin, IdempotencyKey, SavedResponse};
pub use roles::{RoleRecord, RoleWrite};
pub use sessions::Rotation;
pub use tenants::{Lease, Page, TenantRecord};
pub use throttle::WindowCount;
pub use users::{UserChanges, UserHome, UserRecord};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem};
use serde::de::DeserializeOwned;
use std::collections::HashMap;

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

    /// Reads one item, strongly consistent, and decodes it.
    pub(crate) async fn get_item<T: DeserializeOwned>(
        &self,
        key: HashMap<String, AttributeValue>,
    ) -> Result<Option<T>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::dynamo("GetItem", e))?;
        output.item.map(serde_dynamo::from_item).transpose().map_err(StoreError::from)
    }

    /// A transaction step creating `item` only if its key is free.
    pub(crate) fn put_new(
        &self,
        item: HashMap<String, AttributeValue>,
    ) -> Result<TransactWriteItem, StoreError> {
        Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(PK)")
            .build()
            .map(|put| TransactWriteItem::builder().put(put).build())
            .map_err(|e| StoreError::Corrupt(e.to_string()))
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
