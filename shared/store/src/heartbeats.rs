//! The latest health report of a tenant's container (one item, overwritten by each report).

use dotmac_domain::TenantId;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::dynamo::{Expr, Item};
use crate::keys::{ItemKey, n, s};
use crate::{Store, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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
        let reported = n(heartbeat.reported_at.unix_timestamp());
        let mut item: Item = serde_dynamo::to_item(heartbeat)?;
        item.extend(ItemKey::heartbeat(tenant).into_item());
        item.insert("entity".to_owned(), s("heartbeat"));
        item.insert("reported_epoch".to_owned(), reported.clone());
        let newer = Expr::new("attribute_not_exists(PK) OR reported_epoch <= :at").value(":at", reported);
        // Refused: the stored report is newer, and stays.
        let _older = self.put(item, Some(newer)).await?;
        Ok(())
    }

    pub async fn latest_heartbeat(&self, tenant: TenantId) -> Result<Option<Heartbeat>, StoreError> {
        self.get_item(ItemKey::heartbeat(tenant)).await
    }
}
