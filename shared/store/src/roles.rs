//! A tenant's custom roles, in the tenant's partition.

use aws_sdk_dynamodb::types::AttributeValue;
use dotmac_domain::{CustomRole, RoleName, TenantId};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use time::OffsetDateTime;

use crate::keys::{ItemKey, ROLE_SK_PREFIX, role_sk, s, tenant_pk};
use crate::{Store, StoreError};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleRecord {
    #[serde(flatten)]
    pub role: CustomRole,
    pub tenant_id: TenantId,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

#[derive(Serialize, Deserialize)]
struct RoleItem {
    #[serde(rename = "PK")]
    pk: String,
    #[serde(rename = "SK")]
    sk: String,
    entity: String,
    #[serde(flatten)]
    record: RoleRecord,
}

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
        let item: HashMap<String, AttributeValue> = serde_dynamo::to_item(RoleItem {
            pk: tenant_pk(record.tenant_id),
            sk: role_sk(record.role.name.as_str()),
            entity: "role".to_owned(),
            record: record.clone(),
        })?;
        let condition = match mode {
            RoleWrite::Create => "attribute_not_exists(PK)",
            RoleWrite::Replace => "attribute_exists(PK)",
        };
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(condition)
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(error) if crate::error::condition_failed(&error) => match mode {
                RoleWrite::Create => Err(StoreError::AlreadyExists),
                RoleWrite::Replace => Ok(false),
            },
            Err(error) => Err(StoreError::dynamo("PutItem", error)),
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
        let mut roles = Vec::new();
        let mut start = None;
        loop {
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("PK = :pk AND begins_with(SK, :roles)")
                .expression_attribute_values(":pk", s(tenant_pk(tenant)))
                .expression_attribute_values(":roles", s(ROLE_SK_PREFIX))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| StoreError::dynamo("Query", e))?;
            for item in output.items.unwrap_or_default() {
                roles.push(serde_dynamo::from_item::<_, RoleItem>(item)?.record);
            }
            match output.last_evaluated_key {
                Some(key) => start = Some(key),
                None => return Ok(roles),
            }
        }
    }

    /// `false` when there was no such role.
    pub async fn delete_role(&self, tenant: TenantId, name: &RoleName) -> Result<bool, StoreError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(role_key(tenant, name).into_item()))
            .condition_expression("attribute_exists(PK)")
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(error) if crate::error::condition_failed(&error) => Ok(false),
            Err(error) => Err(StoreError::dynamo("DeleteItem", error)),
        }
    }
}
