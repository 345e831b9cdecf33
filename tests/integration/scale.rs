//! Sizing by customer count against the emulator: the tiers of the seed's 500, 1,200 and
//! 3,000-customer tenants, the platform admin's override (and "auto"), and the resize saga
//! under duplicate delivery and a crash after each step: one task in the end, the record
//! pointing at it, nothing orphaned.

use dotmac_domain::{Role, TaskSize, Tenant, TenantId};
use dotmac_queue::{JobError, JobHandler, ProvisioningJob};
use dotmac_tests::{TestApp, TestStack};
use http::Method;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

use crate::backups::active_tenant;
use crate::provisioner::delivery;

const SMALL: TaskSize = TaskSize { cpu: 256, memory_mib: 512 };
const MEDIUM: TaskSize = TaskSize { cpu: 512, memory_mib: 1024 };
const LARGE: TaskSize = TaskSize { cpu: 1024, memory_mib: 2048 };
const XLARGE: TaskSize = TaskSize { cpu: 2048, memory_mib: 4096 };

fn size_json(size: TaskSize) -> serde_json::Value {
    json!({ "cpu": size.cpu, "memory_mib": size.memory_mib })
}

/// What ECS runs for the tenant: each running task's ARN and its definition's CPU/memory.
async fn running(stack: &TestStack, tenant: TenantId) -> Vec<(String, TaskSize)> {
    let fleet = stack.platform.provisioner();
    let tasks = fleet.fleet().running_tenant_tasks(tenant).await.expect("tasks");
    let ecs = aws_sdk_ecs::Client::new(&stack.sdk);
    let mut out = Vec::new();
    for task in tasks {
        let definition = ecs
            .describe_task_definition()
            .task_definition(&task.task_definition_arn)
            .send()
            .await
            .expect("DescribeTaskDefinition");
        let definition = definition.task_definition().expect("definition");
        let number = |v: Option<&str>| v.and_then(|v| v.parse().ok()).unwrap_or(0);
        out.push((
            task.task_arn,
            TaskSize { cpu: number(definition.cpu()), memory_mib: number(definition.memory()) },
        ));
    }
    out
}

/// The tenant runs exactly one task, of `size`, and its record points at it with no resize
/// left in progress.
async fn assert_runs_once_at(stack: &TestStack, tenant: TenantId, size: TaskSize, context: &str) {
    let record = stack.platform.store.get_tenant_record(tenant).await.expect("get").expect("exists");
    let container = record.tenant.container.clone().expect("a container");
    let tasks = running(stack, tenant).await;
    assert_eq!(
        tasks,
        vec![(container.task_arn.clone(), size)],
        "{context}: one task, the recorded one, of the size"
    );
    assert_eq!(container.task_size, size, "{context}");
    assert!(record.scaling.is_none(), "{context}: {:?}", record.scaling);
}

async fn report(app: &TestApp, token: &str, tenant: TenantId, customers: u64) {
    let observed =
        time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).expect("time");
    let body = json!({ "tenant_id": tenant, "report_id": format!("r-{customers}"), "customer_count": customers, "observed_at": observed });
    let (status, answer) = app.send(Method::POST, "/v1/usage", Some(token), Some(&body)).await;
    assert_eq!(status, 202, "{answer}");
}

async fn wait_for_size(app: &TestApp, token: &str, tenant: TenantId, size: TaskSize) {
    app.wait_for_tenant(token, &tenant.to_string(), Duration::from_secs(90), |t| {
        t["container"]["task_size"] == size_json(size)
    })
    .await;
    // The job clears its intent after the old task stops; wait for that too.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while app
        .stack
        .platform
        .store
        .get_tenant_record(tenant)
        .await
        .expect("get")
        .expect("exists")
        .scaling
        .is_some()
    {
        assert!(tokio::time::Instant::now() < deadline, "the resize never finished");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn the_seed_tenants_get_their_tiers_and_the_override_wins_until_auto() {
    let app = TestApp::spawn().await;
    let admin = app.admin_token().await;
    let mut tenants = Vec::new();
    for customers in [500u64, 1_200, 3_000] {
        let tenant = app.onboarded_tenant(&admin).await;
        app.wait_for_tenant(&admin, &tenant.to_string(), Duration::from_secs(60), |t| {
            t["status"] == "active"
        })
        .await;
        report(&app, &admin, tenant, customers).await;
        tenants.push(tenant);
    }
    // The hourly run: a scale job for each tenant whose size should change.
    let provisioner = app.stack.platform.provisioner();
    provisioner
        .handle(ProvisioningJob::ScheduledScaling {}, &delivery(1, 5))
        .await
        .expect("scheduled scaling");
    wait_for_size(&app, &admin, tenants[1], MEDIUM).await;
    wait_for_size(&app, &admin, tenants[2], LARGE).await;
    assert_runs_once_at(&app.stack, tenants[0], SMALL, "500 customers").await;
    assert_runs_once_at(&app.stack, tenants[1], MEDIUM, "1,200 customers").await;
    assert_runs_once_at(&app.stack, tenants[2], LARGE, "3,000 customers").await;

    // A platform admin's override, which the automatic rule then leaves alone.
    let path = format!("/v1/tenants/{}/scale", tenants[0]);
    let (status, view) =
        app.send(Method::POST, &path, Some(&admin), Some(&json!({ "task_size": size_json(XLARGE) }))).await;
    assert_eq!(status, 202, "{view}");
    assert_eq!(
        (view["task_size_override"].clone(), view["desired"].clone()),
        (size_json(XLARGE), size_json(XLARGE))
    );
    assert_eq!((view["current"].clone(), view["customer_count"].clone()), (size_json(SMALL), json!(500)));
    wait_for_size(&app, &admin, tenants[0], XLARGE).await;
    provisioner
        .handle(ProvisioningJob::ScheduledScaling {}, &delivery(1, 5))
        .await
        .expect("scheduled scaling");
    provisioner
        .handle(ProvisioningJob::ScaleTenant { tenant_id: tenants[0] }, &delivery(1, 5))
        .await
        .expect("a check");
    assert_runs_once_at(&app.stack, tenants[0], XLARGE, "the override holds").await;
    // "auto" hands it back to the customer count.
    let (status, view) =
        app.send(Method::POST, &path, Some(&admin), Some(&json!({ "task_size": "auto" }))).await;
    assert_eq!(status, 202, "{view}");
    assert_eq!(
        (view["task_size_override"].clone(), view["desired"].clone()),
        (json!(null), size_json(SMALL))
    );
    wait_for_size(&app, &admin, tenants[0], SMALL).await;
    assert_runs_once_at(&app.stack, tenants[0], SMALL, "auto again").await;

    // Not a Fargate pair: 422. Not platform staff: 403.
    let bad = app
        .exchange(
            Method::POST,
            &path,
            Some(&admin),
            Some(&json!({ "task_size": { "cpu": 256, "memory_mib": 4096 } })),
        )
        .await;
    bad.assert_error(422, "VALIDATION_FAILED");
    let own_admin = app.user_token("admin@sized.example", tenants[0], Role::TenantAdmin).await;
    let refused =
        app.exchange(Method::POST, &path, Some(&own_admin), Some(&json!({ "task_size": "auto" }))).await;
    refused.assert_error(403, "FORBIDDEN");
    app.shutdown().await;
}

/// Sets the override straight in the store (no job queued), as the route would.
async fn set_override(stack: &TestStack, tenant: &Tenant, size: TaskSize) {
    let mut record = stack.platform.store.get_tenant_record(tenant.id).await.expect("get").expect("exists");
    record.tenant.task_size_override = Some(size);
    stack.platform.store.save_tenant(&mut record).await.expect("saved");
}

#[tokio::test]
async fn a_resize_crashed_after_any_step_or_delivered_twice_ends_with_one_task_and_no_orphan() {
    let stack = TestStack::new(&[]).await;
    let tenant = active_tenant(&stack).await;
    let job = || ProvisioningJob::ScaleTenant { tenant_id: tenant.id };
    let mut size = SMALL;
    for point in [
        "scale.after_intent",
        "scale.after_register",
        "scale.after_run_task",
        "scale.after_record",
        "scale.after_stop",
    ] {
        size = if size == MEDIUM { LARGE } else { MEDIUM };
        set_override(&stack, &tenant, size).await;
        let crashing = stack.platform.provisioner().with_fault_hook(Arc::new(move |step| step == point));
        let crashed = crashing.handle(job(), &delivery(1, 5)).await;
        assert!(matches!(crashed, Err(JobError::Retry(_))), "{point}: {crashed:?}");
        // Whatever the crash left, the record still points at a running task.
        let record = stack.platform.store.get_tenant_record(tenant.id).await.expect("get").expect("exists");
        let recorded = record.tenant.container.expect("container").task_arn;
        assert!(
            running(&stack, tenant.id).await.iter().any(|(arn, _)| *arn == recorded),
            "{point}: the record points at a running task"
        );
        // The retry, and a duplicate delivery.
        stack
            .platform
            .provisioner()
            .handle(job(), &delivery(2, 5))
            .await
            .unwrap_or_else(|e| panic!("{point}: retry: {e}"));
        stack
            .platform
            .provisioner()
            .handle(job(), &delivery(1, 5))
            .await
            .unwrap_or_else(|e| panic!("{point}: duplicate: {e}"));
        assert_runs_once_at(&stack, tenant.id, size, point).await;
    }
}
