//! The platform's configuration: one typed struct read from the environment once, at cold
//! start (Lambda) or start-up (local stack), validated, and printable with secrets redacted.

use std::collections::HashMap;
use std::fmt;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("environment variable {name} is required")]
    Missing { name: &'static str },
    #[error("environment variable {name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
}

/// How tenant containers are launched on ECS.
#[derive(Clone, PartialEq, Eq)]
pub struct EcsSettings {
    pub cluster: String,
    pub task_family: String,
    pub image: String,
    /// Always `FARGATE` (the only launch type the task definition is built for).
    pub launch_type: String,
    pub subnets: Vec<String>,
    pub security_groups: Vec<String>,
    pub assign_public_ip: bool,
    pub execution_role_arn: Option<String>,
    pub task_role_arn: Option<String>,
    /// How long the provisioner waits for a new task to reach RUNNING in one attempt.
    pub task_start_timeout_seconds: u64,
    /// The most repairs one fleet reconcile job makes before it queues itself again with a
    /// cursor (`DOTMAC_RECONCILE_MAX_REPAIRS`).
    pub reconcile_max_repairs: u32,
    /// The pace of the reconcile's RunTask calls, kept under ECS's RunTask limit of 20 a
    /// second so other launches keep room (`DOTMAC_RECONCILE_RUN_TASKS_PER_SECOND`).
    pub reconcile_run_tasks_per_second: u32,
}

#[derive(Clone, PartialEq, Eq)]
pub struct JwtSettings {
    /// Base64 PKCS#8 Ed25519 private key. `None` only where a caller generates one (local).
    pub signing_key: Option<String>,
    /// A rotating key set (JSON, see `dotmac_tokens::KeySet`); wins over `signing_key`.
    pub key_set: Option<String>,
    /// The Secrets Manager secret holding the key set: what deployed functions use. Wins
    /// over both inline forms.
    pub key_set_secret: Option<String>,
    /// The secret holding the public half of the key set: what functions that only verify
    /// tokens load instead, so they never hold a private key.
    pub public_key_set_secret: Option<String>,
    /// How often a running instance reloads the key set from its secret.
    pub key_reload_seconds: u64,
    /// The age at which the rotation schedule replaces the signing key.
    pub rotate_after_seconds: u64,
    pub issuer: String,
    pub audience: String,
    pub access_ttl_seconds: u64,
    /// How long a refresh token stays good unused.
    pub refresh_ttl_seconds: u64,
    /// A sign-in session's absolute lifetime: refreshing never extends it.
    pub session_max_seconds: u64,
}

/// How invitations (the way accounts are created outside platform staff's seeding) go out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvitationSettings {
    /// The From address of invitation e-mails: an SES identity the users function may send as.
    pub sender: String,
    /// The page an invitation's link opens (`<accept_url>#token=…`).
    pub accept_url: String,
    /// How long an invitation's link works.
    pub ttl_seconds: u64,
    /// Print each invitation's link on stdout: for `make dev` only, since the link is the
    /// invitee's credential.
    pub print_links: bool,
}

pub const DEFAULT_INVITATION_SENDER: &str = "invitations@dotmac.local";
pub const DEFAULT_INVITATION_ACCEPT_URL: &str = "http://127.0.0.1:8000/invitations/accept";
pub const DEFAULT_INVITATION_TTL_SECONDS: u64 = 7 * 24 * 3600;
/// A link that lives longer than this is an account waiting for whoever finds the e-mail.
pub const MAX_INVITATION_TTL_SECONDS: u64 = 365 * 24 * 3600;

impl InvitationSettings {
    fn from_reader<S: Source>(env: &Reader<'_, S>) -> Result<Self, ConfigError> {
        let accept_url = env.or("DOTMAC_INVITATION_ACCEPT_URL", DEFAULT_INVITATION_ACCEPT_URL);
        let absolute = accept_url.starts_with("https://") || accept_url.starts_with("http://");
        // The token goes after a `#`: a query or fragment of the page's own would swallow it.
        if !absolute || accept_url.contains(['?', '#']) || accept_url.chars().any(char::is_whitespace) {
            return Err(ConfigError::Invalid {
                name: "DOTMAC_INVITATION_ACCEPT_URL",
                reason: format!(
                    "must be an absolute http(s) URL with no query or fragment, got {accept_url:?}"
                ),
            });
        }
        let sender = env.or("DOTMAC_INVITATION_SENDER", DEFAULT_INVITATION_SENDER);
        if !sender.contains('@') || sender.chars().any(char::is_whitespace) {
            return Err(ConfigError::Invalid {
                name: "DOTMAC_INVITATION_SENDER",
                reason: format!("must be an e-mail address, got {sender:?}"),
            });
        }
        let ttl_seconds = env.number("DOTMAC_INVITATION_TTL_SECONDS", DEFAULT_INVITATION_TTL_SECONDS)?;
        if !(1..=MAX_INVITATION_TTL_SECONDS).contains(&ttl_seconds) {
            return Err(ConfigError::Invalid {
                name: "DOTMAC_INVITATION_TTL_SECONDS",
                reason: format!("must be 1 to {MAX_INVITATION_TTL_SECONDS} (a year)"),
            });
        }
        Ok(InvitationSettings {
            sender,
            accept_url,
            ttl_seconds,
            print_links: env.flag("DOTMAC_INVITATION_PRINT_LINKS", false)?,
        })
    }
}

/// Where tenant backups go and how long they stay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSettings {
    /// The S3 bucket (`DOTMAC_BACKUP_BUCKET`); without one, backup and restore jobs fail
    /// (and say why) rather than pretend.
    pub bucket: Option<String>,
    /// Backups older than this many days are deleted by the daily run...
    pub retention_days: u32,
    /// ...except the newest this many completed ones of each tenant, whatever their age.
    pub keep_at_least: u32,
    /// Path-style S3 addresses (`endpoint/bucket/key`): for emulators without virtual hosts.
    pub force_path_style: bool,
}

#[derive(Clone, PartialEq, Eq)]
pub struct Config {
    pub table_name: String,
    pub provisioning_queue_url: String,
    /// Must equal the queue's redrive `maxReceiveCount`: the attempt that reaches it marks the
    /// tenant failed before the message moves to the DLQ.
    pub provisioning_max_receive_count: u32,
    /// How often the provisioner re-sends a job ECS throttled (a new, delayed message, which
    /// uses no receive count) before a throttle counts as a failed attempt.
    pub provisioning_max_throttle_resends: u32,
    pub ecs: EcsSettings,
    pub jwt: JwtSettings,
    /// Browser origins allowed to call the API (CORS); empty allows none.
    pub cors_allowed_origins: Vec<String>,
    /// Tenant secrets are named `<prefix>/<tenant id>`.
    pub tenant_secret_prefix: String,
    /// Lifetime of a tenant container's machine token (renewed by re-provisioning when less
    /// than a quarter of it is left).
    pub machine_token_ttl_seconds: u64,
    /// Lifetime of a tenant's signed license (re-issued whenever its plan or bundles change).
    pub license_ttl_seconds: u64,
    /// Days Secrets Manager keeps a deleted tenant's secret recoverable (7 to 30).
    pub tenant_secret_recovery_days: i64,
    /// The EventBridge bus domain events are published to (`default` for the account's own).
    pub event_bus_name: String,
    /// How far ahead of the server's clock a usage report's `observed_at` may be.
    pub usage_max_future_seconds: u64,
    /// How old a usage report's `observed_at` may be (covers last month's late reports).
    pub usage_max_age_seconds: u64,
    pub invitations: InvitationSettings,
    pub backups: BackupSettings,
    pub billing: BillingSettings,
    pub stripe: StripeConfig,
}

/// Stripe: the secret key and API base the charges use, the webhook endpoint's signing
/// secret. Locally from the environment (`make dev` fills them in for the double); deployed,
/// the key and the webhook secret come from the Secrets Manager secret `secret_id` names
/// (JSON `{"secret_key": "...", "webhook_secret": "..."}`), read at cold start only by the
/// functions that use them.
#[derive(Clone, PartialEq, Eq)]
pub struct StripeConfig {
    pub secret_key: Option<String>,
    pub webhook_secret: Option<String>,
    pub api_base: String,
    pub secret_id: Option<String>,
}

impl fmt::Debug for StripeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StripeConfig")
            .field("secret_key", &self.secret_key.as_ref().map(|_| "<redacted>"))
            .field("webhook_secret", &self.webhook_secret.as_ref().map(|_| "<redacted>"))
            .field("api_base", &self.api_base)
            .field("secret_id", &self.secret_id)
            .finish()
    }
}

pub const DEFAULT_STRIPE_API_BASE: &str = "https://api.stripe.com";

/// The billing run and its invoices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillingSettings {
    /// The billing job queue (the billing function and worker need it; others never use it).
    pub queue_url: String,
    /// Must equal the billing queue's redrive `maxReceiveCount`: the attempt reaching it
    /// records the tenant as failed in its run.
    pub max_receive_count: u32,
    /// How long after its period ends an invoice stays a draft (late reports still count)
    /// before the finalizer numbers it.
    pub grace_seconds: u64,
    /// The days after a failed payment at which dunning retries and degrades the tenant
    /// (`DOTMAC_DUNNING_SCHEDULE`, default `3,5,7`; the last step suspends for non-payment).
    pub dunning_schedule: dotmac_domain::DunningSchedule,
}

/// Reads variables from any source (the process environment, or a map in tests).
pub trait Source {
    fn get(&self, name: &str) -> Option<String>;
}

pub struct ProcessEnv;

impl Source for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.trim().is_empty())
    }
}

impl Source for HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name).cloned().filter(|v| !v.trim().is_empty())
    }
}

struct Reader<'a, S: Source>(&'a S);

impl<S: Source> Reader<'_, S> {
    fn required(&self, name: &'static str) -> Result<String, ConfigError> {
        self.0.get(name).ok_or(ConfigError::Missing { name })
    }

    fn or(&self, name: &'static str, default: &str) -> String {
        self.0.get(name).unwrap_or_else(|| default.to_owned())
    }

    fn list(&self, name: &'static str) -> Vec<String> {
        self.0
            .get(name)
            .map(|v| v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect())
            .unwrap_or_default()
    }

    fn number<T: std::str::FromStr>(&self, name: &'static str, default: T) -> Result<T, ConfigError>
    where
        T::Err: fmt::Display,
    {
        match self.0.get(name) {
            None => Ok(default),
            Some(raw) => {
                raw.trim().parse().map_err(|e: T::Err| ConfigError::Invalid { name, reason: e.to_string() })
            }
        }
    }

    fn flag(&self, name: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.0.get(name).as_deref().map(str::to_ascii_lowercase).as_deref() {
            None => Ok(default),
            Some("1" | "true" | "yes" | "enabled") => Ok(true),
            Some("0" | "false" | "no" | "disabled") => Ok(false),
            Some(other) => {
                Err(ConfigError::Invalid { name, reason: format!("expected true or false, got {other:?}") })
            }
        }
    }
}

pub const DEFAULT_TASK_FAMILY: &str = "dotmac-isp-framework";
pub const DEFAULT_ISP_FRAMEWORK_IMAGE: &str = "public.ecr.aws/dotmac/isp-framework:latest";

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_source(&ProcessEnv)
    }

    /// The provisioning queue's `maxReceiveCount` (1 or more, default 5).
    pub fn max_receive_count_from<S: Source>(source: &S) -> Result<u32, ConfigError> {
        let count = Reader(source).number("DOTMAC_PROVISIONING_MAX_RECEIVE_COUNT", 5u32)?;
        if count == 0 {
            return Err(ConfigError::Invalid {
                name: "DOTMAC_PROVISIONING_MAX_RECEIVE_COUNT",
                reason: "must be at least 1".into(),
            });
        }
        Ok(count)
    }

    pub fn from_source<S: Source>(source: &S) -> Result<Self, ConfigError> {
        let env = Reader(source);
        let provisioning_max_receive_count = Self::max_receive_count_from(source)?;
        // The task definition is Fargate/awsvpc and plans use Fargate sizes: other launch
        // types would need their own definition, so they are refused rather than half-done.
        let launch_type = env.or("DOTMAC_ECS_LAUNCH_TYPE", "FARGATE").to_ascii_uppercase();
        if launch_type != "FARGATE" {
            return Err(ConfigError::Invalid {
                name: "DOTMAC_ECS_LAUNCH_TYPE",
                reason: format!("only FARGATE is supported, got {launch_type}"),
            });
        }
        Ok(Config {
            table_name: env.required("DOTMAC_TABLE_NAME")?,
            provisioning_queue_url: env.required("DOTMAC_PROVISIONING_QUEUE_URL")?,
            provisioning_max_receive_count,
            provisioning_max_throttle_resends: env
                .number("DOTMAC_PROVISIONING_MAX_THROTTLE_RESENDS", 10u32)?,
            ecs: EcsSettings {
                cluster: env.required("DOTMAC_ECS_CLUSTER")?,
                task_family: env.or("DOTMAC_TASK_FAMILY", DEFAULT_TASK_FAMILY),
                image: env.or("ISP_FRAMEWORK_IMAGE", DEFAULT_ISP_FRAMEWORK_IMAGE),
                launch_type,
                subnets: env.list("DOTMAC_ECS_SUBNETS"),
                security_groups: env.list("DOTMAC_ECS_SECURITY_GROUPS"),
                assign_public_ip: env.flag("DOTMAC_ECS_ASSIGN_PUBLIC_IP", false)?,
                execution_role_arn: source.get("DOTMAC_TASK_EXECUTION_ROLE_ARN"),
                task_role_arn: source.get("DOTMAC_TASK_ROLE_ARN"),
                task_start_timeout_seconds: env.number("DOTMAC_TASK_START_TIMEOUT_SECONDS", 40u64)?,
                reconcile_max_repairs: env.number("DOTMAC_RECONCILE_MAX_REPAIRS", 50u32)?.max(1),
                reconcile_run_tasks_per_second: env
                    .number("DOTMAC_RECONCILE_RUN_TASKS_PER_SECOND", 10u32)?
                    .clamp(1, 20),
            },
            cors_allowed_origins: env.list("DOTMAC_CORS_ALLOWED_ORIGINS"),
            tenant_secret_prefix: env.or("DOTMAC_TENANT_SECRET_PREFIX", "dotmac/tenants"),
            machine_token_ttl_seconds: env.number("DOTMAC_MACHINE_TOKEN_TTL_SECONDS", 30 * 24 * 3600u64)?,
            license_ttl_seconds: env.number("DOTMAC_LICENSE_TTL_SECONDS", 35 * 24 * 3600u64)?,
            tenant_secret_recovery_days: {
                let days = env.number("DOTMAC_TENANT_SECRET_RECOVERY_DAYS", 30i64)?;
                if !(7..=30).contains(&days) {
                    return Err(ConfigError::Invalid {
                        name: "DOTMAC_TENANT_SECRET_RECOVERY_DAYS",
                        reason: "Secrets Manager keeps a deleted secret 7 to 30 days".into(),
                    });
                }
                days
            },
            event_bus_name: env.or("DOTMAC_EVENT_BUS_NAME", "default"),
            usage_max_future_seconds: env.number("DOTMAC_USAGE_MAX_FUTURE_SECONDS", 300u64)?,
            usage_max_age_seconds: env.number("DOTMAC_USAGE_MAX_AGE_SECONDS", 35 * 24 * 3600u64)?,
            invitations: InvitationSettings::from_reader(&env)?,
            backups: BackupSettings {
                bucket: source.get("DOTMAC_BACKUP_BUCKET"),
                retention_days: env.number("DOTMAC_BACKUP_RETENTION_DAYS", 30u32)?,
                keep_at_least: env.number("DOTMAC_BACKUP_KEEP_AT_LEAST", 3u32)?,
                force_path_style: env.flag("DOTMAC_S3_FORCE_PATH_STYLE", false)?,
            },
            billing: BillingSettings {
                queue_url: env.or("DOTMAC_BILLING_QUEUE_URL", ""),
                max_receive_count: env.number("DOTMAC_BILLING_MAX_RECEIVE_COUNT", 5u32)?.max(1),
                grace_seconds: env.number("DOTMAC_BILLING_GRACE_SECONDS", 3 * 24 * 3600u64)?,
                dunning_schedule: env
                    .number("DOTMAC_DUNNING_SCHEDULE", dotmac_domain::DunningSchedule::default())?,
            },
            stripe: StripeConfig {
                secret_key: source.get("DOTMAC_STRIPE_SECRET_KEY"),
                webhook_secret: source.get("DOTMAC_STRIPE_WEBHOOK_SECRET"),
                api_base: env.or("DOTMAC_STRIPE_API_BASE", DEFAULT_STRIPE_API_BASE),
                secret_id: source.get("DOTMAC_STRIPE_SECRET_ID"),
            },
            jwt: JwtSettings {
                signing_key: source.get("DOTMAC_JWT_SIGNING_KEY"),
                key_set: source.get("DOTMAC_JWT_KEY_SET"),
                key_set_secret: source.get("DOTMAC_JWT_KEY_SET_SECRET"),
                public_key_set_secret: source.get("DOTMAC_JWT_PUBLIC_KEY_SET_SECRET"),
                key_reload_seconds: env.number("DOTMAC_JWT_KEY_RELOAD_SECONDS", 300u64)?.max(1),
                rotate_after_seconds: env.number("DOTMAC_JWT_ROTATE_AFTER_SECONDS", 30 * 24 * 3600u64)?,
                issuer: env.or("DOTMAC_JWT_ISSUER", "https://api.dotmac.local"),
                audience: env.or("DOTMAC_JWT_AUDIENCE", "dotmac-platform"),
                access_ttl_seconds: env.number("DOTMAC_ACCESS_TOKEN_TTL_SECONDS", 900u64)?,
                refresh_ttl_seconds: env.number("DOTMAC_REFRESH_TOKEN_TTL_SECONDS", 30 * 24 * 3600u64)?,
                session_max_seconds: env.number("DOTMAC_SESSION_MAX_AGE_SECONDS", 30 * 24 * 3600u64)?,
            },
        })
    }
}

/// Printed at start-up: every setting, secrets redacted.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("table_name", &self.table_name)
            .field("provisioning_queue_url", &self.provisioning_queue_url)
            .field("provisioning_max_receive_count", &self.provisioning_max_receive_count)
            .field("provisioning_max_throttle_resends", &self.provisioning_max_throttle_resends)
            .field("ecs", &self.ecs)
            .field("jwt", &self.jwt)
            .field("cors_allowed_origins", &self.cors_allowed_origins)
            .field("tenant_secret_prefix", &self.tenant_secret_prefix)
            .field("machine_token_ttl_seconds", &self.machine_token_ttl_seconds)
            .field("license_ttl_seconds", &self.license_ttl_seconds)
            .field("tenant_secret_recovery_days", &self.tenant_secret_recovery_days)
            .field("event_bus_name", &self.event_bus_name)
            .field("usage_max_future_seconds", &self.usage_max_future_seconds)
            .field("usage_max_age_seconds", &self.usage_max_age_seconds)
            .field("invitations", &self.invitations)
            .field("backups", &self.backups)
            .field("billing", &self.billing)
            .field("stripe", &self.stripe)
            .finish()
    }
}

impl fmt::Debug for EcsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EcsSettings")
            .field("cluster", &self.cluster)
            .field("task_family", &self.task_family)
            .field("image", &self.image)
            .field("launch_type", &self.launch_type)
            .field("subnets", &self.subnets)
            .field("security_groups", &self.security_groups)
            .field("assign_public_ip", &self.assign_public_ip)
            .field("execution_role_arn", &self.execution_role_arn)
            .field("task_role_arn", &self.task_role_arn)
            .field("task_start_timeout_seconds", &self.task_start_timeout_seconds)
            .field("reconcile_max_repairs", &self.reconcile_max_repairs)
            .field("reconcile_run_tasks_per_second", &self.reconcile_run_tasks_per_second)
            .finish()
    }
}

impl fmt::Debug for JwtSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtSettings")
            .field("signing_key", &self.signing_key.as_ref().map(|_| "<redacted>"))
            .field("key_set", &self.key_set.as_ref().map(|_| "<redacted>"))
            .field("key_set_secret", &self.key_set_secret)
            .field("public_key_set_secret", &self.public_key_set_secret)
            .field("key_reload_seconds", &self.key_reload_seconds)
            .field("rotate_after_seconds", &self.rotate_after_seconds)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("access_ttl_seconds", &self.access_ttl_seconds)
            .field("refresh_ttl_seconds", &self.refresh_ttl_seconds)
            .field("session_max_seconds", &self.session_max_seconds)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> HashMap<String, String> {
        [
            ("DOTMAC_TABLE_NAME", "t"),
            ("DOTMAC_PROVISIONING_QUEUE_URL", "http://q"),
            ("DOTMAC_ECS_CLUSTER", "c"),
            ("DOTMAC_JWT_SIGNING_KEY", "c2VjcmV0"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    #[test]
    fn reads_defaults_and_lists() {
        let mut env = base();
        env.insert("DOTMAC_ECS_SUBNETS".into(), "subnet-a, subnet-b,".into());
        let config = Config::from_source(&env).expect("valid config");
        assert_eq!(config.ecs.subnets, vec!["subnet-a", "subnet-b"]);
        assert_eq!(config.ecs.launch_type, "FARGATE");
        assert_eq!(config.provisioning_max_receive_count, 5);
        assert_eq!(config.provisioning_max_throttle_resends, 10);
        env.insert("DOTMAC_PROVISIONING_MAX_THROTTLE_RESENDS".into(), "0".into());
        let config = Config::from_source(&env).expect("0 turns re-sending off");
        assert_eq!(config.provisioning_max_throttle_resends, 0);
    }

    #[test]
    fn names_the_missing_variable() {
        let mut env = base();
        env.remove("DOTMAC_ECS_CLUSTER");
        assert_eq!(Config::from_source(&env), Err(ConfigError::Missing { name: "DOTMAC_ECS_CLUSTER" }));
    }

    #[test]
    fn rejects_bad_numbers_and_launch_types() {
        let mut env = base();
        env.insert("DOTMAC_PROVISIONING_MAX_RECEIVE_COUNT".into(), "many".into());
        assert!(matches!(Config::from_source(&env), Err(ConfigError::Invalid { .. })));
        let mut env = base();
        env.insert("DOTMAC_ECS_LAUNCH_TYPE".into(), "LAMBDA".into());
        assert!(matches!(Config::from_source(&env), Err(ConfigError::Invalid { .. })));
    }

    #[test]
    fn invitations_default_to_a_week_and_refuse_links_that_would_lose_the_token() {
        let config = Config::from_source(&base()).expect("valid config");
        assert_eq!(config.invitations.ttl_seconds, 7 * 24 * 3600);
        assert_eq!(config.invitations.accept_url, DEFAULT_INVITATION_ACCEPT_URL);
        assert!(!config.invitations.print_links, "links are printed only when asked");
        for (name, bad) in [
            ("DOTMAC_INVITATION_ACCEPT_URL", "https://api.example.com/accept?x=1"),
            ("DOTMAC_INVITATION_ACCEPT_URL", "https://api.example.com/accept#here"),
            ("DOTMAC_INVITATION_ACCEPT_URL", "api.example.com/accept"),
            ("DOTMAC_INVITATION_SENDER", "no-at-sign"),
            ("DOTMAC_INVITATION_TTL_SECONDS", "0"),
            ("DOTMAC_INVITATION_TTL_SECONDS", "31536001"),
            ("DOTMAC_INVITATION_PRINT_LINKS", "sometimes"),
        ] {
            let mut env = base();
            env.insert(name.into(), bad.into());
            assert!(
                matches!(Config::from_source(&env), Err(ConfigError::Invalid { name: named, .. }) if named == name),
                "{name}={bad}"
            );
        }
    }

    #[test]
    fn debug_output_redacts_the_signing_key() {
        let config = Config::from_source(&base()).expect("valid config");
        let printed = format!("{config:?}");
        assert!(!printed.contains("c2VjcmV0"));
        assert!(printed.contains("<redacted>"));
    }
}
