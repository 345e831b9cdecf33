//! The table's shape, for the local bootstrap and the tests; `infra/template.yaml` declares
//! the same keys and index (`PlatformTable`) for AWS.

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TableStatus, TimeToLiveSpecification,
};
use std::time::Duration;

use crate::keys::{EXPIRES_AT, GSI1, GSI1PK, GSI1SK, PK, SK};
use crate::{Store, StoreError};

fn key(name: &str, kind: KeyType) -> Result<KeySchemaElement, StoreError> {
    KeySchemaElement::builder().attribute_name(name).key_type(kind).build().map_err(StoreError::request)
}

fn string_attribute(name: &str) -> Result<AttributeDefinition, StoreError> {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(ScalarAttributeType::S)
        .build()
        .map_err(StoreError::request)
}

impl Store {
    /// Creates the table if it does not exist and waits until it is ACTIVE. Safe to repeat.
    pub async fn ensure_table(&self) -> Result<(), StoreError> {
        if self.ping().await.is_ok() {
            return Ok(());
        }
        let gsi = GlobalSecondaryIndex::builder()
            .index_name(GSI1)
            .key_schema(key(GSI1PK, KeyType::Hash)?)
            .key_schema(key(GSI1SK, KeyType::Range)?)
            .projection(Projection::builder().projection_type(ProjectionType::All).build())
            .build()
            .map_err(StoreError::request)?;
        let created = self
            .client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .key_schema(key(PK, KeyType::Hash)?)
            .key_schema(key(SK, KeyType::Range)?)
            .attribute_definitions(string_attribute(PK)?)
            .attribute_definitions(string_attribute(SK)?)
            .attribute_definitions(string_attribute(GSI1PK)?)
            .attribute_definitions(string_attribute(GSI1SK)?)
            .global_secondary_indexes(gsi)
            .send()
            .await;
        if let Err(error) = created {
            let already = error.as_service_error().is_some_and(|e| e.is_resource_in_use_exception());
            if !already {
                return Err(StoreError::dynamo("CreateTable", error));
            }
        }
        for _ in 0..60 {
            if self.table_status().await? == Some(TableStatus::Active) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let ttl = TimeToLiveSpecification::builder()
            .attribute_name(EXPIRES_AT)
            .enabled(true)
            .build()
            .map_err(StoreError::request)?;
        // Some emulators answer "TTL already enabled" on a repeat; the table is usable either way.
        if let Err(error) = self
            .client
            .update_time_to_live()
            .table_name(&self.table)
            .time_to_live_specification(ttl)
            .send()
            .await
        {
            tracing::debug!(error = %StoreError::dynamo("UpdateTimeToLive", error), "TTL not updated");
        }
        Ok(())
    }
}
