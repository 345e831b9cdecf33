use dotmac_domain::{Plan, PlanId};

use crate::keys::{ItemKey, Stored};
use crate::{Store, StoreError};

type PlanItem = Stored<Plan>;

impl Store {
    /// Writes (or overwrites) a plan; the bootstrap seeds the catalogue with it.
    pub async fn put_plan(&self, plan: &Plan) -> Result<(), StoreError> {
        let item = Stored::new(ItemKey::plan(plan.id.as_str()), "plan", plan)
            .indexed("PLANS", plan.id.as_str())
            .to_item()?;
        Ok(self.put(item, None).await??)
    }

    pub async fn get_plan(&self, id: &PlanId) -> Result<Option<Plan>, StoreError> {
        Ok(self.get_item::<PlanItem>(ItemKey::plan(id.as_str())).await?.map(|item| item.record))
    }
}
