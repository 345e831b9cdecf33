//! Metering through the HTTP API on the emulator: reports idempotent by id, batches answered
//! per report, the reporting window, who may report, and a period's billable figure.

use dotmac_domain::{Role, TenantId};
use dotmac_tests::TestApp;
use http::Method;
use serde_json::{Value, json};
use time::OffsetDateTime;

fn at(offset_seconds: i64) -> String {
    (OffsetDateTime::now_utc() + time::Duration::seconds(offset_seconds))
        .format(&time::format_description::well_known::Rfc3339)
        .expect("time")
}

fn machine_token(app: &TestApp, tenant: TenantId) -> String {
    app.stack.platform.keys.issue_machine(tenant, 600, OffsetDateTime::now_utc()).expect("machine token").0
}

async fn report(app: &TestApp, token: &str, body: &Value) -> (u16, Value) {
    app.send(Method::POST, "/v1/usage", Some(token), Some(body)).await
}

#[tokio::test]
async fn a_report_counts_once_however_often_it_is_sent_and_its_id_cannot_be_reused() {
    let app = TestApp::spawn().await;
    let admin = app.admin_token().await;
    let tenant = app.onboarded_tenant(&admin).await;
    let container = machine_token(&app, tenant);
    let first = json!({ "report_id": "hourly-0001", "customer_count": 480, "observed_at": at(-60) });
    let (status, answer) = report(&app, &container, &first).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!((answer["outcome"].clone(), answer["tenant_id"].clone()), (json!("accepted"), json!(tenant)));
    let (status, answer) = report(&app, &container, &first).await;
    assert_eq!((status, answer["outcome"].clone()), (200, json!("duplicate")), "a retry is counted once");

    let other = json!({ "report_id": "hourly-0001", "customer_count": 999, "observed_at": at(-30) });
    let (status, answer) = report(&app, &container, &other).await;
    assert_eq!((status, answer["error"]["code"].clone()), (409, json!("REPORT_CONFLICT")), "{answer}");
    assert_eq!(answer["error"]["details"]["recorded"]["customer_count"], json!(480), "{answer}");

    // Twenty copies of one new report at once: one is the report, the rest its duplicates.
    let racing = json!({ "report_id": "hourly-0002", "customer_count": 510, "observed_at": at(-10) });
    let answers = futures::future::join_all((0..20).map(|_| report(&app, &container, &racing))).await;
    let accepted = answers.iter().filter(|(status, _)| *status == 202).count();
    let duplicates =
        answers.iter().filter(|(status, a)| *status == 200 && a["outcome"] == "duplicate").count();
    assert_eq!((accepted, duplicates), (1, 19), "{answers:?}");

    let (status, usage) = app.get_json(&admin, &format!("/v1/tenants/{tenant}/usage")).await;
    assert_eq!(status, 200, "{usage}");
    assert_eq!((usage["report_count"].clone(), usage["billable_customers"].clone()), (json!(2), json!(510)));
    assert_eq!(usage["aggregation"], json!("max"));
    let ids: Vec<&str> = usage["reports"]
        .as_array()
        .expect("reports")
        .iter()
        .filter_map(|r| r["report_id"].as_str())
        .collect();
    assert_eq!(ids, ["hourly-0002", "hourly-0001"], "newest first");
    app.shutdown().await;
}

#[tokio::test]
async fn a_batch_answers_each_report_on_its_own() {
    let app = TestApp::spawn().await;
    let admin = app.admin_token().await;
    let tenant = app.onboarded_tenant(&admin).await;
    let container = machine_token(&app, tenant);
    let first_seen = at(-300);
    let first = json!({ "report_id": "b-1", "customer_count": 10, "observed_at": first_seen });
    assert_eq!(report(&app, &container, &first).await.0, 202);
    let batch = json!({ "reports": [
        { "report_id": "b-1", "customer_count": 10, "observed_at": first_seen },
        { "report_id": "b-2", "customer_count": 20, "observed_at": at(-200) },
        { "report_id": "b-1", "customer_count": 11, "observed_at": at(-100) },
        { "report_id": "b-3", "customer_count": 30, "observed_at": at(3_600) },
        { "report_id": "bad id", "customer_count": 30, "observed_at": at(-100) },
        { "report_id": "b-4", "customer_count": 40, "observed_at": at(-40 * 86_400) },
    ]});
    let (status, answer) = report(&app, &container, &batch).await;
    assert_eq!(status, 200, "{answer}");
    let outcomes: Vec<(&str, &str)> = answer["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| (r["report_id"].as_str().unwrap_or(""), r["outcome"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("b-1", "duplicate"),
            ("b-2", "accepted"),
            ("b-1", "conflict"),
            ("b-3", "invalid"),
            ("bad id", "invalid"),
            ("b-4", "invalid")
        ],
        "{answer}"
    );
    assert_eq!(answer["results"][3]["details"]["field"], json!("observed_at"), "{answer}");
    assert_eq!(answer["results"][4]["details"]["field"], json!("report_id"), "{answer}");
    assert_eq!(
        (
            answer["accepted"].clone(),
            answer["duplicate"].clone(),
            answer["conflict"].clone(),
            answer["invalid"].clone()
        ),
        (json!(1), json!(1), json!(1), json!(3))
    );
    let too_many: Vec<Value> = (0..101)
        .map(|n| json!({ "report_id": format!("x-{n}"), "customer_count": 1, "observed_at": at(-5) }))
        .collect();
    let (status, answer) = report(&app, &container, &json!({ "reports": too_many })).await;
    assert_eq!((status, answer["error"]["details"]["field"].clone()), (422, json!("reports")), "{answer}");
    let (_, usage) = app.get_json(&admin, &format!("/v1/tenants/{tenant}/usage")).await;
    assert_eq!(usage["report_count"], json!(2), "nothing of a refused batch was recorded: {usage}");
    app.shutdown().await;
}

#[tokio::test]
async fn only_a_tenants_own_container_or_platform_staff_report_its_usage() {
    let app = TestApp::spawn().await;
    let admin = app.admin_token().await;
    let (mine, theirs) = (app.onboarded_tenant(&admin).await, app.onboarded_tenant(&admin).await);
    let container = machine_token(&app, mine);
    let body = |tenant: Option<TenantId>| {
        let mut body = json!({ "report_id": uuid::Uuid::new_v4().to_string(), "customer_count": 7, "observed_at": at(-1) });
        if let Some(tenant) = tenant {
            body["tenant_id"] = json!(tenant);
        }
        body
    };
    let (status, _) = report(&app, &container, &body(Some(theirs))).await;
    assert_eq!(status, 403, "a container reports for its own tenant only");
    let tenant_admin = app.user_token("boss@usage.example", mine, Role::TenantAdmin).await;
    let (status, answer) = report(&app, &tenant_admin, &body(None)).await;
    assert_eq!((status, answer["error"]["code"].clone()), (403, json!("FORBIDDEN")), "{answer}");
    let (status, answer) = report(&app, &admin, &body(None)).await;
    assert_eq!((status, answer["error"]["details"]["field"].clone()), (422, json!("tenant_id")), "{answer}");
    let (status, _) = report(&app, &admin, &body(Some(theirs))).await;
    assert_eq!(status, 202, "platform staff report on a tenant's behalf");
    let (status, _) = app.get_json(&tenant_admin, &format!("/v1/tenants/{theirs}/usage")).await;
    assert_eq!(status, 403);
    let (status, usage) = app.get_json(&tenant_admin, &format!("/v1/tenants/{mine}/usage")).await;
    assert_eq!((status, usage["report_count"].clone()), (200, json!(0)), "its own, still empty: {usage}");
    app.shutdown().await;
}

#[tokio::test]
async fn a_periods_figure_follows_its_reports_whatever_order_they_came_in() {
    let app = TestApp::spawn().await;
    let admin = app.admin_token().await;
    let tenant = app.onboarded_tenant(&admin).await;
    let now = OffsetDateTime::now_utc();
    let period = dotmac_billing::Period::containing(now);
    // Within the reporting window: the current period (from its start) and the previous one.
    let start = period.start();
    let instants: Vec<OffsetDateTime> =
        [0i64, 1, 2].iter().map(|n| start + time::Duration::seconds(*n)).collect();
    if instants.iter().any(|i| *i > now) {
        return app.shutdown().await; // the first seconds of a month: nothing to order yet
    }
    let rfc = |t: OffsetDateTime| t.format(&time::format_description::well_known::Rfc3339).expect("time");
    let previous = start - time::Duration::days(1);
    // Sent late and out of order: the figure is the same as if they came in order.
    let reports = json!({ "tenant_id": tenant, "reports": [
        { "report_id": "p-3", "customer_count": 300, "observed_at": rfc(instants[2]) },
        { "report_id": "p-1", "customer_count": 900, "observed_at": rfc(instants[0]) },
        { "report_id": "p-0", "customer_count": 1200, "observed_at": rfc(previous) },
        { "report_id": "p-2", "customer_count": 100, "observed_at": rfc(instants[1]) },
    ]});
    let (status, answer) = report(&app, &admin, &reports).await;
    assert_eq!((status, answer["accepted"].clone()), (200, json!(4)), "{answer}");
    let (status, usage) = app.get_json(&admin, &format!("/v1/tenants/{tenant}/usage?period={period}")).await;
    assert_eq!(status, 200, "{usage}");
    assert_eq!(usage["carried_in"]["report_id"], json!("p-0"), "last month's count is in force at the start");
    assert_eq!(usage["billable_customers"], json!(1200), "the peak includes the count carried in");
    assert_eq!(usage["report_count"], json!(3));
    let (status, last) =
        app.get_json(&admin, &format!("/v1/tenants/{tenant}/usage?period={}", period.previous())).await;
    assert_eq!((status, last["billable_customers"].clone()), (200, json!(1200)), "{last}");
    let (status, answer) = app.get_json(&admin, &format!("/v1/tenants/{tenant}/usage?period=2026-13")).await;
    assert_eq!((status, answer["error"]["details"]["field"].clone()), (422, json!("period")), "{answer}");
    app.shutdown().await;
}

#[tokio::test]
async fn a_periods_figure_follows_the_aggregation_of_the_price_in_force_for_the_tenants_plan() {
    let app = TestApp::spawn().await;
    let admin = app.admin_token().await;
    let tenant = app.onboarded_tenant(&admin).await;
    let now = OffsetDateTime::now_utc();
    let period = dotmac_billing::Period::containing(now);
    let (peak_at, last_at) = (now - time::Duration::seconds(2), now - time::Duration::seconds(1));
    if dotmac_billing::Period::containing(peak_at) != period {
        return app.shutdown().await; // the first seconds of a month: both must fall in it
    }
    let rfc = |t: OffsetDateTime| t.format(&time::format_description::well_known::Rfc3339).expect("time");
    let reports = json!({ "tenant_id": tenant, "reports": [
        { "report_id": "agg-1", "customer_count": 900, "observed_at": rfc(peak_at) },
        { "report_id": "agg-2", "customer_count": 300, "observed_at": rfc(last_at) },
    ]});
    let (status, answer) = report(&app, &admin, &reports).await;
    assert_eq!((status, answer["accepted"].clone()), (200, json!(2)), "{answer}");
    let figure = |period: dotmac_billing::Period| {
        let path = format!("/v1/tenants/{tenant}/usage?period={period}");
        let (app, admin) = (&app, &admin);
        async move {
            let (status, usage) = app.get_json(admin, &path).await;
            assert_eq!(status, 200, "{usage}");
            (
                usage["aggregation"].clone(),
                usage["price_version"].clone(),
                usage["billable_customers"].clone(),
            )
        }
    };
    assert_eq!(
        figure(period).await,
        (json!("max"), json!(1), json!(900)),
        "the seed's `usage` plan: the peak"
    );

    // A plan whose price takes the count at the period's end, and the tenant moved onto it.
    let plan = format!("latest-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let price = |aggregation: &str| {
        json!({
            "currency": "USD",
            "per_customer": { "model": "package", "size": 100, "package_price": "30" },
            "monthly_minimum": "50",
            "aggregation": aggregation,
        })
    };
    let body = json!({ "id": plan, "name": "Latest", "task_size": { "cpu": 256, "memory_mib": 512 }, "price": price("latest") });
    let (status, created) = app.send(Method::POST, "/v1/plans", Some(&admin), Some(&body)).await;
    assert_eq!(status, 201, "{created}");
    let moved = json!({ "plan": plan });
    let (status, answer) =
        app.send(Method::POST, &format!("/v1/tenants/{tenant}/plan"), Some(&admin), Some(&moved)).await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(
        figure(period).await,
        (json!("latest"), json!(1), json!(300)),
        "the count in force at the end"
    );

    // A change scheduled for the next period is not the price in force now.
    let change = json!({ "price": price("average"), "expected_version": 1 });
    let (status, version) =
        app.send(Method::POST, &format!("/v1/plans/{plan}/prices"), Some(&admin), Some(&change)).await;
    assert_eq!(status, 201, "{version}");
    assert_eq!(figure(period).await, (json!("latest"), json!(1), json!(300)), "this period keeps its price");
    assert_eq!(
        figure(period.next()).await,
        (json!("average"), json!(2), json!(300)),
        "the next period's price rules it (the 300 carried in holds all month)"
    );
    app.shutdown().await;
}
