//! `colony serve`: a worker serving the HTTP API until Ctrl-C or SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use colony_api::{AppState, router};
use colony_worker::Worker;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};
use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, RawConfig};

/// The log filter when `COLONY_LOG` is unset. wasmtime-wasi logs every
/// guest fd call at INFO, so it is held to warnings.
const DEFAULT_LOG: &str = "info,wasmtime_wasi=warn,wasmtime=warn,cranelift=warn";

/// `colony serve` flags. Each has a `COLONY_*` variable; both override
/// the config file, which overrides the defaults.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Address to listen on; port 0 picks a free one [default: 127.0.0.1:8080].
    #[arg(long, env = "COLONY_LISTEN", value_name = "ADDR")]
    listen: Option<String>,
    /// Data directory: the store, code blobs, compiled artifacts [default: ./colony-data].
    #[arg(long, env = "COLONY_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// TOML config file with any of the settings below (snake_case keys).
    #[arg(long, env = "COLONY_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Invocations running at once [default: 16].
    #[arg(long, env = "COLONY_CONCURRENCY", value_name = "N")]
    concurrency: Option<usize>,
    /// Invocations waiting for a slot; beyond it, 503 [default: 1024].
    #[arg(long, env = "COLONY_QUEUE", value_name = "N")]
    queue: Option<usize>,
    /// Longest wait for a slot before a 503 [default: 30s].
    #[arg(long, env = "COLONY_QUEUE_WAIT", value_name = "DURATION")]
    queue_wait: Option<String>,
    /// Largest request body of /run [default: 16MiB].
    #[arg(long, env = "COLONY_MAX_BODY", value_name = "SIZE")]
    max_body: Option<String>,
    /// Largest code upload [default: 64MiB].
    #[arg(long, env = "COLONY_MAX_CODE", value_name = "SIZE")]
    max_code: Option<String>,
    /// Ceiling on any function's timeout [default: 15m].
    #[arg(long, env = "COLONY_MAX_TIMEOUT", value_name = "DURATION")]
    max_timeout: Option<String>,
    /// Ceiling on any function's memory cap [default: 1GiB].
    #[arg(long, env = "COLONY_MAX_MEMORY", value_name = "SIZE")]
    max_memory: Option<String>,
    /// Ceiling on any function's output cap [default: 64MiB].
    #[arg(long, env = "COLONY_MAX_OUTPUT", value_name = "SIZE")]
    max_output: Option<String>,
    /// Instance slots in the pooling allocator [default: 1000].
    #[arg(long, env = "COLONY_INSTANCES", value_name = "N")]
    instances: Option<u32>,
    /// Grace period for in-flight calls at shutdown [default: 30s].
    #[arg(long, env = "COLONY_DRAIN_TIMEOUT", value_name = "DURATION")]
    drain_timeout: Option<String>,
    /// How long finished tasks and their results are kept [default: 7d].
    #[arg(long, env = "COLONY_TASK_TTL", value_name = "DURATION")]
    task_ttl: Option<String>,
    /// How often expired tasks are deleted [default: 1m].
    #[arg(long, env = "COLONY_SWEEP_INTERVAL", value_name = "DURATION")]
    sweep_interval: Option<String>,
    /// Most functions this worker holds [default: 10000].
    #[arg(long, env = "COLONY_MAX_FUNCTIONS", value_name = "N")]
    max_functions: Option<usize>,
    /// Tokens with the admin scope (comma-separated); with any token
    /// configured, the API needs one [default: none: the API is open].
    #[arg(
        long,
        env = "COLONY_ADMIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    admin_token: Vec<String>,
    /// Tokens with the invoke scope: run, submit, read own tasks.
    #[arg(
        long,
        env = "COLONY_INVOKE_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    invoke_token: Vec<String>,
    /// Most requests in flight per token; more get 429 [default: 0, no limit].
    #[arg(long, env = "COLONY_MAX_INFLIGHT_PER_TOKEN", value_name = "N")]
    max_inflight_per_token: Option<usize>,
    /// Log lines as text or json [default: text].
    #[arg(long, env = "COLONY_LOG_FORMAT", value_name = "FORMAT")]
    log_format: Option<String>,
    /// A host directory (with what is under it) that manifests may mount
    /// for their guests; repeatable or comma-separated [default: none].
    #[arg(
        long = "allow-dir",
        env = "COLONY_ALLOW_DIRS",
        value_name = "DIR",
        value_delimiter = ','
    )]
    allow_dir: Vec<PathBuf>,
    /// Join a cluster over NATS JetStream at this URL (nats-server 2.11+
    /// with -js) instead of the embedded store [default: none].
    #[arg(long, env = "COLONY_NATS", value_name = "URL")]
    nats: Option<String>,
    /// Replicas of the cluster's streams and buckets: 1 for a single
    /// nats-server, 3 for a clustered NATS [default: 1].
    #[arg(long, env = "COLONY_NATS_REPLICAS", value_name = "N")]
    nats_replicas: Option<usize>,
    /// In a cluster: `worker` runs functions and tasks; `gateway` only
    /// routes calls and submits [default: worker].
    #[arg(long, env = "COLONY_ROLE", value_name = "ROLE")]
    role: Option<String>,
    /// In a cluster: a task whose worker went silent this long is
    /// delivered to another [default: 30s].
    #[arg(long, env = "COLONY_ACK_WAIT", value_name = "DURATION")]
    ack_wait: Option<String>,
    /// In a cluster: how often this worker reports its load; it leaves the
    /// member list after 3 missed [default: 1s].
    #[arg(long, env = "COLONY_HEARTBEAT", value_name = "DURATION")]
    heartbeat: Option<String>,
}

impl Args {
    fn raw(self) -> (Option<PathBuf>, RawConfig) {
        let raw = RawConfig {
            listen: self.listen,
            data_dir: self.data_dir,
            concurrency: self.concurrency,
            queue: self.queue,
            queue_wait: self.queue_wait,
            max_body: self.max_body,
            max_code: self.max_code,
            max_timeout: self.max_timeout,
            max_memory: self.max_memory,
            max_output: self.max_output,
            instances: self.instances,
            epoch_tick: None,
            drain_timeout: self.drain_timeout,
            task_ttl: self.task_ttl,
            sweep_interval: self.sweep_interval,
            result_inline_max: None,
            max_functions: self.max_functions,
            max_inflight_per_token: self.max_inflight_per_token,
            log_format: self.log_format,
            allowed_dirs: self.allow_dir,
            nats: self.nats,
            nats_replicas: self.nats_replicas,
            role: self.role,
            ack_wait: self.ack_wait,
            heartbeat: self.heartbeat,
            tokens: Vec::new(),
            admin_tokens: self.admin_token,
            invoke_tokens: self.invoke_token,
        };
        (self.config, raw)
    }
}

fn init_logging(format: LogFormat) {
    let filter =
        EnvFilter::try_from_env("COLONY_LOG").unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Resolves on the first Ctrl-C or SIGTERM.
async fn signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

impl Args {
    pub(crate) async fn run(self) -> anyhow::Result<ExitCode> {
        let (config_file, flags) = self.raw();
        let file = match &config_file {
            Some(path) => RawConfig::load(path)?,
            None => RawConfig::default(),
        };
        let config = file.overlay(flags).validate()?;
        init_logging(config.log_format);
        match config.auth.counts() {
            (0, 0) => warn!("no tokens configured: the API is open to anyone who can reach it"),
            (admin, invoke) => info!(
                admin,
                invoke, "tokens configured: requests need a bearer token"
            ),
        }

        let worker = Worker::open(config.worker.clone())
            .await
            .context("cannot open the worker")?;
        worker.warm_up();
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let addr = listener.local_addr()?;
        worker.set_address(format!("http://{addr}"));
        let app = router(AppState {
            worker: worker.clone(),
            max_body_bytes: config.max_body_bytes,
            auth: std::sync::Arc::new(config.auth),
        });

        let (stop_tx, mut stop_rx) = watch::channel(false);
        let server = tokio::spawn(colony_api::serve(listener, app, async move {
            let _ = stop_rx.wait_for(|stop| *stop).await;
        }));
        info!(%addr, data_dir = %config.worker.data_dir.display(), concurrency = config.worker.concurrency, "serving");
        // Scripts and tests wait for this exact line.
        println!("listening on http://{addr}");

        signal().await;
        info!(timeout = ?config.drain_timeout, "shutting down: draining in-flight calls (signal again to stop now)");
        worker.begin_drain();
        let _ = stop_tx.send(true);

        let drained = async {
            let calls = worker.drained(config.drain_timeout).await;
            // In-flight calls are done; give their responses a moment to flush.
            let _ = tokio::time::timeout(Duration::from_secs(1), server).await;
            calls
        };
        let clean = tokio::select! {
            calls = drained => calls,
            _ = signal() => {
                warn!("second signal: stopping without waiting");
                false
            }
        };
        if clean {
            info!("stopped cleanly");
            Ok(ExitCode::SUCCESS)
        } else {
            warn!(
                running = worker.status().running,
                "stopped with calls still running"
            );
            Ok(ExitCode::from(1))
        }
    }
}
