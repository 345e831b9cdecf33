//! The deploy-time first rotation. The template declares a CloudFormation custom resource
//! (`InitialSigningKeys`) backed by the rotation function, so the stack's own deployment runs
//! the first rotation: by the time the stack is complete both key sets hold keys and every
//! function can start, with no manual step. CloudFormation waits for the answer at the
//! request's presigned `ResponseURL` (an HTTPS PUT, sent with reqwest), for up to the
//! resource's `ServiceTimeout`: every request that carries one is answered, failures included.

use aws_lambda_events::event::cloudformation::{
    CloudFormationCustomResourceRequest as Request, CloudFormationCustomResourceResponse as Response,
    CloudFormationCustomResourceResponseStatus as Status,
};
use dotmac_config::Config;
use dotmac_secrets::RotationOutcome;
use serde_json::Value;
use std::time::Duration;
use tokio::time::Instant;

/// Time kept back from the invocation's deadline to answer CloudFormation: a rotation still
/// running then is abandoned and answered `FAILED`, rather than killed by Lambda unanswered.
pub const ANSWER_RESERVE: Duration = Duration::from_secs(10);

/// One answer attempt's longest wait, so that a retry still fits in `ANSWER_RESERVE`.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(3);

/// Who invoked the rotation function.
#[derive(Debug)]
pub enum Invocation {
    /// EventBridge Scheduler (or a person): no `ResponseURL`, nobody waits for an answer.
    Scheduled,
    /// A CloudFormation custom resource request.
    CustomResource(Box<Request>),
    /// It carries a `ResponseURL` but is no request this crate reads (an unknown
    /// `RequestType`, a missing field): answered `FAILED` from its raw fields all the same.
    Unreadable { event: Value, error: String },
}

/// Tells the rotation function's callers apart.
pub fn classify(event: &Value) -> Invocation {
    if event.get("ResponseURL").is_none() {
        return Invocation::Scheduled;
    }
    match serde_json::from_value::<Request>(event.clone()) {
        Ok(request) => Invocation::CustomResource(Box::new(request)),
        Err(error) => Invocation::Unreadable { event: event.clone(), error: error.to_string() },
    }
}

/// What every answer echoes back, whatever became of the request.
struct Identity {
    response_url: String,
    stack_id: String,
    request_id: String,
    logical_id: String,
    /// The id CloudFormation already knows (Update, Delete); none on Create.
    physical_id: Option<String>,
}

impl Identity {
    /// From the event as sent (or a decoded request serialised back: the same field names), so
    /// a request that does not decode is answered like one that does.
    fn from_raw(event: &Value) -> Identity {
        let text = |key: &str| event.get(key).and_then(Value::as_str).map(str::to_owned);
        Identity {
            response_url: text("ResponseURL").unwrap_or_default(),
            stack_id: text("StackId").unwrap_or_default(),
            request_id: text("RequestId").unwrap_or_default(),
            logical_id: text("LogicalResourceId").unwrap_or_default(),
            physical_id: text("PhysicalResourceId"),
        }
    }

    fn response(&self, config: &Config) -> Response {
        let mut response = Response::default();
        response.stack_id = self.stack_id.clone();
        response.request_id = self.request_id.clone();
        response.logical_resource_id = self.logical_id.clone();
        // A stable id: an Update that keeps it is never a replacement (which would send a
        // Delete for the old one).
        response.physical_resource_id = self.physical_id.clone().unwrap_or_else(|| {
            let secret = config.jwt.key_set_secret.as_deref().unwrap_or("signing-keys");
            format!("{}:{secret}", self.logical_id)
        });
        response
    }
}

/// Runs a custom resource request (Create and Update rotate when due — the first run fills
/// the empty sets —, Delete leaves the keys alone: the secrets go with the stack) and answers
/// CloudFormation before `deadline` (the invocation's). A rotation that fails, or is still
/// running `ANSWER_RESERVE` before the deadline, is answered `FAILED` with the reason. The
/// answer is also returned (the function's result, handy in logs and tests); an `Err` means
/// CloudFormation could not be told, and Lambda's retry of the invocation will tell it.
pub async fn handle(
    config: &Config,
    secrets: aws_sdk_secretsmanager::Client,
    http: &reqwest::Client,
    request: Request,
    deadline: Instant,
) -> anyhow::Result<Response> {
    let event = serde_json::to_value(&request)?;
    let identity = Identity::from_raw(&event);
    let mut response = identity.response(config);
    match request {
        Request::Create(_) | Request::Update(_) => {
            let work = crate::rotate_signing_keys(config, secrets);
            let stop = deadline.checked_sub(ANSWER_RESERVE).unwrap_or(deadline);
            let outcome = match tokio::time::timeout_at(stop, work).await {
                Ok(outcome) => outcome,
                Err(_) => Err(anyhow::anyhow!("it did not finish within the invocation's time")),
            };
            record(&mut response, outcome);
        }
        Request::Delete(_) => response.status = Status::Success,
        _ => return refuse(config, http, &event, "an unknown custom resource request type", deadline).await,
    }
    send(http, &identity.response_url, &response, deadline).await?;
    Ok(response)
}

/// Answers `FAILED` to a request that cannot be run (`reason` says why): CloudFormation then
/// fails the resource at once instead of waiting for an answer that never comes.
pub async fn refuse(
    config: &Config,
    http: &reqwest::Client,
    event: &Value,
    reason: &str,
    deadline: Instant,
) -> anyhow::Result<Response> {
    let identity = Identity::from_raw(event);
    let mut response = identity.response(config);
    tracing::error!(%reason, "a custom resource request that cannot be run");
    response.status = Status::Failed;
    response.reason = Some(truncated(&format!("the request cannot be run: {reason}")));
    send(http, &identity.response_url, &response, deadline).await?;
    Ok(response)
}

fn record(response: &mut Response, outcome: anyhow::Result<RotationOutcome>) {
    match outcome {
        Ok(RotationOutcome::NotDue { .. }) => {
            response.status = Status::Success;
            response.data.insert("Outcome".into(), "not_due".into());
        }
        Ok(RotationOutcome::Rotated { keys, .. }) => {
            response.status = Status::Success;
            response.data.insert("Outcome".into(), "rotated".into());
            response.data.insert("Keys".into(), keys.to_string());
        }
        Err(error) => {
            tracing::error!(error = %format!("{error:#}"), "the deploy-time rotation failed");
            response.status = Status::Failed;
            response.reason = Some(truncated(&format!("signing key rotation failed: {error:#}")));
        }
    }
}

/// CloudFormation keeps 4 KB of a response and shows the reason in the stack's events.
fn truncated(reason: &str) -> String {
    reason.chars().take(1000).collect()
}

/// PUTs the answer to the presigned URL. It is signed for an empty content type, so the body
/// goes as is (no `content-type: application/json`). Retried while the deadline allows: a
/// lost answer leaves the stack waiting until the resource's `ServiceTimeout`.
async fn send(
    http: &reqwest::Client,
    url: &str,
    response: &Response,
    deadline: Instant,
) -> anyhow::Result<()> {
    let body = serde_json::to_string(response)?;
    let mut last = None;
    for attempt in 0..3u32 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
        }
        if Instant::now() >= deadline {
            break;
        }
        let put = http.put(url).header("content-length", body.len()).body(body.clone()).send();
        match tokio::time::timeout_at(deadline, put).await {
            Ok(Ok(answer)) if answer.status().is_success() => return Ok(()),
            Ok(Ok(answer)) => last = Some(anyhow::anyhow!("the response URL answered {}", answer.status())),
            Ok(Err(error)) => last = Some(anyhow::Error::new(error).context("sending the answer")),
            Err(_) => last = Some(anyhow::anyhow!("the invocation's deadline passed while answering")),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no time left to answer")))
}

/// The HTTP client for the answers (TLS with the system's roots and aws-lc-rs, a bounded wait).
pub fn http_client() -> anyhow::Result<reqwest::Client> {
    crate::install_tls_provider();
    Ok(reqwest::Client::builder().timeout(ANSWER_TIMEOUT).build()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_client_builds_on_aws_lc_rs() {
        // reqwest has no provider of its own, so this would panic had none been installed.
        http_client().expect("client");
        let provider = rustls::crypto::CryptoProvider::get_default().expect("a process provider");
        let aws_lc_rs = rustls::crypto::aws_lc_rs::default_provider();
        let suites = |p: &rustls::crypto::CryptoProvider| {
            p.cipher_suites.iter().map(|s| s.suite()).collect::<Vec<_>>()
        };
        assert_eq!(suites(provider), suites(&aws_lc_rs), "the installed provider is aws-lc-rs");
        assert_eq!(provider.kx_groups.len(), aws_lc_rs.kx_groups.len());
    }

    #[test]
    fn callers_are_told_apart_by_the_response_url() {
        let schedule: Value =
            serde_json::from_str(include_str!("../../../events/schedule-rotate-signing-keys.json"))
                .expect("json");
        assert!(matches!(classify(&schedule), Invocation::Scheduled));
        let create: Value =
            serde_json::from_str(include_str!("../../../events/cloudformation-signing-keys-create.json"))
                .expect("json");
        assert!(
            matches!(classify(&create), Invocation::CustomResource(r) if matches!(*r, Request::Create(_)))
        );
        let mut odd = create.clone();
        odd["RequestType"] = "Import".into();
        assert!(matches!(classify(&odd), Invocation::Unreadable { .. }));
    }
}
