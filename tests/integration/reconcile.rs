//! The fleet reconcile and rolling image updates against the emulator: a task stopped behind
//! the platform's back comes back (one new task, the record pointing at it, a
//! `tenant.reconciled` event), a deleted tenant's task is stopped, duplicate and concurrent
//! deliveries start nothing twice, the ECS task-stopped rule's message (built from the
//! template's input transformer) reconciles its tenant, and a rollout across 20 tenants with
//! one deleted mid-way, pause/resume and the failure threshold.

use crate::provisioner::{delivery, tenant_task_arns};
use dotmac_domain::{Caller, Role, Tenant, TenantId, TenantStatus};
use dotmac_provisioner::Provisioner;
use dotmac_queue::{Envelope, JobHandler, ProvisioningJob};
use dotmac_store::{EventOrder, Rollout, RolloutStatus};
use dotmac_tenants::rollouts::{NewRollout, set_paused, start_rollout};
use dotmac_tests::{TestApp, TestStack};
use http::Method;
use serde_json::{Value, json};
use std::sync::Arc;

fn admin() -> Caller {
    Caller::new("platform-admin", None, &[Role::PlatformAdmin])
}

async fn active(stack: &TestStack) -> Tenant {
    crate::backups::active_tenant(stack).await
}

fn ecs(stack: &TestStack) -> aws_sdk_ecs::Client {
    aws_sdk_ecs::Client::new(&stack.sdk)
}

/// Stops the task on the emulator directly, as a crash or someone with console access would.
async fn stop_behind_its_back(stack: &TestStack, task_arn: &str) {
    ecs(stack)
        .stop_task()
        .cluster(&stack.config().ecs.cluster)
        .task(task_arn)
        .reason("stopped behind the platform's back")
        .send()
        .await
        .expect("StopTask");
}

async fn reconciled_events(stack: &TestStack, tenant: TenantId) -> Vec<Value> {
    let page =
        stack.platform.store.tenant_events(tenant, EventOrder::OldestFirst, 100, None).await.expect("events");
    page.items.into_iter().filter(|e| e.event_type == "tenant.reconciled").map(|e| e.data).collect()
}

fn reconcile_job() -> ProvisioningJob {
    ProvisioningJob::ReconcileFleet { scheduled_at: "2026-12-01T20:05:00Z".into(), cursor: None }
}

#[tokio::test]
async fn a_task_stopped_behind_the_platforms_back_is_relaunched_once_and_recorded() {
    let stack = TestStack::new(&[]).await;
    let tenant = active(&stack).await;
    let old = tenant.container.clone().expect("container").task_arn;
    let untouched = active(&stack).await;
    stop_behind_its_back(&stack, &old).await;
    assert!(tenant_task_arns(&stack, &tenant).await.is_empty(), "the emulator stopped it");

    let provisioner = stack.platform.provisioner();
    provisioner.handle(reconcile_job(), &delivery(1, 5)).await.expect("reconcile");

    let tasks = tenant_task_arns(&stack, &tenant).await;
    assert_eq!(tasks.len(), 1, "one new task: {tasks:?}");
    assert_ne!(tasks[0], old);
    let record = stack.platform.store.get_tenant_record(tenant.id).await.expect("get").expect("exists");
    let container = record.tenant.container.clone().expect("container");
    assert_eq!(container.task_arn, tasks[0], "the record points at the new task");
    assert_eq!(container.last_status, "RUNNING");
    assert!(container.endpoint.is_some());
    assert!(record.lease.is_none());
    let events = reconciled_events(&stack, tenant.id).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["drift"][0]["kind"], "missing");
    assert_eq!(events[0]["drift"][0]["recorded_task_arn"], old);
    assert_eq!(events[0]["task_arn"], tasks[0]);
    // The tenant in sync was left alone: its task, no event.
    assert_eq!(
        tenant_task_arns(&stack, &untouched).await,
        vec![untouched.container.clone().expect("c").task_arn]
    );
    assert!(reconciled_events(&stack, untouched.id).await.is_empty());

    // A duplicate delivery finds it in sync: no second task, no second event.
    provisioner.handle(reconcile_job(), &delivery(2, 5)).await.expect("again");
    assert_eq!(tenant_task_arns(&stack, &tenant).await, tasks);
    assert_eq!(reconciled_events(&stack, tenant.id).await.len(), 1);

    // Two copies at once after another stop: one repair, one task.
    stop_behind_its_back(&stack, &tasks[0]).await;
    let other = stack.platform.provisioner();
    let (first, second) = (delivery(1, 5), delivery(1, 5));
    let (a, b) =
        tokio::join!(provisioner.handle(reconcile_job(), &first), other.handle(reconcile_job(), &second),);
    a.expect("first copy");
    b.expect("second copy");
    // A copy that lost the claim left it to the other; a third pass finds nothing to do.
    provisioner.handle(reconcile_job(), &delivery(1, 5)).await.expect("third");
    let after = tenant_task_arns(&stack, &tenant).await;
    assert_eq!(after.len(), 1, "no duplicate task: {after:?}");
    let record = stack.platform.store.get_tenant(tenant.id).await.expect("get").expect("exists");
    assert_eq!(record.container.expect("c").task_arn, after[0]);
    assert_eq!(reconciled_events(&stack, tenant.id).await.len(), 2);
}

#[tokio::test]
async fn a_deleted_tenants_running_task_is_stopped() {
    let stack = TestStack::new(&[]).await;
    let tenant = active(&stack).await;
    let lifecycle = dotmac_tenants::Lifecycle {
        store: stack.platform.store.clone(),
        provisioning: stack.platform.provisioning.clone(),
    };
    lifecycle.delete(&admin(), tenant.id).await.expect("delete");
    let provisioner = stack.platform.provisioner();
    provisioner
        .handle(ProvisioningJob::DeprovisionTenant { tenant_id: tenant.id }, &delivery(1, 5))
        .await
        .expect("deleted");
    // A task for it appears anyway (a stray launch, a restore of old infrastructure).
    let stray = provisioner
        .fleet()
        .launch(&tenant, tenant.container.clone().expect("c").task_size, "", "arn:test:secret")
        .await
        .expect("task");
    assert_eq!(tenant_task_arns(&stack, &tenant).await, vec![stray.task_arn.clone()]);

    provisioner
        .handle(ProvisioningJob::ReconcileTenant { tenant_id: tenant.id }, &delivery(1, 5))
        .await
        .expect("reconcile");
    assert!(tenant_task_arns(&stack, &tenant).await.is_empty(), "the stray task is stopped");
    let record = stack.platform.store.get_tenant(tenant.id).await.expect("get").expect("exists");
    assert_eq!(record.status, TenantStatus::Deleted);
    let events = reconciled_events(&stack, tenant.id).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["drift"][0]["kind"], "unowned");
    assert_eq!(events[0]["drift"][0]["task_arns"][0], stray.task_arn);
    // Again: nothing more to do.
    provisioner
        .handle(ProvisioningJob::ReconcileTenant { tenant_id: tenant.id }, &delivery(2, 5))
        .await
        .expect("again");
    assert_eq!(reconciled_events(&stack, tenant.id).await.len(), 1);
}

/// The value at a `$.a.b` path of the event.
fn at_path<'a>(event: &'a Value, path: &str) -> &'a Value {
    path.trim_start_matches("$.").split('.').fold(event, |value, key| &value[key])
}

/// What EventBridge sends the queue for `event`: the template's input transformer applied
/// (a placeholder outside quotes takes the value as JSON, so a string comes quoted).
fn transformed(event: &Value) -> String {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/template.yaml"),
    )
    .expect("template");
    let template: yaml_serde::Value = yaml_serde::from_str(&text).expect("yaml");
    let rule = &template["Resources"]["TenantTaskStoppedRule"]["Properties"];
    let pattern = &rule["EventPattern"];
    assert_eq!(pattern["source"][0].as_str(), event["source"].as_str());
    assert_eq!(pattern["detail-type"][0].as_str(), event["detail-type"].as_str());
    assert_eq!(pattern["detail"]["lastStatus"][0].as_str(), event["detail"]["lastStatus"].as_str());
    let transformer = &rule["Targets"][0]["InputTransformer"];
    let mut body = transformer["InputTemplate"].as_str().expect("template").to_owned();
    for (name, path) in transformer["InputPathsMap"].as_mapping().expect("paths") {
        let (name, path) = (name.as_str().expect("name"), path.as_str().expect("path"));
        body = body.replace(&format!("<{name}>"), &at_path(event, path).to_string());
    }
    body
}

#[tokio::test]
async fn the_task_stopped_rules_message_reconciles_its_tenant() {
    let stack = TestStack::new(&[]).await;
    let tenant = active(&stack).await;
    let old = tenant.container.clone().expect("container").task_arn;
    stop_behind_its_back(&stack, &old).await;
    // The sample event, about this tenant's task.
    let mut event: Value =
        serde_json::from_str(include_str!("../../events/eventbridge-ecs-task-stopped.json")).expect("event");
    event["detail"]["startedBy"] = json!(tenant.id.to_string());
    event["detail"]["taskArn"] = json!(old);
    event["detail"]["clusterArn"] = json!(stack.config().ecs.cluster);
    let body = transformed(&event);
    let envelope: Envelope<ProvisioningJob> = serde_json::from_str(&body).expect("the job envelope");
    assert_eq!(envelope.job, ProvisioningJob::ReconcileTenant { tenant_id: tenant.id });
    // The sample SQS message in events/ is the same transformation of the sample event.
    let sample: Value =
        serde_json::from_str(include_str!("../../events/sqs-ecs-task-stopped.json")).expect("sample");
    let sample_event: Value =
        serde_json::from_str(include_str!("../../events/eventbridge-ecs-task-stopped.json")).expect("event");
    assert_eq!(
        serde_json::from_str::<Value>(sample["Records"][0]["body"].as_str().expect("body")).expect("json"),
        serde_json::from_str::<Value>(&transformed(&sample_event)).expect("json"),
    );
    // Delivered through the queue as the rule would, and run by the provisioner.
    let provisioner = stack.platform.provisioner();
    let attempt = dotmac_queue::Delivery { job_id: Some(envelope.job_id), ..delivery(1, 5) };
    provisioner.handle(envelope.job, &attempt).await.expect("reconcile one tenant");
    let tasks = tenant_task_arns(&stack, &tenant).await;
    assert_eq!(tasks.len(), 1);
    assert_ne!(tasks[0], old);
    let record = stack.platform.store.get_tenant(tenant.id).await.expect("get").expect("exists");
    assert_eq!(record.container.expect("c").task_arn, tasks[0]);
}

// ------------------------------------------------------------------------------ rollouts

async fn rollout(stack: &TestStack, id: &str) -> Rollout {
    stack.platform.store.get_rollout(id).await.expect("get").expect("exists")
}

/// Runs the rollout's batch jobs (what the queue would carry) until it stops moving.
async fn run_batches(
    provisioner: &Provisioner,
    stack: &TestStack,
    id: &str,
    most: usize,
    final_attempt: bool,
) -> Rollout {
    let attempt = if final_attempt { delivery(5, 5) } else { delivery(1, 5) };
    for _ in 0..most {
        let before = rollout(stack, id).await;
        if before.status != RolloutStatus::Running {
            return before;
        }
        provisioner
            .handle(ProvisioningJob::RolloutBatch { rollout_id: id.to_owned() }, &attempt)
            .await
            .expect("batch");
    }
    rollout(stack, id).await
}

/// The images of the tenant's running tasks.
async fn images(provisioner: &Provisioner, tenant: TenantId) -> Vec<Option<String>> {
    provisioner
        .fleet()
        .running_tenant_tasks(tenant)
        .await
        .expect("tasks")
        .into_iter()
        .map(|t| t.image)
        .collect()
}

#[tokio::test]
async fn a_rollout_across_20_tenants_moves_the_active_ones_and_skips_the_one_deleted_midway() {
    let stack = TestStack::new(&[]).await;
    let mut tenants = Vec::new();
    for _ in 0..20 {
        tenants.push(active(&stack).await);
    }
    let image = "registry.example/isp-framework:2.0.0";
    let queue = stack.platform.provisioning.clone();
    let new = NewRollout { image: image.into(), batch_size: 5, failure_threshold: 0 };
    let started =
        start_rollout(&stack.platform.store, &queue, &admin(), new, time::OffsetDateTime::now_utc())
            .await
            .expect("start");
    assert_eq!(started.total, 20);
    let provisioner = stack.platform.provisioner();
    // The first batch, then a tenant further on is deleted.
    let after_first = run_batches(&provisioner, &stack, &started.id, 1, false).await;
    assert_eq!(after_first.updated, 5, "{after_first:?}");
    let doomed = tenants[17].id;
    let lifecycle =
        dotmac_tenants::Lifecycle { store: stack.platform.store.clone(), provisioning: queue.clone() };
    lifecycle.delete(&admin(), doomed).await.expect("delete");
    provisioner
        .handle(ProvisioningJob::DeprovisionTenant { tenant_id: doomed }, &delivery(1, 5))
        .await
        .expect("deleted");
    // Two copies of the next batch's job at once (a duplicate delivery): they share the
    // batch, a copy that lost a race on a tenant retries, and nobody is counted twice.
    let other = stack.platform.provisioner();
    let job = || ProvisioningJob::RolloutBatch { rollout_id: started.id.clone() };
    let (first, second) = (delivery(1, 5), delivery(1, 5));
    // Either may answer "try again" (a tenant the other copy holds); what counts is the end.
    let _ = tokio::join!(provisioner.handle(job(), &first), other.handle(job(), &second));
    let done = run_batches(&provisioner, &stack, &started.id, 10, false).await;
    assert_eq!(done.status, RolloutStatus::Completed, "{done:?}");
    assert_eq!((done.updated, done.skipped, done.failed), (19, 1, 0), "{done:?}");
    assert!(done.current_batch.is_empty());
    let again = run_batches(&provisioner, &stack, &started.id, 1, false).await;
    assert_eq!((again.updated, again.skipped), (19, 1));
    for tenant in &tenants {
        let record = stack.platform.store.get_tenant_record(tenant.id).await.expect("get").expect("exists");
        if tenant.id == doomed {
            assert_eq!(record.tenant.status, TenantStatus::Deleted);
            assert!(images(&provisioner, tenant.id).await.is_empty());
            continue;
        }
        assert_eq!(record.image.as_deref(), Some(image));
        assert_eq!(
            images(&provisioner, tenant.id).await,
            vec![Some(image.to_owned())],
            "one task, the new image"
        );
        let container = record.tenant.container.expect("container");
        assert_eq!(tenant_task_arns(&stack, tenant).await, vec![container.task_arn]);
        assert!(record.scaling.is_none());
    }
    // The reconcile treats the rollout's image as desired: nothing to repair.
    let report = provisioner.reconcile_fleet("after-rollout", None).await.expect("reconcile");
    assert_eq!(report.repaired, 0, "{report:?}");
}

#[tokio::test]
async fn a_paused_rollout_moves_nobody_until_resumed() {
    let stack = TestStack::new(&[]).await;
    let tenants = [active(&stack).await, active(&stack).await];
    let store = &stack.platform.store;
    let queue = stack.platform.provisioning.clone();
    let new = NewRollout { image: "registry.example/isp:3".into(), batch_size: 1, failure_threshold: 0 };
    let started =
        start_rollout(store, &queue, &admin(), new, time::OffsetDateTime::now_utc()).await.expect("start");
    let paused = set_paused(store, &queue, &admin(), &started.id, true).await.expect("pause");
    assert_eq!(paused.status, RolloutStatus::Paused);
    assert_eq!(
        set_paused(store, &queue, &admin(), &started.id, true).await.expect("again").status,
        RolloutStatus::Paused
    );
    let provisioner = stack.platform.provisioner();
    provisioner
        .handle(ProvisioningJob::RolloutBatch { rollout_id: started.id.clone() }, &delivery(1, 5))
        .await
        .expect("a batch of a paused rollout");
    let still = rollout(&stack, &started.id).await;
    assert_eq!((still.status, still.updated, still.batch_number), (RolloutStatus::Paused, 0, 0));
    for tenant in &tenants {
        assert!(store.get_tenant_record(tenant.id).await.expect("get").expect("exists").image.is_none());
    }
    let resumed = set_paused(store, &queue, &admin(), &started.id, false).await.expect("resume");
    assert_eq!(resumed.status, RolloutStatus::Running);
    let done = run_batches(&provisioner, &stack, &started.id, 10, false).await;
    assert_eq!((done.status, done.updated), (RolloutStatus::Completed, 2), "{done:?}");
    // A finished rollout is neither paused nor resumed.
    assert!(set_paused(store, &queue, &admin(), &started.id, true).await.is_err());
}

#[tokio::test]
async fn a_rollout_stops_failed_past_its_failure_threshold() {
    let stack = TestStack::new(&[]).await;
    let tenants = [active(&stack).await, active(&stack).await, active(&stack).await];
    let queue = stack.platform.provisioning.clone();
    let new = NewRollout { image: "registry.example/isp:broken".into(), batch_size: 1, failure_threshold: 1 };
    let started =
        start_rollout(&stack.platform.store, &queue, &admin(), new, time::OffsetDateTime::now_utc())
            .await
            .expect("start");
    // Every move fails (as a replacement that never comes up would), on its last attempt.
    let failing =
        stack.platform.provisioner().with_fault_hook(Arc::new(|step: &str| step == "rollout.after_image"));
    let done = run_batches(&failing, &stack, &started.id, 10, true).await;
    assert_eq!(done.status, RolloutStatus::Failed, "{done:?}");
    assert_eq!((done.failed, done.updated), (2, 0), "one failure tolerated, the second stops it");
    assert_eq!(done.failures.len(), 2);
    assert!(done.failures[0].reason.contains("injected crash"), "{:?}", done.failures);
    assert!(done.reason.is_some());
    // The third tenant was never reached; nothing runs twice.
    let third = stack.platform.store.get_tenant_record(tenants[2].id).await.expect("get").expect("exists");
    assert!(third.image.is_none());
    for tenant in &tenants {
        assert_eq!(tenant_task_arns(&stack, tenant).await.len(), 1);
    }
    // A batch job delivered after the end does nothing.
    let after = run_batches(&stack.platform.provisioner(), &stack, &started.id, 1, false).await;
    assert_eq!((after.failed, after.updated), (2, 0));
}

#[tokio::test]
async fn the_rollout_routes_are_platform_staffs_and_show_progress() {
    let app = TestApp::spawn().await;
    let admin = app.admin_token().await;
    let body = json!({ "image": "registry.example/isp:4", "batch_size": 10 });
    let (status, created) = app.send(Method::POST, "/v1/fleet/rollouts", Some(&admin), Some(&body)).await;
    assert_eq!(status, 202, "{created}");
    assert_eq!(created["status"], "running");
    let id = created["id"].as_str().expect("id").to_owned();
    let (status, shown) = app.get_json(&admin, &format!("/v1/fleet/rollouts/{id}")).await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["image"], "registry.example/isp:4");
    for key in ["total", "updated", "skipped", "failed", "failures", "current_batch", "status"] {
        assert!(shown.get(key).is_some(), "{key} in {shown}");
    }
    let (status, missing) = app.get_json(&admin, "/v1/fleet/rollouts/no-such-rollout").await;
    assert_eq!(status, 404, "{missing}");
    assert_eq!(missing["error"]["code"], "ROLLOUT_NOT_FOUND");
    let (status, bad) = app
        .send(
            Method::POST,
            "/v1/fleet/rollouts",
            Some(&admin),
            Some(&json!({ "image": "", "batch_size": 10 })),
        )
        .await;
    assert_eq!(status, 422, "{bad}");
    // A tenant's own admin may not.
    let tenant = app.onboarded_tenant(&admin).await;
    let tenant_admin = app.user_token("rollout-tenant-admin@example.com", tenant, Role::TenantAdmin).await;
    let (status, denied) =
        app.send(Method::POST, "/v1/fleet/rollouts", Some(&tenant_admin), Some(&body)).await;
    assert_eq!(status, 403, "{denied}");
    let (status, _) =
        app.send(Method::POST, &format!("/v1/fleet/rollouts/{id}/pause"), Some(&tenant_admin), None).await;
    assert_eq!(status, 403);
    app.shutdown().await;
}
