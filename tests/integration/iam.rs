//! IAM proven: every function does its real work holding only the statements
//! `infra/template.yaml` grants it, against an emulator of its own that enforces IAM.
//!
//! What moto 5.2 enforces (read in `moto/core/authorization.py` and `moto/iam/access_control.py`,
//! and measured here):
//! - Nothing while `settings.INITIAL_NO_AUTH_ACTION_COUNT` (env `INITIAL_NO_AUTH_ACTION_COUNT`,
//!   default infinite) is above the number of requests served; `POST /moto-api/reset-auth` with
//!   a number sets that count and restarts the request counter, so `0` turns enforcement on at
//!   once. It is process-wide, which is why this test starts its own moto: the shared emulator
//!   of the other tests stays unauthenticated.
//! - Once on, every request of a service answered through `BaseResponse.call_action`
//!   (DynamoDB, SQS, ECS, Secrets Manager, IAM, ...) must be SigV4-signed with the access key of
//!   an IAM user (or an assumed role) and the signature must match; the root `test` key is refused.
//! - Actions: `<service>:<API operation>` against the user's inline and attached policies
//!   (`*` wildcards, NotAction, an explicit Deny wins). The operation is the API call, not
//!   AWS's authorization actions: TransactWriteItems is checked as `dynamodb:TransactWriteItems`,
//!   where AWS checks PutItem/UpdateItem/DeleteItem/ConditionCheckItem per item.
//! - Resources: only SQS (the queue's ARN), IAM and STS name one; every other service checks
//!   against `*`, which a statement with a specific Resource never matches, so moto refuses it.
//! - Conditions: evaluated against an empty request context, and a condition with no values
//!   to compare passes (`TrustCondition.verify_condition`), so conditions are ignored.
//! - No implied authorizations (iam:PassRole on RegisterTaskDefinition, TagResource for tags
//!   given on create).
//!
//! So moto alone proves actions and signatures only. The rest is done here, by a gate between
//! the functions and moto that evaluates every request the way AWS does, from the template's
//! own statements (actions, resources resolved to this stack's ARNs, conditions with the
//! request's context keys, the implied checks above), refuses what no statement allows with
//! AccessDeniedException (so the function meets the failure it would meet in AWS), and records
//! which statement allowed each call. moto gets each function's statements with what it cannot
//! evaluate relaxed (resources `*` outside SQS, the transaction operations beside the item
//! actions) and checks the signature and the action a second time.
//!
//! Measured on moto 5.2.5 (a boto3 probe): after `reset-auth 0` the root key's ListTables is
//! 403; GetSecretValue allowed on the secret's own ARN is 403 and allowed on `*` passes;
//! PutSecretValue under a policy granting only GetSecretValue is 403; GetQueueAttributes
//! allowed on one queue's ARN passes there and is 403 on another queue; a StringEquals
//! condition on `aws:SourceAccount` that the request cannot satisfy still passes.

use aws_lambda_events::event::apigw::ApiGatewayV2CustomAuthorizerV2Request;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use dotmac_config::Config;
use dotmac_domain::TenantStatus;
use dotmac_platform::{Handler, Platform, docs_router, rotate_signing_keys, rotation_policy};
use dotmac_queue::SqsQueue;
use dotmac_queue::lambda::{Backoff, BatchLimits, Resend, handle_sqs_event_until};
use dotmac_secrets::{KeySetSecret, RotationOutcome};
use futures::FutureExt;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tower::ServiceExt;

const ACCOUNT: &str = "123456789012";
const REGION: &str = "us-east-1";
const ADMIN_EMAIL: &str = "admin@iam.test";
const ADMIN_PASSWORD: &str = "admin-password-for-the-iam-test";

/// Statements (or single actions of one) that no function's work uses in this test, each with
/// why it stays; `infra/README.md` lists the same. A new unused one, or one of these becoming
/// used, fails the test, so the list cannot go stale.
const EXPLAINED_UNUSED: &[&str] = &[
    // Taking an onboarding back when the queue refuses its job, and abandoning an
    // idempotency record after a failure.
    "tenants/TenantsTable/dynamodb:DeleteItem",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

// ------------------------------------------------------------------------------ the emulator

/// A moto of this test's own on a free port, stopped when dropped.
struct Moto {
    child: std::process::Child,
    endpoint: String,
    subnet: String,
    security_group: String,
    log: PathBuf,
}

impl Moto {
    async fn start() -> Moto {
        let python = root().join(".venv/bin/python");
        assert!(
            python.exists(),
            "{} is missing: run through `make test` (local/stack.sh venv)",
            python.display()
        );
        let port =
            std::net::TcpListener::bind("127.0.0.1:0").expect("free port").local_addr().expect("addr").port();
        let log = root().join(format!(".local/emulator-iam-{port}.log"));
        std::fs::create_dir_all(root().join(".local")).expect(".local");
        let out = std::fs::File::create(&log).expect("log file");
        let child = std::process::Command::new(&python)
            .arg(root().join("local/moto_server.py"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("moto starts");
        let mut moto = Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            subnet: String::new(),
            security_group: String::new(),
            log,
        };
        // The same preparation as the shared emulator: tasks stay RUNNING, the default VPC's
        // subnet and security group for awsvpc. It waits for moto to answer.
        let setup = tokio::process::Command::new(&python)
            .arg(root().join("local/emulator_setup.py"))
            .arg(port.to_string())
            .output()
            .await
            .expect("emulator_setup.py runs");
        assert!(setup.status.success(), "emulator set-up: {}", String::from_utf8_lossy(&setup.stderr));
        for line in String::from_utf8_lossy(&setup.stdout).lines() {
            if let Some(value) = line.strip_prefix("export DOTMAC_ECS_SUBNETS=") {
                moto.subnet = value.to_owned();
            }
            if let Some(value) = line.strip_prefix("export DOTMAC_ECS_SECURITY_GROUPS=") {
                moto.security_group = value.to_owned();
            }
        }
        assert!(!moto.subnet.is_empty() && !moto.security_group.is_empty(), "no default network");
        moto
    }

    /// An IAM call in moto's Query protocol, before enforcement is on (unsigned: moto reads
    /// only the service and region from the Authorization header then).
    async fn iam(&self, params: &[(&str, &str)]) -> String {
        let mut form: Vec<(&str, &str)> = vec![("Version", "2010-05-08")];
        form.extend_from_slice(params);
        let response = dotmac_tests::http_client()
            .post(&self.endpoint)
            .header(
                header::AUTHORIZATION.as_str(),
                "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=0",
            )
            .form(&form)
            .send()
            .await
            .expect("IAM answers");
        let status = response.status();
        let text = response.text().await.expect("IAM body");
        assert!(status.is_success(), "IAM {params:?}: {status} {text}");
        text
    }

    /// An IAM user holding exactly `policy` (inline), and its access key.
    async fn user(&self, name: &str, policy: &Value) -> (String, String) {
        self.iam(&[("Action", "CreateUser"), ("UserName", name)]).await;
        let document = policy.to_string();
        self.iam(&[
            ("Action", "PutUserPolicy"),
            ("UserName", name),
            ("PolicyName", "template"),
            ("PolicyDocument", &document),
        ])
        .await;
        let created = self.iam(&[("Action", "CreateAccessKey"), ("UserName", name)]).await;
        let between = |tag: &str| {
            let start = created.find(&format!("<{tag}>")).expect(tag) + tag.len() + 2;
            let end = created.find(&format!("</{tag}>")).expect(tag);
            created[start..end].to_owned()
        };
        (between("AccessKeyId"), between("SecretAccessKey"))
    }

    /// From now on every request must be signed by an IAM user its policies allow.
    async fn enforce_iam(&self) {
        let response = dotmac_tests::http_client()
            .post(format!("{}/moto-api/reset-auth", self.endpoint))
            // moto reads the raw body (`request.data`), which a form content type would empty.
            .header(header::CONTENT_TYPE.as_str(), "text/plain")
            .body("0")
            .send()
            .await
            .expect("reset-auth");
        assert!(response.status().is_success(), "reset-auth: {}", response.status());
    }

    /// moto's own 5xx answers (a crash inside the emulator), as `local/stack.sh` counts them.
    fn server_errors(&self) -> Vec<String> {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        log.lines()
            .filter(|line| line.contains("\" 5") && line.contains(" - - ["))
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The SDK configuration of one principal: its static key, pointed at `endpoint`.
async fn sdk_for(endpoint: &str, key: &str, secret: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(key, secret, None, None, "iam-test"))
        .load()
        .await
}

// ------------------------------------------------------------------------------ the template

/// The test stack's real names and ARNs, which the template's intrinsics resolve to.
struct StackNames {
    prefix: String,
    table: String,
    queue_url: String,
    billing_queue_url: String,
    cluster: String,
    family: String,
    private_secret_arn: String,
    public_secret_arn: String,
    stripe_secret_arn: String,
    execution_role_arn: String,
    task_role_arn: String,
    invitation_sender: String,
    bucket: String,
    event_bus: String,
}

impl StackNames {
    fn reference(&self, name: &str) -> String {
        match name {
            "AWS::AccountId" => ACCOUNT.to_owned(),
            "AWS::Region" => REGION.to_owned(),
            "AWS::Partition" => "aws".to_owned(),
            "AWS::URLSuffix" => "amazonaws.com".to_owned(),
            "AWS::StackName" => self.prefix.clone(),
            "PlatformTable" => self.table.clone(),
            "ProvisioningQueue" => self.queue_url.clone(),
            "BillingQueue" => self.billing_queue_url.clone(),
            "TenantCluster" => self.cluster.clone(),
            "TaskFamily" => self.family.clone(),
            "JwtKeySetSecret" => self.private_secret_arn.clone(),
            "JwtPublicKeySetSecret" => self.public_secret_arn.clone(),
            "StripeSecret" => self.stripe_secret_arn.clone(),
            "StripeApiBase" => "https://api.stripe.com".to_owned(),
            "InvitationSender" => self.invitation_sender.clone(),
            "BackupBucket" => self.bucket.clone(),
            "EventBus" => self.event_bus.clone(),
            other => panic!("the IAM test cannot resolve !Ref {other}: add it to StackNames"),
        }
    }

    fn attribute(&self, name: &str) -> String {
        match name {
            "PlatformTable.Arn" => format!("arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{}", self.table),
            "ProvisioningQueue.Arn" => queue_arn(&self.queue_url),
            "ProvisioningDeadLetterQueue.Arn" => format!("{}-dlq", queue_arn(&self.queue_url)),
            "BillingQueue.Arn" => queue_arn(&self.billing_queue_url),
            "BillingDeadLetterQueue.Arn" => format!("{}-dlq", queue_arn(&self.billing_queue_url)),
            "TenantCluster.Arn" => cluster_arn(&self.cluster),
            "TaskExecutionRole.Arn" => self.execution_role_arn.clone(),
            "TaskRole.Arn" => self.task_role_arn.clone(),
            "BackupBucket.Arn" => format!("arn:aws:s3:::{}", self.bucket),
            "EventBus.Arn" => format!("arn:aws:events:{REGION}:{ACCOUNT}:event-bus/{}", self.event_bus),
            other => panic!("the IAM test cannot resolve !GetAtt {other}: add it to StackNames"),
        }
    }

    fn substitute(&self, text: &str) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let end = rest[start..].find('}').expect("closed ${") + start;
            let name = &rest[start + 2..end];
            out.push_str(&if name.contains('.') { self.attribute(name) } else { self.reference(name) });
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        out
    }

    /// A template value as JSON, its intrinsics resolved.
    fn resolve(&self, value: &yaml_serde::Value) -> Value {
        use yaml_serde::Value as Y;
        match value {
            Y::Null => Value::Null,
            Y::Bool(b) => Value::Bool(*b),
            Y::Number(n) => Value::String(n.to_string()),
            Y::String(s) => Value::String(s.clone()),
            Y::Sequence(items) => Value::Array(items.iter().map(|v| self.resolve(v)).collect()),
            Y::Mapping(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (k.as_str().expect("string keys").to_owned(), self.resolve(v)))
                    .collect(),
            ),
            Y::Tagged(tagged) => {
                let tag = tagged.tag.to_string();
                let argument = tagged.value.as_str();
                match (tag.trim_start_matches('!'), argument) {
                    ("Ref", Some(name)) => Value::String(self.reference(name)),
                    ("GetAtt", Some(name)) => Value::String(self.attribute(name)),
                    ("Sub", Some(text)) => Value::String(self.substitute(text)),
                    _ => panic!("the IAM test cannot resolve {tag} {:?}", tagged.value),
                }
            }
        }
    }
}

fn queue_arn(url: &str) -> String {
    format!("arn:aws:sqs:{REGION}:{ACCOUNT}:{}", url.rsplit('/').next().unwrap_or(url))
}

fn cluster_arn(cluster: &str) -> String {
    if cluster.starts_with("arn:") {
        cluster.to_owned()
    } else {
        format!("arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/{cluster}")
    }
}

#[derive(Debug, Clone)]
struct Statement {
    sid: String,
    actions: Vec<String>,
    resources: Vec<String>,
    /// (operator, key, allowed values)
    conditions: Vec<(String, String, Vec<String>)>,
}

fn strings(value: &Value) -> Vec<String> {
    match value {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items.iter().flat_map(strings).collect(),
        Value::Null => vec![],
        other => panic!("expected a string or a list of strings, got {other}"),
    }
}

/// What the template gives one function: its statements and whether it holds the private
/// key set (its own `DOTMAC_JWT_KEY_SET_SECRET`).
struct FunctionGrant {
    statements: Vec<Statement>,
    private_keys: bool,
}

fn template_grants(names: &StackNames) -> BTreeMap<&'static str, FunctionGrant> {
    let text = std::fs::read_to_string(root().join("infra/template.yaml")).expect("infra/template.yaml");
    let template: yaml_serde::Value = yaml_serde::from_str(&text).expect("the template is YAML");
    let globals = &template["Globals"]["Function"];
    for key in ["Policies", "Role"] {
        assert!(globals.get(key).is_none(), "Globals.Function.{key}: not modelled by the IAM test");
    }
    let mut grants = BTreeMap::new();
    for (logical, resource) in template["Resources"].as_mapping().expect("Resources") {
        if resource["Type"].as_str() != Some("AWS::Serverless::Function") {
            continue;
        }
        let logical = logical.as_str().expect("logical id");
        let properties = &resource["Properties"];
        let handler = properties["Handler"].as_str().and_then(Handler::parse).expect("a known handler");
        assert!(properties.get("Role").is_none(), "{logical}: a Role of its own is not modelled");
        // SAM adds policies of its own for some event sources (SQS, Kinesis, DynamoDB
        // streams, ...); HTTP API and Scheduler events give the function none.
        for event in properties["Events"].as_mapping().map(|m| m.values().collect()).unwrap_or_else(Vec::new)
        {
            let kind = event["Type"].as_str().unwrap_or_default();
            assert!(
                ["HttpApi", "ScheduleV2"].contains(&kind),
                "{logical}: event type {kind} adds policies SAM writes; model them"
            );
        }
        let mut statements = Vec::new();
        for policy in
            properties["Policies"].as_sequence().map(|s| s.iter().collect()).unwrap_or_else(Vec::new)
        {
            let policy = names.resolve(policy);
            let Some(list) = policy.get("Statement") else {
                panic!(
                    "{logical}: policy {policy} is a managed policy or a SAM policy template: add its expansion here"
                )
            };
            for (index, statement) in list.as_array().expect("Statement list").iter().enumerate() {
                assert_eq!(statement["Effect"], "Allow", "{logical}: only Allow statements are modelled");
                for unsupported in ["NotAction", "NotResource", "Principal"] {
                    assert!(statement.get(unsupported).is_none(), "{logical}: {unsupported} is not modelled");
                }
                let mut conditions = Vec::new();
                for (operator, keys) in statement["Condition"].as_object().into_iter().flatten() {
                    for (key, values) in keys.as_object().expect("condition keys") {
                        conditions.push((operator.clone(), key.clone(), strings(values)));
                    }
                }
                statements.push(Statement {
                    sid: statement["Sid"].as_str().map(str::to_owned).unwrap_or_else(|| format!("#{index}")),
                    actions: strings(&statement["Action"]),
                    resources: strings(&statement["Resource"]),
                    conditions,
                });
            }
        }
        let private_keys = properties["Environment"]["Variables"].get("DOTMAC_JWT_KEY_SET_SECRET").is_some();
        grants.insert(handler.name(), FunctionGrant { statements, private_keys });
    }
    grants
}

/// The statements as moto can evaluate them (see the module comment): what it cannot check
/// is relaxed, so moto still checks the signature and the action.
fn moto_policy(statements: &[Statement]) -> Value {
    let statements: Vec<Value> = statements
        .iter()
        .map(|statement| {
            let mut actions = statement.actions.clone();
            for (item, transaction) in [
                ("dynamodb:PutItem", "dynamodb:TransactWriteItems"),
                ("dynamodb:UpdateItem", "dynamodb:TransactWriteItems"),
                ("dynamodb:DeleteItem", "dynamodb:TransactWriteItems"),
                ("dynamodb:GetItem", "dynamodb:TransactGetItems"),
                // AWS authorizes a batch send as sqs:SendMessage; moto checks the operation.
                ("sqs:SendMessage", "sqs:SendMessageBatch"),
            ] {
                if actions.iter().any(|a| a == item) && !actions.iter().any(|a| a == transaction) {
                    actions.push(transaction.to_owned());
                }
            }
            let only_sqs = actions.iter().all(|a| a.starts_with("sqs:"));
            let resources = if only_sqs { json!(statement.resources) } else { json!("*") };
            json!({
                "Sid": statement.sid.replace(|c: char| !c.is_ascii_alphanumeric(), ""),
                "Effect": "Allow",
                "Action": actions,
                "Resource": resources,
            })
        })
        .collect();
    // IAM refuses a policy without statements: a function with none gets one that allows
    // nothing real.
    let statements = if statements.is_empty() {
        vec![json!({ "Effect": "Allow", "Action": "none:Nothing", "Resource": "*" })]
    } else {
        statements
    };
    json!({ "Version": "2012-10-17", "Statement": statements })
}

// ------------------------------------------------------------------------------ the gate

fn glob(pattern: &str, value: &str) -> bool {
    fn matches(p: &[char], v: &[char]) -> bool {
        match (p.first(), v.first()) {
            (None, None) => true,
            (Some('*'), _) => matches(&p[1..], v) || (!v.is_empty() && matches(p, &v[1..])),
            (Some('?'), Some(_)) => matches(&p[1..], &v[1..]),
            (Some(a), Some(b)) => a == b && matches(&p[1..], &v[1..]),
            _ => false,
        }
    }
    matches(&pattern.chars().collect::<Vec<_>>(), &value.chars().collect::<Vec<_>>())
}

/// One authorization AWS makes for a request.
#[derive(Debug, Clone)]
struct Check {
    action: String,
    resource: String,
    context: Vec<(&'static str, String)>,
}

impl Statement {
    fn allows(&self, check: &Check) -> bool {
        self.actions.iter().any(|a| glob(&a.to_ascii_lowercase(), &check.action.to_ascii_lowercase()))
            && self.resources.iter().any(|r| glob(r, &check.resource))
            && self.conditions.iter().all(|(operator, key, values)| {
                let Some((_, actual)) = check.context.iter().find(|(k, _)| k == key) else { return false };
                match operator.as_str() {
                    "StringEquals" | "ArnEquals" | "ForAllValues:StringEquals" => {
                        values.iter().any(|v| v == actual)
                    }
                    // One leading key per request here, so "for all values" is "for this one".
                    "StringLike" | "ArnLike" | "ForAllValues:StringLike" => {
                        values.iter().any(|v| glob(v, actual))
                    }
                    other => panic!("condition operator {other} is not modelled"),
                }
            })
    }
}

struct Principal {
    function: &'static str,
    statements: Vec<Statement>,
}

#[derive(Default)]
struct Record {
    /// (function, statement, action) that allowed at least one call.
    used: BTreeSet<(String, String, String)>,
    /// Calls no statement allowed, as "function: action on resource".
    denied: Vec<String>,
    /// Every check made, per function: "action on resource".
    calls: BTreeMap<String, BTreeSet<String>>,
}

struct Gate {
    upstream: String,
    http: reqwest::Client,
    principals: HashMap<String, Principal>,
    /// Secret names to ARNs (AWS authorizes a secret by its ARN, however it is named).
    secret_arns: Mutex<HashMap<String, String>>,
    record: Mutex<Record>,
    /// The backup bucket: S3 requests are recognised by its path (path-style addresses).
    bucket: String,
}

impl Gate {
    fn secret_arn(&self, id: &str) -> String {
        if id.starts_with("arn:") {
            return id.to_owned();
        }
        self.secret_arns
            .lock()
            .expect("lock")
            .get(id)
            .cloned()
            .unwrap_or_else(|| format!("arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{id}"))
    }

    /// What AWS authorizes for one request (documented per service in the Service
    /// Authorization Reference), including the implied checks.
    fn checks(&self, service: &str, operation: &str, body: &Value) -> Vec<Check> {
        let check =
            |action: &str, resource: String| Check { action: action.to_owned(), resource, context: vec![] };
        let table = |name: &Value| {
            format!("arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{}", name.as_str().unwrap_or("*"))
        };
        let text = |key: &str| body[key].as_str().unwrap_or_default().to_owned();
        // The partition key an item request touches, as `dynamodb:LeadingKeys` sees it.
        // For a Query on the table: the value its key condition gives `PK` (`PK = :placeholder`).
        let leading = |request: &Value| {
            let queried = request["KeyConditionExpression"].as_str().and_then(|condition| {
                let placeholder = condition.strip_prefix("PK = ")?.split_whitespace().next()?;
                request["ExpressionAttributeValues"][placeholder]["S"].as_str()
            });
            let queried = queried.filter(|_| request["IndexName"].is_null());
            let pk = request["Key"]["PK"]["S"].as_str().or(request["Item"]["PK"]["S"].as_str()).or(queried);
            pk.map(|pk| vec![("dynamodb:LeadingKeys", pk.to_owned())]).unwrap_or_default()
        };
        match service {
            "dynamodb" => match operation {
                "TransactWriteItems" | "TransactGetItems" => body["TransactItems"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|item| {
                        [
                            ("Put", "PutItem"),
                            ("Update", "UpdateItem"),
                            ("Delete", "DeleteItem"),
                            ("ConditionCheck", "ConditionCheckItem"),
                            ("Get", "GetItem"),
                        ]
                        .into_iter()
                        .filter(|(kind, _)| item.get(*kind).is_some())
                        .map(|(kind, action)| Check {
                            context: leading(&item[kind]),
                            ..check(&format!("dynamodb:{action}"), table(&item[kind]["TableName"]))
                        })
                        .collect::<Vec<_>>()
                    })
                    .collect(),
                "BatchWriteItem" | "BatchGetItem" => body["RequestItems"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(name, _)| check(&format!("dynamodb:{operation}"), table(&json!(name))))
                    .collect(),
                _ => {
                    let mut resource = table(&body["TableName"]);
                    if let Some(index) = body["IndexName"].as_str() {
                        resource = format!("{resource}/index/{index}");
                    }
                    vec![Check {
                        context: leading(body),
                        ..check(&format!("dynamodb:{operation}"), resource)
                    }]
                }
            },
            // PutEvents is authorized per entry, on the bus it names.
            "events" => body["Entries"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|entry| {
                    let bus = entry["EventBusName"].as_str().unwrap_or("default");
                    check(
                        &format!("events:{operation}"),
                        format!("arn:aws:events:{REGION}:{ACCOUNT}:event-bus/{bus}"),
                    )
                })
                .collect(),
            "sqs" => {
                let resource = if body["QueueUrl"].is_string() {
                    queue_arn(&text("QueueUrl"))
                } else {
                    queue_arn(&text("QueueName"))
                };
                // SendMessageBatch is authorized as sqs:SendMessage (each entry a message).
                let action = if operation == "SendMessageBatch" { "SendMessage" } else { operation };
                vec![check(&format!("sqs:{action}"), resource)]
            }
            "secretsmanager" => {
                let id = if body["SecretId"].is_string() { text("SecretId") } else { text("Name") };
                let resource = self.secret_arn(&id);
                let mut checks = vec![check(&format!("secretsmanager:{operation}"), resource.clone())];
                if operation == "CreateSecret" && body["Tags"].as_array().is_some_and(|t| !t.is_empty()) {
                    checks.push(check("secretsmanager:TagResource", resource));
                }
                checks
            }
            "ecs" => {
                let cluster = cluster_arn(body["cluster"].as_str().unwrap_or("default"));
                let cluster_name = cluster.rsplit('/').next().unwrap_or_default().to_owned();
                let on_cluster = |action: &str, resource: String| Check {
                    action: action.to_owned(),
                    resource,
                    context: vec![("ecs:cluster", cluster.clone())],
                };
                let task = |id: &str| {
                    if id.starts_with("arn:") {
                        id.to_owned()
                    } else {
                        format!("arn:aws:ecs:{REGION}:{ACCOUNT}:task/{cluster_name}/{id}")
                    }
                };
                let tagged = body["tags"].as_array().is_some_and(|t| !t.is_empty());
                match operation {
                    "RunTask" => {
                        let definition = text("taskDefinition");
                        let definition = if definition.starts_with("arn:") {
                            definition
                        } else if definition.contains(':') {
                            format!("arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/{definition}")
                        } else {
                            format!("arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/{definition}:*")
                        };
                        let mut checks = vec![on_cluster("ecs:RunTask", definition)];
                        if tagged {
                            checks.push(check("ecs:TagResource", task("*")));
                        }
                        checks
                    }
                    "StopTask" => vec![on_cluster("ecs:StopTask", task(&text("task")))],
                    "DescribeTasks" => body["tasks"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|t| on_cluster("ecs:DescribeTasks", task(t.as_str().unwrap_or_default())))
                        .collect(),
                    "ListTasks" => vec![on_cluster(
                        "ecs:ListTasks",
                        format!("arn:aws:ecs:{REGION}:{ACCOUNT}:container-instance/{cluster_name}/*"),
                    )],
                    "DescribeClusters" => {
                        let clusters =
                            body["clusters"].as_array().cloned().unwrap_or_else(|| vec![json!("default")]);
                        clusters
                            .iter()
                            .map(|c| {
                                check("ecs:DescribeClusters", cluster_arn(c.as_str().unwrap_or("default")))
                            })
                            .collect()
                    }
                    "RegisterTaskDefinition" => {
                        let mut checks = vec![check("ecs:RegisterTaskDefinition", "*".to_owned())];
                        for role in ["executionRoleArn", "taskRoleArn"] {
                            if let Some(arn) = body[role].as_str() {
                                checks.push(Check {
                                    action: "iam:PassRole".to_owned(),
                                    resource: arn.to_owned(),
                                    context: vec![(
                                        "iam:PassedToService",
                                        "ecs-tasks.amazonaws.com".to_owned(),
                                    )],
                                });
                            }
                        }
                        if tagged {
                            checks.push(check(
                                "ecs:TagResource",
                                format!(
                                    "arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/{}:*",
                                    text("family")
                                ),
                            ));
                        }
                        checks
                    }
                    "TagResource" => vec![check("ecs:TagResource", text("resourceArn"))],
                    _ => vec![check(&format!("ecs:{operation}"), "*".to_owned())],
                }
            }
            // S3 authorizes object operations on the object's ARN, and a listing on the bucket
            // with the prefix asked for as `s3:prefix`.
            "s3" => {
                let bucket = text("Bucket");
                match operation {
                    "ListObjectsV2" => vec![Check {
                        action: "s3:ListBucket".to_owned(),
                        resource: format!("arn:aws:s3:::{bucket}"),
                        context: vec![("s3:prefix", text("Prefix"))],
                    }],
                    _ => vec![check(
                        &format!("s3:{operation}"),
                        format!("arn:aws:s3:::{bucket}/{}", text("Key")),
                    )],
                }
            }
            // SES authorizes a send on the identity it sends as (the From address here; the
            // template grants exactly that one).
            "ses" => vec![check(
                &format!("ses:{operation}"),
                format!("arn:aws:ses:{REGION}:{ACCOUNT}:identity/{}", text("FromEmailAddress")),
            )],
            other => vec![check(&format!("{other}:{operation}"), "*".to_owned())],
        }
    }
}

const TARGETS: &[(&str, &str)] = &[
    ("DynamoDB_20120810.", "dynamodb"),
    ("AmazonSQS.", "sqs"),
    ("secretsmanager.", "secretsmanager"),
    ("AmazonEC2ContainerServiceV20141113.", "ecs"),
    ("AWSEvents.", "events"),
];

/// The REST-JSON calls the functions make (no `X-Amz-Target`: the method and path name the
/// operation): (method, path, service, operation).
const REST_OPERATIONS: &[(&str, &str, &str, &str)] =
    &[("POST", "/v2/email/outbound-emails", "ses", "SendEmail")];

async fn gate_request(
    State(gate): State<Arc<Gate>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let key = authorization.split("Credential=").nth(1).and_then(|c| c.split('/').next()).unwrap_or_default();
    let target = headers.get("x-amz-target").and_then(|v| v.to_str().ok()).unwrap_or_default();
    let Some(principal) = gate.principals.get(key) else {
        return (StatusCode::FORBIDDEN, format!("the gate knows no principal for key {key:?}"))
            .into_response();
    };
    let rest = REST_OPERATIONS
        .iter()
        .find(|(verb, path, _, _)| target.is_empty() && method.as_str() == *verb && uri.path() == *path)
        .map(|(_, _, service, operation)| (*service, *operation));
    let rest = rest.or_else(|| s3_operation(&gate.bucket, &method, &uri, target));
    let Some((service, operation)) = rest.or_else(|| {
        TARGETS.iter().find_map(|(prefix, service)| target.strip_prefix(prefix).map(|op| (*service, op)))
    }) else {
        let denied = format!(
            "{}: a request the gate cannot read ({method} {uri}, target {target:?})",
            principal.function
        );
        gate.record.lock().expect("lock").denied.push(denied.clone());
        return access_denied(&denied);
    };
    let request: Value = if service == "s3" {
        s3_request(&gate.bucket, &uri)
    } else {
        serde_json::from_slice(&body).unwrap_or(Value::Null)
    };
    let mut refused = Vec::new();
    {
        let mut record = gate.record.lock().expect("lock");
        for check in gate.checks(service, operation, &request) {
            let call = format!("{} on {}", check.action, check.resource);
            record.calls.entry(principal.function.to_owned()).or_default().insert(call.clone());
            match principal.statements.iter().find(|s| s.allows(&check)) {
                Some(statement) => {
                    record.used.insert((
                        principal.function.to_owned(),
                        statement.sid.clone(),
                        check.action.clone(),
                    ));
                }
                None => refused.push(format!("{}: {call} (context {:?})", principal.function, check.context)),
            }
        }
        record.denied.extend(refused.iter().cloned());
    }
    if !refused.is_empty() {
        return access_denied(&refused.join("; "));
    }
    let mut upstream = gate.http.request(method, format!("{}{}", gate.upstream, uri)).body(body);
    // Every header as signed (Host included: moto checks the signature over it).
    for (name, value) in &headers {
        if name != header::CONTENT_LENGTH {
            upstream = upstream.header(name.as_str(), value.as_bytes());
        }
    }
    let answer = upstream.send().await.expect("moto answers");
    let status = StatusCode::from_u16(answer.status().as_u16()).expect("status");
    let mut response_headers = HeaderMap::new();
    for (name, value) in answer.headers() {
        if let (Ok(name), Ok(value)) = (
            header::HeaderName::from_bytes(name.as_str().as_bytes()),
            header::HeaderValue::from_bytes(value.as_bytes()),
        ) {
            response_headers.insert(name, value);
        }
    }
    let bytes = answer.bytes().await.expect("moto body");
    if service == "secretsmanager" && operation == "CreateSecret" && status.is_success() {
        let created: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if let (Some(name), Some(arn)) = (created["Name"].as_str(), created["ARN"].as_str()) {
            gate.secret_arns.lock().expect("lock").insert(name.to_owned(), arn.to_owned());
        }
    }
    (status, response_headers, bytes).into_response()
}

/// An S3 request on the backup bucket (path-style: `/<bucket>/<key>`), as the operation
/// the SDK called.
fn s3_operation(
    bucket: &str,
    method: &Method,
    uri: &Uri,
    target: &str,
) -> Option<(&'static str, &'static str)> {
    let rest = uri.path().strip_prefix(&format!("/{bucket}"))?;
    if !target.is_empty() || !(rest.is_empty() || rest.starts_with('/')) {
        return None;
    }
    let key = rest.trim_start_matches('/');
    let operation = match (method.as_str(), key.is_empty()) {
        ("GET", true) if uri.query().is_some_and(|q| q.contains("list-type=2")) => "ListObjectsV2",
        ("GET", false) => "GetObject",
        ("PUT", false) => "PutObject",
        ("DELETE", false) => "DeleteObject",
        ("HEAD", false) => "HeadObject",
        _ => return None,
    };
    Some(("s3", operation))
}

/// The parts of an S3 request its authorization reads.
fn s3_request(bucket: &str, uri: &Uri) -> Value {
    let key = uri.path().strip_prefix(&format!("/{bucket}")).unwrap_or_default().trim_start_matches('/');
    let prefix = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| pair.strip_prefix("prefix="))
        .map(|p| p.replace("%2F", "/"))
        .unwrap_or_default();
    json!({ "Bucket": bucket, "Key": key, "Prefix": prefix })
}

fn access_denied(message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, "application/x-amz-json-1.1")],
        json!({ "__type": "AccessDeniedException", "message": format!("not allowed by infra/template.yaml: {message}") }).to_string(),
    )
        .into_response()
}

// ------------------------------------------------------------------------------ the functions

async fn call(
    router: &axum::Router,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    call_with(router, method, path, token, body, &[]).await
}

async fn call_with(
    router: &axum::Router,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    let mut request = http::Request::builder().method(method).uri(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    if body.is_some() {
        request = request.header(header::CONTENT_TYPE, "application/json");
    }
    let request =
        request.body(body.map(|b| Body::from(b.to_string())).unwrap_or_else(Body::empty)).expect("request");
    let response = router.clone().oneshot(request).await.expect("router answers");
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 22).await.expect("body");
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// Stripe's POST of a signed event to the webhook route.
async fn call_webhook(router: &axum::Router, signature: &str, body: &str) -> (u16, Value) {
    let request = http::Request::builder()
        .method(Method::POST)
        .uri("/v1/webhooks/stripe")
        .header(header::CONTENT_TYPE, "application/json")
        .header("stripe-signature", signature)
        .body(Body::from(body.to_owned()))
        .expect("request");
    let response = router.clone().oneshot(request).await.expect("answered");
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.expect("body");
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn authorizer_event(token: &str) -> ApiGatewayV2CustomAuthorizerV2Request {
    let raw = include_str!("../../events/apigw-authorizer.json").replace("REPLACE_WITH_TOKEN", token);
    serde_json::from_str(&raw).expect("authorizer event")
}

/// What AWS's SQS event source mapping does with the provisioner's role: it reads the queue's
/// attributes, receives a batch, invokes the function and deletes what succeeded (a throttled
/// job's original included, once its copy is re-sent). Returns how many messages it received
/// and the receipt handles of the batch's item failures.
async fn poll_once(queue: &SqsQueue, platform: &Platform) -> (usize, Vec<String>) {
    queue.approximate_depth().await.expect("GetQueueAttributes as the event source mapping");
    let messages = queue.receive(10, 5).await.expect("ReceiveMessage as the event source mapping");
    let event = dotmac_tests::sqs_event(&messages);
    let max = platform.config.provisioning_max_receive_count;
    // As `bootstrap` runs it: a deadline, and throttled jobs re-sent to the queue (with the
    // function's own credentials, so the re-send is checked against its statements too).
    let limits = BatchLimits {
        stop_at: tokio::time::Instant::now() + Duration::from_secs(60),
        throttled: Some(Resend {
            queue: queue.clone(),
            backoff: Backoff { base_seconds: 1, max_seconds: 1 },
            max_resends: platform.config.provisioning_max_throttle_resends,
        }),
    };
    let answer = handle_sqs_event_until(&platform.provisioner(), event, max, &limits).await;
    let failed: BTreeSet<String> =
        answer.batch_item_failures.iter().map(|f| f.item_identifier.clone()).collect();
    let mut failures = Vec::new();
    for message in &messages {
        if failed.contains(&message.message_id) {
            failures.push(message.receipt_handle.clone());
        } else {
            queue.ack(&message.receipt_handle).await.expect("DeleteMessage as the event source mapping");
        }
    }
    (messages.len(), failures)
}

#[test]
fn every_function_does_its_work_with_only_the_template_statements() {
    // The walk through every function is one async block whose debug-build poll frame
    // outgrows a test thread's default 2 MiB stack: it runs on a thread of its own.
    let walk = std::thread::Builder::new()
        .name("iam-walk".into())
        .stack_size(64 << 20)
        .spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime")
                .block_on(walk_every_function())
        })
        .expect("the walk's thread");
    if let Err(panic) = walk.join() {
        std::panic::resume_unwind(panic);
    }
}

async fn walk_every_function() {
    let moto = Moto::start().await;
    let prefix = format!("iam{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);

    // Before enforcement: one administrator and the stack's two key set secrets exactly as
    // the template creates them (empty), so the first rotation runs on a fresh stack.
    let root_sdk = sdk_for(&moto.endpoint, "test", "test").await;
    let secrets = aws_sdk_secretsmanager::Client::new(&root_sdk);
    let mut secret_arns = HashMap::new();
    for name in [format!("{prefix}-jwt-key-set"), format!("{prefix}-jwt-public-key-set")] {
        let created = secrets
            .create_secret()
            .name(&name)
            .secret_string(r#"{"keys":[]}"#)
            .send()
            .await
            .expect("empty key set");
        secret_arns.insert(name, created.arn().expect("arn").to_owned());
    }
    // The Stripe secret as a deployer fills it in (a key of this test's own on the Stripe
    // double, so its charges are apart from every other test's).
    let stripe_secret_name = format!("{prefix}-stripe");
    let stripe_key = format!("sk_test_iam_{}", uuid::Uuid::new_v4().simple());
    let webhook_secret = format!("whsec_iam_{}", uuid::Uuid::new_v4().simple());
    let created = secrets
        .create_secret()
        .name(&stripe_secret_name)
        .secret_string(json!({"secret_key": stripe_key, "webhook_secret": webhook_secret}).to_string())
        .send()
        .await
        .expect("the Stripe secret");
    secret_arns.insert(stripe_secret_name.clone(), created.arn().expect("arn").to_owned());
    let stripe_secret_arn = secret_arns[&stripe_secret_name].clone();
    let stripe_api_base = std::env::var("DOTMAC_STRIPE_API_BASE")
        .expect("DOTMAC_STRIPE_API_BASE: run through `local/stack.sh with-emulator` (the Stripe double)");
    let mut env: HashMap<String, String> = HashMap::new();
    for (name, value) in [
        ("DOTMAC_PREFIX", prefix.clone()),
        ("DOTMAC_ADMIN_EMAIL", ADMIN_EMAIL.to_owned()),
        ("DOTMAC_ADMIN_PASSWORD", ADMIN_PASSWORD.to_owned()),
        ("DOTMAC_ECS_SUBNETS", moto.subnet.clone()),
        ("DOTMAC_ECS_SECURITY_GROUPS", moto.security_group.clone()),
        ("DOTMAC_TASK_START_TIMEOUT_SECONDS", "10".to_owned()),
        ("DOTMAC_PROVISIONING_MAX_RECEIVE_COUNT", "2".to_owned()),
        ("DOTMAC_TASK_FAMILY", format!("{prefix}-isp-framework")),
        ("DOTMAC_TASK_EXECUTION_ROLE_ARN", format!("arn:aws:iam::{ACCOUNT}:role/{prefix}-execution")),
        ("DOTMAC_TASK_ROLE_ARN", format!("arn:aws:iam::{ACCOUNT}:role/{prefix}-task")),
        ("DOTMAC_JWT_KEY_SET_SECRET", format!("{prefix}-jwt-key-set")),
        ("DOTMAC_JWT_PUBLIC_KEY_SET_SECRET", format!("{prefix}-jwt-public-key-set")),
        ("DOTMAC_INVITATION_SENDER", format!("invitations@{prefix}.example")),
        // moto's S3 answers path-style addresses only; every backup expires at once, so the
        // retention run has something to delete.
        ("DOTMAC_S3_FORCE_PATH_STYLE", "true".to_owned()),
        ("DOTMAC_BACKUP_RETENTION_DAYS", "0".to_owned()),
        ("DOTMAC_BACKUP_KEEP_AT_LEAST", "0".to_owned()),
        // As deployed: the key and the webhook secret only in Secrets Manager.
        ("DOTMAC_STRIPE_SECRET_ID", stripe_secret_name.clone()),
        ("DOTMAC_STRIPE_API_BASE", stripe_api_base.clone()),
    ] {
        env.insert(name.to_owned(), value);
    }
    let local = dotmac_local::LocalSettings::from_env(&env).expect("local settings");
    // The key set secrets exist, so prepare leaves them alone and creates the rest.
    let config = dotmac_local::prepare(&root_sdk, &env, &local).await.expect("resources");

    let names = StackNames {
        prefix: prefix.clone(),
        table: config.table_name.clone(),
        queue_url: config.provisioning_queue_url.clone(),
        billing_queue_url: config.billing.queue_url.clone(),
        cluster: config.ecs.cluster.clone(),
        family: format!("{prefix}-isp-framework"),
        private_secret_arn: secret_arns[&format!("{prefix}-jwt-key-set")].clone(),
        public_secret_arn: secret_arns[&format!("{prefix}-jwt-public-key-set")].clone(),
        stripe_secret_arn,
        execution_role_arn: format!("arn:aws:iam::{ACCOUNT}:role/{prefix}-execution"),
        task_role_arn: format!("arn:aws:iam::{ACCOUNT}:role/{prefix}-task"),
        invitation_sender: config.invitations.sender.clone(),
        bucket: config.backups.bucket.clone().expect("prepare names the backup bucket"),
        event_bus: config.event_bus_name.clone(),
    };
    let grants = template_grants(&names);
    for handler in Handler::ALL {
        assert!(grants.contains_key(handler.name()), "no function of the template runs {}", handler.name());
    }
    let (admin_key, admin_secret) =
        moto.user("administrator", &json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]})).await;
    let mut principals = HashMap::new();
    let mut keys = HashMap::new();
    for (function, grant) in &grants {
        let (key, secret) = moto.user(&format!("fn-{function}"), &moto_policy(&grant.statements)).await;
        principals.insert(key.clone(), Principal { function, statements: grant.statements.clone() });
        keys.insert(*function, (key, secret));
    }
    moto.enforce_iam().await;
    // Measured, not assumed: the root key no longer works, the administrator's does.
    let refused = aws_sdk_dynamodb::Client::new(&root_sdk).list_tables().send().await;
    assert!(refused.is_err(), "moto enforces IAM: the root key is refused");
    let admin_sdk = sdk_for(&moto.endpoint, &admin_key, &admin_secret).await;
    aws_sdk_dynamodb::Client::new(&admin_sdk)
        .list_tables()
        .send()
        .await
        .expect("the administrator is let in");

    let gate = Arc::new(Gate {
        upstream: moto.endpoint.clone(),
        http: dotmac_tests::http_client(),
        principals,
        secret_arns: Mutex::new(secret_arns),
        record: Mutex::default(),
        bucket: names.bucket.clone(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let gate_endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    let app = axum::Router::new().fallback(gate_request).with_state(gate.clone());
    let server = tokio::spawn(async move { axum::serve(listener, app).await.expect("gate serves") });

    // Each function as deployed: its own credentials, and the private key set only where the
    // template hands it one.
    let mut sdks = HashMap::new();
    for (function, (key, secret)) in &keys {
        sdks.insert(*function, sdk_for(&gate_endpoint, key, secret).await);
    }
    let sdk_of = |function: &str| sdks[function].clone();
    let config_of = |handler: Handler| {
        let mut config: Config = config.clone();
        if !grants[handler.name()].private_keys {
            config.jwt.key_set_secret = None;
        }
        config
    };
    // A panic inside (a function answering 500 on a refused call, say) is held until the
    // refusals are reported, so the failure names the call the template does not allow.
    let outcome = tokio::time::timeout(Duration::from_secs(180), AssertUnwindSafe(async {
        // rotate-signing-keys: the first run on the fresh stack creates both sets, a later
        // run that is due adds a key.
        let rotation_config = config_of(Handler::RotateSigningKeys);
        let rotation_client = aws_sdk_secretsmanager::Client::new(&sdk_of(Handler::RotateSigningKeys.name()));
        let first = rotate_signing_keys(&rotation_config, rotation_client.clone()).await.expect("the first rotation");
        assert!(matches!(first, RotationOutcome::Rotated { keys: 2, .. }), "{first:?}");
        let again = rotate_signing_keys(&rotation_config, rotation_client.clone()).await.expect("a run not due");
        assert!(matches!(again, RotationOutcome::NotDue { .. }), "{again:?}");
        // A later rotation, once due: the schedule's own code (`rotate_signing_keys` is this
        // with the clock's now) run when the next key (published to sign in `rotate_after`)
        // is itself `rotate_after` old.
        let later = time::OffsetDateTime::now_utc().unix_timestamp()
            + 2 * i64::try_from(rotation_config.jwt.rotate_after_seconds).expect("seconds")
            + 3600;
        let secret_of = |id: &Option<String>| KeySetSecret::new(rotation_client.clone(), id.clone().expect("secret"));
        let due = secret_of(&rotation_config.jwt.key_set_secret)
            .rotate(later, rotation_policy(&rotation_config), Some(&secret_of(&rotation_config.jwt.public_key_set_secret)))
            .await
            .expect("a due rotation");
        assert!(matches!(due, RotationOutcome::Rotated { keys: 3, .. }), "{due:?}");
        let admin_secrets = aws_sdk_secretsmanager::Client::new(&admin_sdk);
        for name in [format!("{prefix}-jwt-key-set"), format!("{prefix}-jwt-public-key-set")] {
            let value = admin_secrets.get_secret_value().secret_id(&name).send().await.expect("read back");
            let set: Value = serde_json::from_str(value.secret_string().unwrap_or_default()).expect("json");
            assert_eq!(set["keys"].as_array().map(Vec::len), Some(3), "{name} holds the rotated keys");
        }

        // Plans and the platform administrator, written by the administrator.
        let admin_platform = Platform::with_sdk_config(config.clone(), &admin_sdk).await.expect("admin platform");
        dotmac_local::seed(&admin_platform, &local).await.expect("seed");

        let platform_of = |handler: Handler| {
            let (config, sdk) = (config_of(handler), sdk_of(handler.name()));
            async move { Platform::with_sdk_config_as(handler, config, &sdk).await.expect("the function starts (cold start)") }
        };
        let auth = platform_of(Handler::Auth).await;
        let auth_router = auth.router(Handler::Auth).expect("auth router");

        // auth: a failed and a good sign-in, me, refresh, JWKS, password change, sign-out.
        let (status, _) = call(&auth_router, Method::POST, "/v1/auth/login", None, Some(json!({"email": ADMIN_EMAIL, "password": "wrong-password-here"}))).await;
        assert_eq!(status, 401);
        let (status, pair) = call(&auth_router, Method::POST, "/v1/auth/login", None, Some(json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}))).await;
        assert_eq!(status, 200, "{pair}");
        let admin = pair["access_token"].as_str().expect("access").to_owned();
        let (status, me) = call(&auth_router, Method::GET, "/v1/auth/me", Some(&admin), None).await;
        assert_eq!(status, 200, "{me}");
        let (status, jwks) = call(&auth_router, Method::GET, "/.well-known/jwks.json", None, None).await;
        assert_eq!(status, 200, "{jwks}");
        let (status, refreshed) = call(&auth_router, Method::POST, "/v1/auth/refresh", None, Some(json!({"refresh_token": pair["refresh_token"]}))).await;
        assert_eq!(status, 200, "{refreshed}");
        let (status, answer) = call(&auth_router, Method::POST, "/v1/auth/password", Some(&admin), Some(json!({"current_password": ADMIN_PASSWORD, "new_password": "Quiet-Harbour-Lantern-42"}))).await;
        assert_eq!(status, 204, "{answer}");
        let (status, pair) = call(&auth_router, Method::POST, "/v1/auth/login", None, Some(json!({"email": ADMIN_EMAIL, "password": "Quiet-Harbour-Lantern-42"}))).await;
        assert_eq!(status, 200, "{pair}");
        let admin = pair["access_token"].as_str().expect("access").to_owned();
        let (status, signed_out_pair) = call(&auth_router, Method::POST, "/v1/auth/login", None, Some(json!({"email": ADMIN_EMAIL, "password": "Quiet-Harbour-Lantern-42"}))).await;
        assert_eq!(status, 200);
        let signed_out = signed_out_pair["access_token"].as_str().expect("access").to_owned();
        let (status, answer) = call(&auth_router, Method::POST, "/v1/auth/logout", Some(&signed_out), None).await;
        assert_eq!(status, 204, "{answer}");

        // authorizer: a live token passes, a signed-out one (deny-list) does not.
        let authorizer = platform_of(Handler::Authorizer).await.authorizer();
        assert!(authorizer.decide(&authorizer_event(&admin)).await.is_authorized);
        assert!(!authorizer.decide(&authorizer_event(&signed_out)).await.is_authorized);

        // health and docs.
        let health = platform_of(Handler::Health).await.router(Handler::Health).expect("health router");
        let (status, answer) = call(&health, Method::GET, "/health", None, None).await;
        assert_eq!(status, 200, "{answer}");
        let (status, answer) = call(&health, Method::GET, "/ready", None, None).await;
        assert_eq!(status, 200, "readiness with the health function's rights: {answer}");
        let docs = docs_router(&[]);
        for path in ["/v1/openapi.json", "/docs/index.html"] {
            let (status, _) = call(&docs, Method::GET, path, None, None).await;
            assert_eq!(status, 200, "{path}");
        }

        // tenants: onboarding (transaction + job), reads, health reports.
        let tenants = platform_of(Handler::Tenants).await.router(Handler::Tenants).expect("tenants router");
        let onboard = |slug: String| {
            let tenants = tenants.clone();
            let admin = admin.clone();
            async move {
                let body = json!({"name": format!("ISP {slug}"), "slug": slug, "plan": "usage", "contact_email": format!("ops@{slug}.example")});
                // With an idempotency key, as a client retrying safely sends it.
                let key = uuid::Uuid::new_v4().to_string();
                let (status, tenant) = call_with(&tenants, Method::POST, "/v1/tenants", Some(&admin), Some(body), &[("idempotency-key", &key)]).await;
                assert_eq!(status, 202, "{tenant}");
                tenant["id"].as_str().expect("id").to_owned()
            }
        };
        let tenant_id = onboard(format!("isp-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])).await;
        let (status, page) = call(&tenants, Method::GET, "/v1/tenants?limit=5", Some(&admin), None).await;
        assert_eq!(status, 200, "{page}");
        let (status, answer) = call(&tenants, Method::POST, &format!("/v1/tenants/{tenant_id}/health"), Some(&admin), Some(json!({"status": "healthy"}))).await;
        assert_eq!(status, 204, "{answer}");
        let (status, answer) = call(&tenants, Method::GET, &format!("/v1/tenants/{tenant_id}/health"), Some(&admin), None).await;
        assert_eq!(status, 200, "{answer}");

        // usage: a report (one conditional put), its retry (the same put, answering what is
        // recorded), and the period's figure (the tenant with the token's checks, then GSI1).
        let usage = platform_of(Handler::Usage).await.router(Handler::Usage).expect("usage router");
        let observed = time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).expect("time");
        let report = json!({"tenant_id": tenant_id, "report_id": "iam-1", "customer_count": 42, "observed_at": observed});
        let (status, answer) = call(&usage, Method::POST, "/v1/usage", Some(&admin), Some(report.clone())).await;
        assert_eq!(status, 202, "{answer}");
        let (status, answer) = call(&usage, Method::POST, "/v1/usage", Some(&admin), Some(report)).await;
        assert_eq!((status, answer["outcome"].clone()), (200, json!("duplicate")), "{answer}");
        let (status, answer) = call(&usage, Method::GET, &format!("/v1/tenants/{tenant_id}/usage"), Some(&admin), None).await;
        assert_eq!((status, answer["billable_customers"].clone()), (200, json!(42)), "{answer}");

        // provisioner: the queued job, taken as the event source mapping takes it, reaches RUNNING.
        let provisioner = platform_of(Handler::Provisioner).await;
        let queue = SqsQueue::new(aws_sdk_sqs::Client::new(&sdk_of(Handler::Provisioner.name())), &config.provisioning_queue_url);
        // First ECS throttles it: the job is re-sent (SendMessage as the provisioner) and its
        // original deleted, no failure reported.
        let mut throttled = provisioner.clone();
        throttled.ecs = crate::throttling::throttling_ecs(&sdk_of(Handler::Provisioner.name())).await.0;
        let (received, failures) = poll_once(&queue, &throttled).await;
        assert_eq!((received, failures.len()), (1, 0), "one job, throttled and re-sent");
        let (received, failures) = poll_once(&queue, &provisioner).await;
        assert_eq!((received, failures.len()), (1, 0), "one job, provisioned");
        let (status, tenant) = call(&tenants, Method::GET, &format!("/v1/tenants/{tenant_id}"), Some(&admin), None).await;
        assert_eq!(status, 200, "{tenant}");
        assert_eq!(tenant["status"], "active", "{tenant}");
        assert_eq!(tenant["container"]["last_status"], "RUNNING", "{tenant}");
        let tenant_uuid = dotmac_domain::TenantId::parse(&tenant_id).expect("id");
        let license_of = |platform: &Platform| {
            let secrets = platform.tenant_secrets();
            async move { secrets.read(tenant_uuid).await.expect("secret").expect("exists").license.expect("a license") }
        };
        let first_license = license_of(&admin_platform).await;

        // The catalogue and the tenant's subscriptions (transactions on the tenant's version),
        // each change queueing the license job the provisioner then runs (a claim on the
        // secret, the license written beside the machine token, the claim released).
        for path in ["/v1/plans", "/v1/plans/usage", "/v1/bundles", &format!("/v1/tenants/{tenant_id}/bundles")] {
            let (status, answer) = call(&tenants, Method::GET, path, Some(&admin), None).await;
            assert_eq!(status, 200, "{path}: {answer}");
        }
        let price = json!({"currency": "USD", "per_customer": {"model": "package", "size": 100, "package_price": "30"}, "monthly_minimum": "50"});
        let plan = json!({"id": "iam-plan", "name": "IAM", "task_size": {"cpu": 256, "memory_mib": 512}, "price": price});
        let (status, answer) = call(&tenants, Method::POST, "/v1/plans", Some(&admin), Some(plan)).await;
        assert_eq!(status, 201, "{answer}");
        let (status, answer) = call(&tenants, Method::POST, "/v1/plans/iam-plan/prices", Some(&admin), Some(json!({"price": price, "expected_version": 1}))).await;
        assert_eq!(status, 201, "{answer}");
        let bundle_path = format!("/v1/tenants/{tenant_id}/bundles/crm");
        let (status, answer) = call(&tenants, Method::POST, &bundle_path, Some(&admin), None).await;
        assert_eq!(status, 201, "{answer}");
        let (received, failures) = poll_once(&queue, &provisioner).await;
        assert_eq!((received, failures.len()), (1, 0), "the license job");
        let license = license_of(&admin_platform).await;
        assert_ne!(license, first_license, "re-issued");
        let claims = admin_platform.keys.verify_license(&license, tenant_uuid).expect("a valid license");
        assert_eq!(claims.bundles, vec!["crm".to_owned()], "{claims:?}");
        let (status, answer) = call(&tenants, Method::DELETE, &bundle_path, Some(&admin), None).await;
        assert_eq!(status, 200, "{answer}");
        let (received, failures) = poll_once(&queue, &provisioner).await;
        assert_eq!((received, failures.len()), (1, 0), "the license job");
        let (status, answer) = call(&tenants, Method::POST, &format!("/v1/tenants/{tenant_id}/plan"), Some(&admin), Some(json!({"plan": "scaled"}))).await;
        assert_eq!(status, 201, "{answer}");
        let (received, failures) = poll_once(&queue, &provisioner).await;
        assert_eq!((received, failures.len()), (1, 0), "the license job");
        let claims = admin_platform.keys.verify_license(&license_of(&admin_platform).await, tenant_uuid).expect("valid");
        assert_eq!((claims.plan.as_str(), claims.bundles.len()), ("scaled", 0), "{claims:?}");

        // ... and one that cannot launch (a subnet that does not exist) fails each attempt; the
        // last one marks the tenant failed, stops what it has and revokes its token.
        let mut broken = config_of(Handler::Provisioner);
        broken.ecs.subnets = vec!["subnet-does-not-exist".to_owned()];
        let broken = Platform::with_sdk_config_as(Handler::Provisioner, broken, &sdk_of(Handler::Provisioner.name())).await.expect("provisioner");
        let failing = onboard(format!("isp-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])).await;
        let (received, failures) = poll_once(&queue, &broken).await;
        assert_eq!((received, failures.len()), (1, 1), "the first attempt is left for redelivery");
        // SQS redelivers it after the queue's visibility timeout; the administrator makes it
        // visible now instead of the test waiting that long.
        let admin_queue = SqsQueue::new(aws_sdk_sqs::Client::new(&admin_sdk), &config.provisioning_queue_url);
        admin_queue.retry_after(&failures[0], 0).await.expect("visible again");
        let (received, failures) = poll_once(&queue, &broken).await;
        assert_eq!((received, failures.len()), (1, 1), "the last attempt, left for the dead-letter queue");
        let stored = admin_platform.store.get_tenant(dotmac_domain::TenantId::parse(&failing).expect("id")).await.expect("get").expect("exists");
        assert_eq!(stored.status, TenantStatus::Failed, "{stored:?}");

        // billing: a run opened through its route (the run and its outbox event in one
        // transaction, the fan-out job queued), the monthly cycle's schedule, the worker taking
        // the jobs as the event source mapping does (fan-out: the tenants page, batch sends,
        // the cursor; the invoice: usage, invoices, the transaction with the run's mark), the
        // reads, an early finalization (the number and the invoice together) and the finalizer.
        let billing = platform_of(Handler::Billing).await.router(Handler::Billing).expect("billing router");
        let period = dotmac_billing::Period::containing(time::OffsetDateTime::now_utc());
        let (status, run) = call(&billing, Method::POST, "/v1/billing/runs", Some(&admin), Some(json!({"period": period.to_string(), "tenant_ids": [tenant_id]}))).await;
        assert_eq!(status, 202, "{run}");
        let (status, last) = call(&billing, Method::POST, "/v1/billing/runs", Some(&admin), Some(json!({"period": period.previous().to_string()}))).await;
        assert_eq!(status, 202, "{last}");
        let cycle = platform_of(Handler::BillingCycle).await;
        cycle.run_schedule(Handler::BillingCycle).await.expect("the monthly run opens");
        cycle.run_schedule(Handler::BillingCycle).await.expect("and a second firing finds it");
        let worker = platform_of(Handler::BillingWorker).await;
        let billing_queue = SqsQueue::new(aws_sdk_sqs::Client::new(&sdk_of(Handler::BillingWorker.name())), &config.billing.queue_url);
        // Three fan-outs (the routes' runs and the schedule's), then the invoice jobs they queued.
        for _ in 0..3 {
            billing_queue.approximate_depth().await.expect("GetQueueAttributes as the event source mapping");
            let messages = billing_queue.receive(10, 1).await.expect("ReceiveMessage as the event source mapping");
            let answer = dotmac_queue::lambda::handle_sqs_event(&worker.billing_worker(), dotmac_tests::sqs_event(&messages), 5).await;
            assert!(answer.batch_item_failures.is_empty(), "every billing job done");
            for message in &messages {
                billing_queue.ack(&message.receipt_handle).await.expect("DeleteMessage as the event source mapping");
            }
        }
        let (status, run) = call(&billing, Method::GET, &format!("/v1/billing/runs/{}", run["id"].as_str().expect("id")), Some(&admin), None).await;
        assert_eq!((status, run["invoiced"].clone()), (200, json!(1)), "{run}");
        let (status, page) = call(&billing, Method::GET, &format!("/v1/invoices?tenant_id={tenant_id}&period={period}"), Some(&admin), None).await;
        assert_eq!(status, 200, "{page}");
        let invoice_id = page["items"][0]["id"].as_str().expect("an invoice").to_owned();
        let (status, answer) = call(&billing, Method::GET, "/v1/invoices?status=draft", Some(&admin), None).await;
        assert_eq!(status, 200, "{answer}");
        let (status, answer) = call(&billing, Method::GET, &format!("/v1/invoices/{invoice_id}"), Some(&admin), None).await;
        assert_eq!(status, 200, "{answer}");
        let (status, answer) = call(&billing, Method::GET, &format!("/v1/tenants/{tenant_id}/invoices/upcoming"), Some(&admin), None).await;
        assert_eq!((status, answer["billable_customers"].clone()), (200, json!(42)), "{answer}");
        let (status, answer) = call(&billing, Method::POST, &format!("/v1/invoices/{invoice_id}/finalize"), Some(&admin), None).await;
        assert_eq!((status, answer["number"].clone()), (200, json!(1)), "{answer}");
        // The finalizer with no grace, a day into the next period: the last period's draft is
        // due (the current one is finalized already).
        let mut finalizer = platform_of(Handler::FinalizeInvoices).await;
        finalizer.config.billing.grace_seconds = 0;
        let due = finalizer.billing().finalize_due(period.end() + time::Duration::days(1)).await.expect("the finalizer runs");
        assert_eq!(due, 1, "the last period's draft");
        // payments: the charges the two finalizations queued (and the sweep queued again), run
        // by the billing worker with its Stripe secret read at cold start: the Stripe customer
        // (on the Stripe double), each attempt, its charge, its decision with the invoice and
        // the outbox event, the charge off the due list; the duplicates find them decided.
        let worker = platform_of(Handler::BillingWorker).await;
        assert!(worker.stripe.is_some(), "the billing worker read the Stripe secret");
        loop {
            let messages = billing_queue.receive(10, 1).await.expect("ReceiveMessage as the event source mapping");
            if messages.is_empty() {
                break;
            }
            let answer = dotmac_queue::lambda::handle_sqs_event(&worker.billing_worker(), dotmac_tests::sqs_event(&messages), 5).await;
            assert!(answer.batch_item_failures.is_empty(), "every charge done");
            for message in &messages {
                billing_queue.ack(&message.receipt_handle).await.expect("DeleteMessage as the event source mapping");
            }
        }
        // The payments function: an invoice's payments, and Stripe's webhook about its charge
        // (signed with the secret it read; the job decided first, so it changes nothing).
        let payments = platform_of(Handler::Payments).await;
        let secret = payments.config.stripe.webhook_secret.clone().expect("the payments function read the Stripe secret");
        let payments = payments.router(Handler::Payments).expect("payments router");
        let (status, answer) = call(&payments, Method::GET, &format!("/v1/invoices/{invoice_id}/payments"), Some(&admin), None).await;
        assert_eq!((status, answer["payment_status"].as_str()), (200, Some("paid")), "{answer}");
        let paid = &answer["items"][0];
        let event = json!({"id": format!("evt_iam_{}", uuid::Uuid::new_v4().simple()), "object": "event",
            "type": "payment_intent.succeeded", "created": time::OffsetDateTime::now_utc().unix_timestamp(),
            "data": {"object": {"id": paid["stripe_payment_intent_id"], "object": "payment_intent",
                "amount": paid["amount"]["minor"], "currency": "usd", "metadata": {"payment_id": paid["id"]}}}}).to_string();
        let signature = dotmac_stripe::sign(&secret, time::OffsetDateTime::now_utc().unix_timestamp(), event.as_bytes());
        let (status, answer) = call_webhook(&payments, &signature, &event).await;
        assert_eq!((status, answer["outcome"].as_str()), (200, Some("unchanged")), "{answer}");
        // Partners and refunds, through the payments function: a partner created, changed under
        // its version and its statement read; the invoice refunded in part through the Stripe
        // double (the credit note, the invoice and the outbox event in one transaction), and its
        // credit notes read.
        let partner = format!("iam-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let new_partner = json!({"id": partner, "name": "IAM Partner", "contact_email": "ops@iam-partner.example", "commission_rate": "10"});
        let (status, answer) = call(&payments, Method::POST, "/v1/partners", Some(&admin), Some(new_partner)).await;
        assert_eq!(status, 201, "{answer}");
        let (status, answer) = call(&payments, Method::PATCH, &format!("/v1/partners/{partner}"), Some(&admin), Some(json!({"commission_rate": "12.5", "version": 1}))).await;
        assert_eq!((status, answer["version"].clone()), (200, json!(2)), "{answer}");
        let (status, answer) = call(&payments, Method::GET, &format!("/v1/partners/{partner}/commissions"), Some(&admin), None).await;
        assert_eq!(status, 200, "{answer}");
        let (status, answer) = call(&payments, Method::POST, &format!("/v1/invoices/{invoice_id}/refunds"), Some(&admin), Some(json!({"amount": 1, "reason": "iam"}))).await;
        assert_eq!((status, answer["payment_status"].as_str()), (201, Some("partially_refunded")), "{answer}");
        let (status, answer) = call(&payments, Method::GET, &format!("/v1/invoices/{invoice_id}/credit-notes"), Some(&admin), None).await;
        assert_eq!((status, answer["items"].as_array().map(Vec::len)), (200, Some(1)), "{answer}");
        // The lifecycle: suspend, resume and delete through the tenants function, each job
        // taken by the provisioner as the event source mapping takes it, the events read, and
        // the publisher putting them on the bus.
        let lifecycle_tenant = onboard(format!("isp-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])).await;
        let (received, failures) = poll_once(&queue, &provisioner).await;
        assert_eq!((received, failures.len()), (1, 0), "provisioned");
        let (status, answer) = call(&tenants, Method::POST, &format!("/v1/tenants/{lifecycle_tenant}/suspend"), Some(&admin), Some(json!({"reason": "admin"}))).await;
        assert_eq!((status, answer["status"].as_str()), (202, Some("suspended")), "{answer}");
        let (received, failures) = poll_once(&queue, &provisioner).await;
        assert_eq!((received, failures.len()), (1, 0), "the task stopped");
        let (status, answer) = call(&tenants, Method::POST, &format!("/v1/tenants/{lifecycle_tenant}/resume"), Some(&admin), Some(json!({}))).await;
        assert_eq!((status, answer["status"].as_str()), (202, Some("active")), "{answer}");
        let (received, failures) = poll_once(&queue, &provisioner).await;
        assert_eq!((received, failures.len()), (1, 0), "the task runs again");
        let (status, answer) = call(&tenants, Method::DELETE, &format!("/v1/tenants/{lifecycle_tenant}"), Some(&admin), None).await;
        assert_eq!((status, answer["status"].as_str()), (202, Some("deprovisioning")), "{answer}");
        let (received, failures) = poll_once(&queue, &provisioner).await;
        assert_eq!((received, failures.len()), (1, 0), "the delete saga ran");
        let (status, events) = call(&tenants, Method::GET, &format!("/v1/tenants/{lifecycle_tenant}/events?order=oldest"), Some(&admin), None).await;
        assert_eq!(status, 200, "{events}");
        assert_eq!(events["items"].as_array().and_then(|items| items.last()).map(|e| e["type"].clone()), Some(json!("tenant.deleted")), "{events}");
        let published = platform_of(Handler::PublishEvents).await.publisher().publish_pending().await.expect("published");
        assert!(published.published >= 6 && published.held_back == 0, "{published:?}");
        // backups: on demand through the tenants function, the job as the provisioner runs
        // it (export, manifest, the container's data task), listed; then restored.
        let (status, backup) = call(&tenants, Method::POST, &format!("/v1/tenants/{tenant_id}/backups"), Some(&admin), None).await;
        assert_eq!(status, 202, "{backup}");
        let (received, failures) = poll_once(&queue, &provisioner).await;
        assert_eq!((received, failures.len()), (1, 0), "one backup job, done");
        let (status, page) = call(&tenants, Method::GET, &format!("/v1/tenants/{tenant_id}/backups"), Some(&admin), None).await;
        assert_eq!((status, page["items"][0]["status"].as_str()), (200, Some("completed")), "{page}");
        let backup_id = backup["backup_id"].as_str().expect("id");
        // A change since the backup, which the restore takes back (a batch write).
        let (status, answer) = call(&tenants, Method::POST, &format!("/v1/tenants/{tenant_id}/health"), Some(&admin), Some(json!({"status": "degraded"}))).await;
        assert_eq!(status, 204, "{answer}");
        let (status, restore) = call(&tenants, Method::POST, &format!("/v1/tenants/{tenant_id}/backups/{backup_id}/restore"), Some(&admin), None).await;
        assert_eq!(status, 202, "{restore}");
        let (received, failures) = poll_once(&queue, &provisioner).await;
        assert_eq!((received, failures.len()), (1, 0), "one restore job, done");
        let restored = admin_platform.store.get_restore(dotmac_domain::TenantId::parse(&tenant_id).expect("id"), restore["restore_id"].as_str().expect("id")).await.expect("get").expect("kept");
        assert_eq!(restored.status, dotmac_store::RestoreStatus::Completed, "{restored:?}");
        // scale: the override (the tenants function), the resize (the provisioner): a new
        // revision, the replacement task, the old one stopped.
        let (status, sizing) = call(&tenants, Method::POST, &format!("/v1/tenants/{tenant_id}/scale"), Some(&admin), Some(json!({"task_size": {"cpu": 512, "memory_mib": 1024}}))).await;
        assert_eq!((status, sizing["scale_queued"].as_bool()), (202, Some(true)), "{sizing}");
        let (received, failures) = poll_once(&queue, &provisioner).await;
        assert_eq!((received, failures.len()), (1, 0), "one scale job, done");
        let (_, tenant) = call(&tenants, Method::GET, &format!("/v1/tenants/{tenant_id}"), Some(&admin), None).await;
        assert_eq!(tenant["container"]["task_size"], json!({"cpu": 512, "memory_mib": 1024}), "{tenant}");
        // rollout: recorded by the tenants function with its first batch queued; the
        // provisioner moves the active tenants (the image on the record, the scale saga's
        // replace), counts each with its mark (a transaction with an update), skips the rest.
        let (status, rollout) = call(&tenants, Method::POST, "/v1/fleet/rollouts", Some(&admin), Some(json!({"image": "registry.example/isp-framework:iam", "batch_size": 10, "failure_threshold": 100}))).await;
        assert_eq!(status, 202, "{rollout}");
        let rollout_id = rollout["id"].as_str().expect("id").to_owned();
        let mut rounds = 0;
        while rounds < 10 && admin_queue.approximate_depth().await.expect("depth") > 0 {
            let (_, failures) = poll_once(&queue, &provisioner).await;
            assert!(failures.is_empty(), "a rollout batch failed: {failures:?}");
            rounds += 1;
        }
        let (status, rollout) = call(&tenants, Method::GET, &format!("/v1/fleet/rollouts/{rollout_id}"), Some(&admin), None).await;
        assert_eq!((status, rollout["status"].as_str()), (200, Some("completed")), "{rollout}");
        assert!(rollout["updated"].as_u64().is_some_and(|n| n >= 1), "{rollout}");
        let (status, answer) = call(&tenants, Method::POST, &format!("/v1/fleet/rollouts/{rollout_id}/pause"), Some(&admin), None).await;
        assert_eq!(status, 409, "a completed rollout is not paused: {answer}");
        // The schedules' jobs as they arrive from EventBridge Scheduler (the admin sends them
        // here), fanned out by the provisioner: daily backups and pruning (every backup has
        // expired under this stack's retention), the hourly size check, the fleet reconcile.
        for sample in [
            include_str!("../../events/sqs-scheduled-backups.json"),
            include_str!("../../events/sqs-scheduled-scaling.json"),
            include_str!("../../events/sqs-scheduled-reconcile.json"),
        ] {
            let event: Value = serde_json::from_str(sample).expect("sample");
            let body: Value = serde_json::from_str(event["Records"][0]["body"].as_str().expect("body")).expect("job");
            admin_queue.send(&body).await.expect("scheduled job");
        }
        let mut rounds = 0;
        while rounds < 10 && admin_queue.approximate_depth().await.expect("depth") > 0 {
            let (_, failures) = poll_once(&queue, &provisioner).await;
            assert!(failures.is_empty(), "a fleet job failed");
            rounds += 1;
        }
        let left = admin_platform.store.all_backups(dotmac_domain::TenantId::parse(&tenant_id).expect("id")).await.expect("backups");
        assert!(!left.iter().any(|b| b.backup_id.as_str() == backup_id), "the expired on-demand backup was pruned: {left:?}");

        // users: every route of /v1/users and /v1/roles.
        let users = platform_of(Handler::Users).await.router(Handler::Users).expect("users router");
        let (status, user) = call(&users, Method::POST, "/v1/users", Some(&admin), Some(json!({"email": "ops-lead@iam.test", "password": "Copper-Meadow-Signal-77", "roles": ["tenant_admin"], "tenant_id": tenant_id}))).await;
        assert_eq!(status, 201, "{user}");
        let user_id = user["id"].as_str().expect("id").to_owned();
        let (status, page) = call(&users, Method::GET, &format!("/v1/users?tenant_id={tenant_id}"), Some(&admin), None).await;
        assert_eq!(status, 200, "{page}");
        let (status, answer) = call(&users, Method::GET, &format!("/v1/users/{user_id}"), Some(&admin), None).await;
        assert_eq!(status, 200, "{answer}");
        let (status, answer) = call(&users, Method::PATCH, &format!("/v1/users/{user_id}"), Some(&admin), Some(json!({"active": false}))).await;
        assert_eq!(status, 200, "{answer}");
        let role = json!({"name": "billing-clerk", "permissions": [{"resource": "invoice", "action": "read", "scope": "tenant"}], "tenant_id": tenant_id});
        let (status, answer) = call(&users, Method::POST, "/v1/roles", Some(&admin), Some(role)).await;
        assert_eq!(status, 201, "{answer}");
        let (status, answer) = call(&users, Method::GET, &format!("/v1/roles?tenant_id={tenant_id}"), Some(&admin), None).await;
        assert_eq!(status, 200, "{answer}");
        let (status, answer) = call(&users, Method::GET, &format!("/v1/roles/billing-clerk?tenant_id={tenant_id}"), Some(&admin), None).await;
        assert_eq!(status, 200, "{answer}");
        let (status, answer) = call(&users, Method::PUT, &format!("/v1/roles/billing-clerk?tenant_id={tenant_id}"), Some(&admin), Some(json!({"permissions": [{"resource": "invoice", "action": "*", "scope": "tenant"}]}))).await;
        assert_eq!(status, 200, "{answer}");
        let (status, answer) = call(&users, Method::DELETE, &format!("/v1/roles/billing-clerk?tenant_id={tenant_id}"), Some(&admin), None).await;
        assert_eq!(status, 204, "{answer}");
        let (status, answer) = call(&users, Method::DELETE, &format!("/v1/users/{user_id}"), Some(&admin), None).await;
        assert_eq!(status, 204, "{answer}");

        // invitations: invite (a transaction and an SES send), list, resend, revoke, the page
        // and the public accept (a transaction consuming the invitation, creating the user).
        let invite = |email: String| {
            let users = users.clone();
            let admin = admin.clone();
            let tenant_id = tenant_id.clone();
            async move {
                let body = json!({"email": email, "roles": ["customer_user"], "tenant_id": tenant_id});
                let (status, invitation) = call(&users, Method::POST, "/v1/invitations", Some(&admin), Some(body)).await;
                assert_eq!((status, invitation["delivery"].as_str()), (202, Some("sent")), "{invitation}");
                invitation["id"].as_str().expect("id").to_owned()
            }
        };
        let kept = invite(format!("kept@{prefix}.example")).await;
        let withdrawn = invite(format!("withdrawn@{prefix}.example")).await;
        let (status, page) = call(&users, Method::GET, &format!("/v1/invitations?tenant_id={tenant_id}"), Some(&admin), None).await;
        assert_eq!((status, page["items"].as_array().map(Vec::len)), (200, Some(2)), "{page}");
        let (status, answer) = call(&users, Method::POST, &format!("/v1/invitations/{kept}/resend"), Some(&admin), None).await;
        assert_eq!((status, answer["delivery"].as_str()), (202, Some("sent")), "{answer}");
        let (status, answer) = call(&users, Method::DELETE, &format!("/v1/invitations/{withdrawn}"), Some(&admin), None).await;
        assert_eq!(status, 204, "{answer}");
        let page_answer = users.clone().oneshot(http::Request::get("/invitations/accept").body(Body::empty()).expect("request")).await.expect("page");
        assert_eq!(page_answer.status(), 200);
        // The newest e-mail to the invitee (the resend's) carries the live link.
        let sent: Vec<Value> = reqwest::get(format!("{}/moto-api/dotmac/ses/sent?to=kept@{prefix}.example", moto.endpoint))
            .await
            .expect("moto answers")
            .json()
            .await
            .expect("sent e-mails");
        assert_eq!(sent.len(), 2, "the invitation and its resend: {sent:?}");
        let body = sent[1]["body"].as_str().expect("body");
        let token = dotmac_tests::invitation_token(body.split(['"', '<', ' ', '\n']).find(|part| part.contains("#token=")).expect("a link"));
        let (status, user) = call(&users, Method::POST, "/v1/invitations/accept", None, Some(json!({"token": token, "password": "Amber-Orchard-Compass-58"}))).await;
        assert_eq!((status, user["tenant_id"].as_str()), (201, Some(tenant_id.as_str())), "{user}");

        // dunning: two tenants' invoices fail, one by the billing worker's declined charge,
        // one by Stripe's webhook to the payments function (each opens the dunning: its
        // ConditionCheck, the tenant's standing and event, IssueLicense queued); the dunning
        // function at days 3, 5 and 7 (the steps' transactions, the retries queued, the
        // lifecycle's suspension); then one is paid by the worker's retry, the other by a
        // webhook (the dunning cleared, its due entry deleted, the tenant resumed).
        let dunning_period = period.previous().previous();
        let now = time::OffsetDateTime::now_utc();
        let stripe_http = dotmac_tests::http_client();
        let mut dunned = Vec::new();
        for declined in [true, false] {
            let mut tenant = dotmac_domain::Tenant::onboard(
                dotmac_domain::NewTenant {
                    name: dotmac_domain::TenantName::parse("Dunned ISP").expect("name"),
                    slug: dotmac_domain::TenantSlug::parse(&format!("dun-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])).expect("slug"),
                    plan: dotmac_domain::PlanId::parse("usage").expect("plan"),
                    contact_email: dotmac_domain::Email::parse("ops@dunned.example").expect("email"),
                    partner_id: None,
                },
                now,
            );
            tenant.status = TenantStatus::Active;
            admin_platform.store.create_tenant(&tenant).await.expect("tenant");
            let report = dotmac_store::UsageReport { report_id: "peak".into(), tenant_id: tenant.id, customer_count: 500, observed_at: dunning_period.start() + time::Duration::days(10), received_at: now };
            admin_platform.store.record_usage(&report).await.expect("usage");
            if declined {
                let answer: Value = stripe_http.post(format!("{stripe_api_base}/v1/customers")).bearer_auth(&stripe_key).form(&[("payment_method", "pm_card_chargeDeclined")]).send().await.expect("the double").json().await.expect("json");
                let customer = answer["id"].as_str().expect("a customer");
                admin_platform.store.keep_stripe_customer(tenant.id, customer, now).await.expect("kept");
            }
            let plan = dotmac_domain::PlanId::parse("usage").expect("plan");
            admin_platform.billing().invoice_tenant(None, tenant.id, None, &plan, dunning_period, now).await.expect("invoiced");
            admin_platform.billing().finalize(tenant.id, dunning_period, now).await.expect("finalized");
            dunned.push(tenant.id);
        }
        let (by_worker, by_webhook) = (dunned[0], dunned[1]);
        // A webhook about an attempt (recorded pending, as after a crash before Stripe's answer).
        let webhook_about = |tenant: dotmac_domain::TenantId, kind: &'static str| {
            let admin_platform = admin_platform.clone();
            let payments = payments.clone();
            let secret = secret.clone();
            async move {
                let invoice = admin_platform.store.get_invoice(tenant, dunning_period).await.expect("read").expect("invoice");
                let attempt = admin_platform.store.invoice_payments(tenant, dunning_period).await.expect("payments").len() as u32 + 1;
                let pending = dotmac_store::Payment {
                    id: dotmac_store::payment_id(tenant, dunning_period, attempt), invoice_id: invoice.id.clone(), tenant_id: tenant,
                    period: dunning_period, attempt, amount: invoice.content.total, status: dotmac_store::AttemptStatus::Pending,
                    stripe_customer_id: "cus_iam_dunning".into(), stripe_payment_method_id: Some("pm_card_visa".into()),
                    stripe_payment_intent_id: None, failure_code: None, failure_message: None, created_at: time::OffsetDateTime::now_utc(),
                    processed_at: None, decided_by_event: None, version: 1,
                };
                admin_platform.store.begin_payment(&pending).await.expect("pending attempt");
                let event = json!({"id": format!("evt_iam_{}", uuid::Uuid::new_v4().simple()), "object": "event", "type": kind,
                    "created": time::OffsetDateTime::now_utc().unix_timestamp(),
                    "data": {"object": {"id": format!("pi_iam_{}", uuid::Uuid::new_v4().simple()), "object": "payment_intent",
                        "amount": pending.amount.minor, "currency": "usd", "metadata": {"payment_id": pending.id}}}}).to_string();
                let signature = dotmac_stripe::sign(&secret, time::OffsetDateTime::now_utc().unix_timestamp(), event.as_bytes());
                let (status, answer) = call_webhook(&payments, &signature, &event).await;
                assert_eq!((status, answer["outcome"].as_str()), (200, Some("applied")), "{answer}");
            }
        };
        webhook_about(by_webhook, "payment_intent.payment_failed").await;
        let drain_charges = || async {
            loop {
                let messages = billing_queue.receive(10, 1).await.expect("ReceiveMessage as the event source mapping");
                if messages.is_empty() {
                    break;
                }
                let answer = dotmac_queue::lambda::handle_sqs_event(&worker.billing_worker(), dotmac_tests::sqs_event(&messages), 5).await;
                assert!(answer.batch_item_failures.is_empty(), "every charge done");
                for message in &messages {
                    billing_queue.ack(&message.receipt_handle).await.expect("DeleteMessage as the event source mapping");
                }
            }
        };
        drain_charges().await;
        for tenant in &dunned {
            let stored = admin_platform.store.get_tenant(*tenant).await.expect("get").expect("tenant");
            assert_eq!(stored.billing_standing, dotmac_domain::BillingStanding::PastDue, "{stored:?}");
        }
        let dunning = platform_of(Handler::Dunning).await;
        for day in [3, 5, 7] {
            dunning.run_schedule_at(Handler::Dunning, now + time::Duration::days(day) + time::Duration::hours(1)).await.expect("the dunning run");
        }
        for tenant in &dunned {
            let stored = admin_platform.store.get_tenant(*tenant).await.expect("get").expect("tenant");
            assert_eq!((stored.status, stored.billing_standing), (TenantStatus::Suspended, dotmac_domain::BillingStanding::Suspended), "{stored:?}");
        }
        // The retries: the worker declines the first tenant's (its card) and charges the
        // second's (a new customer's default card): paid, cleared, resumed by the worker.
        drain_charges().await;
        // The first tenant's payment arrives by webhook.
        webhook_about(by_worker, "payment_intent.succeeded").await;
        for tenant in &dunned {
            let stored = admin_platform.store.get_tenant(*tenant).await.expect("get").expect("tenant");
            assert_eq!((stored.status, stored.billing_standing), (TenantStatus::Active, dotmac_domain::BillingStanding::Current), "{stored:?}");
        }
    }).catch_unwind())
    .await;
    server.abort();

    let record = gate.record.lock().expect("lock");
    for (function, calls) in &record.calls {
        println!("{function}: {}", calls.iter().cloned().collect::<Vec<_>>().join(", "));
    }
    assert!(
        record.denied.is_empty(),
        "calls infra/template.yaml does not allow:\n  {}",
        record.denied.join("\n  ")
    );
    match outcome {
        Err(_) => panic!("the functions' work took more than 180 s"),
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Ok(Ok(())) => {}
    }
    let mut unused = Vec::new();
    for (function, grant) in &grants {
        for statement in &grant.statements {
            for action in &statement.actions {
                let used = record.used.iter().any(|(f, sid, a)| {
                    f == function
                        && sid == &statement.sid
                        && glob(&action.to_ascii_lowercase(), &a.to_ascii_lowercase())
                });
                if !used {
                    unused.push(format!("{function}/{}/{action}", statement.sid));
                }
            }
        }
    }
    println!("statements (action by action) no function's work used: {unused:?}");
    assert_eq!(
        unused, EXPLAINED_UNUSED,
        "unused grants changed: remove them from the template or explain them (infra/README.md and EXPLAINED_UNUSED)"
    );
    assert_eq!(moto.server_errors(), Vec::<String>::new(), "moto answered 5xx (log {})", moto.log.display());
}
