//! `make dev`: the whole platform on http://127.0.0.1:$DOTMAC_PORT (default 8000).

use anyhow::Context;
use dotmac_config::Config;
use dotmac_local::{LocalSettings, prepare, seed, serve};
use dotmac_platform::Platform;
use std::collections::HashMap;

async fn ctrl_c_or_term() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut signal) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            signal.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("stopping: finishing in-flight requests and jobs");
}

/// `.local/lambda.env`: the stack's configuration for `cargo lambda watch --env-file`, so a
/// function run the Lambda way talks to the same emulator and resources.
fn write_lambda_env(dir: &str, env: &HashMap<String, String>, config: &Config) -> anyhow::Result<()> {
    let mut lines: Vec<String> = env
        .iter()
        .filter(|(name, _)| {
            name.starts_with("AWS_") || name.starts_with("DOTMAC_ECS_") && *name != "DOTMAC_ECS_CLUSTER"
        })
        .map(|(name, value)| format!("{name}={value:?}"))
        .collect();
    lines.extend([
        format!("DOTMAC_TABLE_NAME={:?}", config.table_name),
        format!("DOTMAC_PROVISIONING_QUEUE_URL={:?}", config.provisioning_queue_url),
        format!("DOTMAC_BILLING_QUEUE_URL={:?}", config.billing.queue_url),
        format!("DOTMAC_ECS_CLUSTER={:?}", config.ecs.cluster),
        format!("DOTMAC_TENANT_SECRET_PREFIX={:?}", config.tenant_secret_prefix),
        format!("DOTMAC_INVITATION_SENDER={:?}", config.invitations.sender),
        format!("DOTMAC_INVITATION_ACCEPT_URL={:?}", config.invitations.accept_url),
        format!(
            "DOTMAC_JWT_PUBLIC_KEY_SET_SECRET={:?}",
            config.jwt.public_key_set_secret.as_deref().unwrap_or_default()
        ),
        match (&config.jwt.key_set_secret, &config.jwt.key_set, &config.jwt.signing_key) {
            (Some(secret), _, _) => format!("DOTMAC_JWT_KEY_SET_SECRET={secret:?}"),
            (None, Some(set), _) => format!("DOTMAC_JWT_KEY_SET={set:?}"),
            (None, None, key) => format!("DOTMAC_JWT_SIGNING_KEY={:?}", key.as_deref().unwrap_or_default()),
        },
    ]);
    lines.sort();
    let path = std::path::Path::new(dir).join("lambda.env");
    std::fs::write(&path, lines.join("\n") + "\n").with_context(|| format!("writing {}", path.display()))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    dotmac_telemetry::init_local();
    let mut env: HashMap<String, String> = std::env::vars().collect();
    let port: u16 = env
        .get("DOTMAC_PORT")
        .map(|p| p.parse())
        .transpose()
        .context("DOTMAC_PORT must be a port number")?
        .unwrap_or(8000);
    let listener = match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
        Ok(listener) => listener,
        Err(error) if error.kind() == std::io::ErrorKind::AddrInUse => {
            anyhow::bail!(
                "port {port} is already in use: is `make dev` already running? Stop it (Ctrl-C) or pick another port with DOTMAC_PORT"
            )
        }
        Err(error) => return Err(error).with_context(|| format!("binding 127.0.0.1:{port}")),
    };
    // Invitation links open the accept page of this server, wherever it listens.
    env.entry("DOTMAC_INVITATION_ACCEPT_URL".into())
        .or_insert_with(|| format!("http://127.0.0.1:{port}{}", dotmac_users::ACCEPT_PAGE_PATH));
    let local = LocalSettings::from_env(&env)?;
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let config = prepare(&sdk, &env, &local).await?;
    tracing::info!(?config, "configuration");
    if let Some(dir) = &local.state_dir {
        write_lambda_env(dir, &env, &config)?;
    }
    let platform = Platform::with_sdk_config(config, &sdk).await?;
    seed(&platform, &local).await?;
    println!();
    println!("  DotMac Platform is up on http://127.0.0.1:{port}");
    println!("  platform admin: {} / {}", local.admin_email, local.admin_password);
    println!("  provisioning worker: {} concurrent jobs; Ctrl-C stops everything", local.worker_concurrency);
    if platform.config.invitations.print_links {
        println!(
            "  invitation links are printed here as they are sent (the e-mails go to the emulator's SES)"
        );
    }
    println!();
    serve(platform, listener, local, ctrl_c_or_term()).await
}
