//! A tenant's custom roles, in the tenant's partition.

use dotmac_domain::{CustomRole, RoleName, TenantId};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use aws_sdk_dynamodb::types::AttributeValue;

use crate::dynamo::{Expr, ITEM_EXISTS, ITEM_IS_NEW, Query};
use crate::keys::{ItemKey, ROLE_SK_PREFIX, Stored, s, tenant_pk};
use crate::{Store, StoreError};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleRecord {
    #[serde(flatten)]
    pub role: CustomRole,
    pub tenant_id: TenantId,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// Being deleted: it grants nothing any more, and its name cannot be defined again until
    /// every holder has lost it (so a new role of that name is never granted to them).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retiring: bool,
}

type RoleItem = Stored<RoleRecord>;

fn role_key(tenant: TenantId, name: &RoleName) -> ItemKey {
    ItemKey::role(tenant, name.as_str())
}

/// Whether a write may create a role, replace one, or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleWrite {
    /// `AlreadyExists` if the name is taken.
    Create,
    /// `Ok(false)` if there is no such role.
    Replace,
}

impl Store {
    pub async fn put_role(&self, record: &RoleRecord, mode: RoleWrite) -> Result<bool, StoreError> {
        let key = ItemKey::role(record.tenant_id, record.role.name.as_str());
        let item = Stored::new(key, "role", record).to_item()?;
        let condition = match mode {
            RoleWrite::Create => ITEM_IS_NEW,
            // A role being deleted is not brought back by rewriting it.
            RoleWrite::Replace => "attribute_exists(PK) AND attribute_not_exists(retiring)",
        };
        match (self.put(item, Some(Expr::new(condition))).await?, mode) {
            (Ok(()), _) => Ok(true),
            (Err(_), RoleWrite::Create) => Err(StoreError::AlreadyExists),
            (Err(_), RoleWrite::Replace) => Ok(false),
        }
    }

    pub async fn get_role(
        &self,
        tenant: TenantId,
        name: &RoleName,
    ) -> Result<Option<RoleRecord>, StoreError> {
        Ok(self.get_item::<RoleItem>(role_key(tenant, name)).await?.map(|item| item.record))
    }

    /// Every custom role of a tenant (a tenant defines a handful; one query, all pages).
    pub async fn list_roles(&self, tenant: TenantId) -> Result<Vec<RoleRecord>, StoreError> {
        let roles = Expr::new("PK = :pk AND begins_with(SK, :roles)")
            .value(":pk", s(tenant_pk(tenant)))
            .value(":roles", s(ROLE_SK_PREFIX));
        let items: Vec<RoleItem> = self.query_all(Query::table(roles)).await?;
        Ok(items.into_iter().map(|item| item.record).collect())
    }

    /// Deletes a custom role so that it is gone from its holders too: first it is marked
    /// retiring (it grants nothing from that moment, and its name cannot be defined again),
    /// then every user holding it loses it (which ends their sessions, as any change of roles
    /// does), and only then the definition goes. A crash anywhere leaves a retiring role that
    /// a repeated delete finishes. `false` when there was no such role.
    pub async fn delete_role(
        &self,
        tenant: TenantId,
        name: &RoleName,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let retire = Expr::new("SET retiring = :yes").value(":yes", AttributeValue::Bool(true));
        if self.update(role_key(tenant, name), retire, Some(Expr::new(ITEM_EXISTS)), None).await?.is_err() {
            return Ok(false);
        }
        self.take_role_from_holders(tenant, name, now_ms).await?;
        let retiring = Expr::new("retiring = :yes").value(":yes", AttributeValue::Bool(true));
        // Refused: a concurrent delete finished first.
        let _done = self.delete(role_key(tenant, name), Some(retiring)).await?;
        Ok(true)
    }
}
