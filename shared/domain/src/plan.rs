use serde::{Deserialize, Serialize};

use crate::values::InvalidValue;

/// A plan's identifier (`usage`, `scaled`, `enterprise`, or one an operator adds later).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PlanId(String);

impl PlanId {
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        let id = raw.trim();
        let well_formed = (1..=40).contains(&id.len())
            && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !well_formed {
            return Err(InvalidValue::new("plan", "must be a plan id such as usage, scaled or enterprise"));
        }
        Ok(Self(id.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for PlanId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The Fargate size of a tenant's container (vCPU units and MiB, as ECS takes them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskSize {
    pub cpu: u32,
    pub memory_mib: u32,
}

impl TaskSize {
    /// Fargate accepts only certain cpu/memory pairs; a plan must use one of them.
    pub fn is_valid_fargate_size(&self) -> bool {
        let gib = |n: u32| n * 1024;
        match self.cpu {
            256 => [512, 1024, 2048].contains(&self.memory_mib),
            512 => (gib(1)..=gib(4)).step_by(1024).any(|m| m == self.memory_mib),
            1024 => (gib(2)..=gib(8)).step_by(1024).any(|m| m == self.memory_mib),
            2048 => (gib(4)..=gib(16)).step_by(1024).any(|m| m == self.memory_mib),
            4096 => (gib(8)..=gib(30)).step_by(1024).any(|m| m == self.memory_mib),
            _ => false,
        }
    }
}

/// A subscription tier: what a tenant's container gets. Prices join it with billing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub id: PlanId,
    pub name: String,
    pub description: String,
    pub task_size: TaskSize,
}

/// The three tiers of the seed, written to the table by the bootstrap.
pub fn seed_plans() -> Vec<Plan> {
    let plan = |id: &str, name: &str, description: &str, cpu, memory_mib| Plan {
        id: PlanId(id.to_owned()),
        name: name.to_owned(),
        description: description.to_owned(),
        task_size: TaskSize { cpu, memory_mib },
    };
    vec![
        plan("usage", "Usage", "Pay per customer served; for ISPs starting out", 256, 512),
        plan("scaled", "Scaled", "Volume pricing for growing ISPs", 512, 1024),
        plan("enterprise", "Enterprise", "Dedicated capacity and support", 1024, 2048),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_plans_have_unique_ids_and_valid_fargate_sizes() {
        let plans = seed_plans();
        let ids: std::collections::HashSet<_> = plans.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids.len(), 3);
        assert!(ids.contains("usage") && ids.contains("scaled") && ids.contains("enterprise"));
        assert!(plans.iter().all(|p| p.task_size.is_valid_fargate_size()));
    }

    #[test]
    fn fargate_sizes() {
        assert!(TaskSize { cpu: 256, memory_mib: 512 }.is_valid_fargate_size());
        assert!(!TaskSize { cpu: 256, memory_mib: 4096 }.is_valid_fargate_size());
        assert!(!TaskSize { cpu: 300, memory_mib: 512 }.is_valid_fargate_size());
    }

    #[test]
    fn plan_ids() {
        assert!(PlanId::parse("usage").is_ok());
        assert!(PlanId::parse("").is_err());
        assert!(PlanId::parse("Gold Plan").is_err());
    }
}
