//! Wiring: configuration and AWS clients, built once per process (cold start), turned into
//! each function's router or job handler. The Lambda `bootstrap` binary and the local server
//! both start here.

use anyhow::Context;
use axum::Router;
use dotmac_authorizer::Authorizer;
use dotmac_config::Config;
use dotmac_http::{ApiRoutes, Catalog, with_defaults};
use dotmac_provisioner::{BackupStorage, ContainerCredentials, Provisioner, Retention};
use dotmac_queue::SqsQueue;
use dotmac_secrets::{KeySetSecret, RotationOutcome, RotationPolicy, TenantSecrets};
use dotmac_store::Store;
use dotmac_tokens::JwtKeys;
use std::sync::Arc;
use std::time::Duration;

pub mod custom_resource;

/// Makes aws-lc-rs the process's TLS crypto provider, as it already is the AWS SDK's. reqwest
/// is built without a provider of its own (one would bring ring, a second TLS stack, into the
/// Lambda binary) and takes the process default, so this runs before any reqwest client is
/// built; without it building one panics. Calling it again is harmless.
pub fn install_tls_provider() {
    // An `Err` only says a provider is installed already, which is all that is needed.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// The S3 client; path-style addresses when the configuration asks for them (an emulator
/// without virtual-hosted buckets).
pub fn s3_client(sdk: &aws_config::SdkConfig, force_path_style: bool) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::config::Builder::from(sdk).force_path_style(force_path_style).build();
    aws_sdk_s3::Client::from_conf(config)
}

/// A schedule that sends a job straight to the provisioning queue (no function in between).
#[derive(Debug, Clone, Copy)]
pub struct QueueSchedule {
    pub name: &'static str,
    pub every: Duration,
    /// The job of the run at this time.
    pub job: fn(time::OffsetDateTime) -> dotmac_queue::ProvisioningJob,
}

/// The template's `BackupSchedule`, `ScalingSchedule` and `ReconcileSchedule` entries, which
/// the local server stands in for at the same pace. (moto emits no ECS events, so locally the
/// 5-minute reconcile of every tenant also stands in for the task-stopped rule.)
pub fn queue_schedules() -> [QueueSchedule; 3] {
    fn backups(now: time::OffsetDateTime) -> dotmac_queue::ProvisioningJob {
        let scheduled_at = now.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
        dotmac_queue::ProvisioningJob::ScheduledBackups { scheduled_at }
    }
    fn scaling(_: time::OffsetDateTime) -> dotmac_queue::ProvisioningJob {
        dotmac_queue::ProvisioningJob::ScheduledScaling {}
    }
    fn reconcile(now: time::OffsetDateTime) -> dotmac_queue::ProvisioningJob {
        let scheduled_at = now.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
        dotmac_queue::ProvisioningJob::ReconcileFleet { scheduled_at, cursor: None }
    }
    [
        QueueSchedule { name: "daily-backups", every: Duration::from_secs(24 * 3600), job: backups },
        QueueSchedule { name: "fleet-reconcile", every: Duration::from_secs(5 * 60), job: reconcile },
        QueueSchedule { name: "hourly-scaling", every: Duration::from_secs(3600), job: scaling },
    ]
}

/// The Lambda handlers this binary can be (`_HANDLER`). This is the one table of functions:
/// the Lambda entry point, the local server, the OpenAPI document and the infra consistency
/// test all read it, so a function is added here or nowhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handler {
    Auth,
    Tenants,
    Users,
    Usage,
    Health,
    Docs,
    Provisioner,
    Authorizer,
    RotateSigningKeys,
    /// `/v1/billing/runs`, `/v1/invoices`, a tenant's upcoming invoice.
    Billing,
    /// The billing queue's consumer: fan-out and one invoice per tenant and period.
    BillingWorker,
    /// The monthly schedule opening the run of the period just ended.
    BillingCycle,
    /// The schedule finalizing drafts whose grace period has passed.
    FinalizeInvoices,
    /// Moves the outbox's domain events to EventBridge (`dotmac_publisher`).
    PublishEvents,
    /// The hourly dunning job: every unpaid invoice's dunning step that is due.
    Dunning,
    /// `/v1/webhooks/stripe` (Stripe's signed webhooks) and an invoice's payments.
    Payments,
}

/// Which signing keys a function holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keys {
    /// The private key set: it issues tokens (auth, the provisioner's machine tokens).
    Sign,
    /// The public key set only: it verifies tokens and can never mint one.
    Verify,
    /// None: it neither signs nor verifies (health, docs, the rotation itself), so its cold
    /// start never waits on, or fails for, the key set.
    None,
}

/// How a function is invoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Behind API Gateway: an axum router of the routes its catalog lists.
    Http,
    /// An SQS event source: the provisioning job handler.
    QueueConsumer,
    /// API Gateway's Lambda authorizer.
    Authorizer,
    /// An EventBridge Scheduler target.
    Schedule,
}

fn seconds(seconds: u64) -> time::Duration {
    time::Duration::seconds(i64::try_from(seconds).unwrap_or(i64::MAX))
}

impl Handler {
    pub const ALL: [Handler; 16] = [
        Handler::Auth,
        Handler::Tenants,
        Handler::Users,
        Handler::Usage,
        Handler::Health,
        Handler::Docs,
        Handler::Provisioner,
        Handler::Authorizer,
        Handler::RotateSigningKeys,
        Handler::Billing,
        Handler::BillingWorker,
        Handler::BillingCycle,
        Handler::FinalizeInvoices,
        Handler::PublishEvents,
        Handler::Payments,
        Handler::Dunning,
    ];

    pub fn parse(raw: &str) -> Option<Handler> {
        // The Handler property may carry a file-style prefix (`bootstrap.tenants`).
        let name = raw.rsplit('.').next().unwrap_or(raw);
        Handler::ALL.into_iter().find(|h| h.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Handler::Auth => "auth",
            Handler::Tenants => "tenants",
            Handler::Users => "users",
            Handler::Usage => "usage",
            Handler::Health => "health",
            Handler::Docs => "docs",
            Handler::Provisioner => "provisioner",
            Handler::Authorizer => "authorizer",
            Handler::RotateSigningKeys => "rotate-signing-keys",
            Handler::Billing => "billing",
            Handler::BillingWorker => "billing-worker",
            Handler::BillingCycle => "billing-cycle",
            Handler::FinalizeInvoices => "finalize-invoices",
            Handler::PublishEvents => "publish-events",
            Handler::Payments => "payments",
            Handler::Dunning => "dunning",
        }
    }

    pub fn kind(self) -> Kind {
        match self {
            Handler::Auth
            | Handler::Tenants
            | Handler::Users
            | Handler::Usage
            | Handler::Health
            | Handler::Docs
            | Handler::Billing
            | Handler::Payments => Kind::Http,
            Handler::Provisioner | Handler::BillingWorker => Kind::QueueConsumer,
            Handler::Authorizer => Kind::Authorizer,
            Handler::RotateSigningKeys
            | Handler::BillingCycle
            | Handler::FinalizeInvoices
            | Handler::PublishEvents
            | Handler::Dunning => Kind::Schedule,
        }
    }

    /// The routes an HTTP function serves, as declared (no state, no AWS clients); empty for
    /// the others.
    pub fn catalog(self) -> Catalog {
        match self {
            Handler::Auth => dotmac_auth::routes().catalog(),
            Handler::Tenants => dotmac_tenants::routes().catalog(),
            Handler::Users => dotmac_users::routes().catalog(),
            Handler::Usage => dotmac_usage::routes().catalog(),
            Handler::Health => dotmac_health::routes().catalog(),
            Handler::Docs => dotmac_docs::routes().catalog(),
            Handler::Billing => dotmac_billing_fn::routes().catalog(),
            Handler::Payments => dotmac_payments::routes().catalog(),
            Handler::Provisioner
            | Handler::Authorizer
            | Handler::RotateSigningKeys
            | Handler::BillingWorker
            | Handler::BillingCycle
            | Handler::FinalizeInvoices
            | Handler::PublishEvents
            | Handler::Dunning => Catalog::default(),
        }
    }

    /// How often the local server runs a scheduled function. `None` for the others.
    pub fn schedule_every(self) -> Option<std::time::Duration> {
        match self {
            // The billing cycle is monthly in AWS; locally it is tried hourly, which opens the
            // period's run once (its id is the period's) and does nothing after.
            Handler::RotateSigningKeys
            | Handler::FinalizeInvoices
            | Handler::BillingCycle
            | Handler::Dunning => Some(Duration::from_secs(3600)),
            // EventBridge Scheduler's shortest rate; the dev server runs it every second
            // instead (`dotmac_local`), as latency there is what a developer waits for.
            Handler::PublishEvents => Some(Duration::from_secs(60)),
            _ => None,
        }
    }

    /// The EventBridge Scheduler expression of a scheduled function in the template.
    pub fn schedule_expression(self) -> Option<&'static str> {
        match self {
            Handler::RotateSigningKeys | Handler::FinalizeInvoices | Handler::Dunning => Some("rate(1 hour)"),
            // 01:00 UTC on the first of the month: the run of the month just ended.
            Handler::BillingCycle => Some("cron(0 1 1 * ? *)"),
            Handler::PublishEvents => Some("rate(1 minute)"),
            _ => None,
        }
    }

    /// The keys the function loads at cold start.
    pub fn keys(self) -> Keys {
        match self {
            Handler::Auth | Handler::Provisioner => Keys::Sign,
            Handler::Tenants
            | Handler::Users
            | Handler::Usage
            | Handler::Authorizer
            | Handler::Billing
            | Handler::Payments => Keys::Verify,
            Handler::Health
            | Handler::Docs
            | Handler::RotateSigningKeys
            | Handler::BillingWorker
            | Handler::BillingCycle
            | Handler::FinalizeInvoices
            | Handler::PublishEvents
            | Handler::Dunning => Keys::None,
        }
    }
}

/// Every route of every HTTP function: what the OpenAPI document describes.
pub fn api_catalog() -> Catalog {
    Handler::ALL.into_iter().map(Handler::catalog).fold(Catalog::default(), Catalog::merge)
}

/// The docs function's router: it needs nothing but the catalog.
pub fn docs_router(cors_allowed_origins: &[String]) -> Router {
    with_defaults(dotmac_docs::router(dotmac_docs::DocsState::new(api_catalog)).router, cors_allowed_origins)
}

/// Everything a function needs, shared by all its invocations.
#[derive(Clone)]
pub struct Platform {
    pub config: Config,
    pub store: Store,
    pub provisioning: SqsQueue,
    /// The billing job queue (the billing function, its worker and the billing cycle's).
    pub billing_queue: SqsQueue,
    pub ecs: aws_sdk_ecs::Client,
    pub secrets: aws_sdk_secretsmanager::Client,
    /// Invitation e-mails (the users function's).
    pub ses: aws_sdk_sesv2::Client,
    /// Tenant backups (the provisioner's).
    pub s3: aws_sdk_s3::Client,
    pub keys: Arc<JwtKeys>,
    /// Prices in force, read once per instance and period.
    pub prices: dotmac_billing_fn::inputs::PriceCache,
    /// Domain events out (the publisher's).
    pub events: aws_sdk_eventbridge::Client,
    /// The Stripe client (charges), when a secret key is configured.
    pub stripe: Option<dotmac_stripe::Stripe>,
}

impl Platform {
    /// AWS clients from the standard SDK chain: credentials, region and endpoints
    /// (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_DYNAMODB`, ...) all come from the environment,
    /// so the same code runs against AWS, moto, LocalStack or DynamoDB Local.
    pub async fn connect(config: Config) -> anyhow::Result<Self> {
        let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        Self::with_sdk_config(config, &sdk).await
    }

    /// What the Lambda entry point builds: the clients, and only the keys `handler` uses
    /// (`Handler::keys`). A function that uses none loads none, so it starts (and `/health`
    /// answers) even while the key set is still empty.
    pub async fn connect_as(handler: Handler, config: Config) -> anyhow::Result<Self> {
        let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        Self::with_sdk_config_as(handler, config, &sdk).await
    }

    pub async fn with_sdk_config_as(
        handler: Handler,
        mut config: Config,
        sdk: &aws_config::SdkConfig,
    ) -> anyhow::Result<Self> {
        if handler.uses_stripe() {
            load_stripe_secret(&mut config.stripe, &aws_sdk_secretsmanager::Client::new(sdk)).await?;
        } else {
            // A function that never charges nor verifies webhooks holds no Stripe secret.
            (config.stripe.secret_key, config.stripe.webhook_secret) = (None, None);
        }
        match handler.keys() {
            Keys::Sign => Self::with_sdk_config(config, sdk).await,
            Keys::Verify => {
                // Whatever the environment says, a verifier never loads the private set.
                config.jwt.key_set_secret = None;
                if config.jwt.public_key_set_secret.is_some() {
                    config.jwt.key_set = None;
                    config.jwt.signing_key = None;
                }
                Self::with_sdk_config(config, sdk).await
            }
            Keys::None => {
                let jwt = &mut config.jwt;
                (jwt.key_set_secret, jwt.public_key_set_secret, jwt.key_set, jwt.signing_key) =
                    (None, None, None, None);
                let keys = JwtKeys::none(&config.jwt);
                Ok(Self::build(config, sdk, keys))
            }
        }
    }

    /// Builds the clients and loads the signing keys: from their Secrets Manager secret when
    /// one is configured (as deployed), else from the inline settings.
    pub async fn with_sdk_config(config: Config, sdk: &aws_config::SdkConfig) -> anyhow::Result<Self> {
        let secrets = aws_sdk_secretsmanager::Client::new(sdk);
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let keys = match (&config.jwt.key_set_secret, &config.jwt.public_key_set_secret) {
            (Some(secret_id), _) => {
                let (set, _) = KeySetSecret::new(secrets.clone(), secret_id)
                    .load()
                    .await
                    .with_context(|| format!("loading the JWT key set from {secret_id}"))?;
                JwtKeys::from_key_set(&set, &config.jwt, now)?
            }
            // A function that only verifies tokens never sees a private key.
            (None, Some(secret_id)) => {
                let (set, _) = KeySetSecret::new(secrets.clone(), secret_id)
                    .load()
                    .await
                    .with_context(|| format!("loading the public JWT key set from {secret_id}"))?;
                JwtKeys::verifier(&set, &config.jwt, now)?
            }
            (None, None) => JwtKeys::from_settings(&config.jwt)?,
        };
        Ok(Self::build(config, sdk, keys))
    }

    fn build(config: Config, sdk: &aws_config::SdkConfig, keys: JwtKeys) -> Self {
        let stripe = config.stripe.secret_key.as_ref().and_then(|secret_key| {
            install_tls_provider();
            let settings = dotmac_stripe::StripeSettings {
                secret_key: secret_key.clone(),
                api_base: config.stripe.api_base.clone(),
            };
            dotmac_stripe::Stripe::new(&settings)
                .map_err(
                    |error| tracing::error!(%error, "the Stripe client could not be built; charges wait"),
                )
                .ok()
        });
        Platform {
            stripe,
            store: Store::new(aws_sdk_dynamodb::Client::new(sdk), &config.table_name),
            provisioning: SqsQueue::new(aws_sdk_sqs::Client::new(sdk), &config.provisioning_queue_url),
            billing_queue: SqsQueue::new(aws_sdk_sqs::Client::new(sdk), &config.billing.queue_url),
            ecs: aws_sdk_ecs::Client::new(sdk),
            secrets: aws_sdk_secretsmanager::Client::new(sdk),
            ses: aws_sdk_sesv2::Client::new(sdk),
            s3: s3_client(sdk, config.backups.force_path_style),
            events: aws_sdk_eventbridge::Client::new(sdk),
            keys: Arc::new(keys),
            prices: Default::default(),
            config,
        }
    }

    /// The key set's secret (the private one for signers, else the public one), when the
    /// keys come from one.
    pub fn key_set_secret(&self) -> Option<KeySetSecret> {
        let jwt = &self.config.jwt;
        jwt.key_set_secret
            .as_ref()
            .or(jwt.public_key_set_secret.as_ref())
            .map(|id| KeySetSecret::new(self.secrets.clone(), id))
    }

    /// Keeps the keys in step with their secret (rotations, retirements) from now on.
    pub fn start_key_reload(&self) -> Option<tokio::task::JoinHandle<()>> {
        let secret = self.key_set_secret()?;
        let every = Duration::from_secs(self.config.jwt.key_reload_seconds);
        Some(dotmac_secrets::spawn_reload(self.keys.clone(), secret, every))
    }

    /// One run of the rotation schedule (see `rotate_signing_keys`).
    pub async fn rotate_signing_keys(&self) -> anyhow::Result<RotationOutcome> {
        rotate_signing_keys(&self.config, self.secrets.clone()).await
    }

    fn auth_state(&self) -> dotmac_auth::AuthState {
        dotmac_auth::AuthState { store: self.store.clone(), keys: self.keys.clone() }
    }

    fn tenants_state(&self) -> dotmac_tenants::TenantsState {
        dotmac_tenants::TenantsState {
            store: self.store.clone(),
            provisioning: self.provisioning.clone(),
            keys: self.keys.clone(),
        }
    }

    fn usage_state(&self) -> dotmac_usage::UsageState {
        dotmac_usage::UsageState {
            store: self.store.clone(),
            keys: self.keys.clone(),
            window: dotmac_usage::ReportingWindow {
                max_future: seconds(self.config.usage_max_future_seconds),
                max_age: seconds(self.config.usage_max_age_seconds),
            },
        }
    }

    /// The billing use cases (runs, invoices, finalization), with this instance's price cache.
    pub fn billing(&self) -> dotmac_billing_fn::Billing {
        dotmac_billing_fn::Billing {
            store: self.store.clone(),
            queue: self.billing_queue.clone(),
            grace: seconds(self.config.billing.grace_seconds),
            prices: self.prices.clone(),
        }
    }

    /// The billing queue's consumer: charges to the payments worker, the rest to invoicing.
    pub fn billing_worker(&self) -> BillingJobs {
        BillingJobs {
            invoicing: dotmac_billing_fn::BillingWorker { billing: self.billing() },
            payments: dotmac_payments::PaymentsWorker { payments: self.payments() },
        }
    }

    /// The payments use cases (charges, webhooks), with this instance's Stripe client.
    pub fn payments(&self) -> dotmac_payments::Payments {
        dotmac_payments::Payments {
            store: self.store.clone(),
            stripe: self.stripe.clone(),
            webhook_secret: self.config.stripe.webhook_secret.clone(),
            dunning: dotmac_payments::DunningSettings {
                schedule: self.config.billing.dunning_schedule.clone(),
                provisioning: self.provisioning.clone(),
                billing_queue: self.billing_queue.clone(),
                lifecycle: Arc::new(BillingLifecycle(self.lifecycle())),
            },
        }
    }

    /// The tenant lifecycle's use cases (suspend, resume, delete).
    pub fn lifecycle(&self) -> dotmac_tenants::Lifecycle {
        dotmac_tenants::Lifecycle { store: self.store.clone(), provisioning: self.provisioning.clone() }
    }

    fn payments_state(&self) -> dotmac_payments::PaymentsState {
        dotmac_payments::PaymentsState {
            store: self.store.clone(),
            keys: self.keys.clone(),
            payments: self.payments(),
        }
    }

    fn billing_state(&self) -> dotmac_billing_fn::BillingState {
        dotmac_billing_fn::BillingState {
            store: self.store.clone(),
            keys: self.keys.clone(),
            billing: self.billing(),
        }
    }

    /// How invitations go out: from the configured sender, linking to the accept page.
    pub fn invitations(&self) -> dotmac_users::Invitations {
        let settings = &self.config.invitations;
        let mail = dotmac_users::InvitationMail::new(
            self.ses.clone(),
            &settings.sender,
            &settings.accept_url,
            settings.print_links,
        );
        // The configuration bounds it to a year, so adding it to a date cannot overflow.
        dotmac_users::Invitations { mail, ttl: seconds(settings.ttl_seconds) }
    }

    fn users_state(&self) -> dotmac_users::UsersState {
        dotmac_users::UsersState {
            store: self.store.clone(),
            keys: self.keys.clone(),
            invitations: self.invitations(),
        }
    }

    fn health_state(&self) -> dotmac_health::HealthState {
        dotmac_health::HealthState {
            store: self.store.clone(),
            provisioning: self.provisioning.clone(),
            ecs: self.ecs.clone(),
            cluster: self.config.ecs.cluster.clone(),
        }
    }

    fn routes(&self, handler: Handler) -> Option<ApiRoutes> {
        match handler {
            Handler::Auth => Some(dotmac_auth::router(self.auth_state())),
            Handler::Tenants => Some(dotmac_tenants::router(self.tenants_state())),
            Handler::Users => Some(dotmac_users::router(self.users_state())),
            Handler::Usage => Some(dotmac_usage::router(self.usage_state())),
            Handler::Health => Some(dotmac_health::router(self.health_state())),
            Handler::Docs => Some(dotmac_docs::router(dotmac_docs::DocsState::new(api_catalog))),
            Handler::Billing => Some(dotmac_billing_fn::router(self.billing_state())),
            Handler::Payments => Some(dotmac_payments::router(self.payments_state())),
            Handler::Provisioner
            | Handler::Authorizer
            | Handler::RotateSigningKeys
            | Handler::BillingWorker
            | Handler::BillingCycle
            | Handler::FinalizeInvoices
            | Handler::PublishEvents
            | Handler::Dunning => None,
        }
    }

    /// The router of one HTTP function (`None` for the others).
    pub fn router(&self, handler: Handler) -> Option<Router> {
        self.routes(handler).map(|routes| with_defaults(routes.router, &self.config.cors_allowed_origins))
    }

    /// Every HTTP route of every function, with its inventory.
    pub fn api_routes(&self) -> ApiRoutes {
        Handler::ALL
            .into_iter()
            .filter_map(|handler| self.routes(handler))
            .reduce(ApiRoutes::merge)
            .unwrap_or_else(|| dotmac_http::Routes::<()>::new().with_state(()))
    }

    /// Every HTTP route in one router: what the local server serves.
    pub fn api_router(&self) -> Router {
        with_defaults(self.api_routes().router, &self.config.cors_allowed_origins)
    }

    /// One run of a scheduled function (see `Handler::schedule_every`), now.
    pub async fn run_schedule(&self, handler: Handler) -> anyhow::Result<()> {
        self.run_schedule_at(handler, time::OffsetDateTime::now_utc()).await
    }

    /// One run for an EventBridge Scheduler event: its `time` (when the schedule fired) is
    /// the run's time, so a delayed or retried delivery acts as of its firing (and a test can
    /// run the dunning job "at day N"). An event without one runs now.
    pub async fn run_schedule_event(
        &self,
        handler: Handler,
        event: &serde_json::Value,
    ) -> anyhow::Result<()> {
        let fired = event.get("time").and_then(serde_json::Value::as_str).and_then(|at| {
            time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).ok()
        });
        self.run_schedule_at(handler, fired.unwrap_or_else(time::OffsetDateTime::now_utc)).await
    }

    /// One run of a scheduled function as of `now`.
    pub async fn run_schedule_at(&self, handler: Handler, now: time::OffsetDateTime) -> anyhow::Result<()> {
        match handler {
            Handler::Dunning => {
                let run = self.payments().run_dunning(now).await?;
                if run.due > 0 {
                    tracing::info!(?run, "dunning steps made");
                }
                Ok(())
            }
            Handler::RotateSigningKeys => {
                let outcome = self.rotate_signing_keys().await?;
                tracing::debug!(?outcome, "signing key rotation checked");
                Ok(())
            }
            Handler::BillingCycle => {
                let run = self.billing().scheduled_run(now).await?;
                tracing::debug!(run_id = run.id, period = %run.period, "billing cycle checked");
                Ok(())
            }
            Handler::FinalizeInvoices => {
                let finalized = self.billing().finalize_due(now).await?;
                tracing::debug!(finalized, "due invoices finalized");
                Ok(())
            }
            Handler::PublishEvents => {
                let published = self.publisher().publish_pending().await?;
                if published.published > 0 || published.held_back > 0 {
                    tracing::info!(?published, "domain events published");
                }
                Ok(())
            }
            other => anyhow::bail!("{} is not a scheduled function", other.name()),
        }
    }

    pub fn provisioner(&self) -> Provisioner {
        let provisioner = Provisioner::new(
            self.store.clone(),
            self.ecs.clone(),
            self.config.ecs.clone(),
            ContainerCredentials {
                secrets: TenantSecrets::new(self.secrets.clone(), &self.config.tenant_secret_prefix),
                keys: self.keys.clone(),
                ttl_seconds: self.config.machine_token_ttl_seconds,
                license_ttl_seconds: self.config.license_ttl_seconds,
            },
        )
        .with_secret_recovery_days(self.config.tenant_secret_recovery_days)
        .with_job_queue(self.provisioning.clone());
        match self.backup_storage() {
            Some(storage) => provisioner.with_backups(storage),
            None => provisioner,
        }
    }

    /// The backup bucket, when one is configured.
    pub fn backup_storage(&self) -> Option<BackupStorage> {
        let settings = &self.config.backups;
        settings.bucket.as_ref().map(|bucket| BackupStorage {
            s3: self.s3.clone(),
            bucket: bucket.clone(),
            retention: Retention { days: settings.retention_days, keep_at_least: settings.keep_at_least },
        })
    }

    /// The outbox publisher, onto the configured bus.
    pub fn publisher(&self) -> dotmac_publisher::Publisher {
        dotmac_publisher::Publisher {
            store: self.store.clone(),
            events: self.events.clone(),
            bus: self.config.event_bus_name.clone(),
        }
    }

    pub fn tenant_secrets(&self) -> TenantSecrets {
        TenantSecrets::new(self.secrets.clone(), &self.config.tenant_secret_prefix)
    }

    pub fn authorizer(&self) -> Authorizer {
        Authorizer { store: self.store.clone(), keys: self.keys.clone() }
    }
}

impl Handler {
    /// Whether the function holds the Stripe secrets: the webhook endpoint (verifies) and the
    /// billing worker (charges). No other function can read them (see the template's IAM).
    pub fn uses_stripe(self) -> bool {
        matches!(self, Handler::Payments | Handler::BillingWorker)
    }
}

/// Fills the Stripe key and webhook secret from their Secrets Manager secret, when one is
/// configured (deployed); values set in the environment win (a local stack).
async fn load_stripe_secret(
    stripe: &mut dotmac_config::StripeConfig,
    secrets: &aws_sdk_secretsmanager::Client,
) -> anyhow::Result<()> {
    let Some(secret_id) = stripe.secret_id.clone() else { return Ok(()) };
    #[derive(serde::Deserialize)]
    struct StripeSecret {
        secret_key: Option<String>,
        webhook_secret: Option<String>,
    }
    let value = secrets
        .get_secret_value()
        .secret_id(&secret_id)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!(aws_sdk_secretsmanager::error::DisplayErrorContext(e).to_string()))
        .with_context(|| format!("reading the Stripe secret {secret_id}"))?;
    let text =
        value.secret_string().with_context(|| format!("the Stripe secret {secret_id} holds no text"))?;
    let parsed: StripeSecret = serde_json::from_str(text)
        .with_context(|| format!("the Stripe secret {secret_id} is not the expected JSON"))?;
    let filled = |value: Option<String>| value.filter(|v| !v.trim().is_empty());
    stripe.secret_key = stripe.secret_key.take().or(filled(parsed.secret_key));
    stripe.webhook_secret = stripe.webhook_secret.take().or(filled(parsed.webhook_secret));
    Ok(())
}

/// Dunning's way into the tenant lifecycle: suspend and resume as `Actor::Billing`, for
/// `non_payment` only (the lifecycle refuses billing any other reason).
struct BillingLifecycle(dotmac_tenants::Lifecycle);

fn suspension_error(error: dotmac_tenants::TenantLifecycleError) -> dotmac_payments::SuspensionError {
    use dotmac_tenants::TenantLifecycleError as E;
    match error {
        E::Contended | E::QueueUnavailable(_) | E::Store(_) => {
            dotmac_payments::SuspensionError::Unavailable(error.to_string())
        }
        E::Denied(_) | E::NotBillingsReason | E::NotFound(_) | E::Conflict { .. } => {
            dotmac_payments::SuspensionError::Refused(error.to_string())
        }
    }
}

impl dotmac_payments::NonPaymentSuspension for BillingLifecycle {
    fn suspend(
        &self,
        tenant: dotmac_domain::TenantId,
    ) -> dotmac_payments::BoxFuture<'_, Result<dotmac_domain::Tenant, dotmac_payments::SuspensionError>> {
        Box::pin(async move {
            let reason = dotmac_domain::SuspensionReason::NonPayment;
            self.0.suspend(dotmac_tenants::Actor::Billing, tenant, reason).await.map_err(suspension_error)
        })
    }

    fn resume(
        &self,
        tenant: dotmac_domain::TenantId,
    ) -> dotmac_payments::BoxFuture<'_, Result<dotmac_domain::Tenant, dotmac_payments::SuspensionError>> {
        Box::pin(async move {
            let reason = Some(dotmac_domain::SuspensionReason::NonPayment);
            self.0.resume(dotmac_tenants::Actor::Billing, tenant, reason).await.map_err(suspension_error)
        })
    }
}

/// The billing queue's one consumer: `ChargeInvoice` jobs go to the payments worker, every
/// other job to the invoicing worker.
#[derive(Debug, Clone)]
pub struct BillingJobs {
    pub invoicing: dotmac_billing_fn::BillingWorker,
    pub payments: dotmac_payments::PaymentsWorker,
}

impl dotmac_queue::JobHandler<dotmac_queue::BillingJob> for BillingJobs {
    async fn handle(
        &self,
        job: dotmac_queue::BillingJob,
        delivery: &dotmac_queue::Delivery,
    ) -> Result<(), dotmac_queue::JobError> {
        match self.payments.charge(&job, delivery).await {
            Some(result) => result,
            None => self.invoicing.handle(job, delivery).await,
        }
    }
}

/// How the schedule rotates keys: the new key signs once every instance has reloaded twice,
/// and old keys verify for as long as the longest token they signed (access, refresh or machine)
/// lives (licenses included).
pub fn rotation_policy(config: &Config) -> RotationPolicy {
    let jwt = &config.jwt;
    let seconds = |n: u64| i64::try_from(n).unwrap_or(i64::MAX / 4);
    RotationPolicy {
        publish_lead_seconds: 2 * seconds(jwt.key_reload_seconds),
        overlap_seconds: seconds(
            jwt.access_ttl_seconds
                .max(jwt.refresh_ttl_seconds)
                .max(config.machine_token_ttl_seconds)
                .max(config.license_ttl_seconds),
        ) + 60,
        rotate_after_seconds: seconds(jwt.rotate_after_seconds),
    }
}

/// One invocation of the rotation function, whoever sent it: EventBridge Scheduler's runs
/// rotate when due and return the outcome; CloudFormation's custom resource requests are run
/// and answered at their response URL before `deadline` (the invocation's, from the Lambda
/// context), including requests that cannot be read or run.
pub async fn rotation_function(
    config: &Config,
    secrets: aws_sdk_secretsmanager::Client,
    http: &reqwest::Client,
    event: serde_json::Value,
    deadline: tokio::time::Instant,
) -> anyhow::Result<serde_json::Value> {
    use custom_resource::Invocation;
    Ok(match custom_resource::classify(&event) {
        Invocation::Scheduled => serde_json::to_value(rotate_signing_keys(config, secrets).await?)?,
        Invocation::CustomResource(request) => {
            serde_json::to_value(custom_resource::handle(config, secrets, http, *request, deadline).await?)?
        }
        Invocation::Unreadable { event, error } => {
            serde_json::to_value(custom_resource::refuse(config, http, &event, &error, deadline).await?)?
        }
    })
}

/// One run of the rotation schedule: adds a key when one is due (or when the set does not
/// exist yet: the first run after a deploy creates it), else does nothing, so it is safe to
/// run as often as wanted. Needs no keys of its own.
pub async fn rotate_signing_keys(
    config: &Config,
    secrets: aws_sdk_secretsmanager::Client,
) -> anyhow::Result<RotationOutcome> {
    let secret_id = config.jwt.key_set_secret.as_ref().context("DOTMAC_JWT_KEY_SET_SECRET is not set")?;
    let public = config.jwt.public_key_set_secret.as_ref().map(|id| KeySetSecret::new(secrets.clone(), id));
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    Ok(KeySetSecret::new(secrets, secret_id).rotate(now, rotation_policy(config), public.as_ref()).await?)
}
