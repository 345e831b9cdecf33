//! The provisioner's handler against the emulator's DynamoDB and ECS.

use aws_sdk_ecs::types::DesiredStatus;
use dotmac_domain::{Email, NewTenant, PlanId, Tenant, TenantName, TenantSlug, TenantStatus};
use dotmac_queue::{Delivery, JobError, JobHandler, ProvisioningJob};
use dotmac_tests::TestStack;
use time::OffsetDateTime;

pub(crate) async fn onboarded(stack: &TestStack, plan: &str) -> Tenant {
    let slug = format!("isp-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let tenant = Tenant::onboard(
        NewTenant {
            name: TenantName::parse("Test ISP").expect("name"),
            slug: TenantSlug::parse(&slug).expect("slug"),
            plan: PlanId::parse(plan).expect("plan"),
            contact_email: Email::parse("ops@test-isp.example").expect("email"),
            partner_id: None,
        },
        OffsetDateTime::now_utc(),
    );
    stack.platform.store.create_tenant(&tenant).await.expect("create");
    tenant
}

pub(crate) fn delivery(receive_count: u32, max: u32) -> Delivery {
    Delivery {
        message_id: uuid::Uuid::new_v4().to_string(),
        job_id: None,
        receive_count,
        max_receive_count: max,
        throttles: 0,
        resends_throttled: false,
    }
}

pub(crate) async fn tenant_task_arns(stack: &TestStack, tenant: &Tenant) -> Vec<String> {
    aws_sdk_ecs::Client::new(&stack.sdk)
        .list_tasks()
        .cluster(&stack.config().ecs.cluster)
        .started_by(tenant.id.to_string())
        .desired_status(DesiredStatus::Running)
        .send()
        .await
        .expect("ListTasks")
        .task_arns
        .unwrap_or_default()
}

#[tokio::test]
async fn provisions_a_tagged_task_of_the_plans_size_and_activates_the_tenant() {
    let stack = TestStack::new(&[]).await;
    let tenant = onboarded(&stack, "scaled").await;
    let provisioner = stack.platform.provisioner();
    provisioner
        .handle(ProvisioningJob::ProvisionTenant { tenant_id: tenant.id }, &delivery(1, 5))
        .await
        .expect("provisioned");

    let stored = stack.platform.store.get_tenant(tenant.id).await.expect("get").expect("exists");
    assert_eq!(stored.status, TenantStatus::Active);
    let container = stored.container.expect("container recorded");
    assert_eq!((container.task_size.cpu, container.task_size.memory_mib), (512, 1024));
    assert_eq!(container.last_status, "RUNNING");
    assert!(container.cluster_arn.ends_with(&format!("cluster/{}", stack.config().ecs.cluster)));

    let arns = tenant_task_arns(&stack, &tenant).await;
    assert_eq!(arns, vec![container.task_arn.clone()]);
    let described = aws_sdk_ecs::Client::new(&stack.sdk)
        .describe_tasks()
        .cluster(&stack.config().ecs.cluster)
        .tasks(&container.task_arn)
        .include(aws_sdk_ecs::types::TaskField::Tags)
        .send()
        .await
        .expect("DescribeTasks");
    let task = described.tasks().first().expect("task");
    assert!(
        task.tags()
            .iter()
            .any(|t| t.key() == Some("tenant_id") && t.value() == Some(&*tenant.id.to_string()))
    );
    let env_has_tenant = task
        .overrides()
        .into_iter()
        .flat_map(|o| o.container_overrides())
        .flat_map(|c| c.environment())
        .any(|kv| kv.name() == Some("TENANT_ID") && kv.value() == Some(&*tenant.id.to_string()));
    assert!(env_has_tenant, "the container is told its tenant id");
}

#[tokio::test]
async fn duplicate_and_concurrent_deliveries_launch_one_task() {
    let stack = TestStack::new(&[]).await;
    let tenant = onboarded(&stack, "usage").await;
    let provisioner = stack.platform.provisioner();
    let job = || ProvisioningJob::ProvisionTenant { tenant_id: tenant.id };
    let (first, second) = (delivery(1, 5), delivery(1, 5));
    let (a, b) = tokio::join!(provisioner.handle(job(), &first), provisioner.handle(job(), &second));
    // One wins; the other either sees the lease (retry) or the finished tenant (ok).
    assert!(a.is_ok() || b.is_ok(), "{a:?} {b:?}");
    for outcome in [a, b] {
        assert!(matches!(outcome, Ok(()) | Err(JobError::Retry(_))), "{outcome:?}");
    }
    // A late redelivery after success is a no-op.
    provisioner.handle(job(), &delivery(2, 5)).await.expect("duplicate is fine");
    assert_eq!(tenant_task_arns(&stack, &tenant).await.len(), 1, "exactly one container per tenant");
    let stored = stack.platform.store.get_tenant(tenant.id).await.expect("get").expect("exists");
    assert_eq!(stored.status, TenantStatus::Active);
}

#[tokio::test]
async fn a_retry_adopts_the_task_an_earlier_attempt_started() {
    let stack = TestStack::new(&[]).await;
    let tenant = onboarded(&stack, "usage").await;
    let provisioner = stack.platform.provisioner();
    let plan = dotmac_domain::seed_plans().remove(0);
    let earlier = provisioner
        .fleet()
        .launch(&tenant, plan.task_size, "", "arn:test:secret")
        .await
        .expect("earlier attempt's task");
    provisioner
        .handle(ProvisioningJob::ProvisionTenant { tenant_id: tenant.id }, &delivery(2, 5))
        .await
        .expect("provisioned");
    let stored = stack.platform.store.get_tenant(tenant.id).await.expect("get").expect("exists");
    assert_eq!(stored.container.map(|c| c.task_arn), Some(earlier.task_arn));
    assert_eq!(tenant_task_arns(&stack, &tenant).await.len(), 1);
}

#[tokio::test]
async fn failures_keep_the_reason_and_the_last_attempt_marks_the_tenant_failed() {
    let stack = TestStack::new(&[("DOTMAC_ECS_SUBNETS", "subnet-does-not-exist")]).await;
    let tenant = onboarded(&stack, "usage").await;
    let provisioner = stack.platform.provisioner();
    let job = || ProvisioningJob::ProvisionTenant { tenant_id: tenant.id };

    let first = provisioner.handle(job(), &delivery(1, 2)).await;
    assert!(matches!(first, Err(JobError::Retry(_))), "{first:?}");
    let credentials = stack.platform.tenant_secrets().read(tenant.id).await.expect("read").expect("issued");
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!(!stack.platform.store.is_token_denied(&credentials.token_id, now).await.expect("deny-list"));
    let stored = stack.platform.store.get_tenant(tenant.id).await.expect("get").expect("exists");
    assert_eq!(stored.status, TenantStatus::Provisioning, "not failed before the last attempt");
    assert!(stored.failure_reason.as_deref().is_some_and(|r| r.contains("RunTask")), "{stored:?}");

    let last = provisioner.handle(job(), &delivery(2, 2)).await;
    assert!(matches!(last, Err(JobError::Retry(_))), "left for the DLQ: {last:?}");
    let stored = stack.platform.store.get_tenant(tenant.id).await.expect("get").expect("exists");
    assert_eq!(stored.status, TenantStatus::Failed);
    assert!(
        stored.failure_reason.as_deref().is_some_and(|r| r.starts_with("ECS RunTask failed: ")),
        "{stored:?}"
    );
    // (That the last attempt stops the tasks it started is proven with a task that really ran,
    // in task_lifecycle.rs: here RunTask never started one.)
    assert!(
        stack.platform.store.is_token_denied(&credentials.token_id, now).await.expect("deny-list"),
        "a failed tenant's container token is revoked"
    );
}

#[tokio::test]
async fn a_renewed_machine_token_revokes_the_one_it_replaces() {
    // Tokens that live 40 s are renewed when under 10 s are left: every attempt renews.
    let stack = TestStack::new(&[
        ("DOTMAC_MACHINE_TOKEN_TTL_SECONDS", "40"),
        ("DOTMAC_ECS_SUBNETS", "subnet-does-not-exist"),
    ])
    .await;
    let tenant = onboarded(&stack, "usage").await;
    let secrets = stack.platform.tenant_secrets();
    let now = time::OffsetDateTime::now_utc();
    let old = secrets
        .ensure_machine_token(tenant.id, &stack.platform.keys, 5, 0, now)
        .await
        .expect("a short-lived token");
    assert_eq!(old.replaced, None);
    let old = secrets.read(tenant.id).await.expect("read").expect("secret");
    let outcome = stack
        .platform
        .provisioner()
        .handle(ProvisioningJob::ProvisionTenant { tenant_id: tenant.id }, &delivery(1, 5))
        .await;
    assert!(matches!(outcome, Err(JobError::Retry(_))), "the launch itself fails here: {outcome:?}");
    let new = secrets.read(tenant.id).await.expect("read").expect("secret");
    assert_ne!(new.token_id, old.token_id, "renewed");
    let at = now.unix_timestamp();
    assert!(
        stack.platform.store.is_token_denied(&old.token_id, at).await.expect("deny-list"),
        "the old one is revoked"
    );
    assert!(!stack.platform.store.is_token_denied(&new.token_id, at).await.expect("deny-list"));
}

#[tokio::test]
async fn jobs_for_missing_or_deleted_tenants_are_discarded() {
    let stack = TestStack::new(&[]).await;
    let provisioner = stack.platform.provisioner();
    let missing = dotmac_domain::TenantId::generate();
    let outcome =
        provisioner.handle(ProvisioningJob::ProvisionTenant { tenant_id: missing }, &delivery(1, 5)).await;
    assert!(matches!(outcome, Err(JobError::Discard(_))), "{outcome:?}");
}

#[tokio::test]
async fn a_failed_tenants_tasks_are_stopped() {
    let stack = TestStack::new(&[]).await;
    let tenant = onboarded(&stack, "usage").await;
    let fleet = stack.platform.provisioner();
    let plan = dotmac_domain::seed_plans().remove(0);
    fleet.fleet().launch(&tenant, plan.task_size, "", "arn:test:secret").await.expect("task");
    assert_eq!(tenant_task_arns(&stack, &tenant).await.len(), 1);
    let stopped = fleet.fleet().stop_tenant_tasks(tenant.id, "test").await.expect("stop");
    assert_eq!(stopped, 1);
    assert!(tenant_task_arns(&stack, &tenant).await.is_empty());
}

#[tokio::test]
async fn the_last_attempt_marks_the_tenant_failed_whatever_stopped_it() {
    let stack = TestStack::new(&[]).await;
    let tenant = onboarded(&stack, "usage").await;
    // Another attempt holds a live lease (say it crashed mid-launch): this attempt cannot
    // proceed, and as it is the last one the tenant must not stay `provisioning` for ever.
    let mut record = stack.platform.store.get_tenant_record(tenant.id).await.expect("get").expect("exists");
    record.lease = Some(dotmac_store::Lease {
        token: "someone-else".into(),
        expires_at: OffsetDateTime::now_utc().unix_timestamp() + 600,
    });
    stack.platform.store.save_tenant(&mut record).await.expect("lease");
    let provisioner = stack.platform.provisioner();
    let job = || ProvisioningJob::ProvisionTenant { tenant_id: tenant.id };
    let early = provisioner.handle(job(), &delivery(1, 3)).await;
    assert!(matches!(early, Err(JobError::Retry(_))), "{early:?}");
    let stored = stack.platform.store.get_tenant(tenant.id).await.expect("get").expect("exists");
    assert_eq!(stored.status, TenantStatus::Provisioning);
    let last = provisioner.handle(job(), &delivery(3, 3)).await;
    assert!(matches!(last, Err(JobError::Retry(_))), "{last:?}");
    let stored = stack.platform.store.get_tenant(tenant.id).await.expect("get").expect("exists");
    assert_eq!(stored.status, TenantStatus::Failed);
    assert!(stored.failure_reason.is_some_and(|r| r.contains("lease")));
    // A redelivery after that changes nothing and is not retried again.
    let after = provisioner.handle(job(), &delivery(4, 3)).await;
    assert!(matches!(after, Err(JobError::Discard(_))), "{after:?}");
}

#[derive(Debug, PartialEq, Eq)]
enum Renewal {
    Kept,
    Renewed,
}

/// Provisions a fresh tenant whose secret already holds a machine token with exactly `left`
/// seconds to live, and says what the provisioner did with that token.
///
/// The provisioner reads its own clock, so "exactly" holds only when it read the same second
/// as the seed: a run that straddles a second boundary is not counted and is tried again with
/// a new tenant (no sleeping, no guessing how long a run takes).
async fn renewal_of_a_token_with(stack: &TestStack, left: u64) -> Renewal {
    let secrets = stack.platform.tenant_secrets();
    for _ in 0..10 {
        let tenant = onboarded(stack, "usage").await;
        let seeded_at = OffsetDateTime::now_utc();
        secrets
            .ensure_machine_token(tenant.id, &stack.platform.keys, left, 0, seeded_at)
            .await
            .expect("seed");
        let seeded = secrets.read(tenant.id).await.expect("read").expect("seeded");
        assert_eq!(seeded.expires_at, seeded_at.unix_timestamp() + i64::try_from(left).expect("seconds"));
        stack
            .platform
            .provisioner()
            .handle(ProvisioningJob::ProvisionTenant { tenant_id: tenant.id }, &delivery(1, 5))
            .await
            .expect("provisioned");
        let finished_at = OffsetDateTime::now_utc();
        if finished_at.unix_timestamp() != seeded_at.unix_timestamp() {
            continue;
        }
        let current = secrets.read(tenant.id).await.expect("read").expect("secret");
        let at = finished_at.unix_timestamp();
        let seeded_denied =
            stack.platform.store.is_token_denied(&seeded.token_id, at).await.expect("deny-list");
        // The secret also gains a license at provisioning: the token is what is kept or not.
        if current.token_id == seeded.token_id {
            assert!(!seeded_denied, "a kept token stays valid");
            return Renewal::Kept;
        }
        assert!(seeded_denied, "the replaced token is revoked");
        assert!(!stack.platform.store.is_token_denied(&current.token_id, at).await.expect("deny-list"));
        let ttl = i64::try_from(stack.config().machine_token_ttl_seconds).expect("seconds");
        assert_eq!(current.expires_at, at + ttl, "the new token gets the whole life");
        return Renewal::Renewed;
    }
    panic!("every run straddled a second boundary");
}

#[tokio::test]
async fn a_machine_token_is_renewed_exactly_when_a_quarter_of_its_life_is_left() {
    const TTL_SECONDS: u64 = 400;
    let stack = TestStack::new(&[("DOTMAC_MACHINE_TOKEN_TTL_SECONDS", &TTL_SECONDS.to_string())]).await;
    assert_eq!(renewal_of_a_token_with(&stack, TTL_SECONDS / 4 + 1).await, Renewal::Kept);
    assert_eq!(renewal_of_a_token_with(&stack, TTL_SECONDS / 4).await, Renewal::Renewed);
}
