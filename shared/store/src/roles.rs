//! A tenant's custom roles, in the tenant's partition.

use dotmac_domain::{CustomRole, RoleName, TenantId};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

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
            RoleWrite::Replace => ITEM_EXISTS,
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

    /// `false` when there was no such role.
    pub async fn delete_role(&self, tenant: TenantId, name: &RoleName) -> Result<bool, StoreError> {
        Ok(self.delete(role_key(tenant, name), Some(Expr::new(ITEM_EXISTS))).await?.is_ok())
    }
}
