//! The catalogue: plans (listed through GSI1), their versioned prices, and bundles.
//!
//! A plan's prices are versions in the plan's partition, `PK = PLAN#<id>`, `SK =
//! PRICE#<version:010>`, each with the period it takes effect from. A version is written
//! once, by a conditional put on its key, so two concurrent changes computing the same next
//! version cannot both win; nothing ever edits a version (an invoice names the version it
//! used, and that version stays as it was). The price in force for a period is the highest
//! version whose `effective_from` is at or before it: one Query of the plan's partition.
//!
//! Bundles sit in one partition, `PK = CATALOG`, `SK = BUNDLE#<code>`.

use dotmac_billing::{Bundle, Period, Price};
use dotmac_domain::{Plan, PlanId};
use serde::{Deserialize, Serialize};

use crate::dynamo::{Expr, ITEM_IS_NEW, Query, decode};
use crate::keys::{GSI1, ItemKey, Stored, plan_pk, s};
use crate::{Store, StoreError};

/// One version of a plan's price.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceVersion {
    pub plan_id: PlanId,
    pub version: u32,
    pub effective_from: Period,
    pub price: Price,
}

/// What writing a new price version did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PriceWrite {
    Written,
    /// Another writer took this version number first; theirs is returned.
    Taken(Box<PriceVersion>),
}

/// The GSI1 partition listing every plan, by id.
const PLANS_GSI1PK: &str = "PLANS";
const PRICE_SK_PREFIX: &str = "PRICE#";
const CATALOG_PK: &str = "CATALOG";
const BUNDLE_SK_PREFIX: &str = "BUNDLE#";

type PlanItem = Stored<Plan>;
type PriceItem = Stored<PriceVersion>;
type BundleItem = Stored<Bundle>;

fn price_sk(version: u32) -> String {
    format!("{PRICE_SK_PREFIX}{version:010}")
}

fn plan_item(plan: &Plan) -> Result<crate::dynamo::Item, StoreError> {
    Stored::new(ItemKey::plan(plan.id.as_str()), "plan", plan)
        .indexed(PLANS_GSI1PK, plan.id.as_str())
        .to_item()
}

impl ItemKey {
    pub(crate) fn price(plan: &PlanId, version: u32) -> Self {
        Self::from_parts(plan_pk(plan.as_str()), price_sk(version))
    }

    pub(crate) fn bundle(code: &str) -> Self {
        Self::from_parts(CATALOG_PK, format!("{BUNDLE_SK_PREFIX}{code}"))
    }
}

impl Store {
    /// Writes a new plan; `AlreadyExists` if one has its id.
    pub async fn create_plan(&self, plan: &Plan) -> Result<(), StoreError> {
        self.put(plan_item(plan)?, Some(Expr::new(ITEM_IS_NEW))).await?.map_err(|_| StoreError::AlreadyExists)
    }

    /// Every plan, by id.
    pub async fn list_plans(&self) -> Result<Vec<Plan>, StoreError> {
        let all = Expr::new("GSI1PK = :pk").value(":pk", s(PLANS_GSI1PK));
        let items: Vec<PlanItem> = self.query_all(Query::index(GSI1, all)).await?;
        Ok(items.into_iter().map(|item| item.record).collect())
    }

    /// Writes `price` as its version if that version number is free.
    pub async fn put_price_version(&self, price: &PriceVersion) -> Result<PriceWrite, StoreError> {
        let key = ItemKey::price(&price.plan_id, price.version);
        let item = Stored::new(key, "price_version", price).to_item()?;
        match self.put_new_or_read(item).await? {
            None => Ok(PriceWrite::Written),
            Some(existing) => Ok(PriceWrite::Taken(Box::new(decode::<PriceItem>(existing)?.record))),
        }
    }

    /// Every version of a plan's price, oldest first.
    pub async fn price_versions(&self, plan: &PlanId) -> Result<Vec<PriceVersion>, StoreError> {
        let versions = Expr::new("PK = :pk AND begins_with(SK, :prices)")
            .value(":pk", s(plan_pk(plan.as_str())))
            .value(":prices", s(PRICE_SK_PREFIX));
        let items: Vec<PriceItem> = self.query_all(Query::table(versions).consistent()).await?;
        Ok(items.into_iter().map(|item| item.record).collect())
    }

    /// The price a plan charges in `period`: the highest version in effect by then (one
    /// Query; a plan has a handful of versions).
    pub async fn price_in_force(
        &self,
        plan: &PlanId,
        period: Period,
    ) -> Result<Option<PriceVersion>, StoreError> {
        Ok(in_force(self.price_versions(plan).await?, period))
    }

    /// Adds a bundle unless one has its code (the seed is idempotent: it never re-prices a
    /// bundle an operator changed). `true` when it was added.
    pub async fn put_bundle_if_absent(&self, bundle: &Bundle) -> Result<bool, StoreError> {
        let item = Stored::new(ItemKey::bundle(&bundle.code), "bundle", bundle).to_item()?;
        Ok(self.put_new_or_read(item).await?.is_none())
    }

    /// Seeds the catalogue's prices and bundles: each seeded plan gets its seed price as
    /// version 1, in effect from the first period there is (so every period has a price), and
    /// each seed bundle is added. Written only where absent, so a restart never undoes an
    /// operator's change.
    pub async fn seed_catalogue(&self) -> Result<(), StoreError> {
        let from = Period::new(2000, time::Month::January).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        for (plan, price) in dotmac_billing::pricing::seed_prices() {
            let plan_id = PlanId::parse(plan).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let first = PriceVersion { plan_id, version: 1, effective_from: from, price };
            self.put_price_version(&first).await?;
        }
        for bundle in dotmac_billing::seed_bundles() {
            self.put_bundle_if_absent(&bundle).await?;
        }
        Ok(())
    }

    pub async fn get_bundle(&self, code: &str) -> Result<Option<Bundle>, StoreError> {
        Ok(self.get_item::<BundleItem>(ItemKey::bundle(code)).await?.map(|item| item.record))
    }

    /// The bundle catalogue, by code.
    pub async fn list_bundles(&self) -> Result<Vec<Bundle>, StoreError> {
        let all = Expr::new("PK = :pk AND begins_with(SK, :bundles)")
            .value(":pk", s(CATALOG_PK))
            .value(":bundles", s(BUNDLE_SK_PREFIX));
        let items: Vec<BundleItem> = self.query_all(Query::table(all)).await?;
        Ok(items.into_iter().map(|item| item.record).collect())
    }
}

/// The version in force in `period` among `versions`: the highest whose `effective_from` is
/// at or before it.
pub fn in_force(versions: Vec<PriceVersion>, period: Period) -> Option<PriceVersion> {
    versions.into_iter().filter(|v| v.effective_from <= period).max_by_key(|v| v.version)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(version: u32, from: &str) -> PriceVersion {
        let (_, price) = dotmac_billing::pricing::seed_prices().into_iter().next().expect("seed");
        PriceVersion {
            plan_id: PlanId::parse("usage").expect("id"),
            version,
            effective_from: Period::parse(from).expect("period"),
            price,
        }
    }

    #[test]
    fn the_price_in_force_is_the_newest_version_already_in_effect() {
        let versions =
            vec![version(1, "2020-01"), version(2, "2027-03"), version(3, "2027-05"), version(4, "2027-05")];
        let at = |p: &str| in_force(versions.clone(), Period::parse(p).expect("period")).map(|v| v.version);
        assert_eq!(at("2019-12"), None);
        assert_eq!(at("2027-02"), Some(1));
        assert_eq!(at("2027-03"), Some(2));
        assert_eq!(at("2027-04"), Some(2));
        assert_eq!(at("2027-05"), Some(4), "a later version for the same period supersedes the earlier");
    }

    #[test]
    fn a_price_version_reads_back_as_written() {
        let v = version(7, "2027-03");
        let item = Stored::new(ItemKey::price(&v.plan_id, 7), "price_version", &v).to_item().expect("item");
        assert_eq!(item["SK"], s("PRICE#0000000007"));
        assert_eq!(decode::<PriceItem>(item).expect("decoded").record, v);
    }
}
