//! `colony bench`: warm invoke latency and throughput over HTTP.
//!
//! Deploys the wasm echo (`examples/echo.wat`) and the builtin echo, then
//! for each concurrency keeps that many HTTP/1.1 keep-alive connections
//! busy, one request at a time each, and reports p50/p99 latency and
//! requests per second. Without `--server` it starts `colony serve` as a
//! child process on a temporary data directory, so client and server are
//! separate processes talking over loopback, as in production.
//!
//! With `--component FILE` it measures a wasi:http proxy component
//! instead: `GET /http/bench-http/` on Colony's `component` executor and,
//! with `--wasmtime BIN`, `GET /` on `BIN serve` (wasmtime-cli) running the
//! same file, alternating at each concurrency, with the ratios.
//!
//! With `--tasks N` it measures tasks instead: N submits of each function
//! from the largest `--concurrency` of connections, the submit latency,
//! and the time from the first submit until the worker's status shows all
//! N finished; then it checks, page by page, that all N succeeded.

use std::collections::HashSet;
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use colony_client::{Client, DeployOptions, TaskQuery};
use colony_core::TaskState;
use colony_core::units::parse_duration;
use colony_core::wire::{SubmitTask, Submitted};
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;

/// The wasm echo the bench deploys.
const ECHO_WAT: &str = include_str!("../../../examples/echo.wat");

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Benchmark this server instead of starting one.
    #[arg(long, env = "COLONY_SERVER", value_name = "URL")]
    server: Option<String>,
    /// Concurrency levels (connections), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    concurrency: Vec<usize>,
    /// Measured time per run.
    #[arg(long, default_value = "5s", value_name = "DURATION")]
    duration: String,
    /// Unmeasured warm-up before each run.
    #[arg(long, default_value = "1s", value_name = "DURATION")]
    warmup: String,
    /// Request body size in bytes.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Which functions: wasm, builtin, or both.
    #[arg(long, value_delimiter = ',', default_value = "wasm,builtin")]
    only: Vec<String>,
    /// Measure tasks instead of /run: submit this many tasks of each
    /// function (from the largest --concurrency of connections) and time
    /// them until all are finished.
    #[arg(long, value_name = "N")]
    tasks: Option<usize>,
    /// Measure a map/fold directive instead: `map(square).fold_op(add)`
    /// over 1..=N with the builtins, N tasks and N combinations, timed
    /// from the first submit to the exact sum; prints the per-task
    /// overhead (compare scripts/bench-paladin.sh).
    #[arg(long, value_name = "N", conflicts_with_all = ["tasks", "component"])]
    map: Option<u64>,
    /// With --map: most tasks of the directive unfinished at once.
    #[arg(long, default_value_t = colony_client::DEFAULT_WINDOW, value_name = "N")]
    window: usize,
    /// With --map: how many runs (the best and the median are printed).
    #[arg(long, default_value_t = 3, value_name = "N")]
    runs: usize,
    /// Start the workers as a cluster on this NATS (nats-server 2.11+
    /// with -js) instead of on the embedded store.
    #[arg(long, value_name = "URL")]
    nats: Option<String>,
    /// With --nats: how many workers to start; tasks are submitted to
    /// them in turn.
    #[arg(long, default_value_t = 1, value_name = "N")]
    workers: usize,
    /// With --nats: also start a gateway (`--role gateway`) and send the
    /// /run calls through it, so each is forwarded to a worker.
    #[arg(long)]
    via_gateway: bool,
    /// Measure this wasi:http proxy component (GET /) instead of the
    /// echoes.
    #[arg(long, value_name = "FILE")]
    component: Option<std::path::PathBuf>,
    /// With --component: also measure `wasmtime serve` (this wasmtime
    /// binary) on the same component; scripts/install-wasmtime-cli.sh
    /// builds wasmtime-cli 48.
    #[arg(long, env = "WASMTIME_CLI", value_name = "BIN")]
    wasmtime: Option<std::path::PathBuf>,
}

/// A `wasmtime serve` child, killed on drop.
struct WasmtimeServe {
    child: tokio::process::Child,
    addr: String,
}

impl WasmtimeServe {
    async fn start(bin: &std::path::Path, component: &std::path::Path) -> anyhow::Result<Self> {
        // A free port: bound, read, released for wasmtime to take.
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let addr = format!("127.0.0.1:{port}");
        let child = tokio::process::Command::new(bin)
            // -Scli: components built with Rust std import wasi:cli (Colony
            // always links it).
            .args(["serve", "-Scli", "--addr", &addr])
            .arg(component)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {} serve", bin.display()))?;
        let deadline = Instant::now() + Duration::from_secs(120);
        while TcpStream::connect(&addr).await.is_err() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "wasmtime serve did not listen on {addr} within 120 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Self { child, addr })
    }
}

impl Drop for WasmtimeServe {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// What a bench connection sends and expects back.
#[derive(Debug, Clone)]
struct Load {
    addr: String,
    method: hyper::Method,
    path: String,
    body: Bytes,
    /// The body every answer must have.
    expect: Bytes,
}

/// Runs `c` connections of `load` for `warmup` + `duration`.
async fn measure(
    load: &Load,
    c: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<RunStats> {
    let measure_from = Instant::now() + warmup;
    let end = measure_from + duration;
    let conns: Vec<_> = (0..c)
        .map(|_| tokio::spawn(connection(load.clone(), measure_from, end)))
        .collect();
    let mut all = RunStats::default();
    for conn in conns {
        let s = conn.await.context("a bench connection panicked")??;
        all.latencies_us.extend(s.latencies_us);
        all.errors += s.errors;
        all.first_error = all.first_error.or(s.first_error);
    }
    all.latencies_us.sort_unstable();
    Ok(all)
}

/// One GET, for the body a component answers.
async fn fetch(addr: &str, path: &str) -> anyhow::Result<Bytes> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let resp = sender
        .send_request(
            Request::get(path)
                .header("host", addr)
                .body(Full::new(Bytes::new()))?,
        )
        .await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    anyhow::ensure!(
        status.is_success(),
        "GET {path} on {addr}: HTTP {status}: {}",
        String::from_utf8_lossy(&body)
    );
    Ok(body)
}

/// A `colony serve` child, killed on drop.
struct ChildServer {
    child: tokio::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl ChildServer {
    async fn start(extra: &[String]) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let exe = std::env::current_exe().context("cannot find the colony binary")?;
        let mut child = tokio::process::Command::new(exe)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .args(extra)
            .env(
                "COLONY_LOG",
                std::env::var("COLONY_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start colony serve")?;
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        let url = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(url) = line.strip_prefix("listening on ") {
                    return Ok(url.trim().to_owned());
                }
            }
            bail!("colony serve exited before listening")
        })
        .await
        .context("colony serve did not start within 60 s")??;
        Ok(Self {
            child,
            url,
            _dir: dir,
        })
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

#[derive(Debug, Default)]
struct RunStats {
    latencies_us: Vec<u32>,
    errors: u64,
    first_error: Option<String>,
}

/// One keep-alive connection sending requests back to back until `end`;
/// latencies are kept from `measure_from` on.
async fn connection(load: Load, measure_from: Instant, end: Instant) -> anyhow::Result<RunStats> {
    let addr = &load.addr;
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut stats = RunStats {
        latencies_us: Vec::with_capacity(1 << 16),
        ..Default::default()
    };
    loop {
        let start = Instant::now();
        if start >= end {
            break;
        }
        let req = Request::builder()
            .method(load.method.clone())
            .uri(&load.path)
            .header("host", addr)
            .body(Full::new(load.body.clone()))?;
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        let got = resp.into_body().collect().await?.to_bytes();
        let took = start.elapsed();
        if !status.is_success() || got != load.expect {
            stats.errors += 1;
            if stats.first_error.is_none() {
                stats.first_error =
                    Some(format!("HTTP {status}: {}", String::from_utf8_lossy(&got)));
            }
            continue;
        }
        if start >= measure_from {
            stats
                .latencies_us
                .push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
        }
    }
    Ok(stats)
}

#[derive(Debug, Default)]
struct SubmitStats {
    latencies_us: Vec<u32>,
    ids: Vec<String>,
    errors: u64,
    first_error: Option<String>,
}

/// One keep-alive connection submitting tasks back to back while
/// `remaining` lasts.
async fn submitter(
    addr: String,
    body: Bytes,
    remaining: Arc<AtomicUsize>,
) -> anyhow::Result<SubmitStats> {
    let stream = TcpStream::connect(&addr)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut stats = SubmitStats::default();
    // Take one submit at a time from the shared budget.
    while remaining
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        .is_ok()
    {
        let start = Instant::now();
        let req = Request::post("/tasks")
            .header("host", &addr)
            .header("content-type", "application/json")
            .body(Full::new(body.clone()))?;
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        let got = resp.into_body().collect().await?.to_bytes();
        let took = start.elapsed();
        match serde_json::from_slice::<Submitted>(&got) {
            Ok(s) if status == hyper::StatusCode::ACCEPTED => {
                stats.ids.push(s.id.to_string());
                stats
                    .latencies_us
                    .push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
            }
            _ => {
                stats.errors += 1;
                if stats.first_error.is_none() {
                    stats.first_error =
                        Some(format!("HTTP {status}: {}", String::from_utf8_lossy(&got)));
                }
            }
        }
    }
    Ok(stats)
}

/// What one function's task run measured.
#[derive(Debug)]
struct TaskRun {
    submitted: usize,
    /// From the first submit until the status showed them all finished.
    end_to_end: Duration,
    /// From the first submit until the last submit was answered.
    submitting: Duration,
    latencies_us: Vec<u32>,
    /// Submits refused plus tasks that did not succeed.
    failures: u64,
    first_error: Option<String>,
}

/// How long the worker may show no progress before the run is abandoned.
const TASK_STALL: Duration = Duration::from_secs(60);
/// How often the worker's status is polled while tasks run.
const STATUS_POLL: Duration = Duration::from_millis(20);

/// Tasks finished by all the workers since they started.
async fn finished(clients: &[Client]) -> anyhow::Result<(u64, usize, usize)> {
    let (mut finished, mut queued, mut running) = (0, 0, 0);
    for c in clients {
        let t = c.status().await?.tasks;
        finished += t.finished;
        // In a cluster each worker reports the whole queue.
        queued = queued.max(t.queued);
        running += t.running;
    }
    Ok((finished, queued, running))
}

async fn task_run(
    clients: &[Client],
    addrs: &[String],
    function: &str,
    n: usize,
    connections: usize,
) -> anyhow::Result<TaskRun> {
    let client = &clients[0];
    let body = serde_json::to_vec(&SubmitTask {
        function: function.to_owned(),
        input: Some("x".into()),
        ..Default::default()
    })?;
    let body = Bytes::from(body);
    let finished_before = finished(clients).await?.0;

    let remaining = Arc::new(AtomicUsize::new(n));
    let start = Instant::now();
    let conns: Vec<_> = (0..connections.min(n.max(1)))
        .map(|i| {
            let addr = addrs[i % addrs.len()].clone();
            tokio::spawn(submitter(addr, body.clone(), remaining.clone()))
        })
        .collect();
    let mut all = SubmitStats::default();
    for conn in conns {
        let s = conn.await.context("a bench connection panicked")??;
        all.latencies_us.extend(s.latencies_us);
        all.ids.extend(s.ids);
        all.errors += s.errors;
        all.first_error = all.first_error.or(s.first_error);
    }
    let submitting = start.elapsed();
    let accepted = all.ids.len();

    // Wait until every accepted task is finished.
    let mut last_progress = (Instant::now(), 0u64);
    let end_to_end = loop {
        let (done, queued, running) = finished(clients).await?;
        let finished = done.saturating_sub(finished_before);
        if finished >= accepted as u64 && (clients.len() > 1 || queued == 0 && running == 0) {
            break start.elapsed();
        }
        if finished != last_progress.1 {
            last_progress = (Instant::now(), finished);
        } else if last_progress.0.elapsed() > TASK_STALL {
            bail!(
                "{function}: no task finished for {TASK_STALL:?}: {finished} of {accepted} \
                 finished, {queued} queued, {running} running"
            );
        }
        tokio::time::sleep(STATUS_POLL).await;
    };

    // Check that they all succeeded.
    let mut pending: HashSet<String> = all.ids.into_iter().collect();
    let query = TaskQuery {
        state: Some(TaskState::Succeeded),
        function: Some(function.to_owned()),
        limit: Some(1000),
        ..Default::default()
    };
    for t in client.all_tasks(&query).await? {
        pending.remove(t.id.as_str());
    }
    let mut first_error = all.first_error;
    if let Some(id) = pending.iter().next() {
        let t = client.task(id).await?;
        first_error = first_error.or_else(|| {
            Some(format!(
                "task {id} is {}{}",
                t.state,
                t.error
                    .map(|e| format!(": {} ({})", e.message, e.code))
                    .unwrap_or_default()
            ))
        });
    }
    all.latencies_us.sort_unstable();
    Ok(TaskRun {
        submitted: n,
        end_to_end,
        submitting,
        latencies_us: all.latencies_us,
        failures: all.errors + pending.len() as u64,
        first_error,
    })
}

fn per_second(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn micros(us: u32) -> String {
    if us >= 10_000 {
        format!("{:.1}ms", f64::from(us) / 1000.0)
    } else {
        format!("{us}µs")
    }
}

impl Args {
    /// `--component`: Colony's `component` executor, and `wasmtime serve`
    /// with `--wasmtime`, on the same component.
    async fn component_run(
        &self,
        file: &std::path::Path,
        client: &Client,
        base: &str,
        children: Vec<ChildServer>,
        warmup: Duration,
        duration: Duration,
    ) -> anyhow::Result<ExitCode> {
        anyhow::ensure!(
            self.tasks.is_none() && self.nats.is_none(),
            "--component measures HTTP requests on one worker; drop --tasks and --nats"
        );
        let code =
            std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
        let opts = DeployOptions {
            executor: Some("component".into()),
            ..Default::default()
        };
        client.deploy("bench-http", code, &opts).await?;
        let addr = base
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let ours = Load {
            addr: addr.clone(),
            method: hyper::Method::GET,
            path: "/http/bench-http/".into(),
            body: Bytes::new(),
            expect: fetch(&addr, "/http/bench-http/").await?,
        };
        let wasmtime = match &self.wasmtime {
            Some(bin) => Some(WasmtimeServe::start(bin, file).await?),
            None => None,
        };
        let theirs = match &wasmtime {
            Some(w) => {
                let expect = fetch(&w.addr, "/").await?;
                anyhow::ensure!(
                    expect == ours.expect,
                    "wasmtime serve answers {:?}, Colony {:?}",
                    String::from_utf8_lossy(&expect),
                    String::from_utf8_lossy(&ours.expect)
                );
                Some(Load {
                    addr: w.addr.clone(),
                    path: "/".into(),
                    expect,
                    ..ours.clone()
                })
            }
            None => None,
        };
        println!(
            "colony bench: wasi:http component {}, GET, {:?} warm-up + {:?} per run",
            file.display(),
            warmup,
            duration
        );
        println!(
            "{:<20} {:<8} {:>5} {:>10} {:>10} {:>9} {:>9} {:>9} {:>7}",
            "SERVER", "EXECUTOR", "CONC", "REQUESTS", "REQ/S", "P50", "P99", "MAX", "ERRORS"
        );
        let mut failed = false;
        for &c in &self.concurrency {
            let a = measure(&ours, c, warmup, duration).await?;
            failed |= report("colony", "component", c, duration, &a);
            if let Some(theirs) = &theirs {
                let b = measure(theirs, c, warmup, duration).await?;
                failed |= report("wasmtime serve", "-", c, duration, &b);
                let p50 = |s: &RunStats| f64::from(percentile(&s.latencies_us, 0.50).max(1));
                println!(
                    "  colony vs wasmtime serve at {c}: {:.2}x the req/s, {:.2}x the speed at p50",
                    a.latencies_us.len() as f64 / b.latencies_us.len().max(1) as f64,
                    p50(&b) / p50(&a),
                );
            }
        }
        drop(wasmtime);
        drop(children);
        Ok(if failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        })
    }
}

/// Prints one result row; whether the run had errors.
fn report(name: &str, executor: &str, c: usize, duration: Duration, all: &RunStats) -> bool {
    let n = all.latencies_us.len();
    println!(
        "{:<20} {:<8} {:>5} {:>10} {:>10.0} {:>9} {:>9} {:>9} {:>7}",
        name,
        executor,
        c,
        n,
        n as f64 / duration.as_secs_f64(),
        micros(percentile(&all.latencies_us, 0.50)),
        micros(percentile(&all.latencies_us, 0.99)),
        micros(all.latencies_us.last().copied().unwrap_or(0)),
        all.errors
    );
    if let Some(e) = &all.first_error {
        eprintln!("  first error: {e}");
        return true;
    }
    false
}

impl Args {
    /// `--map N`: the sum of squares over 1..=N as `map(square)
    /// .fold_op(add)`, `--runs` times.
    async fn map_run(
        &self,
        n: u64,
        client: &Client,
        all: &[Client],
        label: &str,
    ) -> anyhow::Result<ExitCode> {
        use colony_client::Operation;
        anyhow::ensure!(n >= 1, "--map: at least 1 input");
        let builtin = DeployOptions {
            executor: Some("builtin".into()),
            ..Default::default()
        };
        client.deploy("bench-square", "square", &builtin).await?;
        client.deploy("bench-add", "add", &builtin).await?;
        // In a cluster, every worker knows them before the first task.
        for c in all {
            let deadline = Instant::now() + Duration::from_secs(30);
            while c.function("bench-add").await.is_err()
                || c.function("bench-square").await.is_err()
            {
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "{} does not know the functions",
                    c.base()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let square = Operation::<u64, u64>::new("bench-square");
        let add = Operation::<(u64, u64), u64>::new("bench-add");
        let want = u128::from(n) * u128::from(n + 1) * u128::from(2 * n + 1) / 6;
        anyhow::ensure!(
            want <= u128::from(u64::MAX),
            "--map: the sum overflows 64 bits"
        );
        let tasks = 2 * n;
        println!(
            "colony bench: map(square).fold_op(add) over 1..={n}: {tasks} tasks ({n} map, {n} \
             combine), window {}, server {label}",
            self.window
        );
        let mut per_task = Vec::new();
        for run in 1..=self.runs.max(1) {
            let t0 = Instant::now();
            let sum = client
                .map(&square, 1..=n)
                .window(self.window)
                .fold_op(&add, 0)
                .await?;
            let wall = t0.elapsed();
            anyhow::ensure!(u128::from(sum) == want, "wrong sum {sum}, expected {want}");
            let us = wall.as_secs_f64() * 1e6 / tasks as f64;
            per_task.push(us);
            println!(
                "run {run}: wall={:.3}s per_task={us:.1}us tasks/s={:.0} sum={sum} (exact)",
                wall.as_secs_f64(),
                tasks as f64 / wall.as_secs_f64()
            );
        }
        per_task.sort_by(f64::total_cmp);
        println!(
            "best per_task={:.1}us median per_task={:.1}us",
            per_task[0],
            per_task[per_task.len() / 2]
        );
        Ok(ExitCode::SUCCESS)
    }

    pub(crate) async fn run(self) -> anyhow::Result<ExitCode> {
        let duration =
            parse_duration(&self.duration).map_err(|e| anyhow::anyhow!("--duration: {e}"))?;
        let warmup = parse_duration(&self.warmup).map_err(|e| anyhow::anyhow!("--warmup: {e}"))?;
        anyhow::ensure!(
            self.concurrency.iter().all(|&c| c > 0),
            "--concurrency: levels must be at least 1"
        );

        anyhow::ensure!(
            self.nats.is_some() || (self.workers == 1 && !self.via_gateway),
            "--workers and --via-gateway need --nats"
        );
        anyhow::ensure!(
            self.nats.is_none() || self.server.is_none(),
            "--nats starts its own workers; drop --server"
        );
        let mut children = Vec::new();
        let mut gateway = None;
        if self.server.is_none() {
            let extra: Vec<String> = match &self.nats {
                Some(url) => vec!["--nats".into(), url.clone()],
                None => Vec::new(),
            };
            for _ in 0..self.workers.max(1) {
                children.push(ChildServer::start(&extra).await?);
            }
            if self.via_gateway {
                let mut extra = extra.clone();
                extra.extend(["--role".into(), "gateway".into()]);
                gateway = Some(ChildServer::start(&extra).await?);
            }
        }
        let child = children.first();
        let base = self
            .server
            .clone()
            .or_else(|| child.map(|c| c.url.clone()))
            .expect("one of the two");
        let client = Client::new(&base)?;
        let urls: Vec<String> = if children.is_empty() {
            vec![base.clone()]
        } else {
            children.iter().map(|c| c.url.clone()).collect()
        };
        let clients = urls
            .iter()
            .map(|u| Client::new(u))
            .collect::<Result<Vec<_>, _>>()?;
        let addrs: Vec<String> = urls
            .iter()
            .map(|u| {
                u.trim_start_matches("http://")
                    .trim_end_matches('/')
                    .to_owned()
            })
            .collect();
        let mut targets = Vec::new();
        if let Some(n) = self.map {
            let label = match (&self.nats, children.len()) {
                (None, 0) => base.clone(),
                (None, _) => "one worker (embedded store), child process".to_owned(),
                (Some(_), n) => format!("cluster of {n} worker(s) on NATS"),
            };
            return self.map_run(n, &client, &clients, &label).await;
        }
        if let Some(file) = &self.component {
            return self
                .component_run(file, &client, &base, children, warmup, duration)
                .await;
        }
        for which in &self.only {
            match which.as_str() {
                "wasm" => {
                    client
                        .deploy("bench-echo-wasm", ECHO_WAT, &DeployOptions::default())
                        .await?;
                    targets.push(("bench-echo-wasm", "wasm"));
                }
                "builtin" => {
                    let opts = DeployOptions {
                        executor: Some("builtin".into()),
                        ..Default::default()
                    };
                    client.deploy("bench-echo-builtin", "echo", &opts).await?;
                    targets.push(("bench-echo-builtin", "builtin"));
                }
                other => bail!("--only: unknown {other:?}; use wasm, builtin"),
            }
        }
        // /run calls go to the gateway when there is one.
        let addr = gateway
            .as_ref()
            .map_or(base.as_str(), |g| g.url.as_str())
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let label = match (&self.nats, children.len(), &gateway) {
            (None, 0, _) => base.clone(),
            (None, _, _) => "child process".to_owned(),
            (Some(_), n, None) => format!("cluster of {n} worker(s)"),
            (Some(_), n, Some(_)) => {
                format!("cluster of {n} worker(s), /run through a gateway")
            }
        };
        let server_label = label.as_str();
        if let Some(n) = self.tasks {
            let connections = self.concurrency.iter().copied().max().unwrap_or(1);
            println!(
                "colony bench: {n} tasks per function, {connections} connections, server {server_label}"
            );
            println!(
                "{:<20} {:<8} {:>7} {:>8} {:>9} {:>9} {:>10} {:>10} {:>8}",
                "FUNCTION",
                "EXECUTOR",
                "TASKS",
                "SECONDS",
                "TASKS/S",
                "SUBMIT/S",
                "SUBMIT-P50",
                "SUBMIT-P99",
                "FAILURES"
            );
            let mut failed = false;
            for (name, executor) in &targets {
                let r = task_run(&clients, &addrs, name, n, connections).await?;
                println!(
                    "{:<20} {:<8} {:>7} {:>8.2} {:>9.0} {:>9.0} {:>10} {:>10} {:>8}",
                    name,
                    executor,
                    r.submitted,
                    r.end_to_end.as_secs_f64(),
                    per_second(r.submitted, r.end_to_end),
                    per_second(r.latencies_us.len(), r.submitting),
                    micros(percentile(&r.latencies_us, 0.50)),
                    micros(percentile(&r.latencies_us, 0.99)),
                    r.failures
                );
                if let Some(e) = r.first_error {
                    eprintln!("  first error: {e}");
                    failed = true;
                }
                failed |= r.failures > 0;
            }
            drop(children);
            return Ok(if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            });
        }
        let body = Bytes::from(vec![b'x'; self.size]);

        println!(
            "colony bench: {} B body, {:?} warm-up + {:?} per run, server {}",
            self.size, warmup, duration, server_label
        );
        println!(
            "{:<20} {:<8} {:>5} {:>10} {:>10} {:>9} {:>9} {:>9} {:>7}",
            "FUNCTION", "EXECUTOR", "CONC", "REQUESTS", "REQ/S", "P50", "P99", "MAX", "ERRORS"
        );
        let mut failed = false;
        for (name, executor) in &targets {
            for &c in &self.concurrency {
                let load = Load {
                    addr: addr.clone(),
                    method: hyper::Method::POST,
                    path: format!("/run/{name}"),
                    body: body.clone(),
                    expect: body.clone(),
                };
                let all = measure(&load, c, warmup, duration).await?;
                failed |= report(name, executor, c, duration, &all);
            }
        }
        drop(children);
        drop(gateway);
        Ok(if failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_from_sorted_samples() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.5), 51);
        assert_eq!(percentile(&v, 0.99), 99);
        assert_eq!(percentile(&v, 1.0), 100);
        assert_eq!(percentile(&[], 0.5), 0);
        assert_eq!(micros(150), "150µs");
        assert_eq!(micros(12_345), "12.3ms");
    }
}
