//! The tenant lifecycle end to end on the emulator: suspend, resume and delete through the
//! API and their jobs, every illegal request refused (409, nothing changed), every job
//! delivered twice, a crash after every step of every operation and an emulator that stops
//! answering mid-operation, then the events read back from an EventBridge rule's SQS target.

use crate::provisioner::{delivery, onboarded, tenant_task_arns};
use aws_sdk_ecs::types::TaskDefinitionStatus;
use dotmac_domain::{Caller, Role, SuspensionReason, Tenant, TenantId, TenantStatus};
use dotmac_provisioner::{ContainerCredentials, Fault, Operation, Provisioner};
use dotmac_queue::{Delivery, JobError, JobHandler, ProvisioningJob};
use dotmac_secrets::{SecretState, TenantSecrets};
use dotmac_tenants::{Actor, Lifecycle};
use dotmac_tests::{TestApp, TestStack};
use http::Method;
use serde_json::{Value, json};
use std::time::Duration;

fn admin() -> Caller {
    Caller::new("platform-admin", None, &[Role::PlatformAdmin])
}

fn lifecycle(stack: &TestStack) -> Lifecycle {
    Lifecycle { store: stack.platform.store.clone(), provisioning: stack.platform.provisioning.clone() }
}

/// One job's delivery, the same job id every time: what SQS redelivers after a crash.
fn attempt(job_id: uuid::Uuid, receive_count: u32) -> Delivery {
    Delivery { job_id: Some(job_id), ..delivery(receive_count, 5) }
}

/// A tenant onboarded and provisioned (active, its task running).
async fn active_tenant(stack: &TestStack) -> Tenant {
    let tenant = onboarded(stack, "usage").await;
    stack
        .platform
        .provisioner()
        .handle(ProvisioningJob::ProvisionTenant { tenant_id: tenant.id }, &delivery(1, 5))
        .await
        .expect("provisioned");
    stored(stack, tenant.id).await
}

async fn stored(stack: &TestStack, id: TenantId) -> Tenant {
    stack.platform.store.get_tenant(id).await.expect("get").expect("exists")
}

/// The tenant's task definition revisions ECS lists with `status`.
async fn definitions(stack: &TestStack, id: TenantId, status: TaskDefinitionStatus) -> Vec<String> {
    let family = format!("{}-{id}", stack.config().ecs.task_family);
    aws_sdk_ecs::Client::new(&stack.sdk)
        .list_task_definitions()
        .family_prefix(&family)
        .status(status)
        .send()
        .await
        .expect("ListTaskDefinitions")
        .task_definition_arns
        .unwrap_or_default()
}

async fn secret_state(stack: &TestStack, id: TenantId) -> SecretState {
    stack.platform.tenant_secrets().state(id).await.expect("DescribeSecret")
}

/// A provisioner like the stack's, its ECS or Secrets Manager calls sent to `ecs` / `secrets`
/// endpoints (a dead port plays an emulator that is down).
fn provisioner_via(stack: &TestStack, ecs: Option<&str>, secrets: Option<&str>) -> Provisioner {
    let ecs_config = match ecs {
        Some(endpoint) => aws_sdk_ecs::config::Builder::from(&stack.sdk).endpoint_url(endpoint).build(),
        None => aws_sdk_ecs::config::Builder::from(&stack.sdk).build(),
    };
    let secrets_config = match secrets {
        Some(endpoint) => {
            aws_sdk_secretsmanager::config::Builder::from(&stack.sdk).endpoint_url(endpoint).build()
        }
        None => aws_sdk_secretsmanager::config::Builder::from(&stack.sdk).build(),
    };
    Provisioner::new(
        stack.platform.store.clone(),
        aws_sdk_ecs::Client::from_conf(ecs_config),
        stack.config().ecs.clone(),
        ContainerCredentials {
            secrets: TenantSecrets::new(
                aws_sdk_secretsmanager::Client::from_conf(secrets_config),
                &stack.config().tenant_secret_prefix,
            ),
            keys: stack.platform.keys.clone(),
            ttl_seconds: stack.config().machine_token_ttl_seconds,
            license_ttl_seconds: stack.config().license_ttl_seconds,
        },
    )
}

/// An address nothing listens on.
async fn dead_endpoint() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("addr");
    drop(listener);
    format!("http://{address}")
}

/// Suspended for `reason`, its suspend job run: the task stopped, all else kept.
async fn suspended_tenant(stack: &TestStack) -> Tenant {
    let tenant = active_tenant(stack).await;
    lifecycle(stack)
        .suspend(Actor::Caller(&admin()), tenant.id, SuspensionReason::Admin)
        .await
        .expect("suspend");
    stack
        .platform
        .provisioner()
        .handle(ProvisioningJob::SuspendTenant { tenant_id: tenant.id }, &delivery(1, 5))
        .await
        .expect("stopped");
    stored(stack, tenant.id).await
}

/// What every suspended tenant looks like once its job ran: no task, secret and definition
/// kept, the record says so.
async fn assert_suspended(stack: &TestStack, tenant: &Tenant) {
    let now = stored(stack, tenant.id).await;
    assert_eq!(now.status, TenantStatus::Suspended);
    assert_eq!(now.container.as_ref().map(|c| c.last_status.as_str()), Some("STOPPED"), "{now:?}");
    assert!(tenant_task_arns(stack, tenant).await.is_empty(), "no task runs");
    assert_eq!(secret_state(stack, tenant.id).await, SecretState::Live, "the secret stays");
    assert_eq!(
        definitions(stack, tenant.id, TaskDefinitionStatus::Active).await.len(),
        1,
        "the definition stays"
    );
}

/// Active again, one task of the tenant's own family running, the same secret.
async fn assert_running_once(stack: &TestStack, tenant: &Tenant, secret_arn: &Option<String>) {
    let now = stored(stack, tenant.id).await;
    assert_eq!(now.status, TenantStatus::Active);
    let container = now.container.clone().expect("container");
    assert_eq!(container.last_status, "RUNNING");
    assert_eq!(tenant_task_arns(stack, tenant).await, vec![container.task_arn.clone()], "exactly one task");
    let family = format!("{}-{}", stack.config().ecs.task_family, tenant.id);
    assert!(container.task_definition_arn.contains(&format!("task-definition/{family}:")), "{container:?}");
    assert_eq!(&now.secret_arn, secret_arn, "the same secret");
    let record = stack.platform.store.get_tenant_record(tenant.id).await.expect("get").expect("exists");
    assert!(record.lease.is_none(), "the job's lease is freed");
}

/// Deleted: no task, no active definition, the secret scheduled for deletion, the machine
/// token refused, the record kept.
async fn assert_deleted(stack: &TestStack, tenant: &Tenant, token_id: &str) {
    let now = stored(stack, tenant.id).await;
    assert_eq!(now.status, TenantStatus::Deleted, "{now:?}");
    assert!(now.container.is_none());
    assert_eq!(now.slug, tenant.slug, "the record stays, slug and all");
    assert!(tenant_task_arns(stack, tenant).await.is_empty(), "no orphan task");
    assert!(
        definitions(stack, tenant.id, TaskDefinitionStatus::Active).await.is_empty(),
        "definitions deregistered"
    );
    assert!(!definitions(stack, tenant.id, TaskDefinitionStatus::Inactive).await.is_empty());
    assert_eq!(
        secret_state(stack, tenant.id).await,
        SecretState::ScheduledForDeletion,
        "secret deleted, recoverable"
    );
    let now_s = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!(
        stack.platform.store.is_token_denied(token_id, now_s).await.expect("deny-list"),
        "machine token revoked"
    );
}

async fn token_id(stack: &TestStack, id: TenantId) -> String {
    stack.platform.tenant_secrets().read(id).await.expect("read").expect("credentials").token_id
}

#[tokio::test]
async fn suspend_keeps_everything_but_the_task_and_resume_runs_it_again_with_the_same_identity() {
    let stack = TestStack::new(&[]).await;
    let tenant = active_tenant(&stack).await;
    let before = tenant.container.clone().expect("container");
    let suspended = lifecycle(&stack)
        .suspend(Actor::Caller(&admin()), tenant.id, SuspensionReason::Admin)
        .await
        .expect("suspend");
    assert_eq!(
        (suspended.status, suspended.suspended_for.clone()),
        (TenantStatus::Suspended, vec![SuspensionReason::Admin])
    );
    stack
        .platform
        .provisioner()
        .handle(ProvisioningJob::SuspendTenant { tenant_id: tenant.id }, &delivery(1, 5))
        .await
        .expect("stopped");
    assert_suspended(&stack, &tenant).await;

    let resumed = lifecycle(&stack).resume(Actor::Caller(&admin()), tenant.id, None).await.expect("resume");
    assert_eq!(resumed.status, TenantStatus::Active);
    stack
        .platform
        .provisioner()
        .handle(
            ProvisioningJob::ResumeTenant { tenant_id: tenant.id, version: resumed.version },
            &delivery(1, 5),
        )
        .await
        .expect("started");
    assert_running_once(&stack, &tenant, &tenant.secret_arn).await;
    let after = stored(&stack, tenant.id).await.container.expect("container");
    assert_ne!(after.task_arn, before.task_arn, "a new task");
    assert_eq!(after.task_definition_arn, before.task_definition_arn, "of the same definition");
}

#[tokio::test]
async fn billing_suspends_for_non_payment_and_only_a_resume_for_it_lifts_it() {
    let stack = TestStack::new(&[]).await;
    let tenant = active_tenant(&stack).await;
    let use_case = lifecycle(&stack);
    let refused = use_case.suspend(Actor::Billing, tenant.id, SuspensionReason::Admin).await;
    assert!(matches!(refused, Err(dotmac_tenants::TenantLifecycleError::NotBillingsReason)), "{refused:?}");
    use_case.suspend(Actor::Billing, tenant.id, SuspensionReason::NonPayment).await.expect("suspended");
    use_case.suspend(Actor::Caller(&admin()), tenant.id, SuspensionReason::Admin).await.expect("and held");
    // An admin's plain resume lifts the admin hold only.
    let still = use_case.resume(Actor::Caller(&admin()), tenant.id, None).await.expect("lifted");
    assert_eq!(
        (still.status, still.suspended_for.clone()),
        (TenantStatus::Suspended, vec![SuspensionReason::NonPayment])
    );
    let before = stored(&stack, tenant.id).await;
    let refused = use_case.resume(Actor::Caller(&admin()), tenant.id, None).await;
    assert!(matches!(refused, Err(dotmac_tenants::TenantLifecycleError::Conflict { .. })), "{refused:?}");
    assert_eq!(stored(&stack, tenant.id).await, before, "unchanged");
    let paid =
        use_case.resume(Actor::Billing, tenant.id, Some(SuspensionReason::NonPayment)).await.expect("paid");
    assert_eq!(paid.status, TenantStatus::Active);
    let events = stack
        .platform
        .store
        .tenant_events(tenant.id, dotmac_store::EventOrder::OldestFirst, 50, None)
        .await
        .expect("events");
    let types: Vec<_> = events.items.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "tenant.created",
            "tenant.provisioned",
            "tenant.suspended",
            "tenant.suspension_changed",
            "tenant.suspension_changed",
            "tenant.resumed"
        ]
    );
    let sequences: Vec<u64> = events.items.iter().map(|e| e.sequence).collect();
    assert!(sequences.windows(2).all(|w| w[0] < w[1]), "{sequences:?}");
    assert_eq!(events.items.last().map(|e| e.sequence), Some(paid.version), "sequence = the version it left");
}

#[tokio::test]
async fn every_job_delivered_twice_or_late_does_its_work_once() {
    let stack = TestStack::new(&[]).await;
    let provisioner = stack.platform.provisioner();
    let tenant = active_tenant(&stack).await;
    let secret_arn = tenant.secret_arn.clone();
    let use_case = lifecycle(&stack);
    use_case.suspend(Actor::Caller(&admin()), tenant.id, SuspensionReason::Admin).await.expect("suspend");
    let suspend = || ProvisioningJob::SuspendTenant { tenant_id: tenant.id };
    // The same message twice at once (SQS may), then once more late.
    let job_id = uuid::Uuid::now_v7();
    let (first, second) = (attempt(job_id, 1), attempt(job_id, 1));
    let (a, b) = tokio::join!(provisioner.handle(suspend(), &first), provisioner.handle(suspend(), &second));
    assert!(a.is_ok() || b.is_ok(), "{a:?} {b:?}");
    provisioner.handle(suspend(), &delivery(2, 5)).await.expect("late copy");
    assert_suspended(&stack, &tenant).await;

    let resumed = use_case.resume(Actor::Caller(&admin()), tenant.id, None).await.expect("resume");
    let resume = || ProvisioningJob::ResumeTenant { tenant_id: tenant.id, version: resumed.version };
    let job_id = uuid::Uuid::now_v7();
    let (first, second) = (attempt(job_id, 1), attempt(job_id, 1));
    let (a, b) = tokio::join!(provisioner.handle(resume(), &first), provisioner.handle(resume(), &second));
    for outcome in [&a, &b] {
        assert!(matches!(outcome, Ok(()) | Err(JobError::Retry(_))), "{outcome:?}");
    }
    provisioner.handle(resume(), &delivery(2, 5)).await.expect("redelivered");
    // The suspend job delivered again after the resume: the tenant is active, nothing stops.
    provisioner.handle(suspend(), &delivery(3, 5)).await.expect("stale suspend");
    assert_running_once(&stack, &tenant, &secret_arn).await;

    let token = token_id(&stack, tenant.id).await;
    use_case.delete(&admin(), tenant.id).await.expect("delete");
    let deprovision = || ProvisioningJob::DeprovisionTenant { tenant_id: tenant.id };
    let job_id = uuid::Uuid::now_v7();
    let (first, second) = (attempt(job_id, 1), attempt(job_id, 1));
    let (a, b) =
        tokio::join!(provisioner.handle(deprovision(), &first), provisioner.handle(deprovision(), &second));
    for outcome in [&a, &b] {
        assert!(matches!(outcome, Ok(()) | Err(JobError::Retry(_))), "{outcome:?}");
    }
    provisioner.handle(deprovision(), &delivery(2, 5)).await.expect("redelivered");
    // A resume job delivered after the delete does nothing either.
    provisioner.handle(resume(), &delivery(4, 5)).await.expect("stale resume");
    assert_deleted(&stack, &tenant, &token).await;
    let version = stored(&stack, tenant.id).await.version;
    provisioner.handle(deprovision(), &delivery(3, 5)).await.expect("after the end");
    assert_eq!(stored(&stack, tenant.id).await.version, version, "a late copy writes nothing");
}

/// Arms the crash after `step` of `operation`, runs the job into it, then redelivers the same
/// job to a healthy provisioner.
async fn crash_then_redeliver(stack: &TestStack, job: ProvisioningJob, operation: Operation, step: u32) {
    let job_id = uuid::Uuid::now_v7();
    let crashing = stack.platform.provisioner().with_fault(Fault { operation, after_step: step });
    let crashed = crashing.handle(job.clone(), &attempt(job_id, 1)).await;
    assert!(
        matches!(&crashed, Err(JobError::Retry(reason)) if reason.contains("injected fault")),
        "{operation:?} step {step}: {crashed:?}"
    );
    stack
        .platform
        .provisioner()
        .handle(job, &attempt(job_id, 2))
        .await
        .unwrap_or_else(|e| panic!("{operation:?} after step {step}: {e}"));
}

#[tokio::test]
async fn a_crash_after_any_step_of_suspend_or_resume_heals_on_redelivery() {
    let stack = TestStack::new(&[]).await;
    for step in 1..=2 {
        let tenant = active_tenant(&stack).await;
        lifecycle(&stack)
            .suspend(Actor::Caller(&admin()), tenant.id, SuspensionReason::Admin)
            .await
            .expect("suspend");
        crash_then_redeliver(
            &stack,
            ProvisioningJob::SuspendTenant { tenant_id: tenant.id },
            Operation::Suspend,
            step,
        )
        .await;
        assert_suspended(&stack, &tenant).await;
    }
    for step in 1..=4 {
        let tenant = suspended_tenant(&stack).await;
        let resumed =
            lifecycle(&stack).resume(Actor::Caller(&admin()), tenant.id, None).await.expect("resume");
        let job = ProvisioningJob::ResumeTenant { tenant_id: tenant.id, version: resumed.version };
        crash_then_redeliver(&stack, job, Operation::Resume, step).await;
        // After step 2 (RunTask done, nothing recorded) the retry adopts that task.
        assert_running_once(&stack, &tenant, &tenant.secret_arn).await;
    }
}

#[tokio::test]
async fn a_crash_after_any_step_of_the_delete_saga_heals_on_redelivery() {
    let stack = TestStack::new(&[]).await;
    for step in 1..=5 {
        let tenant = if step % 2 == 0 { suspended_tenant(&stack).await } else { active_tenant(&stack).await };
        let token = token_id(&stack, tenant.id).await;
        lifecycle(&stack).delete(&admin(), tenant.id).await.expect("delete");
        crash_then_redeliver(
            &stack,
            ProvisioningJob::DeprovisionTenant { tenant_id: tenant.id },
            Operation::Deprovision,
            step,
        )
        .await;
        assert_deleted(&stack, &tenant, &token).await;
    }
}

#[tokio::test]
async fn an_emulator_down_mid_operation_fails_the_attempt_and_the_next_one_finishes() {
    let stack = TestStack::new(&[]).await;
    let dead = dead_endpoint().await;
    // Secrets Manager down: the saga stops the task and deregisters the definition, then
    // fails at the token; the next delivery carries on.
    let tenant = active_tenant(&stack).await;
    let token = token_id(&stack, tenant.id).await;
    lifecycle(&stack).delete(&admin(), tenant.id).await.expect("delete");
    let job = ProvisioningJob::DeprovisionTenant { tenant_id: tenant.id };
    let down = provisioner_via(&stack, None, Some(&dead)).handle(job.clone(), &delivery(1, 5)).await;
    assert!(matches!(down, Err(JobError::Retry(_))), "{down:?}");
    assert!(tenant_task_arns(&stack, &tenant).await.is_empty(), "the steps before the outage are done");
    assert_eq!(stored(&stack, tenant.id).await.status, TenantStatus::Deprovisioning);
    stack.platform.provisioner().handle(job, &delivery(2, 5)).await.expect("recovered");
    assert_deleted(&stack, &tenant, &token).await;

    // ECS down while resuming: nothing starts; back up, exactly one task.
    let tenant = suspended_tenant(&stack).await;
    let resumed = lifecycle(&stack).resume(Actor::Caller(&admin()), tenant.id, None).await.expect("resume");
    let job = ProvisioningJob::ResumeTenant { tenant_id: tenant.id, version: resumed.version };
    let down = provisioner_via(&stack, Some(&dead), None).handle(job.clone(), &delivery(1, 5)).await;
    assert!(matches!(down, Err(JobError::Retry(_))), "{down:?}");
    stack.platform.provisioner().handle(job, &delivery(2, 5)).await.expect("recovered");
    assert_running_once(&stack, &tenant, &tenant.secret_arn).await;
}

/// The last attempt of a delete saga that keeps failing leaves the tenant `failed` with the
/// reason, from where a new DELETE runs the saga again.
#[tokio::test]
async fn a_delete_that_fails_for_good_marks_the_tenant_failed_and_can_be_run_again() {
    let stack = TestStack::new(&[]).await;
    let dead = dead_endpoint().await;
    let tenant = active_tenant(&stack).await;
    let token = token_id(&stack, tenant.id).await;
    lifecycle(&stack).delete(&admin(), tenant.id).await.expect("delete");
    let job = ProvisioningJob::DeprovisionTenant { tenant_id: tenant.id };
    let last = provisioner_via(&stack, None, Some(&dead)).handle(job.clone(), &delivery(5, 5)).await;
    assert!(matches!(last, Err(JobError::Retry(_))), "{last:?}");
    let failed = stored(&stack, tenant.id).await;
    assert_eq!(failed.status, TenantStatus::Failed);
    assert!(failed.failure_reason.as_deref().is_some_and(|r| r.contains("Secrets Manager")), "{failed:?}");
    lifecycle(&stack).delete(&admin(), tenant.id).await.expect("delete again");
    stack.platform.provisioner().handle(job, &delivery(1, 5)).await.expect("deleted");
    assert_deleted(&stack, &tenant, &token).await;
}

/// An EventBridge rule on the stack's bus sending the platform's events (every `source:
/// dotmac.platform` entry, tenants' and the platform's own) to a new SQS queue.
pub(crate) async fn events_queue(stack: &TestStack) -> (aws_sdk_sqs::Client, String) {
    let sqs = aws_sdk_sqs::Client::new(&stack.sdk);
    let name = format!("{}-events-probe", stack.local.prefix);
    let url = sqs.create_queue().queue_name(&name).send().await.expect("queue").queue_url.expect("url");
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("attributes")
        .attributes
        .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn).cloned())
        .expect("arn");
    let events = aws_sdk_eventbridge::Client::new(&stack.sdk);
    let bus = &stack.config().event_bus_name;
    let rule = format!("{}-tenant-events", stack.local.prefix);
    let pattern = json!({ "source": [dotmac_publisher::EVENT_SOURCE] }).to_string();
    events.put_rule().name(&rule).event_bus_name(bus).event_pattern(pattern).send().await.expect("rule");
    events
        .put_targets()
        .rule(&rule)
        .event_bus_name(bus)
        .targets(aws_sdk_eventbridge::types::Target::builder().id("probe").arn(arn).build().expect("target"))
        .send()
        .await
        .expect("target");
    (sqs, url)
}

/// Every envelope the queue holds now (the `detail` of each EventBridge event), in the order
/// received, until `done` holds.
pub(crate) async fn received(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let mut all = Vec::new();
    for _ in 0..60 {
        let output = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .expect("receive");
        for message in output.messages.unwrap_or_default() {
            let event: Value =
                serde_json::from_str(message.body().unwrap_or_default()).expect("an EventBridge event");
            assert_eq!(event["source"], dotmac_publisher::EVENT_SOURCE);
            assert_eq!(event["detail-type"], event["detail"]["type"]);
            all.push(event["detail"].clone());
            sqs.delete_message()
                .queue_url(url)
                .receipt_handle(message.receipt_handle().unwrap_or_default())
                .send()
                .await
                .expect("delete");
        }
        if done(&all) {
            break;
        }
    }
    all
}

#[tokio::test]
async fn the_api_walkthrough_suspends_resumes_deletes_and_every_event_reaches_eventbridge_in_order() {
    let app = TestApp::spawn().await;
    let (sqs, url) = events_queue(&app.stack).await;
    let admin = app.admin_token().await;
    let id = app.onboarded_tenant(&admin).await.to_string();
    let wait = Duration::from_secs(60);
    app.wait_for_tenant(&admin, &id, wait, |t| t["status"] == "active").await;

    let (status, body) = app
        .send(
            Method::POST,
            &format!("/v1/tenants/{id}/suspend"),
            Some(&admin),
            Some(&json!({ "reason": "admin" })),
        )
        .await;
    assert_eq!((status, body["status"].clone()), (202, json!("suspended")), "{body}");
    assert_eq!(body["suspended_for"], json!(["admin"]), "{body}");
    app.wait_for_tenant(&admin, &id, wait, |t| t["container"]["last_status"] == "STOPPED").await;

    let (status, body) =
        app.send(Method::POST, &format!("/v1/tenants/{id}/resume"), Some(&admin), Some(&json!({}))).await;
    assert_eq!((status, body["status"].clone()), (202, json!("active")), "{body}");
    app.wait_for_tenant(&admin, &id, wait, |t| {
        t["container"]["last_status"] == "RUNNING" && t["failure_reason"].is_null()
    })
    .await;

    let (status, body) = app.send(Method::DELETE, &format!("/v1/tenants/{id}"), Some(&admin), None).await;
    assert_eq!((status, body["status"].clone()), (202, json!("deprovisioning")), "{body}");
    app.wait_for_tenant(&admin, &id, wait, |t| t["status"] == "deleted").await;

    let expected = [
        "tenant.created",
        "tenant.provisioned",
        "tenant.suspended",
        "tenant.resumed",
        "tenant.deprovisioning",
        "tenant.deleted",
    ];
    let (status, oldest) = app.get_json(&admin, &format!("/v1/tenants/{id}/events?order=oldest")).await;
    assert_eq!(status, 200, "{oldest}");
    let types = |page: &Value| {
        page["items"].as_array().map(|i| i.iter().map(|e| e["type"].clone()).collect::<Vec<_>>())
    };
    assert_eq!(types(&oldest), Some(expected.iter().map(|t| json!(t)).collect()), "{oldest}");
    let (_, newest) = app.get_json(&admin, &format!("/v1/tenants/{id}/events?limit=2")).await;
    assert_eq!(
        types(&newest),
        Some(vec![json!("tenant.deleted"), json!("tenant.deprovisioning")]),
        "{newest}"
    );
    let cursor = newest["next_cursor"].as_str().expect("a next page");
    let (_, next) = app
        .get_json(
            &admin,
            &dotmac_tests::with_query(&format!("/v1/tenants/{id}/events?limit=2"), "cursor", cursor),
        )
        .await;
    assert_eq!(types(&next), Some(vec![json!("tenant.resumed"), json!("tenant.suspended")]), "{next}");
    let (status, bad) = app.get_json(&admin, &format!("/v1/tenants/{id}/events?order=sideways")).await;
    assert_eq!(status, 422, "{bad}");

    // The dev server's publisher loop puts them on the bus; the rule's queue gets them all, in
    // the tenant's order.
    let ours =
        |all: &[Value]| all.iter().filter(|e| e["tenant_id"] == json!(id)).cloned().collect::<Vec<_>>();
    let all = received(&sqs, &url, |all| ours(all).len() >= expected.len()).await;
    let mine = ours(&all);
    let published: Vec<_> = mine.iter().map(|e| e["type"].as_str().unwrap_or_default().to_owned()).collect();
    assert_eq!(published, expected, "{mine:?}");
    for event in &mine {
        assert_eq!(event["version"], 1);
        assert!(event["id"].as_str().is_some_and(|id| uuid::Uuid::parse_str(id).is_ok()), "{event}");
        assert!(event["occurred_at"].as_str().is_some(), "{event}");
        assert!(event["data"].is_object(), "{event}");
    }
    let sequences: Vec<u64> = mine.iter().filter_map(|e| e["sequence"].as_u64()).collect();
    assert!(sequences.windows(2).all(|w| w[0] < w[1]), "in order: {sequences:?}");
    // Published once each: the outbox is empty for this tenant.
    let pending = app.stack.platform.store.unpublished_events(200).await.expect("outbox");
    assert!(pending.iter().all(|e| e.tenant_id.to_string() != id), "{pending:?}");
    app.shutdown().await;
}

/// Each illegal request: a 409 naming the status (and the reasons left), the record as it was.
#[tokio::test]
async fn illegal_requests_answer_409_with_the_status_and_change_nothing() {
    let app = TestApp::spawn().await;
    let admin = app.admin_token().await;
    let store = &app.stack.platform.store;
    let suspend = json!({ "reason": "admin" });
    // Tenants written straight to the store in each status (no job runs for them).
    for status in [
        TenantStatus::Provisioning,
        TenantStatus::Deprovisioning,
        TenantStatus::Deleted,
        TenantStatus::Failed,
    ] {
        let tenant = onboarded(&app.stack, "usage").await;
        let mut record = store.get_tenant_record(tenant.id).await.expect("get").expect("exists");
        record.tenant.status = status;
        store.save_tenant(&mut record).await.expect("status");
        let id = tenant.id;
        let mut refused = vec![
            (Method::POST, format!("/v1/tenants/{id}/suspend"), Some(suspend.clone())),
            (Method::POST, format!("/v1/tenants/{id}/resume"), Some(json!({}))),
        ];
        if matches!(status, TenantStatus::Provisioning | TenantStatus::Deleted) {
            refused.push((Method::DELETE, format!("/v1/tenants/{id}"), None));
        }
        for (method, path, body) in refused {
            let before = store.get_tenant_record(id).await.expect("get");
            let answer = app.exchange(method.clone(), &path, Some(&admin), body.as_ref()).await;
            answer.assert_error(409, "TENANT_STATE_CONFLICT");
            assert_eq!(
                answer.json["error"]["details"]["status"],
                json!(status),
                "{method} {path}: {}",
                answer.text
            );
            assert_eq!(
                store.get_tenant_record(id).await.expect("get"),
                before,
                "{method} {path} changed the tenant"
            );
        }
    }
    // Suspended for non-payment: a plain resume lifts nothing.
    let tenant = onboarded(&app.stack, "usage").await;
    let mut record = store.get_tenant_record(tenant.id).await.expect("get").expect("exists");
    record.tenant.status = TenantStatus::Suspended;
    record.tenant.suspended_for = vec![SuspensionReason::NonPayment];
    store.save_tenant(&mut record).await.expect("status");
    let before = store.get_tenant_record(tenant.id).await.expect("get");
    let answer = app
        .exchange(Method::POST, &format!("/v1/tenants/{}/resume", tenant.id), Some(&admin), Some(&json!({})))
        .await;
    answer.assert_error(409, "TENANT_STATE_CONFLICT");
    assert_eq!(answer.json["error"]["details"]["suspended_for"], json!(["non_payment"]), "{}", answer.text);
    assert_eq!(store.get_tenant_record(tenant.id).await.expect("get"), before);
    // Unknown reasons and tenants.
    let answer = app
        .exchange(
            Method::POST,
            &format!("/v1/tenants/{}/suspend", tenant.id),
            Some(&admin),
            Some(&json!({ "reason": "boredom" })),
        )
        .await;
    assert_eq!(answer.status, 422, "{}", answer.text);
    let answer = app
        .exchange(
            Method::POST,
            &format!("/v1/tenants/{}/suspend", TenantId::generate()),
            Some(&admin),
            Some(&suspend),
        )
        .await;
    answer.assert_error(404, "TENANT_NOT_FOUND");
    app.shutdown().await;
}

/// A tenant's own admin may read its events but neither suspend, resume nor delete its own
/// tenant (that would undo a suspension for non-payment).
#[tokio::test]
async fn a_tenant_admin_reads_its_own_events_but_cannot_suspend_or_delete_its_own_tenant() {
    let app = TestApp::spawn().await;
    let admin = app.admin_token().await;
    let tenant = app.onboarded_tenant(&admin).await;
    let own = app.user_token("admin@own.example", tenant, Role::TenantAdmin).await;
    let before = app.stack.platform.store.get_tenant_record(tenant).await.expect("get");
    for (method, path, body) in [
        (Method::POST, format!("/v1/tenants/{tenant}/suspend"), Some(json!({ "reason": "tenant_request" }))),
        (Method::POST, format!("/v1/tenants/{tenant}/resume"), Some(json!({}))),
        (Method::DELETE, format!("/v1/tenants/{tenant}"), None),
    ] {
        app.exchange(method, &path, Some(&own), body.as_ref()).await.assert_error(403, "FORBIDDEN");
    }
    let (status, events) = app.get_json(&own, &format!("/v1/tenants/{tenant}/events")).await;
    assert_eq!(status, 200, "{events}");
    assert!(events["items"].as_array().is_some_and(|items| !items.is_empty()), "{events}");
    let after = app.stack.platform.store.get_tenant_record(tenant).await.expect("get");
    // Provisioning may have moved it on meanwhile; the refused requests wrote no event.
    let lifecycle_events = events["items"].as_array().map(|items| {
        items
            .iter()
            .filter(|e| e["type"].as_str().is_some_and(|t| t.contains("suspen") || t.contains("deprovision")))
            .count()
    });
    assert_eq!(lifecycle_events, Some(0), "{events}");
    assert!(before.is_some() && after.is_some());
    app.shutdown().await;
}
