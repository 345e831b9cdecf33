//! The Lambda entry point of every function: `_HANDLER` (the function's `Handler` property)
//! says which one this instance is.

use aws_lambda_events::event::apigw::ApiGatewayV2CustomAuthorizerV2Request;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use dotmac_config::Config;
use dotmac_platform::{Handler, Kind, Platform, custom_resource, docs_router, rotation_function};
use dotmac_queue::lambda::{Backoff, BatchLimits, Resend, handle_sqs_event_until, stop_at};
use lambda_runtime::{LambdaEvent, service_fn};
use std::sync::Arc;
use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    dotmac_telemetry::init_lambda();
    let raw = std::env::var("_HANDLER").unwrap_or_default();
    let handler = Handler::parse(&raw).ok_or_else(|| {
        let known: Vec<_> = Handler::ALL.iter().map(|h| h.name()).collect();
        format!("unknown _HANDLER {raw:?}; expected one of {known:?}")
    })?;
    let config = Config::from_env()?;
    if handler == Handler::RotateSigningKeys {
        // Runs before any key exists (its first run fills the sets), so it loads none.
        let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        let secrets = aws_sdk_secretsmanager::Client::new(&sdk);
        let http = custom_resource::http_client()?;
        // Two callers: EventBridge Scheduler (its payload carries nothing we need: every run
        // decides from the key set itself whether a rotation is due) and CloudFormation's
        // custom resource at deploy time, which waits for an answer at its ResponseURL.
        return lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| {
            let (config, secrets, http) = (config.clone(), secrets.clone(), http.clone());
            async move {
                let deadline = stop_at(event.context.deadline, Duration::ZERO);
                let answer = rotation_function(&config, secrets, &http, event.payload, deadline)
                    .await
                    .map_err(|e| format!("{e:#}"))?;
                Ok::<_, lambda_runtime::Error>(answer)
            }
        }))
        .await;
    }
    if handler == Handler::Docs {
        // Reaches no AWS service and holds no key: nothing to connect at cold start.
        return Box::pin(lambda_http::run(docs_router(&config.cors_allowed_origins))).await;
    }
    // Only the keys this function uses: health loads none, so it answers before any exists.
    let platform = Platform::connect_as(handler, config).await?;
    // Runs while the instance handles requests, so rotations reach warm instances too.
    let _reload = platform.start_key_reload();
    tracing::info!(handler = handler.name(), "cold start");
    // Boxed: the runtime's futures are deep enough to overflow the compiler's layout limit
    // when nested in one match.
    match handler.kind() {
        Kind::Http => {
            let router =
                platform.router(handler).ok_or_else(|| format!("{} serves no routes", handler.name()))?;
            Box::pin(lambda_http::run(router)).await
        }
        Kind::QueueConsumer if handler == Handler::BillingWorker => {
            let max_receive_count = platform.config.billing.max_receive_count;
            let worker = Arc::new(platform.billing_worker());
            Box::pin(lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| {
                let worker = worker.clone();
                async move {
                    // Nothing on this queue is throttled by a dependency: no re-sends.
                    let limits = BatchLimits::from_deadline_ms(event.context.deadline, None);
                    Ok::<SqsBatchResponse, lambda_runtime::Error>(
                        handle_sqs_event_until(worker.as_ref(), event.payload, max_receive_count, &limits)
                            .await,
                    )
                }
            })))
            .await
        }
        Kind::QueueConsumer => {
            let max_receive_count = platform.config.provisioning_max_receive_count;
            let provisioner = Arc::new(platform.provisioner());
            let resend = Resend {
                queue: platform.provisioning.clone(),
                backoff: Backoff::default(),
                max_resends: platform.config.provisioning_max_throttle_resends,
            };
            Box::pin(lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| {
                let (provisioner, resend) = (provisioner.clone(), resend.clone());
                async move {
                    // Stops short of the invocation's deadline, handing unfinished records
                    // back, and re-sends throttled jobs with a delay instead of letting each
                    // throttle use up a receive count.
                    let limits = BatchLimits::from_deadline_ms(event.context.deadline, Some(resend));
                    Ok::<SqsBatchResponse, lambda_runtime::Error>(
                        handle_sqs_event_until(
                            provisioner.as_ref(),
                            event.payload,
                            max_receive_count,
                            &limits,
                        )
                        .await,
                    )
                }
            })))
            .await
        }
        Kind::Authorizer => {
            let authorizer = Arc::new(platform.authorizer());
            Box::pin(lambda_runtime::run(service_fn(
                move |event: LambdaEvent<ApiGatewayV2CustomAuthorizerV2Request>| {
                    let authorizer = authorizer.clone();
                    async move { Ok::<_, lambda_runtime::Error>(authorizer.decide(&event.payload).await) }
                },
            )))
            .await
        }
        // The rotation is served above, before any keys are loaded; the billing and dunning
        // schedules here, each run as of the event's `time` (when the schedule fired): it
        // decides from that and the store what is due.
        Kind::Schedule => {
            let platform = Arc::new(platform);
            Box::pin(lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| {
                let platform = platform.clone();
                async move {
                    platform
                        .run_schedule_event(handler, &event.payload)
                        .await
                        .map_err(|e| format!("{e:#}"))?;
                    Ok::<_, lambda_runtime::Error>(
                        serde_json::json!({ "handler": handler.name(), "ok": true }),
                    )
                }
            })))
            .await
        }
    }
}
