//! The fleet's pure rules: how big a tenant's container should be for the customers it
//! serves, the ids of backups, what a reconcile finds wrong with a tenant's tasks and what it
//! does about it, and which tenants a rollout moves. No I/O here.

use serde::{Deserialize, Serialize};

use crate::plan::TaskSize;
use crate::tenant::TenantStatus;
use crate::values::InvalidValue;

/// One of a tenant's tasks as ECS describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedTask {
    pub task_arn: String,
    pub last_status: String,
    /// The image of its ISP framework container, when ECS says.
    pub image: Option<String>,
    /// Its task-level CPU and memory, when ECS says.
    pub size: Option<TaskSize>,
}

impl ObservedTask {
    /// Whether the task is on its way out (or out): such a task never runs again.
    pub fn is_ending(&self) -> bool {
        matches!(
            self.last_status.as_str(),
            "DEACTIVATING" | "STOPPING" | "DEPROVISIONING" | "STOPPED" | "DELETED"
        )
    }
}

/// What a tenant should run: nothing, or one task of this image and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    Nothing,
    Runs { image: String, size: TaskSize },
}

/// What the tenant's record says it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded<'a> {
    pub task_arn: &'a str,
    pub last_status: &'a str,
    pub size: TaskSize,
}

/// One thing a reconcile found wrong with a tenant's tasks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Drift {
    /// An active tenant runs no task (its recorded task, if any, stopped or is gone).
    Missing {
        recorded_task_arn: Option<String>,
    },
    /// The record points at a task that is not the one running (or not as it runs now).
    StaleRecord {
        recorded_task_arn: Option<String>,
        running_task_arn: String,
    },
    /// More tasks than the one the tenant should run (and no resize under way).
    Extra {
        task_arns: Vec<String>,
    },
    /// A suspended or deleted tenant's task still runs.
    Unowned {
        task_arns: Vec<String>,
    },
    WrongImage {
        task_arn: String,
        running: String,
        desired: String,
    },
    WrongSize {
        task_arn: String,
        running: TaskSize,
        desired: TaskSize,
    },
}

/// What a reconcile does about a tenant: every field empty or false when it is in sync.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Verdict {
    pub drift: Vec<Drift>,
    /// Run the tenant's task again (the launch path, adopting one that runs by then).
    pub relaunch: bool,
    /// Point the record at this running task.
    pub adopt: Option<String>,
    /// Replace the running task (the scale saga, keyed by image and size).
    pub replace: bool,
    /// Tasks to stop.
    pub stop: Vec<String>,
}

impl Verdict {
    pub fn in_sync(&self) -> bool {
        self.drift.is_empty()
    }
}

/// Compares what a tenant should run with what ECS runs for it. `running` is every task ECS
/// lists for the tenant as desired RUNNING; tasks already on their way out do not count.
pub fn classify(expected: &Expected, recorded: Option<Recorded<'_>>, running: &[ObservedTask]) -> Verdict {
    let live: Vec<&ObservedTask> = running.iter().filter(|t| !t.is_ending()).collect();
    let mut verdict = Verdict::default();
    match expected {
        Expected::Nothing => {
            if !live.is_empty() {
                let task_arns: Vec<String> = live.iter().map(|t| t.task_arn.clone()).collect();
                verdict.stop = task_arns.clone();
                verdict.drift.push(Drift::Unowned { task_arns });
            }
        }
        Expected::Runs { image, size } => {
            let recorded_arn = recorded.map(|r| r.task_arn.to_owned());
            if live.is_empty() {
                verdict.relaunch = true;
                verdict.drift.push(Drift::Missing { recorded_task_arn: recorded_arn });
                return verdict;
            }
            // The recorded task if it still runs, else the one furthest along (RUNNING first).
            let keep = live
                .iter()
                .find(|t| recorded.is_some_and(|r| r.task_arn == t.task_arn))
                .or_else(|| live.iter().find(|t| t.last_status == "RUNNING"))
                .or_else(|| live.first())
                .copied();
            let Some(keep) = keep else { return verdict };
            let record_current =
                recorded.is_some_and(|r| r.task_arn == keep.task_arn && r.last_status == keep.last_status);
            if !record_current && keep.last_status == "RUNNING" {
                verdict.adopt = Some(keep.task_arn.clone());
                verdict.drift.push(Drift::StaleRecord {
                    recorded_task_arn: recorded_arn,
                    running_task_arn: keep.task_arn.clone(),
                });
            }
            let extra: Vec<String> =
                live.iter().filter(|t| t.task_arn != keep.task_arn).map(|t| t.task_arn.clone()).collect();
            if !extra.is_empty() {
                verdict.stop = extra.clone();
                verdict.drift.push(Drift::Extra { task_arns: extra });
            }
            if let Some(running) = &keep.image
                && running != image
            {
                verdict.replace = true;
                verdict.drift.push(Drift::WrongImage {
                    task_arn: keep.task_arn.clone(),
                    running: running.clone(),
                    desired: image.clone(),
                });
            }
            // ECS's own figure, else the record's when the record is about this task.
            let running_size =
                keep.size.or_else(|| recorded.filter(|r| r.task_arn == keep.task_arn).map(|r| r.size));
            if let Some(running) = running_size
                && running != *size
            {
                verdict.replace = true;
                verdict.drift.push(Drift::WrongSize {
                    task_arn: keep.task_arn.clone(),
                    running,
                    desired: *size,
                });
            }
        }
    }
    verdict
}

/// What a reconcile expects of a tenant in `status`: `None` while another job owns its
/// compute (provisioning, deprovisioning) or nothing ever ran (pending, failed).
pub fn expects_compute(status: TenantStatus) -> Option<bool> {
    match status {
        TenantStatus::Active => Some(true),
        TenantStatus::Suspended | TenantStatus::Deleted => Some(false),
        TenantStatus::Pending
        | TenantStatus::Provisioning
        | TenantStatus::Deprovisioning
        | TenantStatus::Failed => None,
    }
}

/// What a rollout does with a tenant it reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RolloutChoice {
    /// Move it to the rollout's image.
    Move,
    /// Count it as skipped, with why: it runs nothing the rollout could replace.
    Skip(&'static str),
}

pub fn rollout_choice(status: TenantStatus) -> RolloutChoice {
    match status {
        TenantStatus::Active => RolloutChoice::Move,
        TenantStatus::Suspended => RolloutChoice::Skip("suspended"),
        TenantStatus::Deleted => RolloutChoice::Skip("deleted"),
        TenantStatus::Deprovisioning => RolloutChoice::Skip("being deleted"),
        TenantStatus::Failed => RolloutChoice::Skip("failed"),
        TenantStatus::Pending | TenantStatus::Provisioning => RolloutChoice::Skip("not yet provisioned"),
    }
}

/// Splits a page of tenants into the batch a rollout moves and those it skips.
pub fn select_batch<T: Copy>(page: &[(T, TenantStatus)]) -> (Vec<T>, Vec<(T, &'static str)>) {
    let mut batch = Vec::new();
    let mut skipped = Vec::new();
    for (id, status) in page {
        match rollout_choice(*status) {
            RolloutChoice::Move => batch.push(*id),
            RolloutChoice::Skip(reason) => skipped.push((*id, reason)),
        }
    }
    (batch, skipped)
}

/// Whether a rollout with `failed` failures has passed its threshold (it tolerates up to
/// `threshold`).
pub fn rollout_failed(failed: u64, threshold: u64) -> bool {
    failed > threshold
}

/// One size tier: tenants reporting at most `up_to_customers` get at least `size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeTier {
    /// The tier's upper bound (inclusive); `None` for the last, open-ended tier.
    pub up_to_customers: Option<u64>,
    pub size: TaskSize,
}

/// The tiers by reported customer count, smallest first. Each is a Fargate pair; the seed's
/// example tenants land on the first three: 500 customers → 0.25 vCPU / 512 MiB, 1,200 →
/// 0.5 vCPU / 1 GiB, 3,000 → 1 vCPU / 2 GiB.
pub const SIZE_TIERS: [SizeTier; 5] = [
    SizeTier { up_to_customers: Some(1_000), size: TaskSize { cpu: 256, memory_mib: 512 } },
    SizeTier { up_to_customers: Some(2_500), size: TaskSize { cpu: 512, memory_mib: 1024 } },
    SizeTier { up_to_customers: Some(5_000), size: TaskSize { cpu: 1024, memory_mib: 2048 } },
    SizeTier { up_to_customers: Some(10_000), size: TaskSize { cpu: 2048, memory_mib: 4096 } },
    SizeTier { up_to_customers: None, size: TaskSize { cpu: 4096, memory_mib: 8192 } },
];

/// The tier a customer count falls in.
pub fn tier_size(customers: u64) -> TaskSize {
    SIZE_TIERS
        .iter()
        .find(|tier| tier.up_to_customers.is_none_or(|max| customers <= max))
        .map(|tier| tier.size)
        .unwrap_or(SIZE_TIERS[SIZE_TIERS.len() - 1].size)
}

/// The size a tenant's container should run at: a platform admin's override when there is
/// one, else the larger of the plan's own size (a floor: an enterprise tenant never shrinks
/// below what its plan promises) and the tier of its latest reported customer count.
pub fn desired_size(plan_size: TaskSize, customers: Option<u64>, manual: Option<TaskSize>) -> TaskSize {
    if let Some(manual) = manual {
        return manual;
    }
    let tier = tier_size(customers.unwrap_or(0));
    if (tier.cpu, tier.memory_mib) >= (plan_size.cpu, plan_size.memory_mib) { tier } else { plan_size }
}

/// A backup's id: `a-z`, `0-9` and `-`, 1–64 characters. On-demand backups get a UUID; the
/// daily schedule's are `daily-YYYYMMDD`, so a repeated schedule run names the same backup.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BackupId(String);

impl BackupId {
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7().to_string())
    }

    /// The daily schedule's backup of the day `date` (UTC).
    pub fn daily(date: time::Date) -> Self {
        Self(format!("daily-{:04}{:02}{:02}", date.year(), u8::from(date.month()), date.day()))
    }

    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        Self::parse_field(raw, "backup_id")
    }

    pub fn parse_field(raw: &str, field: &'static str) -> Result<Self, InvalidValue> {
        let well_formed = (1..=64).contains(&raw.len())
            && raw.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !raw.starts_with('-');
        if !well_formed {
            return Err(InvalidValue::new(field, "must be a backup id (a-z, 0-9 and -, at most 64)"));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for BackupId {
    type Error = InvalidValue;

    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(&raw)
    }
}

impl From<BackupId> for String {
    fn from(id: BackupId) -> Self {
        id.0
    }
}

impl std::fmt::Display for BackupId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SMALL: TaskSize = TaskSize { cpu: 256, memory_mib: 512 };

    #[test]
    fn the_seed_tenants_land_on_their_tiers() {
        assert_eq!(desired_size(SMALL, Some(500), None), TaskSize { cpu: 256, memory_mib: 512 });
        assert_eq!(desired_size(SMALL, Some(1_200), None), TaskSize { cpu: 512, memory_mib: 1024 });
        assert_eq!(desired_size(SMALL, Some(3_000), None), TaskSize { cpu: 1024, memory_mib: 2048 });
        assert_eq!(desired_size(SMALL, None, None), SMALL);
    }

    #[test]
    fn the_plan_is_a_floor_and_an_override_wins() {
        let enterprise = TaskSize { cpu: 1024, memory_mib: 2048 };
        assert_eq!(desired_size(enterprise, Some(500), None), enterprise);
        let manual = TaskSize { cpu: 2048, memory_mib: 4096 };
        assert_eq!(desired_size(SMALL, Some(500), Some(manual)), manual);
        assert_eq!(desired_size(enterprise, Some(50_000), Some(SMALL)), SMALL);
    }

    #[test]
    fn every_tier_is_a_fargate_size_and_they_grow() {
        assert!(SIZE_TIERS.iter().all(|t| t.size.is_valid_fargate_size()));
        assert!(SIZE_TIERS.windows(2).all(|w| w[0].size.cpu < w[1].size.cpu
            && w[0].up_to_customers.is_some_and(|a| w[1].up_to_customers.is_none_or(|b| a < b))));
    }

    #[test]
    fn backup_ids() {
        assert!(BackupId::parse(&BackupId::generate().to_string()).is_ok());
        let day = time::macros::date!(2026 - 12 - 01);
        assert_eq!(BackupId::daily(day).as_str(), "daily-20261201");
        for bad in ["", "-x", "UPPER", "a/b", &"x".repeat(65)] {
            assert!(BackupId::parse(bad).is_err(), "{bad}");
        }
    }

    fn task(arn: &str, status: &str, image: &str) -> ObservedTask {
        ObservedTask {
            task_arn: arn.into(),
            last_status: status.into(),
            image: Some(image.into()),
            size: None,
        }
    }

    fn runs(image: &str) -> Expected {
        Expected::Runs { image: image.into(), size: SMALL }
    }

    fn recorded(arn: &str) -> Recorded<'_> {
        Recorded { task_arn: arn, last_status: "RUNNING", size: SMALL }
    }

    #[test]
    fn an_active_tenant_running_its_recorded_task_is_in_sync() {
        let verdict = classify(&runs("img:1"), Some(recorded("a")), &[task("a", "RUNNING", "img:1")]);
        assert!(verdict.in_sync(), "{verdict:?}");
        assert_eq!(verdict, Verdict::default());
    }

    #[test]
    fn an_active_tenant_with_nothing_running_is_relaunched() {
        for running in [vec![], vec![task("a", "STOPPED", "img:1")], vec![task("a", "DEACTIVATING", "img:1")]]
        {
            let verdict = classify(&runs("img:1"), Some(recorded("a")), &running);
            assert!(verdict.relaunch);
            assert_eq!(verdict.drift, vec![Drift::Missing { recorded_task_arn: Some("a".into()) }]);
            assert!(verdict.stop.is_empty() && !verdict.replace && verdict.adopt.is_none());
        }
        let verdict = classify(&runs("img:1"), None, &[]);
        assert_eq!(verdict.drift, vec![Drift::Missing { recorded_task_arn: None }]);
    }

    #[test]
    fn a_task_the_record_does_not_name_is_adopted_and_extras_stopped() {
        let verdict = classify(
            &runs("img:1"),
            Some(recorded("gone")),
            &[task("b", "RUNNING", "img:1"), task("c", "RUNNING", "img:1")],
        );
        assert_eq!(verdict.adopt.as_deref(), Some("b"));
        assert_eq!(verdict.stop, vec!["c".to_owned()]);
        assert!(!verdict.relaunch && !verdict.replace);
        // A record that names the task but a stale status is brought up to date too.
        let stale = Recorded { task_arn: "a", last_status: "PENDING", size: SMALL };
        let verdict = classify(&runs("img:1"), Some(stale), &[task("a", "RUNNING", "img:1")]);
        assert_eq!(verdict.adopt.as_deref(), Some("a"));
    }

    #[test]
    fn a_wrong_image_or_size_is_replaced() {
        let verdict = classify(&runs("img:2"), Some(recorded("a")), &[task("a", "RUNNING", "img:1")]);
        assert!(verdict.replace && !verdict.relaunch);
        assert!(
            matches!(&verdict.drift[..], [Drift::WrongImage { running, desired, .. }] if running == "img:1" && desired == "img:2")
        );
        let big = TaskSize { cpu: 1024, memory_mib: 2048 };
        let verdict = classify(
            &Expected::Runs { image: "img:1".into(), size: big },
            Some(recorded("a")),
            &[task("a", "RUNNING", "img:1")],
        );
        assert!(verdict.replace);
        assert!(
            matches!(&verdict.drift[..], [Drift::WrongSize { running, desired, .. }] if *running == SMALL && *desired == big)
        );
        // ECS's own size wins over the record's.
        let mut sized = task("a", "RUNNING", "img:1");
        sized.size = Some(big);
        let verdict =
            classify(&Expected::Runs { image: "img:1".into(), size: big }, Some(recorded("a")), &[sized]);
        assert!(verdict.in_sync(), "{verdict:?}");
    }

    #[test]
    fn a_suspended_or_deleted_tenants_tasks_are_stopped() {
        let verdict = classify(
            &Expected::Nothing,
            Some(recorded("a")),
            &[task("a", "RUNNING", "img:1"), task("b", "STOPPED", "img:1")],
        );
        assert_eq!(verdict.stop, vec!["a".to_owned()]);
        assert_eq!(verdict.drift, vec![Drift::Unowned { task_arns: vec!["a".into()] }]);
        assert!(classify(&Expected::Nothing, None, &[]).in_sync());
    }

    #[test]
    fn who_expects_compute() {
        assert_eq!(expects_compute(TenantStatus::Active), Some(true));
        assert_eq!(expects_compute(TenantStatus::Suspended), Some(false));
        assert_eq!(expects_compute(TenantStatus::Deleted), Some(false));
        assert_eq!(expects_compute(TenantStatus::Provisioning), None);
        assert_eq!(expects_compute(TenantStatus::Deprovisioning), None);
    }

    #[test]
    fn a_batch_moves_the_active_and_skips_the_rest() {
        let page = [
            (1, TenantStatus::Active),
            (2, TenantStatus::Suspended),
            (3, TenantStatus::Deleted),
            (4, TenantStatus::Active),
            (5, TenantStatus::Provisioning),
        ];
        let (batch, skipped) = select_batch(&page);
        assert_eq!(batch, vec![1, 4]);
        assert_eq!(skipped, vec![(2, "suspended"), (3, "deleted"), (5, "not yet provisioned")]);
        assert!(!rollout_failed(1, 1) && rollout_failed(2, 1) && rollout_failed(1, 0));
    }

    proptest! {
        #[test]
        fn every_tenant_of_a_page_is_moved_or_skipped_once(statuses in proptest::collection::vec(0usize..7, 0..40)) {
            let page: Vec<(usize, TenantStatus)> =
                statuses.iter().enumerate().map(|(i, s)| (i, TenantStatus::ALL[*s])).collect();
            let (batch, skipped) = select_batch(&page);
            let mut seen: Vec<usize> = batch.iter().copied().chain(skipped.iter().map(|(i, _)| *i)).collect();
            seen.sort_unstable();
            prop_assert_eq!(seen, (0..page.len()).collect::<Vec<_>>());
            prop_assert!(batch.iter().all(|i| page[*i].1 == TenantStatus::Active));
        }

        #[test]
        fn a_verdict_never_stops_the_task_it_keeps(n in 0usize..5, recorded_index in 0usize..6, active in any::<bool>()) {
            let running: Vec<ObservedTask> = (0..n).map(|i| task(&format!("t{i}"), "RUNNING", "img:1")).collect();
            let name = format!("t{recorded_index}");
            let expected = if active { runs("img:1") } else { Expected::Nothing };
            let verdict = classify(&expected, Some(recorded(&name)), &running);
            if active {
                prop_assert_eq!(verdict.relaunch, n == 0);
                prop_assert_eq!(verdict.stop.len(), n.saturating_sub(1));
                if let Some(kept) = &verdict.adopt { prop_assert!(!verdict.stop.contains(kept)); }
                if recorded_index < n { prop_assert!(!verdict.stop.contains(&name)); }
            } else {
                prop_assert_eq!(verdict.stop.len(), n);
            }
        }
    }

    proptest! {
        #[test]
        fn more_customers_never_mean_a_smaller_container(a in 0u64..50_000, b in 0u64..50_000) {
            let (low, high) = (a.min(b), a.max(b));
            let (small, big) = (desired_size(SMALL, Some(low), None), desired_size(SMALL, Some(high), None));
            prop_assert!(small.cpu <= big.cpu && small.memory_mib <= big.memory_mib);
            prop_assert!(big.is_valid_fargate_size());
        }
    }
}
