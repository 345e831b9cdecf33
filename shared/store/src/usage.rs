//! Usage reports: a tenant's container says how many customers it served at a moment. One
//! item per report id in the tenant's partition, so the dedupe mark and the report are the
//! same item, written by one conditional put: a report is counted once however often it is
//! sent, and never zero times after a retry or a crash. GSI1 orders a tenant's reports by
//! when they were observed, for a period's reading and the report carried into it.

use dotmac_domain::TenantId;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::dynamo::{Expr, Query, decode};
use crate::keys::{GSI1, ItemKey, Stored, s, tenant_pk};
use crate::{Store, StoreError};

/// One report, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageReport {
    pub report_id: String,
    pub tenant_id: TenantId,
    pub customer_count: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub observed_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
}

impl UsageReport {
    /// The same report again (a retry), as opposed to another report under its id.
    pub fn same_as(&self, other: &UsageReport) -> bool {
        self.customer_count == other.customer_count && self.observed_at == other.observed_at
    }
}

/// What recording a report did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    Accepted,
    /// The very same report was recorded before; nothing changed.
    Duplicate,
    /// Another report was recorded under this id; it stays as it was.
    Conflict(Box<UsageReport>),
}

/// The reports observed in `[from, to)`, and the last one before `from` (still in force at
/// `from`).
#[derive(Debug, Clone, Default)]
pub struct UsageWindow {
    pub carried_in: Option<UsageReport>,
    pub reports: Vec<UsageReport>,
}

type UsageItem = Stored<UsageReport>;

fn usage_index_pk(tenant: TenantId) -> String {
    format!("{}#USAGE", tenant_pk(tenant))
}

/// Observation time as a fixed-width, sortable string (ms since the epoch; reports before
/// 1970 are refused at the edge).
fn observed_key(at: OffsetDateTime) -> String {
    let ms = at.unix_timestamp_nanos() / 1_000_000;
    format!("{:015}", ms.max(0))
}

impl Store {
    /// Records `report` unless its id was recorded before (one conditional put; the stored
    /// report comes back from the same request when it was).
    pub async fn record_usage(&self, report: &UsageReport) -> Result<Recorded, StoreError> {
        let key = ItemKey::usage(report.tenant_id, &report.report_id);
        let sort = format!("{}#{}", observed_key(report.observed_at), report.report_id);
        let item = Stored::new(key, "usage_report", report)
            .indexed(usage_index_pk(report.tenant_id), sort)
            .to_item()?;
        let Some(existing) = self.put_new_or_read(item).await? else {
            return Ok(Recorded::Accepted);
        };
        let existing = decode::<UsageItem>(existing)?.record;
        Ok(if existing.same_as(report) {
            Recorded::Duplicate
        } else {
            Recorded::Conflict(Box::new(existing))
        })
    }

    /// The tenant's newest report by observation time (what its container last said it
    /// serves), if it ever reported.
    pub async fn latest_usage(&self, tenant: TenantId) -> Result<Option<UsageReport>, StoreError> {
        let all = Expr::new("GSI1PK = :pk").value(":pk", s(usage_index_pk(tenant)));
        let (newest, _) = self.query_page::<UsageItem>(Query::index(GSI1, all).descending().limit(1)).await?;
        Ok(newest.into_iter().next().map(|item| item.record))
    }

    /// A tenant's reports observed in `[from, to)`, in observation order, and the one carried in.
    pub async fn usage_between(
        &self,
        tenant: TenantId,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> Result<UsageWindow, StoreError> {
        let pk = usage_index_pk(tenant);
        // Report ids are at most 64 of [A-Za-z0-9._:-], all below `~`.
        let last_ms = (to.unix_timestamp_nanos() / 1_000_000 - 1).max(0);
        let within = Expr::new("GSI1PK = :pk AND GSI1SK BETWEEN :from AND :to")
            .value(":pk", s(&pk))
            .value(":from", s(observed_key(from)))
            .value(":to", s(format!("{last_ms:015}#~")));
        let reports: Vec<UsageItem> = self.query_all(Query::index(GSI1, within)).await?;
        let before = Expr::new("GSI1PK = :pk AND GSI1SK < :from")
            .value(":pk", s(&pk))
            .value(":from", s(observed_key(from)));
        let (carried, _) =
            self.query_page::<UsageItem>(Query::index(GSI1, before).descending().limit(1)).await?;
        Ok(UsageWindow {
            carried_in: carried.into_iter().next().map(|item| item.record),
            reports: reports.into_iter().map(|item| item.record).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_report_reads_back_as_the_same_report() {
        let observed = OffsetDateTime::parse(
            "2026-12-01T13:30:32.000454785Z",
            &time::format_description::well_known::Rfc3339,
        )
        .expect("time");
        let report = UsageReport {
            report_id: "b-1".into(),
            tenant_id: TenantId::generate(),
            customer_count: 10,
            observed_at: observed,
            received_at: OffsetDateTime::now_utc(),
        };
        let item = Stored::new(ItemKey::usage(report.tenant_id, "b-1"), "usage_report", &report)
            .to_item()
            .expect("item");
        let back = decode::<UsageItem>(item).expect("decoded").record;
        assert!(back.same_as(&report), "{back:?} vs {report:?}");
    }
}
