//! The latest health report of a tenant's container (one item, overwritten by each report).

use dotmac_domain::TenantId;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use time::OffsetDateTime;

use crate::keys::{HEARTBEAT_SK, ItemKey, PK, SK, s, tenant_pk};
use crate::{Store, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    Healthy,
    Degraded,
    Unhealthy,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub status: HealthStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub reported_at: OffsetDateTime,
}

impl Store {
    /// Keeps the newest report only: an older one delivered late never overwrites it.
    pub async fn record_heartbeat(&self, tenant: TenantId, heartbeat: &Heartbeat) -> Result<(), StoreError> {
        let mut item: HashMap<String, aws_sdk_dynamodb::types::AttributeValue> =
            serde_dynamo::to_item(heartbeat)?;
        item.insert(PK.to_owned(), s(tenant_pk(tenant)));
        item.insert(SK.to_owned(), s(HEARTBEAT_SK));
        item.insert("entity".to_owned(), s("heartbeat"));
        item.insert("reported_epoch".to_owned(), crate::keys::n(heartbeat.reported_at.unix_timestamp()));
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(PK) OR reported_epoch <= :at")
            .expression_attribute_values(":at", crate::keys::n(heartbeat.reported_at.unix_timestamp()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error) if crate::error::condition_failed(&error) => Ok(()),
            Err(error) => Err(StoreError::dynamo("PutItem", error)),
        }
    }

    pub async fn latest_heartbeat(&self, tenant: TenantId) -> Result<Option<Heartbeat>, StoreError> {
        self.get_item(ItemKey::heartbeat(tenant)).await
    }
}
