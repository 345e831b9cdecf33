use aws_sdk_dynamodb::types::{AttributeValue, TransactWriteItem};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use dotmac_domain::{PartnerId, Tenant, TenantId};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use time::OffsetDateTime;

use crate::keys::{
    GSI1, GSI1PK, GSI1SK, PK, SK, SLUG_SK, TENANT_PROFILE_SK, TENANTS_GSI1PK, s, slug_pk, tenant_pk,
};
use crate::{Store, StoreError};

/// A claim on a tenant's provisioning work, so two deliveries of the same job never launch
/// two containers. It expires, so a crashed worker never blocks the tenant for good.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub token: String,
    pub expires_at: i64,
}

impl Lease {
    pub fn is_live(&self, now: OffsetDateTime) -> bool {
        self.expires_at > now.unix_timestamp()
    }
}

/// A tenant as stored: the domain tenant plus the bookkeeping that is not part of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantRecord {
    pub tenant: Tenant,
    pub lease: Option<Lease>,
}

#[derive(Serialize, Deserialize)]
struct TenantItem {
    #[serde(rename = "PK")]
    pk: String,
    #[serde(rename = "SK")]
    sk: String,
    #[serde(rename = "GSI1PK")]
    gsi1pk: String,
    #[serde(rename = "GSI1SK")]
    gsi1sk: String,
    entity: String,
    tenant_id: String,
    #[serde(flatten)]
    tenant: Tenant,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lease: Option<Lease>,
}

impl TenantItem {
    fn from_record(record: &TenantRecord) -> Self {
        let id = record.tenant.id;
        TenantItem {
            pk: tenant_pk(id),
            sk: TENANT_PROFILE_SK.to_owned(),
            gsi1pk: TENANTS_GSI1PK.to_owned(),
            gsi1sk: id.to_string(),
            entity: "tenant".to_owned(),
            tenant_id: id.to_string(),
            tenant: record.tenant.clone(),
            lease: record.lease.clone(),
        }
    }
}

/// One page of a list, and the opaque cursor of the next one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

fn encode_cursor(key: &HashMap<String, AttributeValue>) -> Option<String> {
    let tenant_id = key.get(GSI1SK)?.as_s().ok()?;
    Some(URL_SAFE_NO_PAD.encode(tenant_id))
}

fn decode_cursor(cursor: &str) -> Result<HashMap<String, AttributeValue>, StoreError> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| StoreError::BadCursor)?;
    let raw = String::from_utf8(bytes).map_err(|_| StoreError::BadCursor)?;
    let id = TenantId::parse(&raw).map_err(|_| StoreError::BadCursor)?;
    Ok(HashMap::from([
        (PK.to_owned(), s(tenant_pk(id))),
        (SK.to_owned(), s(TENANT_PROFILE_SK)),
        (GSI1PK.to_owned(), s(TENANTS_GSI1PK)),
        (GSI1SK.to_owned(), s(id.to_string())),
    ]))
}

impl Store {
    /// Writes a new tenant and claims its slug in one transaction: either both exist after,
    /// or neither.
    pub async fn create_tenant(&self, tenant: &Tenant) -> Result<(), StoreError> {
        self.create_tenant_for(tenant, None).await
    }

    /// `create_tenant`, remembering on the slug claim which request (caller and
    /// Idempotency-Key) made it, so that request's retry can recognise its own tenant.
    pub async fn create_tenant_for(&self, tenant: &Tenant, request: Option<&str>) -> Result<(), StoreError> {
        let record = TenantRecord { tenant: tenant.clone(), lease: None };
        let item: HashMap<String, AttributeValue> = serde_dynamo::to_item(TenantItem::from_record(&record))?;
        let slug = tenant.slug.as_str();
        let slug_claim = HashMap::from([
            (PK.to_owned(), s(slug_pk(slug))),
            (SK.to_owned(), s(SLUG_SK)),
            ("entity".to_owned(), s("slug_claim")),
            ("tenant_id".to_owned(), s(tenant.id.to_string())),
        ]);
        let mut slug_claim = slug_claim;
        if let Some(request) = request {
            slug_claim.insert("created_by_request".to_owned(), s(request));
        }
        let result = self
            .client
            .transact_write_items()
            .transact_items(self.put_new(item)?)
            .transact_items(self.put_new(slug_claim)?)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error) => {
                let reasons: Vec<Option<String>> = error
                    .as_service_error()
                    .and_then(|e| match e {
                        aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(c) => {
                            Some(c.cancellation_reasons().iter().map(|r| r.code().map(str::to_owned)).collect())
                        }
                        _ => None,
                    })
                    .unwrap_or_default();
                let failed =
                    |i: usize| reasons.get(i).and_then(|r| r.as_deref()) == Some("ConditionalCheckFailed");
                if failed(1) {
                    Err(StoreError::SlugTaken(slug.to_owned()))
                } else if failed(0) {
                    Err(StoreError::AlreadyExists)
                } else {
                    Err(StoreError::dynamo("TransactWriteItems", error))
                }
            }
        }
    }

    pub async fn get_tenant_record(&self, id: TenantId) -> Result<Option<TenantRecord>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PK, s(tenant_pk(id)))
            .key(SK, s(TENANT_PROFILE_SK))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::dynamo("GetItem", e))?;
        let Some(item) = output.item else {
            return Ok(None);
        };
        let item: TenantItem = serde_dynamo::from_item(item)?;
        Ok(Some(TenantRecord { tenant: item.tenant, lease: item.lease }))
    }

    pub async fn get_tenant(&self, id: TenantId) -> Result<Option<Tenant>, StoreError> {
        Ok(self.get_tenant_record(id).await?.map(|r| r.tenant))
    }

    /// Replaces the stored record if nobody changed it since it was read (its `version` still
    /// matches), then bumps the version in `record`.
    pub async fn save_tenant(&self, record: &mut TenantRecord) -> Result<(), StoreError> {
        let expected = record.tenant.version;
        let mut next = record.clone();
        next.tenant.version = expected + 1;
        let item: HashMap<String, AttributeValue> = serde_dynamo::to_item(TenantItem::from_record(&next))?;
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_exists(PK) AND version = :expected")
            .expression_attribute_values(":expected", AttributeValue::N(expected.to_string()))
            .send()
            .await;
        match result {
            Ok(_) => {
                *record = next;
                Ok(())
            }
            Err(error) if crate::error::condition_failed(&error) => {
                Err(StoreError::VersionConflict { expected })
            }
            Err(error) => Err(StoreError::dynamo("PutItem", error)),
        }
    }

    /// Tenants in creation order, `limit` at a time.
    pub async fn list_tenants(&self, limit: i32, cursor: Option<&str>) -> Result<Page<Tenant>, StoreError> {
        self.query_tenants(None, limit, cursor).await
    }

    /// The tenants a partner brought, in creation order. `limit` counts tenants examined, so
    /// a page may hold fewer (even none) and still have a next cursor.
    pub async fn list_partner_tenants(
        &self,
        partner: &PartnerId,
        limit: i32,
        cursor: Option<&str>,
    ) -> Result<Page<Tenant>, StoreError> {
        self.query_tenants(Some(partner), limit, cursor).await
    }

    async fn query_tenants(
        &self,
        partner: Option<&PartnerId>,
        limit: i32,
        cursor: Option<&str>,
    ) -> Result<Page<Tenant>, StoreError> {
        let start = cursor.map(decode_cursor).transpose()?;
        let mut query = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(GSI1)
            .key_condition_expression("GSI1PK = :pk")
            .expression_attribute_values(":pk", s(TENANTS_GSI1PK))
            .limit(limit)
            .set_exclusive_start_key(start);
        if let Some(partner) = partner {
            query = query
                .filter_expression("partner_id = :partner")
                .expression_attribute_values(":partner", s(partner.as_str()));
        }
        let output = query.send().await.map_err(|e| StoreError::dynamo("Query", e))?;
        let items = output
            .items
            .unwrap_or_default()
            .into_iter()
            .map(|item| serde_dynamo::from_item::<_, TenantItem>(item).map(|i| i.tenant))
            .collect::<Result<Vec<_>, _>>()?;
        let next_cursor = output.last_evaluated_key.as_ref().and_then(encode_cursor);
        Ok(Page { items, next_cursor })
    }

    /// Which tenant holds a slug, if any.
    pub async fn tenant_id_for_slug(&self, slug: &str) -> Result<Option<TenantId>, StoreError> {
        Ok(self.slug_claim(slug).await?.map(|(id, _)| id))
    }

    /// The tenant holding a slug and the request that created it (when one was recorded).
    pub async fn slug_claim(&self, slug: &str) -> Result<Option<(TenantId, Option<String>)>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PK, s(slug_pk(slug)))
            .key(SK, s(SLUG_SK))
            .send()
            .await
            .map_err(|e| StoreError::dynamo("GetItem", e))?;
        Ok(output.item.and_then(|item| {
            let id = item
                .get("tenant_id")
                .and_then(|v| v.as_s().ok())
                .and_then(|raw| TenantId::parse(raw).ok())?;
            let request = item.get("created_by_request").and_then(|v| v.as_s().ok()).cloned();
            Some((id, request))
        }))
    }
}

impl Store {
    /// Removes a tenant that was just created and never provisioned, with its slug claim;
    /// conditional, so it can never remove a tenant that moved on.
    pub async fn delete_new_tenant(&self, tenant: &Tenant) -> Result<(), StoreError> {
        use aws_sdk_dynamodb::types::Delete;
        let as_item = |delete: Result<Delete, aws_sdk_dynamodb::error::BuildError>| {
            delete
                .map(|d| TransactWriteItem::builder().delete(d).build())
                .map_err(|e| StoreError::Corrupt(e.to_string()))
        };
        let tenant_item = Delete::builder()
            .table_name(&self.table)
            .key(PK, s(tenant_pk(tenant.id)))
            .key(SK, s(TENANT_PROFILE_SK))
            .condition_expression("version = :version")
            .expression_attribute_values(":version", AttributeValue::N(tenant.version.to_string()))
            .build();
        let slug_claim = Delete::builder()
            .table_name(&self.table)
            .key(PK, s(slug_pk(tenant.slug.as_str())))
            .key(SK, s(SLUG_SK))
            .condition_expression("tenant_id = :tenant")
            .expression_attribute_values(":tenant", s(tenant.id.to_string()))
            .build();
        self.client
            .transact_write_items()
            .transact_items(as_item(tenant_item)?)
            .transact_items(as_item(slug_claim)?)
            .send()
            .await
            .map_err(|e| StoreError::dynamo("TransactWriteItems", e))?;
        Ok(())
    }
}
