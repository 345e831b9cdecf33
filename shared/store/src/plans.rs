use dotmac_domain::{Plan, PlanId};
use serde::{Deserialize, Serialize};

use crate::dynamo::Item;
use crate::keys::{ItemKey, PLAN_SK, plan_pk};
use crate::{Store, StoreError};

#[derive(Serialize, Deserialize)]
struct PlanItem {
    #[serde(rename = "PK")]
    pk: String,
    #[serde(rename = "SK")]
    sk: String,
    entity: String,
    #[serde(flatten)]
    plan: Plan,
}

impl Store {
    /// Writes (or overwrites) a plan; the bootstrap seeds the catalogue with it.
    pub async fn put_plan(&self, plan: &Plan) -> Result<(), StoreError> {
        let item: Item = serde_dynamo::to_item(PlanItem {
            pk: plan_pk(plan.id.as_str()),
            sk: PLAN_SK.to_owned(),
            entity: "plan".to_owned(),
            plan: plan.clone(),
        })?;
        Ok(self.put(item, None).await??)
    }

    pub async fn get_plan(&self, id: &PlanId) -> Result<Option<Plan>, StoreError> {
        Ok(self.get_item::<PlanItem>(ItemKey::plan(id.as_str())).await?.map(|item| item.plan))
    }
}
