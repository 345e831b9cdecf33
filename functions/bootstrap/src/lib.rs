//! Wiring: configuration and AWS clients, built once per process (cold start), turned into
//! each function's router or job handler. The Lambda `bootstrap` binary and the local server
//! both start here.

use axum::Router;
use dotmac_config::Config;
use dotmac_http::{ApiRoutes, JwtKeys, with_defaults};
use dotmac_provisioner::Provisioner;
use dotmac_queue::SqsQueue;
use dotmac_store::Store;
use std::sync::Arc;

/// The Lambda handlers this binary can be (`_HANDLER`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handler {
    Auth,
    Tenants,
    Health,
    Provisioner,
}

impl Handler {
    pub const ALL: [Handler; 4] = [Handler::Auth, Handler::Tenants, Handler::Health, Handler::Provisioner];

    pub fn parse(raw: &str) -> Option<Handler> {
        // The Handler property may carry a file-style prefix (`bootstrap.tenants`).
        let name = raw.rsplit('.').next().unwrap_or(raw);
        Handler::ALL.into_iter().find(|h| h.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Handler::Auth => "auth",
            Handler::Tenants => "tenants",
            Handler::Health => "health",
            Handler::Provisioner => "provisioner",
        }
    }
}

/// Everything a function needs, shared by all its invocations.
#[derive(Clone)]
pub struct Platform {
    pub config: Config,
    pub store: Store,
    pub provisioning: SqsQueue,
    pub ecs: aws_sdk_ecs::Client,
    pub keys: Arc<JwtKeys>,
}

impl Platform {
    /// AWS clients from the standard SDK chain: credentials, region and endpoints
    /// (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_DYNAMODB`, ...) all come from the environment,
    /// so the same code runs against AWS, moto, LocalStack or DynamoDB Local.
    pub async fn connect(config: Config) -> anyhow::Result<Self> {
        let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        Self::with_sdk_config(config, &sdk)
    }

    pub fn with_sdk_config(config: Config, sdk: &aws_config::SdkConfig) -> anyhow::Result<Self> {
        let keys = JwtKeys::from_settings(&config.jwt)?;
        Ok(Platform {
            store: Store::new(aws_sdk_dynamodb::Client::new(sdk), &config.table_name),
            provisioning: SqsQueue::new(aws_sdk_sqs::Client::new(sdk), &config.provisioning_queue_url),
            ecs: aws_sdk_ecs::Client::new(sdk),
            keys: Arc::new(keys),
            config,
        })
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

    fn health_state(&self) -> dotmac_health::HealthState {
        dotmac_health::HealthState {
            store: self.store.clone(),
            provisioning: self.provisioning.clone(),
            ecs: self.ecs.clone(),
            cluster: self.config.ecs.cluster.clone(),
        }
    }

    pub fn auth_router(&self) -> Router {
        with_defaults(dotmac_auth::router(self.auth_state()).router, &self.config.cors_allowed_origins)
    }

    pub fn tenants_router(&self) -> Router {
        with_defaults(dotmac_tenants::router(self.tenants_state()).router, &self.config.cors_allowed_origins)
    }

    pub fn health_router(&self) -> Router {
        with_defaults(dotmac_health::router(self.health_state()).router, &self.config.cors_allowed_origins)
    }

    /// Every HTTP route of every function, with its inventory.
    pub fn api_routes(&self) -> ApiRoutes {
        dotmac_auth::router(self.auth_state())
            .merge(dotmac_tenants::router(self.tenants_state()))
            .merge(dotmac_health::router(self.health_state()))
    }

    /// Every HTTP route in one router: what the local server serves.
    pub fn api_router(&self) -> Router {
        with_defaults(self.api_routes().router, &self.config.cors_allowed_origins)
    }

    pub fn provisioner(&self) -> Provisioner {
        Provisioner::new(self.store.clone(), self.ecs.clone(), self.config.ecs.clone())
    }
}
