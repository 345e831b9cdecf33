//! Backups and restore against the emulator: the export and its manifest read back from S3,
//! backup → mutate → restore → the same partition item by item, duplicate deliveries, a crash
//! after each step, retention, and the daily schedule's fan-out.

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use dotmac_domain::{BackupId, Role, Tenant, TenantId};
use dotmac_provisioner::backups::{Manifest, data_task_marker, decode_records, sha256_hex};
use dotmac_provisioner::{BackupStorage, Provisioner, Retention};
use dotmac_queue::{JobError, JobHandler, ProvisioningJob};
use dotmac_store::{BackupRecord, BackupStatus, BackupTrigger, RawItem, RestoreStatus, survives_restore};
use dotmac_tests::{TestApp, TestStack};
use http::Method;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

use crate::provisioner::{delivery, onboarded};

/// A tenant the provisioner brought up (no server, so nothing else works on the queue).
pub(crate) async fn active_tenant(stack: &TestStack) -> Tenant {
    let tenant = onboarded(stack, "usage").await;
    stack
        .platform
        .provisioner()
        .handle(ProvisioningJob::ProvisionTenant { tenant_id: tenant.id }, &delivery(1, 5))
        .await
        .expect("provisioned");
    stack.platform.store.get_tenant(tenant.id).await.expect("get").expect("exists")
}

/// The tenant's partition, keyed by sort key.
async fn partition(stack: &TestStack, tenant: TenantId) -> BTreeMap<String, RawItem> {
    let items = stack.platform.store.partition_items(tenant).await.expect("partition");
    items.into_iter().map(|item| (item["SK"].as_s().expect("SK").clone(), item)).collect()
}

/// The part of the partition a restore brings back (everything but the survivors).
fn restorable(items: &BTreeMap<String, RawItem>) -> BTreeMap<String, RawItem> {
    items.iter().filter(|(sk, _)| !survives_restore(sk)).map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn storage(stack: &TestStack) -> BackupStorage {
    stack.platform.backup_storage().expect("the local stack configures a backup bucket")
}

async fn object(stack: &TestStack, key: &str) -> Option<Vec<u8>> {
    storage(stack).get(key).await.expect("GetObject")
}

/// An item holding every DynamoDB attribute type, written straight to the tenant's partition.
async fn put_every_type(stack: &TestStack, tenant: TenantId, sk: &str, label: &str) {
    let store = &stack.platform.store;
    let item: HashMap<String, AttributeValue> = HashMap::from([
        ("PK".into(), AttributeValue::S(format!("TENANT#{tenant}"))),
        ("SK".into(), AttributeValue::S(sk.into())),
        ("s".into(), AttributeValue::S(label.into())),
        ("n".into(), AttributeValue::N("12345678901234567890.123456789".into())),
        ("b".into(), AttributeValue::B(Blob::new(vec![0, 159, 255, 7]))),
        ("bool".into(), AttributeValue::Bool(true)),
        ("null".into(), AttributeValue::Null(true)),
        ("ss".into(), AttributeValue::Ss(vec!["a".into(), "b".into()])),
        ("ns".into(), AttributeValue::Ns(vec!["1".into(), "2.5".into()])),
        ("bs".into(), AttributeValue::Bs(vec![Blob::new(vec![1]), Blob::new(vec![2, 3])])),
        ("l".into(), AttributeValue::L(vec![AttributeValue::S("x".into()), AttributeValue::N("-1".into())])),
        (
            "m".into(),
            AttributeValue::M(HashMap::from([(
                "deep".into(),
                AttributeValue::M(HashMap::from([("k".into(), AttributeValue::Bool(false))])),
            )])),
        ),
    ]);
    store.client().put_item().table_name(store.table()).set_item(Some(item)).send().await.expect("put");
}

async fn new_backup(stack: &TestStack, tenant: TenantId) -> BackupRecord {
    let record = BackupRecord::new(
        tenant,
        BackupId::generate(),
        BackupTrigger::OnDemand,
        None,
        OffsetDateTime::now_utc(),
    );
    let (record, created) = stack.platform.store.create_backup(&record).await.expect("backup recorded");
    assert!(created);
    record
}

async fn run(provisioner: &Provisioner, job: ProvisioningJob) -> Result<(), JobError> {
    provisioner.handle(job, &delivery(1, 5)).await
}

fn crashing_at(stack: &TestStack, point: &'static str) -> Provisioner {
    stack.platform.provisioner().with_fault_hook(Arc::new(move |step| step == point))
}

/// Checks a completed backup against S3: the manifest names it, the object hashes to the
/// manifest's checksum, and holds exactly `expected_keys`.
async fn assert_backup_checks_out(stack: &TestStack, record: &BackupRecord) -> Vec<RawItem> {
    assert_eq!(record.status, BackupStatus::Completed, "{record:?}");
    let manifest: Manifest =
        serde_json::from_slice(&object(stack, &record.keys.manifest).await.expect("manifest"))
            .expect("manifest json");
    let body = object(stack, &record.keys.records).await.expect("records");
    assert_eq!(manifest.sha256, sha256_hex(&body), "the manifest's checksum is the object's");
    assert_eq!(Some(&manifest.sha256), record.sha256.as_ref());
    assert_eq!(
        (manifest.backup_id.clone(), manifest.tenant_id),
        (record.backup_id.clone(), record.tenant_id)
    );
    assert_eq!(manifest.format_version, 1);
    assert_eq!(manifest.compressed_bytes, body.len() as u64);
    let items = decode_records(&body).expect("gzip JSON lines");
    assert_eq!(manifest.item_count, items.len() as u64);
    assert_eq!(record.item_count, Some(manifest.item_count));
    items
}

/// The ECS tasks a backup's data task marker names (running or stopped).
async fn data_tasks(stack: &TestStack, record: &BackupRecord) -> Vec<String> {
    let marker = data_task_marker(record.tenant_id, &record.backup_id);
    stack.platform.provisioner().fleet().tasks_started_by(&marker).await.expect("ListTasks")
}

#[tokio::test]
async fn a_backup_exports_the_whole_partition_and_launches_the_data_task_over_http() {
    let app = TestApp::spawn().await;
    let admin = app.admin_token().await;
    let tenant = app.onboarded_tenant(&admin).await;
    app.wait_for_tenant(&admin, &tenant.to_string(), Duration::from_secs(60), |t| t["status"] == "active")
        .await;
    app.create_user("noc@backed-up.example", Some(tenant), None, &["customer_user"]).await;
    put_every_type(&app.stack, tenant, "TEST#every-type", "one").await;
    let tenant_admin = app.user_token("admin@backed-up.example", tenant, Role::TenantAdmin).await;

    // A tenant's own admin may back up its tenant (`backup` is within `*` on the tenant).
    let (status, pending) =
        app.send(Method::POST, &format!("/v1/tenants/{tenant}/backups"), Some(&tenant_admin), None).await;
    assert_eq!(status, 202, "{pending}");
    assert_eq!(pending["status"], "pending");
    assert!(pending.get("data_task_arn").is_none(), "no platform internals for a tenant's admin: {pending}");
    let backup_id = pending["backup_id"].as_str().expect("id").to_owned();
    let before_export = partition(&app.stack, tenant).await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let listed = loop {
        let (status, page) = app.get_json(&admin, &format!("/v1/tenants/{tenant}/backups")).await;
        assert_eq!(status, 200, "{page}");
        let item = page["items"]
            .as_array()
            .and_then(|items| items.iter().find(|b| b["backup_id"] == backup_id.as_str()))
            .cloned();
        if item.as_ref().is_some_and(|b| b["status"] == "completed") {
            break item.unwrap_or(Value::Null);
        }
        assert!(tokio::time::Instant::now() < deadline, "the backup never completed: {page}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(listed["data_task_launched"], true, "{listed}");
    assert!(listed["data_task_arn"].is_string(), "platform staff see the task: {listed}");
    assert_eq!(listed["records_key"], format!("tenants/{tenant}/backups/{backup_id}/records.jsonl.gz"));

    let record = app
        .stack
        .platform
        .store
        .get_backup(tenant, &BackupId::parse(&backup_id).expect("id"))
        .await
        .expect("get")
        .expect("recorded");
    let items = assert_backup_checks_out(&app.stack, &record).await;
    // Every item of the partition, every attribute as stored (the backup's own record as it
    // was while pending; nothing else changed meanwhile).
    let exported: BTreeMap<String, RawItem> =
        items.into_iter().map(|item| (item["SK"].as_s().expect("SK").clone(), item)).collect();
    assert_eq!(exported, before_export);
    assert!(exported.contains_key("TEST#every-type") && exported.contains_key("PROFILE"));

    // The container's own backup: one task of the tenant's image, told the backup's prefix.
    let tasks = data_tasks(&app.stack, &record).await;
    assert_eq!(tasks, vec![record.data_task_arn.clone().expect("arn")]);
    let described = aws_sdk_ecs::Client::new(&app.stack.sdk)
        .describe_tasks()
        .cluster(&app.stack.config().ecs.cluster)
        .tasks(&tasks[0])
        .send()
        .await
        .expect("DescribeTasks");
    let overrides = described.tasks()[0].overrides().expect("overrides").container_overrides()[0].clone();
    let bucket = &app.stack.config().backups.bucket.clone().expect("bucket");
    assert_eq!(
        overrides.command(),
        [
            "backup".to_owned(),
            "--to".to_owned(),
            format!("s3://{bucket}/tenants/{tenant}/backups/{backup_id}/data/")
        ]
    );

    // Another tenant's admin can do none of it (the isolation walk covers every route too).
    let other = app.onboarded_tenant(&admin).await;
    let stranger = app.user_token("admin@stranger.example", other, Role::TenantAdmin).await;
    for (method, path) in [
        (Method::POST, format!("/v1/tenants/{tenant}/backups")),
        (Method::GET, format!("/v1/tenants/{tenant}/backups")),
        (Method::POST, format!("/v1/tenants/{tenant}/backups/{backup_id}/restore")),
    ] {
        let answer = app.exchange(method.clone(), &path, Some(&stranger), None).await;
        answer.assert_error(403, "FORBIDDEN");
    }
    app.shutdown().await;
}

#[tokio::test]
async fn backup_then_changes_then_restore_gives_back_the_partition_item_by_item() {
    let app = TestApp::spawn().await;
    let admin = app.admin_token().await;
    let tenant = app.onboarded_tenant(&admin).await;
    app.wait_for_tenant(&admin, &tenant.to_string(), Duration::from_secs(60), |t| t["status"] == "active")
        .await;
    let stack = &app.stack;
    let kept = app.create_user("kept@restored.example", Some(tenant), None, &["customer_user"]).await;
    let doomed = app.create_user("doomed@restored.example", Some(tenant), None, &["customer_user"]).await;
    let role = json!({"name": "auditor", "permissions": [{"resource": "invoice", "action": "read", "scope": "tenant"}], "tenant_id": tenant});
    let (status, body) = app.send(Method::POST, "/v1/roles", Some(&admin), Some(&role)).await;
    assert_eq!(status, 201, "{body}");
    let observed =
        OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).expect("time");
    let report =
        json!({"tenant_id": tenant, "report_id": "before-1", "customer_count": 500, "observed_at": observed});
    let (status, body) = app.send(Method::POST, "/v1/usage", Some(&admin), Some(&report)).await;
    assert_eq!(status, 202, "{body}");
    put_every_type(stack, tenant, "TEST#every-type", "original").await;

    let (status, pending) =
        app.send(Method::POST, &format!("/v1/tenants/{tenant}/backups"), Some(&admin), None).await;
    assert_eq!(status, 202, "{pending}");
    let backup_id = BackupId::parse(pending["backup_id"].as_str().expect("id")).expect("id");
    let record = wait_for_backup(stack, tenant, &backup_id).await;
    let backed_up = restorable(&partition(stack, tenant).await);
    assert_backup_checks_out(stack, &record).await;

    // Changes of every kind: added, changed and deleted items, through the API and directly.
    app.create_user("added@restored.example", Some(tenant), None, &["customer_user"]).await;
    let (status, body) = app.send(Method::DELETE, &format!("/v1/users/{doomed}"), Some(&admin), None).await;
    assert_eq!(status, 204, "{body}");
    let (status, body) = app
        .send(
            Method::PUT,
            &format!("/v1/roles/auditor?tenant_id={tenant}"),
            Some(&admin),
            Some(&json!({"permissions": [{"resource": "invoice", "action": "*", "scope": "tenant"}]})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let report =
        json!({"tenant_id": tenant, "report_id": "after-1", "customer_count": 900, "observed_at": observed});
    let (status, body) = app.send(Method::POST, "/v1/usage", Some(&admin), Some(&report)).await;
    assert_eq!(status, 202, "{body}");
    put_every_type(stack, tenant, "TEST#every-type", "changed").await;
    put_every_type(stack, tenant, "TEST#added-later", "new").await;
    let changed = restorable(&partition(stack, tenant).await);
    assert_ne!(changed, backed_up, "the changes reached the store");
    let survivors_before: BTreeMap<String, RawItem> =
        partition(stack, tenant).await.into_iter().filter(|(sk, _)| survives_restore(sk)).collect();

    let (status, restore) = app
        .send(Method::POST, &format!("/v1/tenants/{tenant}/backups/{backup_id}/restore"), Some(&admin), None)
        .await;
    assert_eq!(status, 202, "{restore}");
    let restore_id = restore["restore_id"].as_str().expect("restore id").to_owned();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let done = loop {
        let record =
            stack.platform.store.get_restore(tenant, &restore_id).await.expect("get").expect("recorded");
        if record.status != RestoreStatus::Pending {
            break record;
        }
        assert!(tokio::time::Instant::now() < deadline, "the restore never finished: {record:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(done.status, RestoreStatus::Completed, "{done:?}");

    let after = partition(stack, tenant).await;
    assert_eq!(restorable(&after), backed_up, "the partition is the backup's, item by item");
    // The documented exceptions stay as they were just before the restore, but for what the
    // restore itself adds: its own record, its `tenant.restored` event, and the tenant
    // version that event moved (the profile is otherwise untouched).
    let untouched = |items: BTreeMap<String, RawItem>| -> BTreeMap<String, RawItem> {
        items
            .into_iter()
            .filter(|(sk, _)| {
                survives_restore(sk) && !sk.starts_with("RESTORE#") && !sk.starts_with("EVENT#")
            })
            .map(|(sk, mut item)| {
                if sk == "PROFILE" {
                    item.remove("version");
                }
                (sk, item)
            })
            .collect()
    };
    let new_events: Vec<String> = after
        .iter()
        .filter(|(sk, _)| sk.starts_with("EVENT#") && !survivors_before.contains_key(*sk))
        .map(|(_, item)| item["type"].as_s().expect("type").clone())
        .collect();
    assert_eq!(new_events, ["tenant.restored"], "the restore's one event");
    assert_eq!(untouched(after.clone()), untouched(survivors_before));
    assert!(restorable(&partition(stack, tenant).await).contains_key(&format!("USER#{kept}")));
    // The restored user is a user again through the API, and signs in (its e-mail claimed
    // again); the one added after the backup is gone, its address free.
    let (status, user) = app.get_json(&admin, &format!("/v1/users/{doomed}")).await;
    assert_eq!(status, 200, "{user}");
    assert_eq!(app.login("doomed@restored.example", dotmac_tests::USER_PASSWORD).await.status(), 200);
    assert_eq!(app.login("added@restored.example", dotmac_tests::USER_PASSWORD).await.status(), 401);
    app.create_user("added@restored.example", Some(tenant), None, &["customer_user"]).await;
    app.shutdown().await;
}

async fn wait_for_backup(stack: &TestStack, tenant: TenantId, id: &BackupId) -> BackupRecord {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let record = stack.platform.store.get_backup(tenant, id).await.expect("get").expect("recorded");
        if record.status != BackupStatus::Pending {
            assert_eq!(record.status, BackupStatus::Completed, "{record:?}");
            return record;
        }
        assert!(tokio::time::Instant::now() < deadline, "the backup never finished: {record:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_backup_crashed_after_any_step_or_delivered_twice_ends_with_one_export_and_one_data_task() {
    let stack = TestStack::new(&[]).await;
    let tenant = active_tenant(&stack).await;
    put_every_type(&stack, tenant.id, "TEST#every-type", "x").await;
    for point in ["backup.after_records", "backup.after_manifest", "backup.after_data_task"] {
        let record = new_backup(&stack, tenant.id).await;
        let job =
            || ProvisioningJob::BackupTenant { tenant_id: tenant.id, backup_id: record.backup_id.clone() };
        let crashed = run(&crashing_at(&stack, point), job()).await;
        assert!(matches!(crashed, Err(JobError::Retry(_))), "{point}: {crashed:?}");
        let half =
            stack.platform.store.get_backup(tenant.id, &record.backup_id).await.expect("get").expect("kept");
        assert_eq!(half.status, BackupStatus::Pending, "{point}: a crash leaves it pending");
        // The retry, then a duplicate delivery of the same job.
        run(&stack.platform.provisioner(), job()).await.unwrap_or_else(|e| panic!("{point}: retry: {e}"));
        run(&stack.platform.provisioner(), job()).await.unwrap_or_else(|e| panic!("{point}: duplicate: {e}"));
        let done =
            stack.platform.store.get_backup(tenant.id, &record.backup_id).await.expect("get").expect("kept");
        assert_backup_checks_out(&stack, &done).await;
        assert_eq!(data_tasks(&stack, &done).await.len(), 1, "{point}: one data task, no duplicate");
        assert_eq!(done.data_task_arn.as_ref(), data_tasks(&stack, &done).await.first(), "{point}");
    }
}

#[tokio::test]
async fn a_restore_crashed_after_writing_or_delivered_twice_converges_and_a_tampered_backup_is_refused() {
    let stack = TestStack::new(&[]).await;
    let tenant = active_tenant(&stack).await;
    put_every_type(&stack, tenant.id, "TEST#every-type", "original").await;
    let record = new_backup(&stack, tenant.id).await;
    run(
        &stack.platform.provisioner(),
        ProvisioningJob::BackupTenant { tenant_id: tenant.id, backup_id: record.backup_id.clone() },
    )
    .await
    .expect("backed up");
    let backed_up = restorable(&partition(&stack, tenant.id).await);
    put_every_type(&stack, tenant.id, "TEST#every-type", "changed").await;
    put_every_type(&stack, tenant.id, "TEST#added", "new").await;

    let restore = dotmac_provisioner::backups::new_restore(
        tenant.id,
        record.backup_id.clone(),
        None,
        OffsetDateTime::now_utc(),
    );
    let restore = stack.platform.store.create_restore(&restore).await.expect("restore recorded");
    let job = || ProvisioningJob::RestoreTenant {
        tenant_id: tenant.id,
        backup_id: record.backup_id.clone(),
        restore_id: restore.restore_id.clone(),
    };
    let crashed = run(&crashing_at(&stack, "restore.after_write"), job()).await;
    assert!(matches!(crashed, Err(JobError::Retry(_))), "{crashed:?}");
    run(&stack.platform.provisioner(), job()).await.expect("the retry");
    run(&stack.platform.provisioner(), job()).await.expect("a duplicate");
    assert_eq!(restorable(&partition(&stack, tenant.id).await), backed_up);
    let done =
        stack.platform.store.get_restore(tenant.id, &restore.restore_id).await.expect("get").expect("kept");
    assert_eq!(done.status, RestoreStatus::Completed);

    // A records object that no longer matches its manifest restores nothing.
    storage(&stack).put(&record.keys.records, b"tampered".to_vec(), "application/gzip").await.expect("put");
    put_every_type(&stack, tenant.id, "TEST#after-tampering", "new").await;
    let before = partition(&stack, tenant.id).await;
    let second = dotmac_provisioner::backups::new_restore(
        tenant.id,
        record.backup_id.clone(),
        None,
        OffsetDateTime::now_utc(),
    );
    let second = stack.platform.store.create_restore(&second).await.expect("recorded");
    let refused = stack
        .platform
        .provisioner()
        .handle(
            ProvisioningJob::RestoreTenant {
                tenant_id: tenant.id,
                backup_id: record.backup_id.clone(),
                restore_id: second.restore_id.clone(),
            },
            &delivery(1, 5),
        )
        .await;
    assert!(matches!(&refused, Err(JobError::Discard(reason)) if reason.contains("checksum")), "{refused:?}");
    let failed =
        stack.platform.store.get_restore(tenant.id, &second.restore_id).await.expect("get").expect("kept");
    assert_eq!(failed.status, RestoreStatus::Failed, "{failed:?}");
    let after = partition(&stack, tenant.id).await;
    assert_eq!(restorable(&after), restorable(&before), "a refused restore changes nothing");
    // What it does write: its own record marked failed, and that event in the tenant's log.
    let new_events: Vec<String> = after
        .iter()
        .filter(|(sk, _)| sk.starts_with("EVENT#") && !before.contains_key(*sk))
        .map(|(_, item)| item["type"].as_s().expect("type").clone())
        .collect();
    assert_eq!(new_events, ["tenant.restore_failed"]);
}

#[tokio::test]
async fn the_daily_run_backs_up_every_active_tenant_once_and_retention_prunes_expired_backups() {
    let stack = TestStack::new(&[]).await;
    let tenants = [active_tenant(&stack).await, active_tenant(&stack).await];
    let pending = onboarded(&stack, "usage").await;
    let provisioner = stack.platform.provisioner();
    let scheduled_at = "2026-12-01T03:00:00Z".to_owned();
    for _ in 0..2 {
        run(&provisioner, ProvisioningJob::ScheduledBackups { scheduled_at: scheduled_at.clone() })
            .await
            .expect("fan-out");
    }
    let daily = BackupId::parse("daily-20261201").expect("id");
    for tenant in &tenants {
        let backups = stack.platform.store.all_backups(tenant.id).await.expect("backups");
        assert_eq!(
            backups.iter().map(|b| b.backup_id.clone()).collect::<Vec<_>>(),
            vec![daily.clone()],
            "one per day, however often the run is delivered"
        );
    }
    assert!(
        stack.platform.store.all_backups(pending.id).await.expect("backups").is_empty(),
        "only active tenants"
    );
    // The fan-out's jobs, run as the worker would (a repeated run queued them twice).
    let queue = &stack.platform.provisioning;
    let mut jobs = Vec::new();
    loop {
        let messages = queue.receive(10, 1).await.expect("receive");
        if messages.is_empty() {
            break;
        }
        for message in messages {
            let envelope: dotmac_queue::Envelope<ProvisioningJob> =
                serde_json::from_str(&message.body).expect("job");
            jobs.push(envelope.job);
            queue.ack(&message.receipt_handle).await.expect("ack");
        }
    }
    let backups_queued = jobs.iter().filter(|j| matches!(j, ProvisioningJob::BackupTenant { .. })).count();
    let prunes_queued = jobs.iter().filter(|j| matches!(j, ProvisioningJob::PruneBackups { .. })).count();
    assert_eq!((backups_queued, prunes_queued), (4, 6), "{jobs:?}");
    for job in jobs {
        run(&provisioner, job).await.expect("job");
    }
    for tenant in &tenants {
        let record = stack.platform.store.get_backup(tenant.id, &daily).await.expect("get").expect("kept");
        assert_backup_checks_out(&stack, &record).await;
    }

    // Retention: 30 days, but the newest completed one stays whatever its age.
    let tenant = &tenants[0];
    let aged = |days: i64| {
        BackupRecord::new(
            tenant.id,
            BackupId::generate(),
            BackupTrigger::OnDemand,
            None,
            OffsetDateTime::now_utc() - time::Duration::days(days),
        )
    };
    let (old, older) = (aged(40), aged(35));
    for record in [&old, &older] {
        stack.platform.store.create_backup(record).await.expect("recorded");
        run(
            &provisioner,
            ProvisioningJob::BackupTenant { tenant_id: tenant.id, backup_id: record.backup_id.clone() },
        )
        .await
        .expect("backed up");
        assert!(object(&stack, &record.keys.manifest).await.is_some());
    }
    let strict = stack.platform.provisioner().with_backups(BackupStorage {
        retention: Retention { days: 30, keep_at_least: 1 },
        ..storage(&stack)
    });
    // A crash between the objects and the record, then the run again, then once more.
    let crashing = stack
        .platform
        .provisioner()
        .with_backups(BackupStorage {
            retention: Retention { days: 30, keep_at_least: 1 },
            ..storage(&stack)
        })
        .with_fault_hook(Arc::new(|step| step == "prune.after_objects"));
    assert!(run(&crashing, ProvisioningJob::PruneBackups { tenant_id: tenant.id }).await.is_err());
    for _ in 0..2 {
        run(&strict, ProvisioningJob::PruneBackups { tenant_id: tenant.id }).await.expect("pruned");
    }
    let left: Vec<BackupId> = stack
        .platform
        .store
        .all_backups(tenant.id)
        .await
        .expect("backups")
        .into_iter()
        .map(|b| b.backup_id)
        .collect();
    assert_eq!(left, vec![daily], "the expired ones are gone, the young one stays");
    for record in [&old, &older] {
        for key in [&record.keys.manifest, &record.keys.records] {
            assert!(object(&stack, key).await.is_none(), "{key} deleted");
        }
    }
}
