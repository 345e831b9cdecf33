//! The Lambda entry point of every function: `_HANDLER` (the function's `Handler` property)
//! says which one this instance is.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use dotmac_config::Config;
use dotmac_platform::{Handler, Platform};
use dotmac_queue::lambda::handle_sqs_event;
use lambda_runtime::{LambdaEvent, service_fn};
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    dotmac_telemetry::init_lambda();
    let raw = std::env::var("_HANDLER").unwrap_or_default();
    let handler = Handler::parse(&raw).ok_or_else(|| {
        let known: Vec<_> = Handler::ALL.iter().map(|h| h.name()).collect();
        format!("unknown _HANDLER {raw:?}; expected one of {known:?}")
    })?;
    let config = Config::from_env()?;
    let platform = Platform::connect(config).await?;
    tracing::info!(handler = handler.name(), "cold start");
    // Boxed: the runtime's futures are deep enough to overflow the compiler's layout limit
    // when nested in one match.
    match handler {
        Handler::Auth => Box::pin(lambda_http::run(platform.auth_router())).await,
        Handler::Tenants => Box::pin(lambda_http::run(platform.tenants_router())).await,
        Handler::Health => Box::pin(lambda_http::run(platform.health_router())).await,
        Handler::Provisioner => {
            let max_receive_count = platform.config.provisioning_max_receive_count;
            let provisioner = Arc::new(platform.provisioner());
            Box::pin(lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| {
                let provisioner = provisioner.clone();
                async move {
                    Ok::<SqsBatchResponse, lambda_runtime::Error>(
                        handle_sqs_event(provisioner.as_ref(), event.payload, max_receive_count).await,
                    )
                }
            })))
            .await
        }
    }
}
