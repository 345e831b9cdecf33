//! Logging set-up: JSON lines in Lambda (CloudWatch parses them), readable lines locally.
//! `RUST_LOG` filters either.

use tracing_subscriber::EnvFilter;

fn filter() -> EnvFilter {
    EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,aws_config=warn,aws_smithy_runtime=warn"))
}

/// Lambda: JSON, no ANSI colours, no timestamps (CloudWatch adds its own).
pub fn init_lambda() {
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter())
        .with_current_span(false)
        .with_ansi(false)
        .without_time()
        .with_target(false)
        .try_init();
}

/// Local stack: compact human-readable lines.
pub fn init_local() {
    let _ = tracing_subscriber::fmt().compact().with_env_filter(filter()).with_target(false).try_init();
}
