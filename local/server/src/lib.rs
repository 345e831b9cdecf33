//! The local stack in one process: create the resources the SAM template declares (on
//! whatever endpoint the SDK variables point at), seed plans and the platform admin, then
//! serve every function's routes on one port with the queue workers running.

use anyhow::Context;
use dotmac_config::Config;
use dotmac_domain::{Email, Role, seed_plans};
use dotmac_platform::{Handler, Kind, Platform};
use dotmac_queue::worker::{SqsBackendConfig, run_worker};
use dotmac_queue::{BillingJob, ProvisioningJob, QueueSettings, ensure_queue_with_dlq};
use dotmac_secrets::KeySetSecret;
use dotmac_store::{Store, StoreError, UserRecord};
use dotmac_tokens::{KeySet, StoredKey, generate_signing_key};
use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use tokio::net::TcpListener;

/// Settings of the local stack itself (not of the functions), from `DOTMAC_*` variables.
#[derive(Debug, Clone)]
pub struct LocalSettings {
    /// Every resource name starts with it, so several stacks share one emulator.
    pub prefix: String,
    pub admin_email: String,
    pub admin_password: String,
    /// Seconds before a failed job is retried (AWS uses the queue's visibility timeout).
    pub retry_delay_seconds: i32,
    pub worker_concurrency: usize,
    /// Where a generated JWT signing key is kept between runs; `None` keeps it in memory.
    pub state_dir: Option<String>,
}

impl LocalSettings {
    pub fn from_env(env: &HashMap<String, String>) -> anyhow::Result<Self> {
        let get = |name: &str, default: &str| {
            env.get(name).filter(|v| !v.is_empty()).cloned().unwrap_or_else(|| default.to_owned())
        };
        Ok(LocalSettings {
            prefix: get("DOTMAC_PREFIX", "dotmac-local"),
            admin_email: get("DOTMAC_ADMIN_EMAIL", "admin@dotmac.local"),
            admin_password: get("DOTMAC_ADMIN_PASSWORD", "dotmac-admin"),
            retry_delay_seconds: get("DOTMAC_WORKER_RETRY_DELAY_SECONDS", "5")
                .parse()
                .context("DOTMAC_WORKER_RETRY_DELAY_SECONDS must be a number")?,
            worker_concurrency: get("DOTMAC_WORKER_CONCURRENCY", "4")
                .parse()
                .context("DOTMAC_WORKER_CONCURRENCY must be a number")?,
            state_dir: env.get("DOTMAC_STATE_DIR").filter(|v| !v.is_empty()).cloned(),
        })
    }
}

/// Creates what `infra/template.yaml` would (table, queue + DLQ, cluster), and the SES
/// identity of the invitations' sender, and returns the functions' configuration pointing at
/// them. Idempotent: a second start reuses them.
pub async fn prepare(
    sdk: &aws_config::SdkConfig,
    env: &HashMap<String, String>,
    local: &LocalSettings,
) -> anyhow::Result<Config> {
    let mut env = env.clone();
    let prefix = &local.prefix;
    let table = format!("{prefix}-platform");
    let store = Store::new(aws_sdk_dynamodb::Client::new(sdk), &table);
    store.ensure_table().await.context("creating the DynamoDB table")?;

    // Read the way the functions read it, so the redrive policy and the handler agree.
    let max_receive_count = Config::max_receive_count_from(&env)?;
    let (queue, _dlq) = ensure_queue_with_dlq(
        &aws_sdk_sqs::Client::new(sdk),
        &format!("{prefix}-provisioning-jobs"),
        QueueSettings { visibility_timeout_seconds: 120, max_receive_count },
    )
    .await
    .context("creating the provisioning queue")?;
    let billing_receive_count: u32 =
        env.get("DOTMAC_BILLING_MAX_RECEIVE_COUNT").and_then(|v| v.parse().ok()).unwrap_or(5).max(1);
    let (billing_queue, _billing_dlq) = ensure_queue_with_dlq(
        &aws_sdk_sqs::Client::new(sdk),
        &format!("{prefix}-billing-jobs"),
        QueueSettings { visibility_timeout_seconds: 120, max_receive_count: billing_receive_count },
    )
    .await
    .context("creating the billing queue")?;

    let cluster = env.get("DOTMAC_ECS_CLUSTER").cloned().unwrap_or_else(|| format!("{prefix}-tenants"));
    aws_sdk_ecs::Client::new(sdk)
        .create_cluster()
        .cluster_name(&cluster)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!(aws_sdk_ecs::error::DisplayErrorContext(e).to_string()))
        .context("creating the ECS cluster")?;

    // The backups' bucket (the template's `BackupBucket`): the one named, else the stack's own.
    let bucket = env
        .get("DOTMAC_BACKUP_BUCKET")
        .filter(|b| !b.is_empty())
        .cloned()
        .unwrap_or_else(|| format!("{prefix}-backups"));
    env.insert("DOTMAC_BACKUP_BUCKET".into(), bucket.clone());
    // The stack's own event bus, as the template declares one.
    let bus = env.get("DOTMAC_EVENT_BUS_NAME").cloned().unwrap_or_else(|| format!("{prefix}-events"));
    let events = aws_sdk_eventbridge::Client::new(sdk);
    match events.create_event_bus().name(&bus).send().await {
        Ok(_) => {}
        Err(error) if error.as_service_error().is_some_and(|e| e.is_resource_already_exists_exception()) => {}
        Err(error) => {
            return Err(anyhow::anyhow!(aws_sdk_eventbridge::error::DisplayErrorContext(error).to_string()))
                .context("creating the event bus");
        }
    }
    env.insert("DOTMAC_EVENT_BUS_NAME".into(), bus);
    env.insert("DOTMAC_TABLE_NAME".into(), table);
    env.insert("DOTMAC_PROVISIONING_QUEUE_URL".into(), queue.url().to_owned());
    env.insert("DOTMAC_BILLING_QUEUE_URL".into(), billing_queue.url().to_owned());
    env.insert("DOTMAC_ECS_CLUSTER".into(), cluster);
    env.entry("DOTMAC_TENANT_SECRET_PREFIX".into()).or_insert_with(|| format!("{prefix}/tenants"));
    let has_keys = ["DOTMAC_JWT_SIGNING_KEY", "DOTMAC_JWT_KEY_SET", "DOTMAC_JWT_KEY_SET_SECRET"]
        .iter()
        .any(|name| env.get(*name).is_some_and(|k| !k.is_empty()));
    if !has_keys {
        // As deployed: the functions read their keys from Secrets Manager.
        let secret_id = format!("{prefix}-jwt-key-set");
        let public_id = format!("{prefix}-jwt-public-key-set");
        let client = aws_sdk_secretsmanager::Client::new(sdk);
        let initial: KeySet = serde_json::from_str(&local_key_set(local.state_dir.as_deref())?)?;
        KeySetSecret::new(client.clone(), &public_id)
            .ensure(&initial.public()?)
            .await
            .context("creating the public JWT key set secret")?;
        KeySetSecret::new(client, &secret_id)
            .ensure(&initial)
            .await
            .context("creating the JWT key set secret")?;
        env.insert("DOTMAC_JWT_KEY_SET_SECRET".into(), secret_id);
        env.insert("DOTMAC_JWT_PUBLIC_KEY_SET_SECRET".into(), public_id);
    }
    let config = Config::from_source(&env).context("configuration")?;
    let s3 = dotmac_platform::s3_client(sdk, config.backups.force_path_style);
    ensure_bucket(&s3, &bucket, sdk.region().map(|r| r.as_ref())).await?;
    ensure_sender_identity(&aws_sdk_sesv2::Client::new(sdk), &config.invitations.sender).await?;
    Ok(config)
}

/// Creates the bucket unless this account has it already. Safe to repeat.
async fn ensure_bucket(s3: &aws_sdk_s3::Client, bucket: &str, region: Option<&str>) -> anyhow::Result<()> {
    let mut create = s3.create_bucket().bucket(bucket);
    if let Some(region) = region.filter(|r| *r != "us-east-1") {
        let location = aws_sdk_s3::types::CreateBucketConfiguration::builder()
            .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::from(region))
            .build();
        create = create.create_bucket_configuration(location);
    }
    match create.send().await {
        Ok(_) => Ok(()),
        Err(error) if error.as_service_error().is_some_and(|e| e.is_bucket_already_owned_by_you()) => Ok(()),
        Err(error) => Err(anyhow::anyhow!(aws_sdk_s3::error::DisplayErrorContext(error).to_string()))
            .with_context(|| format!("creating the S3 bucket {bucket}")),
    }
}

/// The invitations' sender as an SES identity. In AWS a deployer verifies it once (it is no
/// resource of the template); on an emulator, creating the identity is verifying it, and a
/// second start finds it there.
async fn ensure_sender_identity(ses: &aws_sdk_sesv2::Client, sender: &str) -> anyhow::Result<()> {
    match ses.create_email_identity().email_identity(sender).send().await {
        Ok(_) => Ok(()),
        Err(error) if error.as_service_error().is_some_and(|e| e.is_already_exists_exception()) => Ok(()),
        Err(error) => Err(anyhow::anyhow!(aws_sdk_sesv2::error::DisplayErrorContext(error).to_string()))
            .with_context(|| format!("creating the SES identity {sender}")),
    }
}

/// A key set of two live keys — the one that signs and the next one, published 30 days
/// ahead as a rotation would leave it — kept in the state folder so tokens survive a restart.
fn local_key_set(state_dir: Option<&str>) -> anyhow::Result<String> {
    let path = state_dir.map(|dir| Path::new(dir).join("jwt-key-set.json"));
    if let Some(existing) = path.as_ref().and_then(|p| std::fs::read_to_string(p).ok()) {
        return Ok(existing);
    }
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let key = |not_before| -> anyhow::Result<StoredKey> {
        Ok(StoredKey::private(generate_signing_key()?, not_before))
    };
    let set = serde_json::to_string(&KeySet { keys: vec![key(now)?, key(now + 30 * 24 * 3600)?] })?;
    if let (Some(path), Some(dir)) = (path, state_dir) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {dir}"))?;
        std::fs::write(&path, &set).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(set)
}

/// Writes the plan catalogue (plans, their first prices, bundles) and the platform admin (kept if it already exists). Task
/// definitions are per tenant, registered by the provisioner.
pub async fn seed(platform: &Platform, local: &LocalSettings) -> anyhow::Result<()> {
    for plan in seed_plans() {
        platform.store.put_plan(&plan).await.context("seeding plans")?;
    }
    platform.store.seed_catalogue().await.context("seeding prices and bundles")?;
    let email = Email::parse(&local.admin_email).context("DOTMAC_ADMIN_EMAIL")?;
    let admin = UserRecord {
        id: uuid::Uuid::now_v7().to_string(),
        email,
        password_hash: dotmac_tokens::hash_password(&local.admin_password)?,
        tenant_id: None,
        partner_id: None,
        roles: vec![Role::PlatformAdmin.into()],
        active: true,
        created_at: OffsetDateTime::now_utc(),
        last_login: None,
        sessions_valid_after_ms: 0,
    };
    match platform.store.create_user(&admin).await {
        Ok(()) | Err(StoreError::AlreadyExists) => Ok(()),
        Err(error) => Err(error).context("seeding the platform admin"),
    }
}

/// The local stand-in for a function's EventBridge Scheduler entry: the same handler, at the
/// same pace (the rotation only rotates when one is due).
async fn run_on_schedule(
    platform: Platform,
    handler: Handler,
    every: Duration,
    stopped: impl Future<Output = ()>,
) {
    if handler == Handler::RotateSigningKeys && platform.key_set_secret().is_none() {
        return;
    }
    // The rotation runs at once (a fresh stack needs its keys); the billing schedules first
    // run one interval after start, so a server started for a test or a demo never bills the
    // tenants it is about to create behind their back.
    let first = match handler {
        Handler::BillingCycle | Handler::FinalizeInvoices | Handler::Dunning => {
            tokio::time::Instant::now() + every
        }
        _ => tokio::time::Instant::now(),
    };
    let mut ticks = tokio::time::interval_at(first, every);
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            _ = ticks.tick() => if let Err(error) = platform.run_schedule(handler).await {
                tracing::warn!(handler = handler.name(), error = format!("{error:#}"), "scheduled run failed");
            },
        }
    }
}

/// The local stand-in for a schedule that sends a job to the queue (`queue_schedules`): the
/// same job at the same pace, the first one pace after start (as a deployment's would).
async fn send_on_schedule(
    platform: Platform,
    schedule: dotmac_platform::QueueSchedule,
    stopped: impl Future<Output = ()>,
) {
    let dotmac_platform::QueueSchedule { name, every, job } = schedule;
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            _ = ticks.tick() => if let Err(error) = platform.provisioning.enqueue(job(OffsetDateTime::now_utc())).await {
                tracing::warn!(schedule = name, %error, "scheduled job not queued");
            },
        }
    }
}

/// Serves the API on `listener` and runs the queue workers until `shutdown` resolves.
pub async fn serve(
    platform: Platform,
    listener: TcpListener,
    local: LocalSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    // Every function of the table, as it is triggered in AWS: HTTP functions in the one router,
    // the queue consumer as an apalis worker, scheduled ones on their interval.
    let queue_consumers = Handler::ALL.iter().filter(|h| h.kind() == Kind::QueueConsumer).count();
    anyhow::ensure!(
        queue_consumers == 2,
        "the local server runs two queue workers: provisioning and billing"
    );
    let worker = tokio::spawn(run_worker::<ProvisioningJob, _>(
        "provisioning",
        platform.provisioning.clone(),
        SqsBackendConfig {
            // Take no more than can start at once, so waiting messages do not burn their
            // visibility timeout in our buffer.
            batch_size: i32::try_from(local.worker_concurrency.clamp(1, 10)).unwrap_or(10),
            wait_seconds: 5,
            retry_delay_seconds: local.retry_delay_seconds,
            max_receive_count: platform.config.provisioning_max_receive_count,
        },
        Arc::new(platform.provisioner()),
        local.worker_concurrency,
        stopped(),
    ));
    let billing_worker = tokio::spawn(run_worker::<BillingJob, _>(
        "billing",
        platform.billing_queue.clone(),
        SqsBackendConfig {
            batch_size: i32::try_from(local.worker_concurrency.clamp(1, 10)).unwrap_or(10),
            wait_seconds: 5,
            retry_delay_seconds: local.retry_delay_seconds,
            max_receive_count: platform.config.billing.max_receive_count,
        },
        Arc::new(platform.billing_worker()),
        local.worker_concurrency,
        stopped(),
    ));
    let server = axum::serve(
        listener,
        // The peer address feeds the per-source sign-in limits (API Gateway supplies it in AWS).
        platform.api_router().into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(stopped());
    let server = tokio::spawn(async move { server.await });
    let reload = platform.start_key_reload();
    let mut schedules: Vec<_> = Handler::ALL
        .into_iter()
        .filter_map(|handler| Some((handler, handler.schedule_every()?)))
        // The publisher runs every second here (its schedule's minute is AWS's shortest).
        .map(|(handler, every)| {
            if handler == Handler::PublishEvents {
                (handler, Duration::from_secs(1))
            } else {
                (handler, every)
            }
        })
        .map(|(handler, every)| tokio::spawn(run_on_schedule(platform.clone(), handler, every, stopped())))
        .collect();
    schedules.extend(
        dotmac_platform::queue_schedules()
            .into_iter()
            .map(|schedule| tokio::spawn(send_on_schedule(platform.clone(), schedule, stopped()))),
    );
    shutdown.await;
    let _ = stop_tx.send(true);
    if let Some(reload) = reload {
        reload.abort();
    }
    for schedule in schedules {
        schedule.await.context("schedule")?;
    }
    server.await.context("server task")?.context("server")?;
    worker.await.context("worker task")?.context("provisioning worker")?;
    billing_worker.await.context("billing worker task")?.context("billing worker")?;
    Ok(())
}
