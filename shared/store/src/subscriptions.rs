//! A tenant's subscriptions: which plan it was on, and which bundles it held, when. Each is a
//! span `[from, to)` (`to` absent while it runs), stored in the tenant's own partition under
//! sort keys beginning `SUBSCRIPTION#`, so the billing worker reads all of a tenant's spans
//! with one Query:
//!
//! - `SUBSCRIPTION#PLAN#<from_ms:015>`: a plan span;
//! - `SUBSCRIPTION#BUNDLE#<code>#<from_ms:015>`: a bundle span, with the bundle's name and
//!   monthly price as they were when it was added (a later catalogue change never re-prices a
//!   running subscription; removing and adding it again takes the new price).
//!
//! The tenant item's `plan` and `bundles` say what holds now; every change writes them and
//! the spans in one transaction conditioned on the tenant's version, so two concurrent
//! changes can never both win, and the spans never disagree with the tenant.

use aws_sdk_dynamodb::types::AttributeValue;
use dotmac_billing::{Bundle, Money};
use dotmac_domain::{PlanId, Tenant, TenantId};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::dynamo::{Expr, Item, Query};
use crate::keys::{ItemKey, Stored, s, tenant_pk};
use crate::{Store, StoreError};

/// The prefix of every subscription span's sort key.
pub const SUBSCRIPTION_SK_PREFIX: &str = "SUBSCRIPTION#";

/// A bundle held from `from` until `to` (still held when `None`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleSpan {
    pub bundle: String,
    pub name: String,
    /// The monthly price when the bundle was added.
    pub monthly: Money,
    #[serde(with = "time::serde::rfc3339")]
    pub from: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option", skip_serializing_if = "Option::is_none")]
    pub to: Option<OffsetDateTime>,
}

/// A plan held from `from` until `to` (still held when `None`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanSpan {
    pub plan_id: PlanId,
    #[serde(with = "time::serde::rfc3339")]
    pub from: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option", skip_serializing_if = "Option::is_none")]
    pub to: Option<OffsetDateTime>,
}

/// Every span of a tenant, each list in the order the spans began.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subscriptions {
    pub plans: Vec<PlanSpan>,
    pub bundles: Vec<BundleSpan>,
}

impl Subscriptions {
    fn from_items(items: impl IntoIterator<Item = SpanItem>) -> Self {
        let mut subscriptions = Subscriptions::default();
        for item in items {
            match item {
                SpanItem::Plan(owned) => subscriptions.plans.push(owned.span),
                SpanItem::Bundle(owned) => subscriptions.bundles.push(owned.span),
            }
        }
        subscriptions.plans.sort_by_key(|span| span.from);
        subscriptions.bundles.sort_by_key(|span| span.from);
        subscriptions
    }

    /// The spans among a query's raw items (others, of any kind, are skipped).
    pub(crate) fn among(items: Vec<crate::dynamo::Item>) -> Result<Self, StoreError> {
        let spans = items
            .into_iter()
            .filter(|item| {
                item.get("entity")
                    .and_then(|e| e.as_s().ok())
                    .is_some_and(|e| e == PLAN_SPAN || e == BUNDLE_SPAN)
            })
            .map(crate::dynamo::decode::<SpanItem>)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::from_items(spans))
    }

    /// The running span of `bundle`, if the tenant holds it.
    pub fn open_bundle(&self, bundle: &str) -> Option<&BundleSpan> {
        self.bundles.iter().rev().find(|span| span.bundle == bundle && span.to.is_none())
    }

    /// The running plan span.
    pub fn open_plan(&self) -> Option<&PlanSpan> {
        self.plans.iter().rev().find(|span| span.to.is_none())
    }
}

fn ms(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(0).max(0)
}

fn rfc3339(at: OffsetDateTime) -> Result<String, StoreError> {
    at.format(&time::format_description::well_known::Rfc3339).map_err(|e| StoreError::Corrupt(e.to_string()))
}

#[derive(Serialize, Deserialize)]
struct Owned<T> {
    tenant_id: TenantId,
    #[serde(flatten)]
    span: T,
}

impl ItemKey {
    pub(crate) fn plan_span(tenant: TenantId, from: OffsetDateTime) -> Self {
        Self::from_parts(tenant_pk(tenant), format!("{SUBSCRIPTION_SK_PREFIX}PLAN#{:015}", ms(from)))
    }

    pub(crate) fn bundle_span(tenant: TenantId, bundle: &str, from: OffsetDateTime) -> Self {
        Self::from_parts(
            tenant_pk(tenant),
            format!("{SUBSCRIPTION_SK_PREFIX}BUNDLE#{bundle}#{:015}", ms(from)),
        )
    }
}

/// A span item, by its kind.
#[derive(Deserialize)]
#[serde(tag = "entity", rename_all = "snake_case")]
enum SpanItem {
    #[serde(rename = "plan_span")]
    Plan(Owned<PlanSpan>),
    #[serde(rename = "bundle_span")]
    Bundle(Owned<BundleSpan>),
}

const PLAN_SPAN: &str = "plan_span";
const BUNDLE_SPAN: &str = "bundle_span";

/// The item of a tenant's first plan span (written with the tenant, `Store::create_tenant`).
pub(crate) fn plan_span_item(tenant: TenantId, span: &PlanSpan) -> Result<Item, StoreError> {
    Stored::new(ItemKey::plan_span(tenant, span.from), PLAN_SPAN, Owned { tenant_id: tenant, span }).to_item()
}

fn bundle_span_item(tenant: TenantId, span: &BundleSpan) -> Result<Item, StoreError> {
    let key = ItemKey::bundle_span(tenant, &span.bundle, span.from);
    Stored::new(key, BUNDLE_SPAN, Owned { tenant_id: tenant, span }).to_item()
}

/// The tenant's `plan` and `bundles` set to `tenant`'s, if its stored version is still
/// `tenant.version` (which it then bumps).
fn tenant_change(
    store: &Store,
    tenant: &Tenant,
    at: OffsetDateTime,
) -> Result<aws_sdk_dynamodb::types::TransactWriteItem, StoreError> {
    let bundles = AttributeValue::L(tenant.bundles.iter().map(|b| s(b.as_str())).collect());
    let update = Expr::new("SET #plan = :plan, #bundles = :bundles, #version = :next, #updated = :updated")
        .name("#plan", "plan")
        .name("#bundles", "bundles")
        .name("#version", "version")
        .name("#updated", "updated_at")
        .value(":plan", s(tenant.plan.as_str()))
        .value(":bundles", bundles)
        .value(":next", AttributeValue::N((tenant.version + 1).to_string()))
        .value(":updated", s(rfc3339(at)?));
    let unchanged = Expr::new("#version = :expected")
        .name("#version", "version")
        .value(":expected", AttributeValue::N(tenant.version.to_string()));
    store.update_step(ItemKey::tenant(tenant.id), update, unchanged)
}

/// Ends a running span at `at`, if it is still running.
fn close_step(
    store: &Store,
    key: ItemKey,
    at: OffsetDateTime,
) -> Result<aws_sdk_dynamodb::types::TransactWriteItem, StoreError> {
    let update = Expr::new("SET #to = :to").name("#to", "to").value(":to", s(rfc3339(at)?));
    let running = Expr::new("attribute_exists(PK) AND attribute_not_exists(#to)").name("#to", "to");
    store.update_step(key, update, running)
}

impl Store {
    /// Every subscription span of a tenant: one Query of its partition.
    pub async fn subscriptions(&self, tenant: TenantId) -> Result<Subscriptions, StoreError> {
        let spans = Expr::new("PK = :pk AND begins_with(SK, :spans)")
            .value(":pk", s(tenant_pk(tenant)))
            .value(":spans", s(SUBSCRIPTION_SK_PREFIX));
        let items: Vec<SpanItem> = self.query_all(Query::table(spans).consistent()).await?;
        Ok(Subscriptions::from_items(items))
    }

    /// Adds `bundle` to `tenant` (as read, at its version) from `at`, capturing its price.
    /// `VersionConflict` when the tenant changed since it was read.
    pub async fn add_bundle(
        &self,
        tenant: &Tenant,
        bundle: &Bundle,
        at: OffsetDateTime,
    ) -> Result<BundleSpan, StoreError> {
        let mut changed = tenant.clone();
        changed.bundles.push(bundle.code.clone());
        let span = BundleSpan {
            bundle: bundle.code.clone(),
            name: bundle.name.clone(),
            monthly: bundle.monthly,
            from: at,
            to: None,
        };
        let steps =
            vec![tenant_change(self, &changed, at)?, self.put_new(bundle_span_item(tenant.id, &span)?)?];
        self.settle_change(tenant, steps).await?;
        Ok(span)
    }

    /// Ends `span` (a running span of `tenant`) at `at` and takes the bundle off the tenant.
    pub async fn remove_bundle(
        &self,
        tenant: &Tenant,
        span: &BundleSpan,
        at: OffsetDateTime,
    ) -> Result<BundleSpan, StoreError> {
        let mut changed = tenant.clone();
        changed.bundles.retain(|code| *code != span.bundle);
        let key = ItemKey::bundle_span(tenant.id, &span.bundle, span.from);
        let steps = vec![tenant_change(self, &changed, at)?, close_step(self, key, at)?];
        self.settle_change(tenant, steps).await?;
        Ok(BundleSpan { to: Some(at), ..span.clone() })
    }

    /// Moves `tenant` to `plan` from `at`: the running span (`open`, if any) ends and a new
    /// one starts, with the tenant's plan, in one transaction.
    pub async fn change_plan(
        &self,
        tenant: &Tenant,
        open: Option<&PlanSpan>,
        plan: &PlanId,
        at: OffsetDateTime,
    ) -> Result<PlanSpan, StoreError> {
        let mut changed = tenant.clone();
        changed.plan = plan.clone();
        let span = PlanSpan { plan_id: plan.clone(), from: at, to: None };
        let mut steps = vec![tenant_change(self, &changed, at)?];
        if let Some(open) = open {
            steps.push(close_step(self, ItemKey::plan_span(tenant.id, open.from), at)?);
        }
        steps.push(self.put_new(plan_span_item(tenant.id, &span)?)?);
        self.settle_change(tenant, steps).await?;
        Ok(span)
    }

    /// Runs a subscription change: a refusal of any step means someone changed the tenant
    /// (or its spans, which only change with it) first.
    async fn settle_change(
        &self,
        tenant: &Tenant,
        steps: Vec<aws_sdk_dynamodb::types::TransactWriteItem>,
    ) -> Result<(), StoreError> {
        let count = steps.len();
        match self.transact(steps).await? {
            Ok(()) => Ok(()),
            Err(cancelled) if (0..count).any(|step| cancelled.refused(step)) => {
                Err(StoreError::VersionConflict { expected: tenant.version })
            }
            Err(cancelled) => Err(cancelled.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dotmac_billing::Currency;
    use time::macros::datetime;

    #[test]
    fn spans_are_keyed_in_the_tenants_partition_under_one_prefix_and_read_back() {
        let tenant = TenantId::generate();
        let span = BundleSpan {
            bundle: "crm".into(),
            name: "CRM".into(),
            monthly: Money::new(4_900, Currency::USD),
            from: datetime!(2027-03-10 12:00 UTC),
            to: None,
        };
        let item = bundle_span_item(tenant, &span).expect("item");
        assert_eq!(item["PK"], s(tenant_pk(tenant)));
        assert_eq!(item["SK"], s("SUBSCRIPTION#BUNDLE#crm#001804680000000"));
        assert!(!item.contains_key("to"), "a running span has no end");
        let Ok(SpanItem::Bundle(back)) = crate::dynamo::decode::<SpanItem>(item) else {
            panic!("a bundle span")
        };
        assert_eq!(back.span, span);
        let plan =
            PlanSpan { plan_id: PlanId::parse("usage").expect("id"), from: span.from, to: Some(span.from) };
        let item = plan_span_item(tenant, &plan).expect("item");
        assert!(item["SK"].as_s().expect("sk").starts_with("SUBSCRIPTION#PLAN#"));
        let Ok(SpanItem::Plan(back)) = crate::dynamo::decode::<SpanItem>(item) else { panic!("a plan span") };
        assert_eq!(back.span, plan);
    }
}
