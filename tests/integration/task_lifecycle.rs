//! The provisioner against tasks that do not simply start: slowly, never, or only to exit.
//!
//! A small ECS proxy sits between the provisioner under test and the emulator and rewrites
//! what DescribeTasks reports, task by task, and records every request it relays.
//!
//! Why not moto's state manager (`/moto-api/state-manager/set-transition`):
//! - moto's `ecs::task` model is born RUNNING (its PROVISIONING → PENDING → ACTIVATING steps
//!   are commented out in `moto/ecs/models.py`); a transition only walks it on through
//!   DEACTIVATING → STOPPING → DEPROVISIONING → STOPPED. No transition makes a task take
//!   polls before RUNNING, or never reach it.
//! - A transition is one setting per model name for the whole emulator
//!   (`StateManager._transitions[model_name]`), read on every status access of every task,
//!   while each task counts its own DescribeTasks calls. Setting `manual`/`times: 1` for one
//!   test would walk every other test's task (they run in parallel on the same emulator and
//!   have been described at least once) towards STOPPED. Serialising would need every test
//!   that starts a task to take the lock.
//!
//! The proxy changes only the answers its own provisioner sees; the tasks themselves are
//! the emulator's, and every assertion about them reads ECS directly, not through the proxy.

use crate::provisioner::{delivery, onboarded};
use aws_sdk_ecs::types::Task;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use dotmac_domain::{Tenant, TenantStatus};
use dotmac_provisioner::{ContainerCredentials, Provisioner};
use dotmac_queue::{JobError, JobHandler, ProvisioningJob};
use dotmac_tests::TestStack;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

const ECS_TARGET_PREFIX: &str = "AmazonEC2ContainerServiceV20141113.";

/// What the proxy answers to the n-th DescribeTasks (counting from 0) of one task.
#[derive(Clone, Copy, Debug)]
enum Reported {
    /// The emulator's own answer: RUNNING, unless someone stopped the task.
    AsTheEmulatorSays,
    /// The task is in this `lastStatus` (still starting, or already winding down).
    Status(&'static str),
    /// The container exits: the proxy stops the task on the emulator (StopTask with this
    /// reason) and then relays the DescribeTasks, so the answer is the emulator's STOPPED task.
    ExitsWith(&'static str),
}

type Script = Box<dyn Fn(usize) -> Reported + Send + Sync>;

struct Relay {
    upstream: String,
    http: reqwest::Client,
    script: Script,
    describes: Mutex<HashMap<String, usize>>,
    /// Every relayed request: (operation, JSON body).
    requests: Mutex<Vec<(String, Value)>>,
    fail_next_run_task: AtomicBool,
    hold_next_run_task: Mutex<Option<(oneshot::Sender<()>, oneshot::Receiver<()>)>>,
}

/// A RunTask the proxy keeps waiting: `arrived` fires when it reaches the proxy, and it goes
/// on once `release` is sent (or dropped).
struct HeldRunTask {
    arrived: oneshot::Receiver<()>,
    release: oneshot::Sender<()>,
}

struct EcsProxy {
    relay: Arc<Relay>,
    endpoint: String,
    server: tokio::task::JoinHandle<()>,
}

impl EcsProxy {
    async fn start(script: impl Fn(usize) -> Reported + Send + Sync + 'static) -> EcsProxy {
        let upstream = std::env::var("AWS_ENDPOINT_URL").expect("AWS_ENDPOINT_URL (run through make test)");
        let relay = Arc::new(Relay {
            upstream,
            http: dotmac_tests::http_client(),
            script: Box::new(script),
            describes: Mutex::default(),
            requests: Mutex::default(),
            fail_next_run_task: AtomicBool::new(false),
            hold_next_run_task: Mutex::default(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        let app = axum::Router::new().fallback(relay_request).with_state(relay.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("proxy serves");
        });
        EcsProxy { relay, endpoint, server }
    }

    /// The next RunTask gets a 503 without reaching the emulator, as a transient ECS error.
    fn fail_next_run_task(&self) {
        self.relay.fail_next_run_task.store(true, Ordering::SeqCst);
    }

    /// The next RunTask waits at the proxy until the test lets it go.
    fn hold_next_run_task(&self) -> HeldRunTask {
        let (arrived_tx, arrived) = oneshot::channel();
        let (release, released) = oneshot::channel();
        *self.relay.hold_next_run_task.lock().expect("lock") = Some((arrived_tx, released));
        HeldRunTask { arrived, release }
    }

    /// The stack's provisioner, with its ECS calls going through this proxy.
    fn provisioner(&self, stack: &TestStack) -> Provisioner {
        let ecs_config = aws_sdk_ecs::config::Builder::from(&stack.sdk).endpoint_url(&self.endpoint).build();
        Provisioner::new(
            stack.platform.store.clone(),
            aws_sdk_ecs::Client::from_conf(ecs_config),
            stack.config().ecs.clone(),
            ContainerCredentials {
                secrets: stack.platform.tenant_secrets(),
                keys: stack.platform.keys.clone(),
                ttl_seconds: stack.config().machine_token_ttl_seconds,
                license_ttl_seconds: stack.config().license_ttl_seconds,
            },
        )
    }

    /// The bodies of the relayed requests of one ECS operation, in order.
    fn requests(&self, operation: &str) -> Vec<Value> {
        let requests = self.relay.requests.lock().expect("lock");
        requests.iter().filter(|(op, _)| op == operation).map(|(_, body)| body.clone()).collect()
    }

    fn describes_of(&self, task_arn: &str) -> usize {
        self.relay.describes.lock().expect("lock").get(task_arn).copied().unwrap_or(0)
    }
}

impl Drop for EcsProxy {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn relay_request(State(relay): State<Arc<Relay>>, headers: HeaderMap, body: Bytes) -> Response {
    let operation = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.strip_prefix(ECS_TARGET_PREFIX))
        .unwrap_or_default()
        .to_owned();
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    relay.requests.lock().expect("lock").push((operation.clone(), request.clone()));
    let held =
        if operation == "RunTask" { relay.hold_next_run_task.lock().expect("lock").take() } else { None };
    if let Some((arrived, released)) = held {
        let _ = arrived.send(());
        let _ = released.await;
    }
    if operation == "RunTask" && relay.fail_next_run_task.swap(false, Ordering::SeqCst) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "application/x-amz-json-1.1")],
            r#"{"__type":"ServiceUnavailableException","message":"injected by the test proxy"}"#,
        )
            .into_response();
    }
    let mut reported_status = None;
    if operation == "DescribeTasks" {
        // The fleet describes one task per call.
        let task_arn = request["tasks"][0].as_str().unwrap_or_default().to_owned();
        let call = {
            let mut describes = relay.describes.lock().expect("lock");
            let count = describes.entry(task_arn.clone()).or_insert(0);
            *count += 1;
            *count - 1
        };
        match (relay.script)(call) {
            Reported::AsTheEmulatorSays => {}
            Reported::Status(status) => reported_status = Some(status),
            Reported::ExitsWith(reason) => {
                let stop = json!({ "cluster": request["cluster"], "task": task_arn, "reason": reason });
                let (status, _, answer) = relay.send(&headers, "StopTask", stop.to_string().into()).await;
                assert!(status.is_success(), "StopTask on the emulator: {answer:?}");
            }
        }
    }
    let (status, content_type, mut answer) = relay.send(&headers, &operation, body).await;
    if let Some(reported) = reported_status {
        let mut described: Value = serde_json::from_slice(&answer).expect("DescribeTasks answer");
        for task in described["tasks"].as_array_mut().into_iter().flatten() {
            task["lastStatus"] = reported.into();
        }
        answer = described.to_string().into();
    }
    let mut response = (status, answer).into_response();
    if let Some(content_type) = content_type {
        response.headers_mut().insert(header::CONTENT_TYPE, content_type);
    }
    response
}

impl Relay {
    /// Sends an ECS call to the emulator with the caller's headers (the emulator reads the
    /// account and region from them; it does not check signatures).
    async fn send(
        &self,
        headers: &HeaderMap,
        operation: &str,
        body: Bytes,
    ) -> (StatusCode, Option<HeaderValue>, Bytes) {
        let mut request = self.http.post(&self.upstream).body(body);
        for (name, value) in headers {
            if ![header::HOST, header::CONTENT_LENGTH].contains(name) && name.as_str() != "x-amz-target" {
                request = request.header(name.as_str(), value.as_bytes());
            }
        }
        let response = request
            .header("x-amz-target", format!("{ECS_TARGET_PREFIX}{operation}"))
            .send()
            .await
            .expect("the emulator answers");
        let status = StatusCode::from_u16(response.status().as_u16()).expect("status");
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok());
        (status, content_type, response.bytes().await.expect("answer"))
    }
}

/// The tenant's tasks as ECS itself keeps them (every status, not through the proxy).
async fn tasks_in_ecs(stack: &TestStack, tenant: &Tenant) -> Vec<Task> {
    let ecs = aws_sdk_ecs::Client::new(&stack.sdk);
    let cluster = &stack.config().ecs.cluster;
    let arns = ecs
        .list_tasks()
        .cluster(cluster)
        .started_by(tenant.id.to_string())
        .send()
        .await
        .expect("ListTasks")
        .task_arns
        .unwrap_or_default();
    if arns.is_empty() {
        return Vec::new();
    }
    let described =
        ecs.describe_tasks().cluster(cluster).set_tasks(Some(arns)).send().await.expect("DescribeTasks");
    described.tasks().to_vec()
}

fn statuses(tasks: &[Task]) -> Vec<(&str, &str)> {
    tasks
        .iter()
        .map(|t| (t.last_status().unwrap_or_default(), t.desired_status().unwrap_or_default()))
        .collect()
}

async fn stored(stack: &TestStack, tenant: &Tenant) -> Tenant {
    stack.platform.store.get_tenant(tenant.id).await.expect("get").expect("exists")
}

fn job(tenant: &Tenant) -> ProvisioningJob {
    ProvisioningJob::ProvisionTenant { tenant_id: tenant.id }
}

#[tokio::test]
async fn a_task_that_takes_several_polls_to_start_is_waited_for_and_the_tenant_ends_active() {
    const STARTING: [&str; 3] = ["PROVISIONING", "PENDING", "ACTIVATING"];
    let proxy = EcsProxy::start(|call| match STARTING.get(call).copied() {
        Some(status) => Reported::Status(status),
        None => Reported::AsTheEmulatorSays,
    })
    .await;
    let stack = TestStack::new(&[]).await;
    let tenant = onboarded(&stack, "usage").await;
    proxy.provisioner(&stack).handle(job(&tenant), &delivery(1, 5)).await.expect("provisioned");

    let tenant_now = stored(&stack, &tenant).await;
    assert_eq!(tenant_now.status, TenantStatus::Active);
    let container = tenant_now.container.expect("container recorded");
    assert_eq!(container.last_status, "RUNNING");
    assert_eq!(proxy.requests("RunTask").len(), 1);
    assert_eq!(
        proxy.describes_of(&container.task_arn),
        STARTING.len() + 1,
        "polled through every starting status and stopped polling once it ran"
    );
    let tasks = tasks_in_ecs(&stack, &tenant).await;
    assert_eq!(
        tasks.iter().map(|t| t.task_arn().unwrap_or_default()).collect::<Vec<_>>(),
        [container.task_arn.as_str()]
    );
    assert_eq!(statuses(&tasks), [("RUNNING", "RUNNING")]);
}

#[tokio::test]
async fn a_task_that_never_runs_fails_each_attempt_and_the_last_attempt_stops_it() {
    let proxy = EcsProxy::start(|_| Reported::Status("PENDING")).await;
    let stack = TestStack::new(&[("DOTMAC_TASK_START_TIMEOUT_SECONDS", "2")]).await;
    let tenant = onboarded(&stack, "usage").await;
    let provisioner = proxy.provisioner(&stack);

    let first = provisioner.handle(job(&tenant), &delivery(1, 2)).await;
    let expected = "the task did not reach RUNNING within 2 s";
    assert!(matches!(&first, Err(JobError::Retry(reason)) if reason == expected), "{first:?}");
    let after_first = stored(&stack, &tenant).await;
    assert_eq!(after_first.status, TenantStatus::Provisioning, "not failed before the last attempt");
    assert_eq!(after_first.failure_reason.as_deref(), Some(expected));
    // The task really started and is left running for the next attempt to adopt.
    assert_eq!(statuses(&tasks_in_ecs(&stack, &tenant).await), [("RUNNING", "RUNNING")]);
    let credentials = stack.platform.tenant_secrets().read(tenant.id).await.expect("read").expect("issued");

    let last = provisioner.handle(job(&tenant), &delivery(2, 2)).await;
    assert!(
        matches!(&last, Err(JobError::Retry(reason)) if reason == expected),
        "left for the DLQ: {last:?}"
    );
    assert_eq!(proxy.requests("RunTask").len(), 1, "the last attempt adopted the first attempt's task");
    let after_last = stored(&stack, &tenant).await;
    assert_eq!(after_last.status, TenantStatus::Failed);
    assert_eq!(after_last.failure_reason.as_deref(), Some(expected));
    let tasks = tasks_in_ecs(&stack, &tenant).await;
    assert_eq!(statuses(&tasks), [("STOPPED", "STOPPED")], "the task it started is stopped");
    assert_eq!(tasks[0].stopped_reason(), Some("provisioning failed"));
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!(
        stack.platform.store.is_token_denied(&credentials.token_id, now).await.expect("deny-list"),
        "the failed tenant's machine token is revoked"
    );
}

#[tokio::test]
async fn a_task_that_exits_right_after_starting_fails_with_its_stopped_reason_and_is_not_adopted() {
    let proxy = EcsProxy::start(|call| match call {
        0 => Reported::ExitsWith("Essential container in task exited"),
        _ => Reported::AsTheEmulatorSays,
    })
    .await;
    let stack = TestStack::new(&[]).await;
    let tenant = onboarded(&stack, "usage").await;
    let provisioner = proxy.provisioner(&stack);
    let expected = "the task stopped before running: Essential container in task exited";

    let first = provisioner.handle(job(&tenant), &delivery(1, 2)).await;
    assert!(matches!(&first, Err(JobError::Retry(reason)) if reason == expected), "{first:?}");
    let after_first = stored(&stack, &tenant).await;
    assert_eq!(after_first.status, TenantStatus::Provisioning);
    assert_eq!(after_first.failure_reason.as_deref(), Some(expected));

    // The retry must not adopt the stopped task: it launches a fresh one (which exits too).
    let last = provisioner.handle(job(&tenant), &delivery(2, 2)).await;
    assert!(matches!(&last, Err(JobError::Retry(reason)) if reason == expected), "{last:?}");
    assert_eq!(proxy.requests("RunTask").len(), 2);
    let after_last = stored(&stack, &tenant).await;
    assert_eq!(after_last.status, TenantStatus::Failed);
    assert_eq!(after_last.failure_reason.as_deref(), Some(expected));
    let tasks = tasks_in_ecs(&stack, &tenant).await;
    assert_eq!(statuses(&tasks), [("STOPPED", "STOPPED"), ("STOPPED", "STOPPED")]);
    assert!(tasks.iter().all(|t| t.stopped_reason() == Some("Essential container in task exited")));
}

#[tokio::test]
async fn a_task_already_winding_down_is_reported_as_stopped_at_once_not_waited_for() {
    // DEACTIVATING is the first status after RUNNING on the way to STOPPED (load balancer
    // deregistration can keep a task there for minutes): it will never run again.
    let proxy = EcsProxy::start(|_| Reported::Status("DEACTIVATING")).await;
    let stack = TestStack::new(&[]).await;
    let tenant = onboarded(&stack, "usage").await;
    let outcome = proxy.provisioner(&stack).handle(job(&tenant), &delivery(1, 5)).await;
    let expected = "the task stopped before running: DEACTIVATING";
    assert!(matches!(&outcome, Err(JobError::Retry(reason)) if reason == expected), "{outcome:?}");
    assert_eq!(stored(&stack, &tenant).await.failure_reason.as_deref(), Some(expected));
    let task_arn = proxy.requests("DescribeTasks")[0]["tasks"][0].as_str().expect("described").to_owned();
    assert_eq!(proxy.describes_of(&task_arn), 1, "no polling once the task is on its way out");
}

#[tokio::test]
async fn a_retried_job_keeps_the_machine_token_and_adopts_the_slow_task() {
    let may_run = Arc::new(AtomicBool::new(false));
    let proxy = EcsProxy::start({
        let may_run = may_run.clone();
        move |_| {
            if may_run.load(Ordering::SeqCst) {
                Reported::AsTheEmulatorSays
            } else {
                Reported::Status("PENDING")
            }
        }
    })
    .await;
    let stack = TestStack::new(&[("DOTMAC_TASK_START_TIMEOUT_SECONDS", "1")]).await;
    let tenant = onboarded(&stack, "usage").await;
    let provisioner = proxy.provisioner(&stack);
    let secrets = stack.platform.tenant_secrets();

    let first = provisioner.handle(job(&tenant), &delivery(1, 5)).await;
    assert!(matches!(first, Err(JobError::Retry(_))), "{first:?}");
    let issued = secrets.read(tenant.id).await.expect("read").expect("issued on the first attempt");

    may_run.store(true, Ordering::SeqCst);
    provisioner.handle(job(&tenant), &delivery(2, 5)).await.expect("the redelivery provisions");
    let kept = secrets.read(tenant.id).await.expect("read").expect("still there");
    // Each attempt signs a fresh license beside it; the token itself is what must be kept.
    let token =
        |c: &dotmac_secrets::MachineCredentials| (c.machine_token.clone(), c.token_id.clone(), c.expires_at);
    assert_eq!(
        token(&kept),
        token(&issued),
        "the same token (id, value and expiry) after the second delivery"
    );
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!(!stack.platform.store.is_token_denied(&issued.token_id, now).await.expect("deny-list"));
    let tenant_now = stored(&stack, &tenant).await;
    assert_eq!(tenant_now.status, TenantStatus::Active);
    assert_eq!(tenant_now.secret_arn.as_deref().map(|arn| arn.contains(&tenant.id.to_string())), Some(true));
    assert_eq!(proxy.requests("RunTask").len(), 1, "the slow task was adopted, not doubled");
}

#[tokio::test]
async fn run_task_carries_the_attempts_lease_as_client_token_through_the_sdks_retries() {
    let proxy = EcsProxy::start(|_| Reported::AsTheEmulatorSays).await;
    // The first RunTask is held (so the test can read the attempt's lease meanwhile) and then
    // refused as a transient error: the SDK sends it again, and only the client token lets
    // ECS tell that repeat from a second launch. (moto ignores RunTask's clientToken, so what
    // is checked is what reaches ECS.)
    let held = proxy.hold_next_run_task();
    proxy.fail_next_run_task();
    let stack = TestStack::new(&[]).await;
    let tenant = onboarded(&stack, "usage").await;
    let provisioner = proxy.provisioner(&stack);
    let (first, second) = (delivery(1, 5), delivery(1, 5));
    let observe = async {
        held.arrived.await.expect("RunTask reached the proxy");
        let record = stack.platform.store.get_tenant_record(tenant.id).await.expect("get").expect("exists");
        let lease = record.lease.expect("the attempt holds the lease").token;
        // A second delivery while the first is launching starts nothing.
        let duplicate = provisioner.handle(job(&tenant), &second).await;
        held.release.send(()).expect("release RunTask");
        (lease, duplicate)
    };
    let (outcome, (lease, duplicate)) = tokio::join!(provisioner.handle(job(&tenant), &first), observe);
    outcome.expect("provisioned");
    assert!(matches!(&duplicate, Err(JobError::Retry(reason)) if reason.contains("lease")), "{duplicate:?}");

    let run_tasks = proxy.requests("RunTask");
    assert_eq!(run_tasks.len(), 2, "the refused RunTask and the SDK's retry: {run_tasks:?}");
    for run_task in &run_tasks {
        assert_eq!(run_task["clientToken"].as_str(), Some(lease.as_str()), "{run_task}");
    }
    assert!(lease.len() <= 64, "ECS accepts client tokens of up to 64 characters");
    let tasks = tasks_in_ecs(&stack, &tenant).await;
    assert_eq!(statuses(&tasks), [("RUNNING", "RUNNING")], "ECS keeps exactly one task for the tenant");
    assert_eq!(stored(&stack, &tenant).await.status, TenantStatus::Active);
}

#[tokio::test]
async fn a_lambda_record_at_the_max_receive_count_marks_the_tenant_failed_and_stops_its_task() {
    use aws_lambda_events::event::sqs::SqsEvent;
    const MAX_RECEIVE_COUNT: u32 = 3;
    let proxy = EcsProxy::start(|_| Reported::Status("PENDING")).await;
    let stack = TestStack::new(&[("DOTMAC_TASK_START_TIMEOUT_SECONDS", "1")]).await;
    let tenant = onboarded(&stack, "usage").await;
    let provisioner = proxy.provisioner(&stack);
    // The sample event as the Lambda runtime delivers it, carrying this tenant's job and the
    // receive count SQS would put on it.
    let event_received = |receive_count: u32| {
        let mut event: SqsEvent =
            serde_json::from_str(include_str!("../../events/sqs-provision-tenant.json")).expect("SQS event");
        let record = &mut event.records[0];
        record.message_id = Some(format!("receive-{receive_count}"));
        record.body = Some(
            json!({
                "job_id": uuid::Uuid::now_v7().to_string(),
                "job": { "type": "provision_tenant", "tenant_id": tenant.id.to_string() },
            })
            .to_string(),
        );
        record.attributes.insert("ApproximateReceiveCount".into(), receive_count.to_string());
        event
    };
    let failed_records = |response: aws_lambda_events::event::sqs::SqsBatchResponse| {
        response.batch_item_failures.into_iter().map(|f| f.item_identifier).collect::<Vec<_>>()
    };

    let response = dotmac_queue::lambda::handle_sqs_event::<ProvisioningJob, _>(
        &provisioner,
        event_received(MAX_RECEIVE_COUNT - 1),
        MAX_RECEIVE_COUNT,
    )
    .await;
    assert_eq!(failed_records(response), ["receive-2"], "redelivered");
    assert_eq!(stored(&stack, &tenant).await.status, TenantStatus::Provisioning, "one receive is left");
    assert_eq!(statuses(&tasks_in_ecs(&stack, &tenant).await), [("RUNNING", "RUNNING")]);

    let response = dotmac_queue::lambda::handle_sqs_event::<ProvisioningJob, _>(
        &provisioner,
        event_received(MAX_RECEIVE_COUNT),
        MAX_RECEIVE_COUNT,
    )
    .await;
    assert_eq!(failed_records(response), ["receive-3"], "reported, so SQS moves it to the DLQ");
    let tenant_now = stored(&stack, &tenant).await;
    assert_eq!(tenant_now.status, TenantStatus::Failed);
    assert_eq!(tenant_now.failure_reason.as_deref(), Some("the task did not reach RUNNING within 1 s"));
    assert_eq!(statuses(&tasks_in_ecs(&stack, &tenant).await), [("STOPPED", "STOPPED")]);
}
