use aws_sdk_dynamodb::types::AttributeValue;
use dotmac_domain::{PartnerId, Tenant, TenantId};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::dynamo::{Attributes, Expr, Item, Query, Read, decode_cursor};
use crate::keys::{GSI1, GSI1PK, GSI1SK, ItemKey, Stored, TENANTS_GSI1PK, s};
use crate::{Store, StoreError};

/// The slug claim's attributes: the tenant holding it, and the request that created it.
const TENANT_ID: &str = "tenant_id";
const CREATED_BY_REQUEST: &str = "created_by_request";

/// A tenant's optimistic-lock version, as its conditions compare it.
fn version(version: u64) -> AttributeValue {
    AttributeValue::N(version.to_string())
}

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

/// A resize of the tenant's container in progress (the scale job's saga state): recorded
/// before anything is started, so a retry after a crash at any step finds what the earlier
/// attempt did and carries on from there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScaleOperation {
    /// The RunTask client token of the replacement task.
    pub token: String,
    pub target: dotmac_domain::TaskSize,
    /// The task the tenant ran when the resize began: stopped once the replacement runs and
    /// the record points at it.
    pub previous_task_arn: String,
    /// The replacement, once started.
    #[serde(default)]
    pub replacement_task_arn: Option<String>,
    #[serde(default)]
    pub task_definition_arn: Option<String>,
    /// The image the replacement runs (a rollout's replace); `None`: the tenant's image as
    /// it stands, the size alone changing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

/// A tenant as stored: the domain tenant plus the bookkeeping that is not part of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantRecord {
    pub tenant: Tenant,
    pub lease: Option<Lease>,
    pub scaling: Option<ScaleOperation>,
    /// The image the tenant's container should run, once a rollout moved it; `None`: the
    /// fleet's image (`ISP_FRAMEWORK_IMAGE`).
    pub image: Option<String>,
}

/// A tenant's own attributes: the domain tenant, its id again (as the slug claim records
/// it), and its lease.
#[derive(Serialize, Deserialize)]
pub(crate) struct TenantAttributes {
    pub(crate) tenant_id: String,
    #[serde(flatten)]
    pub(crate) tenant: Tenant,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) lease: Option<Lease>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) scaling: Option<ScaleOperation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) image: Option<String>,
}

pub(crate) type TenantItem = Stored<TenantAttributes>;

/// A tenant's item: found by its key, and listed (in id order) through GSI1.
pub(crate) fn tenant_item(record: &TenantRecord) -> Result<Item, StoreError> {
    let id = record.tenant.id;
    let attributes = TenantAttributes {
        tenant_id: id.to_string(),
        tenant: record.tenant.clone(),
        lease: record.lease.clone(),
        scaling: record.scaling.clone(),
        image: record.image.clone(),
    };
    Stored::new(ItemKey::tenant(id), "tenant", attributes).indexed(TENANTS_GSI1PK, id.to_string()).to_item()
}

/// One page of a list, and the opaque cursor of the next one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// The start of the page after the tenant a cursor names (its time-ordered id, `GSI1SK`).
fn tenants_after(cursor: &str) -> Result<Item, StoreError> {
    let id = TenantId::parse(&decode_cursor(cursor)?).map_err(|_| StoreError::BadCursor)?;
    let mut start = ItemKey::tenant(id).into_item();
    start.insert(GSI1PK.to_owned(), s(TENANTS_GSI1PK));
    start.insert(GSI1SK.to_owned(), s(id.to_string()));
    Ok(start)
}

impl Store {
    /// Writes a new tenant, claims its slug and logs `tenant.created` (sequence 1) in one
    /// transaction: all exist after, or none.
    pub async fn create_tenant(&self, tenant: &Tenant) -> Result<(), StoreError> {
        self.create_tenant_for(tenant, None).await
    }

    /// `create_tenant`, remembering on the slug claim which request (caller and
    /// Idempotency-Key) made it, so that request's retry can recognise its own tenant.
    pub async fn create_tenant_for(&self, tenant: &Tenant, request: Option<&str>) -> Result<(), StoreError> {
        let record = TenantRecord { tenant: tenant.clone(), lease: None, scaling: None, image: None };
        let item = tenant_item(&record)?;
        let slug = tenant.slug.as_str();
        let mut slug_claim = ItemKey::slug(slug).into_item();
        slug_claim.insert("entity".to_owned(), s("slug_claim"));
        slug_claim.insert(TENANT_ID.to_owned(), s(tenant.id.to_string()));
        if let Some(request) = request {
            slug_claim.insert(CREATED_BY_REQUEST.to_owned(), s(request));
        }
        // The tenant's first plan span, from its creation, in the same write: every tenant has
        // a plan span from the moment it exists (`subscriptions`).
        let first_plan = crate::subscriptions::PlanSpan {
            plan_id: tenant.plan.clone(),
            from: tenant.created_at,
            to: None,
        };
        let span = crate::subscriptions::plan_span_item(tenant.id, &first_plan)?;
        let created = dotmac_domain::EventEnvelope::seal(
            tenant.created_event(),
            tenant.id,
            tenant.version,
            tenant.created_at,
        );
        let event = crate::events::event_item(&created)?;
        match self
            .transact(vec![
                self.put_new(item)?,
                self.put_new(slug_claim)?,
                self.put_new(span)?,
                self.put_new(event)?,
            ])
            .await?
        {
            Ok(()) => Ok(()),
            Err(cancelled) if cancelled.refused(1) => Err(StoreError::SlugTaken(slug.to_owned())),
            Err(cancelled) if cancelled.refused(0) => Err(StoreError::AlreadyExists),
            Err(cancelled) => Err(cancelled.into()),
        }
    }

    pub async fn get_tenant_record(&self, id: TenantId) -> Result<Option<TenantRecord>, StoreError> {
        let item = self.get_item::<TenantItem>(ItemKey::tenant(id)).await?;
        Ok(item.map(|item| TenantRecord {
            tenant: item.record.tenant,
            lease: item.record.lease,
            scaling: item.record.scaling,
            image: item.record.image,
        }))
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
        let item = tenant_item(&next)?;
        let unchanged =
            Expr::new("attribute_exists(PK) AND version = :expected").value(":expected", version(expected));
        self.put(item, Some(unchanged)).await?.map_err(|_| StoreError::VersionConflict { expected })?;
        *record = next;
        Ok(())
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
        let start = cursor.map(tenants_after).transpose()?;
        let brought_by = partner.map(|p| Expr::new("partner_id = :partner").value(":partner", s(p.as_str())));
        let query = Query::index(GSI1, Expr::new("GSI1PK = :pk").value(":pk", s(TENANTS_GSI1PK)))
            .filter(brought_by)
            .limit(limit)
            .start(start);
        self.page(query, GSI1SK, |item: TenantItem| item.record.tenant).await
    }

    /// Tenants as stored (with their lease, resize and image), in creation order, `limit` at
    /// a time: what the fleet's reconcile and rollouts walk. Read from the index, so a change
    /// made a moment ago may not show yet; they read each tenant again before changing it.
    pub async fn list_tenant_records(
        &self,
        limit: i32,
        cursor: Option<&str>,
    ) -> Result<Page<TenantRecord>, StoreError> {
        let start = cursor.map(tenants_after).transpose()?;
        let query = Query::index(GSI1, Expr::new("GSI1PK = :pk").value(":pk", s(TENANTS_GSI1PK)))
            .limit(limit)
            .start(start);
        self.page(query, GSI1SK, |item: TenantItem| TenantRecord {
            tenant: item.record.tenant,
            lease: item.record.lease,
            scaling: item.record.scaling,
            image: item.record.image,
        })
        .await
    }

    /// Which tenant holds a slug, if any.
    pub async fn tenant_id_for_slug(&self, slug: &str) -> Result<Option<TenantId>, StoreError> {
        Ok(self.slug_claim(slug).await?.map(|(id, _)| id))
    }

    /// The tenant holding a slug and the request that created it (when one was recorded).
    pub async fn slug_claim(&self, slug: &str) -> Result<Option<(TenantId, Option<String>)>, StoreError> {
        let claim = self.read_item(ItemKey::slug(slug), Read::Eventual, None).await?;
        Ok(claim.and_then(|item| {
            let id = item.optional_string(TENANT_ID).and_then(|raw| TenantId::parse(&raw).ok())?;
            Some((id, item.optional_string(CREATED_BY_REQUEST)))
        }))
    }
}

impl Store {
    /// Removes a tenant that was just created and never provisioned, with its slug claim and
    /// its `tenant.created` event; conditional, so it can never remove a tenant that moved on.
    /// (A publisher run in the few milliseconds between may have published that event: a
    /// consumer then knows of a tenant that reads as not found.)
    pub async fn delete_new_tenant(&self, tenant: &Tenant) -> Result<(), StoreError> {
        let unchanged = Expr::new("version = :version").value(":version", version(tenant.version));
        let ours = Expr::new("tenant_id = :tenant").value(":tenant", s(tenant.id.to_string()));
        let steps = vec![
            self.delete_step(ItemKey::tenant(tenant.id), unchanged)?,
            self.delete_step(ItemKey::slug(tenant.slug.as_str()), ours)?,
            self.delete_step(
                ItemKey::plan_span(tenant.id, tenant.created_at),
                Expr::new("attribute_exists(PK)"),
            )?,
            self.delete_step(
                ItemKey::tenant_event(tenant.id, tenant.version),
                Expr::new(crate::dynamo::ITEM_EXISTS),
            )?,
        ];
        Ok(self.transact(steps).await??)
    }
}
