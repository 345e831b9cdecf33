//! The usage function: `POST /v1/usage` (a tenant's container reports its customer count,
//! idempotent by report id, one or up to 100 at a time) and `GET /v1/tenants/{id}/usage` (a
//! period's reports and its billable figure so far).

pub mod metering;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use dotmac_billing::{Aggregation, Period};
use dotmac_domain::{Resource, TenantId};
use dotmac_http::error::ErrorEnvelope;
use dotmac_http::{
    Access, ApiError, ApiRoutes, Authenticated, Bearer, ErrorCode, Json, Path, Routes, routes,
    tenant_in_reach,
};
use dotmac_store::{Also, Store, UsageReport};
use dotmac_tokens::JwtKeys;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::json;
use std::sync::Arc;
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

pub use metering::{MeteringError, Outcome, PeriodFigure, ReportingWindow, SentReport, report_usage};

impl From<MeteringError> for ApiError {
    fn from(error: MeteringError) -> Self {
        match error {
            MeteringError::Denied(denied) => denied.into(),
            refused @ MeteringError::NotAReporter => ApiError::new(ErrorCode::Forbidden, refused.to_string()),
            MeteringError::NoTenant(reason) => ApiError::invalid_field("tenant_id", reason),
            size @ MeteringError::BatchSize => ApiError::invalid_field("reports", size.to_string()),
            MeteringError::Store(error) => error.into(),
        }
    }
}

#[derive(Clone)]
pub struct UsageState {
    pub store: Store,
    pub keys: Arc<JwtKeys>,
    pub window: ReportingWindow,
}

dotmac_http::bearer_state!(UsageState);

pub fn routes() -> Routes<UsageState> {
    Routes::new()
        .route(Access::Authenticated, routes!(report))
        .route(Access::Authenticated, routes!(period_usage))
}

pub fn router(state: UsageState) -> ApiRoutes {
    routes().with_state(state)
}

/// One report: how many customers the tenant served at `observed_at`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportBody {
    /// The sender's own id for this report: sending it again is safe.
    #[schema(min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9._:-]{1,64}$")]
    report_id: String,
    #[serde(deserialize_with = "whole_number")]
    #[schema(minimum = 0, maximum = 100_000_000)]
    customer_count: u64,
    /// RFC 3339 with its offset; at most a few minutes ahead of the platform's clock and not
    /// older than the reporting window (default 35 days).
    #[schema(format = DateTime)]
    observed_at: String,
}

/// A report in a batch. Each is checked on its own, so the rules of `ReportBody` are not the
/// batch's: a report breaking them is answered `invalid` beside the others.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchedReport {
    /// As in a single report (1–64 of `A-Za-z0-9._:-`); anything else is answered `invalid`.
    report_id: String,
    /// At most 100,000,000; more is answered `invalid`.
    #[serde(deserialize_with = "whole_number")]
    #[schema(minimum = 0, maximum = 9_000_000_000_000_000_i64)]
    customer_count: u64,
    /// As in a single report; a malformed or out-of-window time is answered `invalid`.
    observed_at: String,
}

/// The largest count a body may carry at all (a batch answers counts above
/// `metering::MAX_CUSTOMERS` as `invalid`; beyond this the body is malformed).
const LARGEST_COUNT: u64 = 9_000_000_000_000_000;

/// A count as JSON may write a whole number: `5` or `5.0`.
fn whole_number<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    let number = serde_json::Number::deserialize(deserializer)?;
    if let Some(whole) = number.as_u64().filter(|n| *n <= LARGEST_COUNT) {
        return Ok(whole);
    }
    match number.as_f64() {
        Some(float) if float.fract() == 0.0 && (0.0..=9.0e15).contains(&float) => {
            // Integral and far below 2^53: the conversion is exact.
            Ok(float as u64)
        }
        _ => Err(serde::de::Error::custom(format!("{number} is not a whole number of customers"))),
    }
}

fn sent(report_id: &str, customer_count: u64, observed_at: &str) -> SentReport {
    SentReport { report_id: report_id.to_owned(), customer_count, observed_at: observed_at.to_owned() }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SingleReport {
    /// The tenant (platform staff name one; a container reports for its own).
    #[serde(default)]
    #[schema(format = Uuid)]
    tenant_id: Option<String>,
    #[serde(flatten)]
    report: ReportBody,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchOfReports {
    #[serde(default)]
    #[schema(format = Uuid)]
    tenant_id: Option<String>,
    /// 1 to 100 reports, each answered on its own.
    #[schema(min_items = 1, max_items = 100)]
    reports: Vec<BatchedReport>,
}

/// One report, or a batch of up to 100 under `reports`.
#[derive(Debug, ToSchema)]
// Read by the schema only: the variant is chosen by `Deserialize` below.
#[serde(untagged)]
pub enum UsageRequest {
    Batch(BatchOfReports),
    Single(SingleReport),
}

impl<'de> Deserialize<'de> for UsageRequest {
    // A body with `reports` is a batch, any other a single report: so a mistake is reported
    // against that shape's fields, not as "matched no variant".
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        let batch = value.get("reports").is_some();
        if batch {
            serde_json::from_value(value).map(UsageRequest::Batch).map_err(serde::de::Error::custom)
        } else {
            serde_json::from_value(value).map(UsageRequest::Single).map_err(serde::de::Error::custom)
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeName {
    Accepted,
    Duplicate,
    Conflict,
    Invalid,
}

/// What became of one report of a batch.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReportResult {
    report_id: String,
    outcome: OutcomeName,
    /// For `invalid`: the field and why; for `conflict`: what is recorded under the id.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    details: Option<serde_json::Value>,
}

/// The answer to a batch: one result per report, in order, and the counts.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchAnswer {
    #[schema(value_type = String, format = Uuid)]
    tenant_id: TenantId,
    results: Vec<ReportResult>,
    accepted: usize,
    duplicate: usize,
    conflict: usize,
    invalid: usize,
}

/// The answer to a single report.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReportAnswer {
    #[schema(value_type = String, format = Uuid)]
    tenant_id: TenantId,
    report_id: String,
    outcome: OutcomeName,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum UsageAnswer {
    Batch(BatchAnswer),
    Single(ReportAnswer),
}

fn recorded_details(existing: &UsageReport) -> serde_json::Value {
    json!({ "recorded": { "customer_count": existing.customer_count, "observed_at": rfc3339(existing.observed_at) } })
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

fn result_of(report_id: String, outcome: Outcome) -> ReportResult {
    let (outcome, details) = match outcome {
        Outcome::Accepted => (OutcomeName::Accepted, None),
        Outcome::Duplicate => (OutcomeName::Duplicate, None),
        Outcome::Conflict(existing) => (OutcomeName::Conflict, Some(recorded_details(&existing))),
        Outcome::Invalid { field, reason } => {
            (OutcomeName::Invalid, Some(json!({ "field": field, "reason": reason })))
        }
    };
    ReportResult { report_id, outcome, details }
}

/// Report usage: one report (202 accepted, 200 for the same report again, 409 for another
/// report under its id) or a batch (200, one result per report).
#[utoipa::path(
    post,
    path = "/v1/usage",
    tag = "usage",
    operation_id = "report_usage",
    request_body = UsageRequest,
    responses(
        (status = 202, description = "The report was counted", body = ReportAnswer),
        (status = 200, description = "The same report again (counted once), or a batch's results", body = UsageAnswer),
        (status = 409, description = "`REPORT_CONFLICT`: another report holds this `report_id`; `details.recorded` is it", body = ErrorEnvelope),
        (status = 422, description = "`VALIDATION_FAILED` naming the field (`observed_at` outside the window, ...)", body = ErrorEnvelope),
    )
)]
async fn report(
    State(state): State<UsageState>,
    Authenticated(caller): Authenticated,
    Json(request): Json<UsageRequest>,
) -> Result<Response, ApiError> {
    let now = OffsetDateTime::now_utc();
    let named =
        |raw: &Option<String>| raw.as_deref().map(|raw| TenantId::parse_field(raw, "tenant_id")).transpose();
    match request {
        UsageRequest::Single(single) => {
            let tenant = metering::reporting_tenant(&caller, named(&single.tenant_id)?)?;
            let report = &single.report;
            let sent = [sent(&report.report_id, report.customer_count, &report.observed_at)];
            let outcome = report_usage(&state.store, &caller, tenant, &sent, state.window, now).await?;
            let report_id = single.report.report_id;
            let answer = |outcome, status| {
                (
                    status,
                    axum::Json(UsageAnswer::Single(ReportAnswer {
                        tenant_id: tenant,
                        report_id: report_id.clone(),
                        outcome,
                    })),
                )
                    .into_response()
            };
            match outcome.into_iter().next() {
                Some(Outcome::Accepted) => Ok(answer(OutcomeName::Accepted, StatusCode::ACCEPTED)),
                Some(Outcome::Duplicate) => Ok(answer(OutcomeName::Duplicate, StatusCode::OK)),
                Some(Outcome::Conflict(existing)) => Err(ApiError::new(
                    ErrorCode::ReportConflict,
                    format!("another report was recorded under report_id {report_id}"),
                )
                .with_details(recorded_details(&existing))),
                Some(Outcome::Invalid { field, reason }) => Err(ApiError::invalid_field(field, reason)),
                None => Err(ApiError::internal("no outcome for the report")),
            }
        }
        UsageRequest::Batch(batch) => {
            let tenant = metering::reporting_tenant(&caller, named(&batch.tenant_id)?)?;
            let sent: Vec<SentReport> =
                batch.reports.iter().map(|r| sent(&r.report_id, r.customer_count, &r.observed_at)).collect();
            let outcomes = report_usage(&state.store, &caller, tenant, &sent, state.window, now).await?;
            let results: Vec<ReportResult> = sent
                .into_iter()
                .zip(outcomes)
                .map(|(sent, outcome)| result_of(sent.report_id, outcome))
                .collect();
            let count = |name: fn(&OutcomeName) -> bool| results.iter().filter(|r| name(&r.outcome)).count();
            let answer = BatchAnswer {
                tenant_id: tenant,
                accepted: count(|o| matches!(o, OutcomeName::Accepted)),
                duplicate: count(|o| matches!(o, OutcomeName::Duplicate)),
                conflict: count(|o| matches!(o, OutcomeName::Conflict)),
                invalid: count(|o| matches!(o, OutcomeName::Invalid)),
                results,
            };
            Ok((StatusCode::OK, axum::Json(UsageAnswer::Batch(answer))).into_response())
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PeriodQuery {
    /// `YYYY-MM` (UTC calendar month); the current one by default.
    #[param(pattern = r"^([2-9][0-9]{3})-(0[1-9]|1[0-2])$")]
    period: Option<String>,
    /// The newest reports shown, 1–1000 (default 100); the figure counts them all.
    #[param(value_type = Option<i32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
}

/// A report as shown.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageReportView {
    report_id: String,
    customer_count: u64,
    #[schema(format = DateTime)]
    observed_at: String,
    #[schema(format = DateTime)]
    received_at: String,
}

impl UsageReportView {
    fn of(report: &UsageReport) -> UsageReportView {
        UsageReportView {
            report_id: report.report_id.clone(),
            customer_count: report.customer_count,
            observed_at: rfc3339(report.observed_at),
            received_at: rfc3339(report.received_at),
        }
    }
}

/// A period's usage so far.
#[derive(Debug, Serialize, ToSchema)]
pub struct PeriodUsage {
    #[schema(value_type = String, format = Uuid)]
    tenant_id: TenantId,
    #[schema(value_type = String, example = "2027-03")]
    period: String,
    /// How the plan turns reports into the billable count: the rule of the plan's price in
    /// force in the period (`max` when it has none).
    #[schema(value_type = String, example = "max")]
    aggregation: Aggregation,
    /// The version of the plan's price that rule comes from (none in force: `null`).
    price_version: Option<u32>,
    /// The billable customer count of the period so far.
    billable_customers: u64,
    /// The report in force when the period began (from an earlier period), if any.
    carried_in: Option<UsageReportView>,
    /// Reports observed in the period.
    report_count: usize,
    /// The newest `limit` of them, newest first.
    reports: Vec<UsageReportView>,
}

/// A period's reports and its billable customer count so far.
#[utoipa::path(
    get,
    path = "/v1/tenants/{id}/usage",
    tag = "usage",
    operation_id = "get_tenant_usage",
    params(("id" = String, Path, format = Uuid, description = "The tenant's id"), PeriodQuery),
    responses(
        (status = 200, description = "The period's usage", body = PeriodUsage),
        (status = 404, description = "`TENANT_NOT_FOUND`: none the caller can see", body = ErrorEnvelope),
    )
)]
async fn period_usage(
    State(state): State<UsageState>,
    bearer: Bearer,
    Path(id): Path<String>,
    query: Result<Query<PeriodQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<PeriodUsage>, ApiError> {
    let id = TenantId::parse(&id).map_err(ApiError::from)?;
    let Query(query) = query.map_err(|e| ApiError::new(ErrorCode::ValidationFailed, e.body_text()))?;
    let period = match query.period.as_deref() {
        Some(raw) => Period::parse(raw).map_err(|e| ApiError::invalid_field("period", e.to_string()))?,
        None => Period::containing(OffsetDateTime::now_utc()),
    };
    let limit = match query.limit.as_deref() {
        None => 100,
        Some(raw) => raw
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| ApiError::invalid_field("limit", "must be a whole number from 1 to 1000"))?,
    };
    let admitted = bearer.admit(&state.store, Some(Also::Tenant(id))).await?;
    let tenant = tenant_in_reach(&admitted.caller, Resource::Usage, id, admitted.tenant)?;
    let figure = metering::period_usage(&state.store, &admitted.caller, &tenant, period).await?;
    let PeriodFigure { aggregation, price_version, billable_customers, usage, .. } = figure;
    Ok(axum::Json(PeriodUsage {
        tenant_id: id,
        period: period.to_string(),
        aggregation,
        price_version,
        billable_customers,
        carried_in: usage.carried_in.as_ref().map(UsageReportView::of),
        report_count: usage.reports.len(),
        reports: usage.reports.iter().rev().take(limit).map(UsageReportView::of).collect(),
    }))
}
