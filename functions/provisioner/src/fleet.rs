//! The tenants' containers on ECS: the task definition of the ISP framework image, and one
//! RunTask-launched task per tenant, found again by `startedBy` = tenant id.

use aws_sdk_ecs::Client;
use aws_sdk_ecs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ecs::types::{
    AssignPublicIp, AwsVpcConfiguration, Compatibility, ContainerDefinition, ContainerOverride,
    DesiredStatus, KeyValuePair, LaunchType, NetworkConfiguration, NetworkMode, PortMapping, PropagateTags,
    Secret, Tag, Task, TaskOverride,
};
use dotmac_config::EcsSettings;
use dotmac_domain::{ObservedTask, TaskSize, Tenant, TenantId};
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

pub const CONTAINER_NAME: &str = "isp-framework";
pub const CONTAINER_PORT: i32 = 8000;
/// The container's environment variable holding its machine token.
pub const MACHINE_TOKEN_VARIABLE: &str = "DOTMAC_MACHINE_TOKEN";
/// The JSON key of the token in the tenant's secret (see `dotmac_secrets::MachineCredentials`).
const MACHINE_TOKEN_KEY: &str = "machine_token";
/// Fargate's smallest size; plans override it per task.
const BASE_CPU: &str = "256";
const BASE_MEMORY: &str = "512";

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("ECS {operation} failed: {message}")]
    Ecs { operation: &'static str, message: String },
    #[error("the task stopped before running: {0}")]
    Stopped(String),
    #[error("the task did not reach RUNNING within {0} s")]
    Timeout(u64),
    #[error("{0}")]
    Invalid(String),
    #[error("a dependency failed: {0}")]
    Dependency(String),
    /// ECS refused the call for its rate (ThrottlingException and the like): retry later.
    #[error("ECS {operation} throttled: {message}")]
    Throttled { operation: &'static str, message: String },
}

/// The error codes AWS answers a request rate with (the SDK's own throttling list).
const THROTTLING_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "TransactionInProgressException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "LimitExceededException",
    "RequestThrottled",
    "SlowDown",
    "PriorRequestNotComplete",
    "EC2ThrottledException",
];

/// Whether ECS said "slow down" (an error code, or a RunTask failure reason naming it).
pub fn is_throttling(code: &str) -> bool {
    THROTTLING_CODES.contains(&code) || code.contains("Throttl") || code.contains("Rate exceeded")
}

impl FleetError {
    fn ecs<E: ProvideErrorMetadata + std::error::Error + 'static, R: std::fmt::Debug>(
        operation: &'static str,
        error: SdkError<E, R>,
    ) -> Self {
        let code = error.as_service_error().and_then(|e| e.code()).map(str::to_owned);
        let message = match error.as_service_error() {
            Some(e) => format!("{}: {}", e.code().unwrap_or("ServiceError"), e.message().unwrap_or_default()),
            None => error.to_string(),
        };
        if code.as_deref().is_some_and(is_throttling) {
            return FleetError::Throttled { operation, message };
        }
        FleetError::Ecs { operation, message }
    }
}

/// What ECS says about a tenant's task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchedTask {
    pub task_arn: String,
    pub cluster_arn: String,
    pub task_definition_arn: String,
    pub last_status: String,
    pub stopped_reason: Option<String>,
    pub private_ip: Option<String>,
    /// What launched it (a tenant's task: the tenant id).
    pub started_by: Option<String>,
    /// The image of its ISP framework container, when ECS says.
    pub image: Option<String>,
    /// Its task-level CPU and memory, when ECS says.
    pub size: Option<TaskSize>,
}

impl LaunchedTask {
    fn from_task(task: &Task) -> Self {
        let private_ip = task
            .attachments()
            .iter()
            .flat_map(|a| a.details())
            .find(|d| d.name() == Some("privateIPv4Address"))
            .and_then(|d| d.value().map(str::to_owned));
        LaunchedTask {
            task_arn: task.task_arn().unwrap_or_default().to_owned(),
            cluster_arn: task.cluster_arn().unwrap_or_default().to_owned(),
            task_definition_arn: task.task_definition_arn().unwrap_or_default().to_owned(),
            last_status: task.last_status().unwrap_or_default().to_owned(),
            // An empty reason (ECS has none yet) would leave the failure without one.
            stopped_reason: task.stopped_reason().filter(|r| !r.is_empty()).map(str::to_owned),
            private_ip,
            started_by: task.started_by().map(str::to_owned),
            image: task
                .containers()
                .iter()
                .find(|c| c.name() == Some(CONTAINER_NAME))
                .and_then(|c| c.image())
                .map(str::to_owned),
            size: match (task.cpu().and_then(|c| c.parse().ok()), task.memory().and_then(|m| m.parse().ok()))
            {
                (Some(cpu), Some(memory_mib)) => Some(TaskSize { cpu, memory_mib }),
                _ => None,
            },
        }
    }

    /// The task as the reconcile's pure rules see it.
    pub fn observed(&self) -> ObservedTask {
        ObservedTask {
            task_arn: self.task_arn.clone(),
            last_status: self.last_status.clone(),
            image: self.image.clone(),
            size: self.size,
        }
    }
}

/// DescribeTasks takes at most this many tasks per call.
const DESCRIBE_BATCH: usize = 100;

/// A tenant task definition as it would be registered now.
#[derive(Debug, Clone)]
struct DesiredDefinition {
    containers: Vec<ContainerDefinition>,
    runtime_platform: Option<aws_sdk_ecs::types::RuntimePlatform>,
    cpu: Option<String>,
    memory: Option<String>,
    execution_role_arn: Option<String>,
    task_role_arn: Option<String>,
}

impl DesiredDefinition {
    /// Whether `existing` runs the same thing: every field a task takes from its definition
    /// that the provisioner sets or copies. Lists compare as sets (ECS may reorder them).
    fn matches(&self, existing: &aws_sdk_ecs::types::TaskDefinition) -> bool {
        fn env(c: &ContainerDefinition) -> BTreeSet<(String, String)> {
            c.environment()
                .iter()
                .map(|p| (p.name().unwrap_or_default().to_owned(), p.value().unwrap_or_default().to_owned()))
                .collect()
        }
        fn secrets(c: &ContainerDefinition) -> BTreeSet<(String, String)> {
            c.secrets().iter().map(|s| (s.name().to_owned(), s.value_from().to_owned())).collect()
        }
        let same_container = |want: &ContainerDefinition| {
            existing.container_definitions().iter().any(|have| {
                have.name() == want.name()
                    && have.image() == want.image()
                    && have.cpu() == want.cpu()
                    && have.memory() == want.memory()
                    && have.memory_reservation() == want.memory_reservation()
                    && env(have) == env(want)
                    && secrets(have) == secrets(want)
            })
        };
        // ECS fills in a default platform when none is given.
        let platform_matches = self.runtime_platform.is_none()
            || existing.runtime_platform().map(|p| (p.cpu_architecture(), p.operating_system_family()))
                == self
                    .runtime_platform
                    .as_ref()
                    .map(|p| (p.cpu_architecture(), p.operating_system_family()));
        existing.container_definitions().len() == self.containers.len()
            && self.containers.iter().all(same_container)
            && existing.cpu() == self.cpu.as_deref()
            && existing.memory() == self.memory.as_deref()
            && existing.execution_role_arn() == self.execution_role_arn.as_deref()
            && existing.task_role_arn() == self.task_role_arn.as_deref()
            && platform_matches
    }
}

pub struct Fleet {
    ecs: Client,
    settings: EcsSettings,
}

impl Fleet {
    pub fn new(ecs: Client, settings: EcsSettings) -> Self {
        Self { ecs, settings }
    }

    pub fn settings(&self) -> &EcsSettings {
        &self.settings
    }

    /// The tenant's own task definition (family `<task family>-<tenant id>`): a copy of the
    /// stack's baseline definition (the family itself) with the tenant's secret wired in as
    /// `secrets`. ECS resolves it with the platform's execution role when the task starts, so
    /// the container's task role needs no access to any secret and one tenant's container can
    /// never read another tenant's token. The tenant's latest revision is reused only when it
    /// matches what would be registered now — image, task and container CPU and memory,
    /// environment, secrets, roles and CPU architecture —, so retries register nothing new and
    /// a new image or a changed baseline (say, a new environment variable) does register.
    pub async fn ensure_tenant_task_definition(
        &self,
        tenant_id: TenantId,
        secret_arn: &str,
    ) -> Result<String, FleetError> {
        self.ensure_sized_task_definition(tenant_id, secret_arn, None).await
    }

    /// `ensure_tenant_task_definition` with the task's CPU and memory set to `size` in the
    /// definition itself (the container's memory with it), so a revision records the size its
    /// tasks run at: the scale job registers a new revision for a new size, and launching at
    /// the size the tenant already has reuses its revision.
    pub async fn ensure_sized_task_definition(
        &self,
        tenant_id: TenantId,
        secret_arn: &str,
        size: Option<TaskSize>,
    ) -> Result<String, FleetError> {
        self.ensure_definition(tenant_id, secret_arn, size, None).await
    }

    /// `ensure_sized_task_definition` running `image` (`None`: the fleet's image): a rollout's
    /// replacement registers a revision carrying its image, and a relaunch of a tenant the
    /// rollout moved reuses it.
    pub async fn ensure_definition(
        &self,
        tenant_id: TenantId,
        secret_arn: &str,
        size: Option<TaskSize>,
        image: Option<&str>,
    ) -> Result<String, FleetError> {
        let family = self.tenant_family(tenant_id);
        let mut desired = self.desired_definition(secret_arn, image.unwrap_or(&self.settings.image)).await?;
        if let Some(size) = size {
            desired.cpu = Some(size.cpu.to_string());
            desired.memory = Some(size.memory_mib.to_string());
            for container in desired.containers.iter_mut().filter(|c| c.name() == Some(CONTAINER_NAME)) {
                container.memory = Some(i32::try_from(size.memory_mib).unwrap_or(512));
                container.memory_reservation = None;
            }
        }
        match self.ecs.describe_task_definition().task_definition(&family).send().await {
            Ok(output) => {
                if let Some(existing) = output.task_definition()
                    && desired.matches(existing)
                    && let Some(arn) = existing.task_definition_arn()
                {
                    return Ok(arn.to_owned());
                }
            }
            Err(error) if error.as_service_error().is_some_and(|e| e.is_client_exception()) => {}
            Err(error) => return Err(FleetError::ecs("DescribeTaskDefinition", error)),
        }
        let output = self
            .ecs
            .register_task_definition()
            .family(&family)
            .set_container_definitions(Some(desired.containers))
            .set_runtime_platform(desired.runtime_platform)
            .set_cpu(desired.cpu)
            .set_memory(desired.memory)
            .network_mode(NetworkMode::Awsvpc)
            .requires_compatibilities(Compatibility::Fargate)
            .set_execution_role_arn(desired.execution_role_arn)
            .set_task_role_arn(desired.task_role_arn)
            .tags(Tag::builder().key("managed-by").value("dotmac-platform").build())
            .tags(Tag::builder().key("tenant_id").value(tenant_id.to_string()).build())
            .send()
            .await
            .map_err(|e| FleetError::ecs("RegisterTaskDefinition", e))?;
        output
            .task_definition()
            .and_then(|d| d.task_definition_arn())
            .map(str::to_owned)
            .ok_or_else(|| FleetError::Invalid("RegisterTaskDefinition returned no ARN".into()))
    }

    /// What the tenant's definition would be if registered now.
    async fn desired_definition(
        &self,
        secret_arn: &str,
        image: &str,
    ) -> Result<DesiredDefinition, FleetError> {
        let secret = Secret::builder()
            .name(MACHINE_TOKEN_VARIABLE)
            .value_from(format!("{secret_arn}:{MACHINE_TOKEN_KEY}::"))
            .build()
            .map_err(|e| FleetError::Invalid(e.to_string()))?;
        let (containers, runtime_platform, cpu, memory) = match self.baseline().await? {
            // The stack's baseline definition (logs, environment, CPU architecture) plus the
            // image and the secret.
            Some(baseline) => {
                let mut containers = baseline.container_definitions().to_vec();
                for container in containers.iter_mut().filter(|c| c.name() == Some(CONTAINER_NAME)) {
                    container.image = Some(image.to_owned());
                    container.secrets = Some(vec![secret.clone()]);
                }
                (
                    containers,
                    baseline.runtime_platform().cloned(),
                    baseline.cpu().map(str::to_owned),
                    baseline.memory().map(str::to_owned),
                )
            }
            // No baseline (a local emulator): the same shape from the settings alone.
            None => (
                vec![
                    ContainerDefinition::builder()
                        .name(CONTAINER_NAME)
                        .image(image)
                        .essential(true)
                        .memory(512)
                        .port_mappings(PortMapping::builder().container_port(CONTAINER_PORT).build())
                        .secrets(secret)
                        .build(),
                ],
                None,
                Some(BASE_CPU.to_owned()),
                Some(BASE_MEMORY.to_owned()),
            ),
        };
        Ok(DesiredDefinition {
            containers,
            runtime_platform,
            cpu,
            memory,
            execution_role_arn: self.settings.execution_role_arn.clone(),
            task_role_arn: self.settings.task_role_arn.clone(),
        })
    }

    /// The stack's baseline task definition (`DOTMAC_TASK_FAMILY`), if there is one.
    async fn baseline(&self) -> Result<Option<aws_sdk_ecs::types::TaskDefinition>, FleetError> {
        match self.ecs.describe_task_definition().task_definition(&self.settings.task_family).send().await {
            Ok(output) => Ok(output.task_definition),
            Err(error) if error.as_service_error().is_some_and(|e| e.is_client_exception()) => Ok(None),
            Err(error) => Err(FleetError::ecs("DescribeTaskDefinition", error)),
        }
    }

    /// The tenant's own task definition family (`<task family>-<tenant id>`).
    pub fn tenant_family(&self, tenant_id: TenantId) -> String {
        format!("{}-{tenant_id}", self.settings.task_family)
    }

    /// Deregisters every active revision of the tenant's task definition family; answers
    /// how many it deregistered. Safe to repeat: ECS lists deregistered revisions as
    /// INACTIVE, so a second run finds none. (The family is the tenant's alone: a tenant id
    /// has a fixed length, so no other tenant's family starts with it.)
    pub async fn deregister_tenant_task_definitions(&self, tenant_id: TenantId) -> Result<usize, FleetError> {
        let family = self.tenant_family(tenant_id);
        let mut deregistered = 0;
        let mut next_token = None;
        loop {
            let page = self
                .ecs
                .list_task_definitions()
                .family_prefix(&family)
                .status(aws_sdk_ecs::types::TaskDefinitionStatus::Active)
                .set_next_token(next_token)
                .send()
                .await
                .map_err(|e| FleetError::ecs("ListTaskDefinitions", e))?;
            for arn in page.task_definition_arns() {
                // The family prefix could match `<family>-x...`; only this family's revisions.
                let revision_family = arn.rsplit('/').next().and_then(|r| r.rsplit_once(':')).map(|(f, _)| f);
                if revision_family != Some(family.as_str()) {
                    continue;
                }
                self.ecs
                    .deregister_task_definition()
                    .task_definition(arn)
                    .send()
                    .await
                    .map_err(|e| FleetError::ecs("DeregisterTaskDefinition", e))?;
                deregistered += 1;
            }
            match page.next_token {
                Some(token) => next_token = Some(token),
                None => return Ok(deregistered),
            }
        }
    }

    pub async fn find_tenant_task(&self, tenant_id: TenantId) -> Result<Option<LaunchedTask>, FleetError> {
        let arns = self
            .ecs
            .list_tasks()
            .cluster(&self.settings.cluster)
            .started_by(tenant_id.to_string())
            .desired_status(DesiredStatus::Running)
            .send()
            .await
            .map_err(|e| FleetError::ecs("ListTasks", e))?
            .task_arns
            .unwrap_or_default();
        let Some(arn) = arns.first() else {
            return Ok(None);
        };
        self.describe(arn).await.map(Some)
    }

    /// Stops every live task of the tenant (a task left running by a failed provisioning
    /// would otherwise run, and cost, unowned).
    pub async fn stop_tenant_tasks(&self, tenant_id: TenantId, reason: &str) -> Result<usize, FleetError> {
        let mut stopped = 0;
        while let Some(task) = self.find_tenant_task(tenant_id).await? {
            self.ecs
                .stop_task()
                .cluster(&self.settings.cluster)
                .task(&task.task_arn)
                .reason(reason.chars().take(255).collect::<String>())
                .send()
                .await
                .map_err(|e| FleetError::ecs("StopTask", e))?;
            stopped += 1;
            if stopped >= 10 {
                break;
            }
        }
        Ok(stopped)
    }

    pub async fn describe(&self, task_arn: &str) -> Result<LaunchedTask, FleetError> {
        let output = self
            .ecs
            .describe_tasks()
            .cluster(&self.settings.cluster)
            .tasks(task_arn)
            .send()
            .await
            .map_err(|e| FleetError::ecs("DescribeTasks", e))?;
        output
            .tasks()
            .first()
            .map(LaunchedTask::from_task)
            .ok_or_else(|| FleetError::Stopped(format!("ECS no longer knows task {task_arn}")))
    }

    /// Starts the tenant's task. `client_token` makes a repeated call within one attempt
    /// return the same task instead of a second one.
    pub async fn launch(
        &self,
        tenant: &Tenant,
        size: TaskSize,
        client_token: &str,
        secret_arn: &str,
    ) -> Result<LaunchedTask, FleetError> {
        self.launch_image(tenant, size, client_token, secret_arn, None).await
    }

    /// `launch` running `image` (`None`: the fleet's image).
    pub async fn launch_image(
        &self,
        tenant: &Tenant,
        size: TaskSize,
        client_token: &str,
        secret_arn: &str,
        image: Option<&str>,
    ) -> Result<LaunchedTask, FleetError> {
        if !size.is_valid_fargate_size() {
            return Err(FleetError::Invalid(format!("{size:?} is not a Fargate task size")));
        }
        let network = self.task_network()?;
        let task_definition = self.ensure_definition(tenant.id, secret_arn, Some(size), image).await?;
        let tenant_id = tenant.id.to_string();
        let env = |name: &str, value: &str| KeyValuePair::builder().name(name).value(value).build();
        let tag = |key: &str, value: &str| Tag::builder().key(key).value(value).build();
        let overrides = TaskOverride::builder()
            .cpu(size.cpu.to_string())
            .memory(size.memory_mib.to_string())
            .container_overrides(
                ContainerOverride::builder()
                    .name(CONTAINER_NAME)
                    .memory(i32::try_from(size.memory_mib).unwrap_or(512))
                    .environment(env("TENANT_ID", &tenant_id))
                    .environment(env("TENANT_SLUG", tenant.slug.as_str()))
                    .environment(env("TENANT_PLAN", tenant.plan.as_str()))
                    .build(),
            )
            .build();
        let mut request = self
            .ecs
            .run_task()
            .cluster(&self.settings.cluster)
            .task_definition(task_definition)
            .launch_type(LaunchType::from(self.settings.launch_type.as_str()))
            .count(1)
            .started_by(&tenant_id)
            .network_configuration(network)
            .overrides(overrides)
            .tags(tag("tenant_id", &tenant_id))
            .tags(tag("tenant_slug", tenant.slug.as_str()))
            .tags(tag("plan", tenant.plan.as_str()))
            .tags(tag("managed-by", "dotmac-platform"))
            .propagate_tags(PropagateTags::TaskDefinition)
            .enable_ecs_managed_tags(true);
        if !client_token.is_empty() {
            request = request.client_token(client_token);
        }
        let output = request.send().await.map_err(|e| FleetError::ecs("RunTask", e))?;
        let launched = LaunchedTask::from_task(started_task(&output)?);
        tracing::info!(tenant_id = %tenant.id, task_arn = %launched.task_arn, "tenant task launched");
        Ok(launched)
    }

    /// Polls DescribeTasks until the task runs, stops, or `timeout` passes.
    pub async fn wait_until_running(
        &self,
        task_arn: &str,
        timeout: Duration,
    ) -> Result<LaunchedTask, FleetError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut pause = Duration::from_millis(200);
        loop {
            let task = self.describe(task_arn).await?;
            match task.last_status.as_str() {
                "RUNNING" => return Ok(task),
                // Every status after RUNNING on the way out: such a task never runs again.
                "DEACTIVATING" | "STOPPING" | "DEPROVISIONING" | "STOPPED" | "DELETED" => {
                    return Err(FleetError::Stopped(
                        task.stopped_reason.unwrap_or_else(|| task.last_status.clone()),
                    ));
                }
                _ => {}
            }
            if tokio::time::Instant::now() + pause > deadline {
                return Err(FleetError::Timeout(timeout.as_secs()));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    }
}

/// A one-off task of a tenant's image (its own data backup), recognised by `marker`.
pub struct OneOffTask<'a> {
    pub tenant: &'a Tenant,
    pub secret_arn: &'a str,
    pub size: TaskSize,
    /// `startedBy` (at most 36 of `A-Za-z0-9-_/`): how a retry finds the task an earlier
    /// attempt started, running or already done.
    pub marker: &'a str,
    /// RunTask's client token (at most 64 characters).
    pub client_token: &'a str,
    /// The container's command instead of the image's default.
    pub command: Vec<String>,
    pub environment: Vec<(&'a str, String)>,
}

impl Fleet {
    /// Every task (running, or stopped and still known to ECS) started with `started_by`.
    pub async fn tasks_started_by(&self, started_by: &str) -> Result<Vec<String>, FleetError> {
        let mut arns = Vec::new();
        for status in [DesiredStatus::Running, DesiredStatus::Stopped] {
            let output = self
                .ecs
                .list_tasks()
                .cluster(&self.settings.cluster)
                .started_by(started_by)
                .desired_status(status)
                .send()
                .await
                .map_err(|e| FleetError::ecs("ListTasks", e))?;
            arns.extend(output.task_arns.unwrap_or_default());
        }
        Ok(arns)
    }

    /// The tenant's running tasks (its container, and during a resize its replacement too).
    pub async fn running_tenant_tasks(&self, tenant_id: TenantId) -> Result<Vec<LaunchedTask>, FleetError> {
        let output = self
            .ecs
            .list_tasks()
            .cluster(&self.settings.cluster)
            .started_by(tenant_id.to_string())
            .desired_status(DesiredStatus::Running)
            .send()
            .await
            .map_err(|e| FleetError::ecs("ListTasks", e))?;
        let arns = output.task_arns.unwrap_or_default();
        let mut tasks = Vec::new();
        for batch in arns.chunks(DESCRIBE_BATCH) {
            tasks.extend(self.describe_many(batch).await?);
        }
        Ok(tasks)
    }

    /// Every task of the cluster ECS lists as desired RUNNING, described, by `startedBy`: the
    /// whole fleet in `ListTasks` pages of 100 and `DescribeTasks` batches of 100 (so 1,000
    /// tenants cost about 20 calls, not 2,000).
    pub async fn running_tasks_by_starter(&self) -> Result<HashMap<String, Vec<LaunchedTask>>, FleetError> {
        let mut arns = Vec::new();
        let mut next_token = None;
        loop {
            let page = self
                .ecs
                .list_tasks()
                .cluster(&self.settings.cluster)
                .desired_status(DesiredStatus::Running)
                .max_results(100)
                .set_next_token(next_token)
                .send()
                .await
                .map_err(|e| FleetError::ecs("ListTasks", e))?;
            arns.extend(page.task_arns.unwrap_or_default());
            match page.next_token {
                Some(token) if !token.is_empty() => next_token = Some(token),
                _ => break,
            }
        }
        let mut by_starter: HashMap<String, Vec<LaunchedTask>> = HashMap::new();
        for batch in arns.chunks(DESCRIBE_BATCH) {
            for task in self.describe_many(batch).await? {
                if let Some(starter) = task.started_by.clone() {
                    by_starter.entry(starter).or_default().push(task);
                }
            }
        }
        Ok(by_starter)
    }

    /// Up to 100 tasks in one DescribeTasks call.
    async fn describe_many(&self, arns: &[String]) -> Result<Vec<LaunchedTask>, FleetError> {
        if arns.is_empty() {
            return Ok(Vec::new());
        }
        let described = self
            .ecs
            .describe_tasks()
            .cluster(&self.settings.cluster)
            .set_tasks(Some(arns.to_vec()))
            .send()
            .await
            .map_err(|e| FleetError::ecs("DescribeTasks", e))?;
        Ok(described.tasks().iter().map(LaunchedTask::from_task).collect())
    }

    /// The image of the ISP framework container in a task definition revision.
    pub async fn definition_image(&self, task_definition_arn: &str) -> Result<Option<String>, FleetError> {
        let output = self
            .ecs
            .describe_task_definition()
            .task_definition(task_definition_arn)
            .send()
            .await
            .map_err(|e| FleetError::ecs("DescribeTaskDefinition", e))?;
        Ok(output.task_definition().and_then(|d| {
            d.container_definitions()
                .iter()
                .find(|c| c.name() == Some(CONTAINER_NAME))
                .and_then(|c| c.image())
                .map(str::to_owned)
        }))
    }

    /// Stops one task; a task ECS no longer runs is stopped already.
    pub async fn stop_task(&self, task_arn: &str, reason: &str) -> Result<(), FleetError> {
        match self
            .ecs
            .stop_task()
            .cluster(&self.settings.cluster)
            .task(task_arn)
            .reason(reason.chars().take(255).collect::<String>())
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(error) if error.as_service_error().is_some_and(|e| e.is_invalid_parameter_exception()) => {
                tracing::info!(task_arn, "task already gone");
                Ok(())
            }
            Err(error) => Err(FleetError::ecs("StopTask", error)),
        }
    }

    /// Starts a one-off task of the tenant's image with its own command, unless one with
    /// `marker` exists already (an earlier attempt's); either way answers its ARN.
    pub async fn run_one_off(&self, task: OneOffTask<'_>) -> Result<String, FleetError> {
        if let Some(existing) = self.tasks_started_by(task.marker).await?.into_iter().next() {
            return Ok(existing);
        }
        let network = self.task_network()?;
        let definition =
            self.ensure_sized_task_definition(task.tenant.id, task.secret_arn, Some(task.size)).await?;
        let tenant_id = task.tenant.id.to_string();
        let env = |name: &str, value: &str| KeyValuePair::builder().name(name).value(value).build();
        let mut container = ContainerOverride::builder()
            .name(CONTAINER_NAME)
            .set_command(Some(task.command.clone()))
            .environment(env("TENANT_ID", &tenant_id))
            .environment(env("TENANT_SLUG", task.tenant.slug.as_str()));
        for (name, value) in &task.environment {
            container = container.environment(env(name, value));
        }
        let tag = |key: &str, value: &str| Tag::builder().key(key).value(value).build();
        let output = self
            .ecs
            .run_task()
            .cluster(&self.settings.cluster)
            .task_definition(definition)
            .launch_type(LaunchType::from(self.settings.launch_type.as_str()))
            .count(1)
            .started_by(task.marker)
            .client_token(task.client_token)
            .network_configuration(network)
            .overrides(TaskOverride::builder().container_overrides(container.build()).build())
            .tags(tag("tenant_id", &tenant_id))
            .tags(tag("managed-by", "dotmac-platform"))
            .tags(tag("purpose", "backup"))
            .send()
            .await
            .map_err(|e| FleetError::ecs("RunTask", e))?;
        started_task(&output)?
            .task_arn()
            .map(str::to_owned)
            .ok_or_else(|| FleetError::Invalid("RunTask started a task without an ARN".into()))
    }

    /// The network every tenant task runs in (its subnets are required).
    fn task_network(&self) -> Result<NetworkConfiguration, FleetError> {
        if self.settings.subnets.is_empty() {
            return Err(FleetError::Invalid("no subnets configured (DOTMAC_ECS_SUBNETS)".into()));
        }
        let vpc = AwsVpcConfiguration::builder()
            .set_subnets(Some(self.settings.subnets.clone()))
            .set_security_groups(Some(self.settings.security_groups.clone()))
            .assign_public_ip(if self.settings.assign_public_ip {
                AssignPublicIp::Enabled
            } else {
                AssignPublicIp::Disabled
            })
            .build()
            .map_err(|e| FleetError::Invalid(e.to_string()))?;
        Ok(NetworkConfiguration::builder().awsvpc_configuration(vpc).build())
    }
}

/// The task RunTask started, or why it started none. A throttle, or Fargate capacity (which
/// RunTask answers in `failures` too: "Capacity is unavailable at this time"), is worth
/// another try later.
fn started_task(output: &aws_sdk_ecs::operation::run_task::RunTaskOutput) -> Result<&Task, FleetError> {
    if let Some(failure) = output.failures().first() {
        let reason = failure.reason().unwrap_or("failure");
        let message = format!("{reason}: {}", failure.detail().unwrap_or_default());
        if is_throttling(reason) || reason.contains("Capacity is unavailable") {
            return Err(FleetError::Throttled { operation: "RunTask", message });
        }
        return Err(FleetError::Ecs { operation: "RunTask", message });
    }
    output.tasks().first().ok_or_else(|| FleetError::Invalid("RunTask started no task".into()))
}
