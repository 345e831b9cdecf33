//! `make bench`: one table of the platform's performance figures, each beside what it is
//! compared to and the previous run's figure, also written to `bench/results.json`.
//!
//! 1. cold start of each function (release `bootstrap` under a local Lambda Runtime API),
//!    peak RSS, artifact size;
//! 2. in-process handler cost against an equivalent Python handler (PyJWT + json);
//! 3. pricing and invoice building in memory, per tenant;
//! 4. end-to-end figures on the local stack against the emulator;
//! 5. store-bound figures with DynamoDB on DynamoDB Local, each beside the backend's own rate.
//!
//! Every loop is bounded in count and time, and all traffic stays on 127.0.0.1.

mod auth_ops;
mod billing_run;
mod charging_run;
mod coldstart;
mod dynamodb_local;
mod e2e;
mod handler;
mod on_dynamodb_local;
mod pricing;
mod reconcile;
mod report;

use anyhow::Context;
use report::{Better, Results, Row, summarize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

const COLD_START_RUNS: usize = 20;
/// The rows of the 200-onboardings figure, reported together or not at all.
pub(crate) const ONBOARD200_ROWS: [&str; 8] = [
    "e2e.onboard200_wall_s",
    "e2e.onboard200_p50_s",
    "e2e.onboard200_p99_s",
    "e2e.onboard200_rate",
    "e2e.onboard200_post_p50_s",
    "e2e.onboard200_post_p99_s",
    "e2e.onboard200_retries",
    "e2e.onboard200_task_count_errors",
];
const SUSPEND_RESUME_ROUNDS: usize = 5;
const SEQUENTIAL_ONBOARDINGS: usize = 5;
pub(crate) const CONCURRENT_ONBOARDINGS: usize = 200;
pub(crate) const ONBOARDING_LIMIT: Duration = Duration::from_secs(300);
const NEEDS_EMULATOR: &str = "not measured: needs the emulator (run `make bench`)";

const S1: &str = "1 cold start: release bootstrap, x86_64, local Runtime API, 128 MB settings";
const S2: &str = "2 in-process handler cost: authenticated GET /v1/tenants/{id}";
const S3: &str = "3 pricing and invoices in memory";
const S4: &str = "4 end to end: local server in this process, moto emulator, 127.0.0.1";

const HELLO_INIT: &str = "Rust hello world init 15.2–18.2 ms x86_64 (maxday/lambda-perf)";
const AXUM_INIT: &str = "axum + lambda_http init ~18.7 ms";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("criterion-handler") {
        let (Some(fixture), Some(dir)) = (args.get(2), args.get(3)) else {
            eprintln!("usage: dotmac-bench criterion-handler FIXTURE.json OUTPUT_DIR");
            return ExitCode::from(2);
        };
        return match handler::criterion_child(Path::new(fixture), Path::new(dir)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("criterion-handler: {error:#}");
                ExitCode::FAILURE
            }
        };
    }
    let child_rows = args.get(1).map(String::as_str) == Some(on_dynamodb_local::CHILD_ARG);
    // The in-process server's warnings and errors (a refused request's cause) go to stderr.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("warn,aws_config=error,aws_smithy_runtime=error")
    });
    let _ =
        tracing_subscriber::fmt().compact().with_env_filter(filter).with_writer(std::io::stderr).try_init();
    if child_rows {
        let Some(out) = args.get(2) else {
            eprintln!("usage: dotmac-bench {} ROWS.json", on_dynamodb_local::CHILD_ARG);
            return ExitCode::from(2);
        };
        return match tokio::runtime::Runtime::new() {
            Ok(runtime) => {
                let rows = runtime.block_on(on_dynamodb_local::rows());
                match serde_json::to_vec(&rows).map(|json| std::fs::write(out, json)) {
                    Ok(Ok(())) => ExitCode::SUCCESS,
                    _ => ExitCode::FAILURE,
                }
            }
            Err(error) => {
                eprintln!("bench: {error}");
                ExitCode::FAILURE
            }
        };
    }
    let sections: Vec<u8> = match args.iter().skip(1).map(|a| a.parse::<u8>()).collect() {
        Ok(sections) => sections,
        Err(_) => {
            eprintln!(
                "usage: dotmac-bench [SECTION...]   (1 cold start, 2 handler, 3 pricing, 4 end to end, 5 DynamoDB Local)"
            );
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("bench: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&sections)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

struct Paths {
    root: PathBuf,
    target: PathBuf,
    work: PathBuf,
    results: PathBuf,
}

impl Paths {
    fn discover() -> anyhow::Result<Paths> {
        let root =
            Path::new(env!("CARGO_MANIFEST_DIR")).parent().context("the workspace root")?.to_path_buf();
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        let work = target.join("bench");
        std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
        Ok(Paths { results: root.join("bench").join("results.json"), root, target, work })
    }
}

/// A count the bench takes from `variable` when it holds a positive number, else `default`.
fn count_setting(variable: &str, default: usize) -> usize {
    std::env::var(variable)
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(default)
}

fn progress(message: impl AsRef<str>) {
    eprintln!("\x1b[1mbench:\x1b[0m {}", message.as_ref());
}

/// `sections` empty runs everything and records it; a selection is printed, not recorded.
async fn run(sections: &[u8]) -> anyhow::Result<()> {
    let started = Instant::now();
    let wanted = |section: u8| sections.is_empty() || sections.contains(&section);
    let paths = Paths::discover()?;
    let prior = report::load_previous(&paths.results);
    // Only ever the emulator: without its endpoint nothing here calls AWS.
    let emulator = std::env::var("AWS_ENDPOINT_URL").ok().filter(|v| !v.trim().is_empty());
    let stack = match &emulator {
        Some(_) if !(wanted(1) || wanted(4)) => None,
        Some(endpoint) => {
            progress(format!("preparing resources on the emulator at {endpoint}"));
            let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
            Some(e2e::prepare_stack(&sdk).await.map_err(|e| format!("{e:#}")))
        }
        None => {
            progress("AWS_ENDPOINT_URL is not set: emulator rows are skipped (`make bench` starts one)");
            None
        }
    };

    let mut rows = Vec::new();
    if wanted(1) {
        rows.extend(cold_start_rows(&paths, stack.as_ref()).await);
        rows.extend(artifact_rows(&paths));
    }
    if wanted(2) {
        rows.extend(handler_rows(&paths));
        progress("identity primitives on one core (about 10 s)");
        rows.extend(auth_ops::rows());
    }
    if wanted(3) {
        progress("pricing and invoice building: 10,000 tenants, 5 rounds");
        rows.extend(pricing::rows(S3));
    }
    if wanted(4) {
        rows.extend(end_to_end_rows(stack.as_ref()).await);
    }

    if wanted(5) {
        if emulator.is_some() {
            progress("section 5: DynamoDB on DynamoDB Local (installed by the bench if missing)");
            rows.extend(on_dynamodb_local::run_in_child(&paths.root, &paths.work));
        } else {
            rows.extend(on_dynamodb_local::missing_rows(NEEDS_EMULATOR));
        }
    }

    report::attach_previous(&mut rows, prior.as_ref());
    let results = Results {
        date: time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        machine: machine(),
        cpu: cpu_model(),
        run_seconds: Some((started.elapsed().as_secs_f64() * 10.0).round() / 10.0),
        rows,
        previous: prior.map(|mut p| {
            p.previous = None;
            Box::new(p)
        }),
    };
    let shown = paths.results.strip_prefix(&paths.root).unwrap_or(&paths.results).display();
    let recorded = if sections.is_empty() {
        report::write_results(&paths.results, &results)
            .with_context(|| format!("writing {}", paths.results.display()))?;
        format!("results in {shown}")
    } else {
        format!("sections {sections:?} only: {shown} left as it was")
    };
    println!("{}", report::render_table(&results));
    println!("bench run took {:.0} s (build excluded); {recorded}", started.elapsed().as_secs_f64());
    Ok(())
}

fn machine() -> String {
    std::process::Command::new("uname")
        .args(["-s", "-r", "-m"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| format!("{} {}", std::env::consts::OS, std::env::consts::ARCH))
}

fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines()
        .find_map(|line| line.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map(|(_, model)| model.trim().to_owned())
}

/// What the child gets besides the Lambda variables: the emulator's AWS variables and the
/// functions' configuration. Without the emulator, a dead local endpoint, never AWS.
fn child_env(stack: Option<&e2e::Stack>) -> anyhow::Result<Vec<(String, String)>> {
    let mut env: Vec<(String, String)> = Vec::new();
    match stack {
        Some(stack) => {
            env.extend(
                std::env::vars()
                    .filter(|(k, _)| k.starts_with("AWS_") && !k.starts_with("AWS_LAMBDA_"))
                    .chain(std::env::vars().filter(|(k, _)| k.starts_with("DOTMAC_ECS_"))),
            );
            let config = &stack.platform.config;
            env.push(("DOTMAC_TABLE_NAME".into(), config.table_name.clone()));
            env.push(("DOTMAC_PROVISIONING_QUEUE_URL".into(), config.provisioning_queue_url.clone()));
            env.push(("DOTMAC_ECS_CLUSTER".into(), config.ecs.cluster.clone()));
            // As deployed: the keys come from their secrets, so a cold start includes reading them.
            let jwt = &config.jwt;
            match (&jwt.key_set_secret, &jwt.public_key_set_secret, &jwt.signing_key) {
                (Some(private), public, _) => {
                    env.push(("DOTMAC_JWT_KEY_SET_SECRET".into(), private.clone()));
                    if let Some(public) = public {
                        env.push(("DOTMAC_JWT_PUBLIC_KEY_SET_SECRET".into(), public.clone()));
                    }
                }
                (None, _, Some(key)) => env.push(("DOTMAC_JWT_SIGNING_KEY".into(), key.clone())),
                (None, _, None) => anyhow::bail!("the stack has no signing keys"),
            }
        }
        None => {
            for (k, v) in [
                ("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
                ("AWS_ACCESS_KEY_ID", "bench"),
                ("AWS_SECRET_ACCESS_KEY", "bench"),
                ("AWS_REGION", "us-east-1"),
                ("DOTMAC_TABLE_NAME", "bench-none"),
                ("DOTMAC_PROVISIONING_QUEUE_URL", "http://127.0.0.1:9/000000000000/bench-none"),
                ("DOTMAC_ECS_CLUSTER", "bench-none"),
            ] {
                env.push((k.into(), v.into()));
            }
            env.push(("DOTMAC_JWT_SIGNING_KEY".into(), dotmac_tokens::generate_signing_key()?));
        }
    }
    Ok(env)
}

async fn cold_start_rows(paths: &Paths, stack: Option<&Result<e2e::Stack, String>>) -> Vec<Row> {
    let bootstrap = coldstart::release_binary(&paths.target);
    let stack_ready = match stack {
        Some(Ok(stack)) => Some(stack),
        _ => None,
    };
    let setup = (|| -> anyhow::Result<_> {
        if !bootstrap.exists() {
            anyhow::bail!("no {} (cargo build --release -p bootstrap)", bootstrap.display());
        }
        Ok((coldstart::targets(&paths.root.join("events"))?, child_env(stack_ready)?))
    })();
    let (targets, env) = match setup {
        Ok(setup) => setup,
        Err(error) => {
            let note = format!("not measured: {error:#}");
            return ["health", "auth", "tenants", "docs", "provisioner"]
                .into_iter()
                .map(|h| {
                    Row::missing(
                        format!("cold_start.{h}.first_response_p50_ms"),
                        S1,
                        h,
                        "ms",
                        Better::Lower,
                        HELLO_INIT,
                        &note,
                    )
                })
                .collect();
        }
    };
    let mut rows = Vec::new();
    for target in &targets {
        let h = target.handler;
        if h == "provisioner" && stack_ready.is_none() {
            let note = match stack {
                Some(Err(error)) => format!("not measured: emulator setup failed: {error}"),
                _ => NEEDS_EMULATOR.to_owned(),
            };
            rows.push(Row::missing(
                format!("cold_start.{h}.first_response_p50_ms"),
                S1,
                format!("{h}: exec → first response"),
                "ms",
                Better::Lower,
                HELLO_INIT,
                note,
            ));
            continue;
        }
        progress(format!("cold start of {h}: 1 warm-up + {COLD_START_RUNS} runs ({})", target.what));
        let log = paths.work.join(format!("coldstart-{h}.log"));
        let _ = std::fs::write(&log, "");
        let mut samples = Vec::new();
        let mut failure = None;
        for run in 0..=COLD_START_RUNS {
            match coldstart::run_once(&bootstrap, target, &env, &log).await {
                // The first run only warms the page cache, as a deployed function's host has.
                Ok(sample) if run > 0 => samples.push(sample),
                Ok(_) => {}
                Err(error) => {
                    failure = Some(format!("failed: {error:#} (log: {})", log.display()));
                    break;
                }
            }
        }
        let init_anchor =
            if h == "provisioner" { HELLO_INIT.to_owned() } else { format!("{HELLO_INIT}; {AXUM_INIT}") };
        if let Some(note) = failure {
            rows.push(Row::missing(
                format!("cold_start.{h}.first_response_p50_ms"),
                S1,
                format!("{h}: exec → first response"),
                "ms",
                Better::Lower,
                init_anchor,
                note,
            ));
            continue;
        }
        let init = summarize(&samples.iter().map(|s| s.init_ms).collect::<Vec<_>>());
        let first = summarize(&samples.iter().map(|s| s.first_response_ms).collect::<Vec<_>>());
        let peak = samples.iter().map(|s| s.peak_rss_kib).max().unwrap_or(0) as f64 / 1024.0;
        let n = samples.len();
        if let (Some(init), Some(first)) = (init, first) {
            rows.push(Row::measured(
                format!("cold_start.{h}.init_p50_ms"),
                S1,
                format!("{h}: exec → first /next (init), median of {n}"),
                init.p50,
                "ms",
                Better::Lower,
                init_anchor,
            ));
            rows.push(Row::measured(
                format!("cold_start.{h}.first_response_p50_ms"),
                S1,
                format!("{h}: exec → first response, median ({})", target.what),
                first.p50,
                "ms",
                Better::Lower,
                "hello world init + first run 1.1–1.4 ms ≈ 16–20 ms x86_64",
            ));
            rows.push(Row::measured(
                format!("cold_start.{h}.first_response_p90_ms"),
                S1,
                format!("{h}: exec → first response, p90"),
                first.p90,
                "ms",
                Better::Lower,
                "same",
            ));
        }
        rows.push(Row::measured(
            format!("cold_start.{h}.peak_rss_mib"),
            S1,
            format!("{h}: peak RSS (VmHWM), max of {n}"),
            peak,
            "MiB",
            Better::Lower,
            "hello world 15 MB, axum + lambda_http 16 MB (Lambda's max memory used)",
        ));
    }
    rows
}

fn artifact_rows(paths: &Paths) -> Vec<Row> {
    const ANCHOR: &str = "Rust + axum + lambda_http 0.9 MB package";
    let mut rows = Vec::new();
    let binary = coldstart::release_binary(&paths.target);
    match std::fs::metadata(&binary) {
        Ok(meta) => rows.push(Row::measured(
            "artifact.binary_mb",
            S1,
            "release bootstrap binary, x86_64, unzipped",
            meta.len() as f64 / 1e6,
            "MB",
            Better::Lower,
            format!("{ANCHOR} (zipped)"),
        )),
        Err(_) => rows.push(Row::missing(
            "artifact.binary_mb",
            S1,
            "release bootstrap binary",
            "MB",
            Better::Lower,
            ANCHOR,
            "not measured: no release binary",
        )),
    }
    let zip = paths.target.join("lambda").join("bootstrap").join("bootstrap.zip");
    if let Ok(meta) = std::fs::metadata(&zip) {
        let built = meta
            .modified()
            .ok()
            .map(time::OffsetDateTime::from)
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
            .unwrap_or_default();
        rows.push(
            Row::measured(
                "artifact.zip_mb",
                S1,
                "artifact zip, arm64 (from `make package`)",
                meta.len() as f64 / 1e6,
                "MB",
                Better::Lower,
                ANCHOR,
            )
            .with_note(format!("zip built {built}")),
        );
    } else if let Some(bytes) = deflated_size(&binary) {
        rows.push(Row::measured(
            "artifact.binary_gzip_mb",
            S1,
            "the x86_64 binary deflated (gzip -6); no zip: `make package` not run",
            bytes as f64 / 1e6,
            "MB",
            Better::Lower,
            ANCHOR,
        ));
    }
    rows
}

/// Compressed size of a file with gzip's default level (zip uses the same deflate).
fn deflated_size(path: &Path) -> Option<u64> {
    let output = std::process::Command::new("gzip").arg("-6").arg("-c").arg(path).output().ok()?;
    output.status.success().then_some(output.stdout.len() as u64)
}

fn handler_rows(paths: &Paths) -> Vec<Row> {
    let ids = ["handler.rust_axum_us", "handler.rust_core_us", "handler.python_us"];
    let names = ["Rust via the axum Router", "Rust without an HTTP framework", "Python + PyJWT + json"];
    let fail = |note: String| -> Vec<Row> {
        ids.iter()
            .zip(names)
            .map(|(id, name)| {
                Row::missing(
                    *id,
                    S2,
                    name,
                    "µs",
                    Better::Lower,
                    "the same work in the other language",
                    note.clone(),
                )
            })
            .collect()
    };
    let fixture_path = paths.work.join("handler-fixture.json");
    let written = handler::make_fixture()
        .and_then(|f| Ok(std::fs::write(&fixture_path, serde_json::to_vec_pretty(&f)?)?));
    if let Err(error) = written {
        return fail(format!("failed: {error:#}"));
    }
    let criterion_dir = paths.work.join("criterion");
    progress("handler cost in Rust (criterion, about 10 s)");
    let rust = handler::run_criterion(&fixture_path, &criterion_dir).and_then(|()| {
        Ok((
            handler::criterion_median_ns(&criterion_dir, handler::AXUM_BENCH)?,
            handler::criterion_median_ns(&criterion_dir, handler::CORE_BENCH)?,
        ))
    });
    progress("handler cost in Python (PyJWT + json, about 5 s)");
    let python = handler::run_python(
        &paths.root.join(".venv").join("bin").join("python"),
        &paths.root.join("bench").join("python").join("handler_bench.py"),
        &fixture_path,
    );
    let mut rows = Vec::new();
    let python_anchor = "what the AWS reference implementations use";
    match &rust {
        Ok((axum_ns, core_ns)) => {
            rows.push(Row::measured(
                ids[0],
                S2,
                "Rust via the axum Router: verify + authorize + route + serialize",
                axum_ns / 1000.0,
                "µs",
                Better::Lower,
                "the Python handler below (criterion median)",
            ));
            rows.push(Row::measured(
                ids[1],
                S2,
                "Rust, same work without an HTTP framework",
                core_ns / 1000.0,
                "µs",
                Better::Lower,
                "the Python handler below (criterion median)",
            ));
        }
        Err(error) => rows.extend(fail(format!("failed: {error:#}")).into_iter().take(2)),
    }
    match &python {
        Ok(py) => rows.push(Row::measured(
            ids[2],
            S2,
            format!("Python {} + PyJWT {} + json, same work (event dict in)", py.python, py.pyjwt),
            py.median_ns / 1000.0,
            "µs",
            Better::Lower,
            format!("{python_anchor} (median of 50 samples)"),
        )),
        Err(error) => rows.push(Row::missing(
            ids[2],
            S2,
            "Python + PyJWT + json, same work",
            "µs",
            Better::Lower,
            python_anchor,
            format!("failed: {error:#}"),
        )),
    }
    if let (Ok((axum_ns, core_ns)), Ok(py)) = (&rust, &python) {
        rows.push(Row::measured(
            "handler.ratio_core",
            S2,
            "Python ÷ Rust, same work without a framework",
            py.median_ns / core_ns,
            "×",
            Better::Higher,
            "how many times faster the Rust handler is",
        ));
        rows.push(Row::measured(
            "handler.ratio_axum",
            S2,
            "Python ÷ Rust through axum (Rust does more work)",
            py.median_ns / axum_ns,
            "×",
            Better::Higher,
            "same",
        ));
    }
    rows
}

async fn end_to_end_rows(stack: Option<&Result<e2e::Stack, String>>) -> Vec<Row> {
    let mut rows = Vec::new();
    let missing_note = match stack {
        Some(Ok(_)) => None,
        Some(Err(error)) => Some(format!("not measured: emulator setup failed: {error}")),
        None => Some(NEEDS_EMULATOR.to_owned()),
    };
    let workers = stack.and_then(|s| s.as_ref().ok()).map_or(4, |s| s.local.worker_concurrency);
    let provisioning_anchor = "moto ECS, no image pull: Fargate adds its own start time";
    let get_anchor = "AWS Rust + DynamoDB warm p50 5.1 / p99 20.1 ms at 300 req/s (serverless-rust-demo)";
    let health_anchor = "no published anchor; load client shares the process and the cores";

    let mut planned: Vec<(&str, String, &str, Better, String)> = vec![
        (
            "e2e.provision_p50_s",
            format!("provisioning: POST → active, median of {SEQUENTIAL_ONBOARDINGS} one by one"),
            "s",
            Better::Lower,
            provisioning_anchor.into(),
        ),
        (
            "e2e.provision_max_s",
            "provisioning: POST → active, slowest".into(),
            "s",
            Better::Lower,
            provisioning_anchor.into(),
        ),
        (
            "e2e.suspend_p50_s",
            format!("suspend: POST → task stopped on the record, median of {SUSPEND_RESUME_ROUNDS}"),
            "s",
            Better::Lower,
            "moto ECS stops at once; Fargate's stop takes its own ~30 s".into(),
        ),
        (
            "e2e.resume_p50_s",
            format!("resume: POST → new task running on the record, median of {SUSPEND_RESUME_ROUNDS}"),
            "s",
            Better::Lower,
            provisioning_anchor.into(),
        ),
        (
            "e2e.health_rps",
            "GET /health: rate (20,000 requests, 32 connections)".into(),
            "req/s",
            Better::Higher,
            health_anchor.into(),
        ),
        ("e2e.health_p50_ms", "GET /health: p50".into(), "ms", Better::Lower, health_anchor.into()),
        ("e2e.health_p99_ms", "GET /health: p99".into(), "ms", Better::Lower, health_anchor.into()),
        (
            "e2e.get_tenant_rps",
            "GET /v1/tenants/{id} with a token: rate (1,000 requests, 16 connections)".into(),
            "req/s",
            Better::Higher,
            get_anchor.into(),
        ),
        (
            "e2e.get_tenant_dynamo_round_trips",
            "GET /v1/tenants/{id}: DynamoDB round trips in the function (token, session, user and tenant together)"
                .into(),
            "requests",
            Better::Lower,
            "goal 1 (was 2: the deny-list read, then the tenant); the gateway's authorizer adds its own one".into(),
        ),
        (
            "e2e.get_tenant_p50_ms",
            "GET /v1/tenants/{id}: p50 (one moto BatchGetItem: token checks and the tenant)".into(),
            "ms",
            Better::Lower,
            get_anchor.into(),
        ),
        ("e2e.get_tenant_p99_ms", "GET /v1/tenants/{id}: p99".into(), "ms", Better::Lower, get_anchor.into()),
    ];
    planned.extend(onboarding_planned(
        ONBOARD200_ROWS,
        workers,
        "moto serialises DynamoDB calls (one Python process)",
    ));
    let Some(Ok(stack)) = stack else {
        let note = missing_note.unwrap_or_default();
        rows.extend(
            planned.into_iter().map(|(id, name, unit, better, anchor)| {
                Row::missing(id, S4, name, unit, better, anchor, &note)
            }),
        );
        return rows;
    };
    let mut measured: HashMap<&str, Result<f64, String>> = HashMap::new();
    let mut notes: HashMap<&str, String> = HashMap::new();

    let server = match e2e::Server::start(stack).await {
        Ok(server) => server,
        Err(error) => {
            let note = format!("failed: starting the local server: {error:#}");
            rows.extend(planned.into_iter().map(|(id, name, unit, better, anchor)| {
                Row::missing(id, S4, name, unit, better, anchor, &note)
            }));
            return rows;
        }
    };

    progress(format!("provisioning latency: {SEQUENTIAL_ONBOARDINGS} onboardings one by one"));
    match e2e::sequential_provisioning(&server, SEQUENTIAL_ONBOARDINGS).await {
        Ok(s) => {
            measured.insert("e2e.provision_p50_s", Ok(s.p50));
            measured.insert("e2e.provision_max_s", Ok(s.max));
        }
        Err(error) => {
            let e = format!("failed: {error:#}");
            measured.insert("e2e.provision_p50_s", Err(e.clone()));
            measured.insert("e2e.provision_max_s", Err(e));
        }
    }

    progress(format!("suspend → task stopped and resume → task running: {SUSPEND_RESUME_ROUNDS} rounds"));
    let lifecycle = match e2e::active_tenant(&server).await {
        Ok((token, id)) => e2e::suspend_resume(&server, &token, &id, SUSPEND_RESUME_ROUNDS).await,
        Err(error) => Err(error),
    };
    match lifecycle {
        Ok((suspend, resume)) => {
            measured.insert("e2e.suspend_p50_s", Ok(suspend.p50));
            measured.insert("e2e.resume_p50_s", Ok(resume.p50));
        }
        Err(error) => {
            let e = format!("failed: {error:#}");
            measured.insert("e2e.suspend_p50_s", Err(e.clone()));
            measured.insert("e2e.resume_p50_s", Err(e));
        }
    }

    progress("local server GET /health: 1,000 warm-up + 20,000 requests");
    let limit = Duration::from_secs(60);
    let health = match e2e::load(&server, "/health", None, 1_000, 32, limit).await {
        Ok(_) => e2e::load(&server, "/health", None, 20_000, 32, limit).await,
        Err(error) => Err(error),
    };
    record_load(&mut measured, ["e2e.health_rps", "e2e.health_p50_ms", "e2e.health_p99_ms"], health);

    progress("local server GET /v1/tenants/{id}: 1,000 requests");
    let get_load = match e2e::active_tenant(&server).await {
        Ok((token, id)) => {
            let round_trips = e2e::dynamo_round_trips_per_get(stack, &token, &id, 20).await;
            measured.insert(
                "e2e.get_tenant_dynamo_round_trips",
                round_trips.map_err(|e| format!("failed: {e:#}")),
            );
            e2e::load(&server, &format!("/v1/tenants/{id}"), Some(&token), 1_000, 16, Duration::from_secs(60))
                .await
        }
        Err(error) => Err(error),
    };
    record_load(
        &mut measured,
        ["e2e.get_tenant_rps", "e2e.get_tenant_p50_ms", "e2e.get_tenant_p99_ms"],
        get_load,
    );

    progress(format!(
        "{CONCURRENT_ONBOARDINGS} concurrent onboardings (at most {} s)",
        ONBOARDING_LIMIT.as_secs()
    ));
    let onboardings = e2e::concurrent_onboardings(&server, CONCURRENT_ONBOARDINGS, ONBOARDING_LIMIT).await;
    record_onboardings(stack, ONBOARD200_ROWS, onboardings, &mut measured, &mut notes).await;
    server.shutdown().await;

    for (id, name, unit, better, anchor) in planned {
        let row = match measured.remove(id) {
            Some(Ok(value)) => Row::measured(id, S4, name, value, unit, better, anchor),
            Some(Err(note)) => Row::missing(id, S4, name, unit, better, anchor, note),
            None => Row::missing(id, S4, name, unit, better, anchor, "not measured"),
        };
        rows.push(match notes.remove(id) {
            Some(note) if row.value.is_some() => row.with_note(note),
            _ => row,
        });
    }
    rows
}

/// The rows of the 200-onboardings figure under `ids` (in `ONBOARD200_ROWS`' order);
/// `post_anchor` says what bounds the POST on that section's backend.
pub(crate) fn onboarding_planned(
    ids: [&'static str; 8],
    workers: usize,
    post_anchor: &str,
) -> Vec<(&'static str, String, &'static str, Better, String)> {
    let onboarding_anchor = "ECS RunTask 20 calls/s, launch bucket 100 burst (AWS docs)";
    vec![
        (
            ids[0],
            format!(
                "{CONCURRENT_ONBOARDINGS} concurrent onboardings: first POST → last active ({workers} workers)"
            ),
            "s",
            Better::Lower,
            onboarding_anchor.into(),
        ),
        (
            ids[1],
            format!("{CONCURRENT_ONBOARDINGS} concurrent: time to active, p50"),
            "s",
            Better::Lower,
            onboarding_anchor.into(),
        ),
        (
            ids[2],
            format!("{CONCURRENT_ONBOARDINGS} concurrent: time to active, p99"),
            "s",
            Better::Lower,
            onboarding_anchor.into(),
        ),
        (
            ids[3],
            format!("{CONCURRENT_ONBOARDINGS} concurrent: tenants active per second"),
            "tenants/s",
            Better::Higher,
            onboarding_anchor.into(),
        ),
        (
            ids[4],
            format!("{CONCURRENT_ONBOARDINGS} concurrent: POST answered (202), p50"),
            "s",
            Better::Lower,
            post_anchor.into(),
        ),
        (
            ids[5],
            format!("{CONCURRENT_ONBOARDINGS} concurrent: POST answered (202), p99"),
            "s",
            Better::Lower,
            post_anchor.into(),
        ),
        (
            ids[6],
            format!("{CONCURRENT_ONBOARDINGS} concurrent: POSTs retried after 503 (same Idempotency-Key)"),
            "attempts",
            Better::Lower,
            format!("0 wanted; {post_anchor}"),
        ),
        (
            ids[7],
            format!(
                "{CONCURRENT_ONBOARDINGS} concurrent: tasks beyond one per tenant, or missing (ECS ListTasks)"
            ),
            "tasks",
            Better::Lower,
            "0: one task per tenant, no duplicate, none missing".into(),
        ),
    ]
}

/// The 200-onboardings figures into `measured` under `ids` (in `ONBOARD200_ROWS`' order):
/// every row, or every row failed with what went wrong. Sections 4 (moto) and 5 (DynamoDB
/// Local) report the same figures on their own backends.
pub(crate) async fn record_onboardings(
    stack: &e2e::Stack,
    ids: [&'static str; 8],
    onboardings: anyhow::Result<e2e::Onboardings>,
    measured: &mut HashMap<&'static str, Result<f64, String>>,
    notes: &mut HashMap<&'static str, String>,
) {
    match onboardings {
        Ok(o) if o.active == o.requested => {
            let tta = o.time_to_active;
            measured.insert(ids[0], Ok(o.wall_seconds));
            measured.insert(ids[1], tta.map(|s| s.p50).ok_or_else(|| "no data".to_owned()));
            measured.insert(ids[2], tta.map(|s| s.p99).ok_or_else(|| "no data".to_owned()));
            measured.insert(ids[3], Ok(o.active as f64 / o.wall_seconds.max(f64::EPSILON)));
            measured.insert(ids[6], Ok(f64::from(o.retries)));
            measured.insert(
                ids[7],
                e2e::task_count_errors(stack, &o.ids)
                    .await
                    .map(|n| n as f64)
                    .map_err(|e| format!("failed: {e:#}")),
            );
            let post = o.post_ms;
            measured.insert(ids[4], post.map(|s| s.p50 / 1000.0).ok_or_else(|| "no data".into()));
            measured.insert(ids[5], post.map(|s| s.p99 / 1000.0).ok_or_else(|| "no data".into()));
        }
        Ok(o) => {
            let note = format!(
                "failed: of {} requested, {} accepted ({} retries), {} active, {} failed within {} s",
                o.requested,
                o.accepted,
                o.retries,
                o.active,
                o.failed,
                ONBOARDING_LIMIT.as_secs()
            );
            for id in ids {
                measured.insert(id, Err(note.clone()));
            }
            // The one-task-per-tenant promise still holds or not for the tenants that were
            // accepted and settled (a retried POST under the same key among them): counted
            // over those, and the row says how many it covers.
            if o.accepted > 0 && o.active + o.failed == o.accepted {
                let counted = e2e::task_count_errors(stack, &o.ids).await;
                if let Ok(n) = &counted {
                    notes.insert(
                        ids[7],
                        format!("over the {} accepted of {} only: {note}", o.accepted, o.requested),
                    );
                    measured.insert(ids[7], Ok(*n as f64));
                }
            }
        }
        Err(error) => {
            let note = format!("failed: {error:#}");
            for id in ids {
                measured.insert(id, Err(note.clone()));
            }
        }
    }
}

fn record_load(
    measured: &mut HashMap<&'static str, Result<f64, String>>,
    ids: [&'static str; 3],
    load: anyhow::Result<e2e::Load>,
) {
    match load {
        Ok(load) if load.ok == load.requests && load.requests == load.planned => {
            measured.insert(ids[0], Ok(load.per_second));
            measured.insert(ids[1], Ok(load.latency_ms.p50));
            measured.insert(ids[2], Ok(load.latency_ms.p99));
        }
        Ok(load) => {
            let note = format!(
                "failed: {} of {} planned requests sent in time, {} answered 2xx",
                load.requests, load.planned, load.ok
            );
            for id in ids {
                measured.insert(id, Err(note.clone()));
            }
        }
        Err(error) => {
            let note = format!("failed: {error:#}");
            for id in ids {
                measured.insert(id, Err(note.clone()));
            }
        }
    }
}
