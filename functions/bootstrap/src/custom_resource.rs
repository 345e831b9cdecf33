//! The deploy-time first rotation. The template declares a CloudFormation custom resource
//! (`InitialSigningKeys`) backed by the rotation function, so the stack's own deployment runs
//! the first rotation: by the time the stack is complete both key sets hold keys and every
//! function can start, with no manual step. CloudFormation waits for the answer at the
//! request's presigned `ResponseURL` (an HTTPS PUT, sent with reqwest).

use aws_lambda_events::event::cloudformation::{
    CloudFormationCustomResourceRequest as Request, CloudFormationCustomResourceResponse as Response,
    CloudFormationCustomResourceResponseStatus as Status,
};
use dotmac_config::Config;
use dotmac_secrets::RotationOutcome;
use std::time::Duration;

/// The event, when it is a CloudFormation custom resource request (the schedule's events are
/// not: they carry no `ResponseURL`).
pub fn parse(event: &serde_json::Value) -> Option<Request> {
    if event.get("ResponseURL").is_none() || event.get("RequestType").is_none() {
        return None;
    }
    serde_json::from_value(event.clone()).ok()
}

/// Runs the request (Create and Update rotate when due — the first run fills the empty sets —,
/// Delete leaves the keys alone: the secrets go with the stack) and answers CloudFormation.
/// Always answers, failures included, so a deploy never hangs on us; the answer is also
/// returned (the function's result, handy in logs and tests).
pub async fn handle(
    config: &Config,
    secrets: aws_sdk_secretsmanager::Client,
    http: &reqwest::Client,
    request: Request,
) -> anyhow::Result<Response> {
    let (response_url, outcome) = match &request {
        Request::Create(r) => {
            (r.response_url.clone(), Some(crate::rotate_signing_keys(config, secrets).await))
        }
        Request::Update(r) => {
            (r.response_url.clone(), Some(crate::rotate_signing_keys(config, secrets).await))
        }
        Request::Delete(r) => (r.response_url.clone(), None),
        _ => anyhow::bail!("an unknown custom resource request type"),
    };
    let response = response_for(config, &request, outcome);
    send(http, &response_url, &response).await?;
    Ok(response)
}

fn response_for(
    config: &Config,
    request: &Request,
    outcome: Option<anyhow::Result<RotationOutcome>>,
) -> Response {
    let mut response = Response::default();
    let (stack_id, request_id, logical_id, physical_id) = match request {
        // A stable id: an Update that keeps it is never a replacement (which would send a
        // Delete for the old one).
        Request::Create(r) => (&r.stack_id, &r.request_id, &r.logical_resource_id, None),
        Request::Update(r) => {
            (&r.stack_id, &r.request_id, &r.logical_resource_id, Some(r.physical_resource_id.clone()))
        }
        Request::Delete(r) => {
            (&r.stack_id, &r.request_id, &r.logical_resource_id, Some(r.physical_resource_id.clone()))
        }
        _ => unreachable!("the request types are Create, Update and Delete"),
    };
    response.stack_id = stack_id.clone();
    response.request_id = request_id.clone();
    response.logical_resource_id = logical_id.clone();
    response.physical_resource_id = physical_id.unwrap_or_else(|| {
        let secret = config.jwt.key_set_secret.as_deref().unwrap_or("signing-keys");
        format!("{logical_id}:{secret}")
    });
    match outcome {
        None | Some(Ok(RotationOutcome::NotDue { .. })) => {
            response.status = Status::Success;
            response.data.insert("Outcome".into(), "not_due".into());
        }
        Some(Ok(RotationOutcome::Rotated { keys, .. })) => {
            response.status = Status::Success;
            response.data.insert("Outcome".into(), "rotated".into());
            response.data.insert("Keys".into(), keys.to_string());
        }
        Some(Err(error)) => {
            tracing::error!(error = %format!("{error:#}"), "the deploy-time rotation failed");
            response.status = Status::Failed;
            // CloudFormation shows the reason in the stack's events (it keeps 4 KB of a response).
            response.reason =
                Some(format!("signing key rotation failed: {error:#}").chars().take(1000).collect());
        }
    }
    if matches!(request, Request::Delete(_)) {
        response.data.clear();
    }
    response
}

/// PUTs the answer to the presigned URL. It is signed for an empty content type, so the body
/// goes as is (no `content-type: application/json`). Retried a few times: a lost answer
/// leaves the stack waiting for an hour.
async fn send(http: &reqwest::Client, url: &str, response: &Response) -> anyhow::Result<()> {
    let body = serde_json::to_string(response)?;
    let mut last = None;
    for attempt in 0..3u32 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
        }
        match http.put(url).header("content-length", body.len()).body(body.clone()).send().await {
            Ok(answer) if answer.status().is_success() => return Ok(()),
            Ok(answer) => last = Some(anyhow::anyhow!("the response URL answered {}", answer.status())),
            Err(error) => last = Some(anyhow::Error::new(error).context("sending the answer")),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no attempt made")))
}

/// The HTTP client for the answers (TLS with the system's roots and aws-lc-rs, a bounded wait).
pub fn http_client() -> anyhow::Result<reqwest::Client> {
    crate::install_tls_provider();
    Ok(reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?)
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
}
