//! Per-task overhead of Paladin's in-memory runtime (crate `paladin-core`)
//! for a map/fold "sum of squares" computation:
//!
//! ```text
//! IndexedStream::from(1..=n).map(&Square).fold(&Add)
//! ```
//!
//! The result is checked against n(n+1)(2n+1)/6; any mismatch (or a task
//! count that differs from the expected one) exits non-zero.
//!
//! Task accounting: the map dispatches one task per input (n tasks). Paladin's
//! `IndexedStream` fold dispatches one task per `combine` of two *contiguous*
//! index ranges, so a fold over n elements runs n-1 combine tasks. Total:
//! 2n-1 tasks. Both counts are measured (counters inside the operations) and
//! checked against these formulas.

use std::{
    process::ExitCode,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use paladin::{
    config::{Config, Runtime as RuntimeKind},
    directive::{Directive, IndexedStream},
    operation::{FatalError, FatalStrategy, Monoid, Operation, Result},
    registry,
    runtime::Runtime,
    RemoteExecute,
};
use serde::{Deserialize, Serialize};

registry!();

static MAP_TASKS: AtomicU64 = AtomicU64::new(0);
static FOLD_TASKS: AtomicU64 = AtomicU64::new(0);

/// `x -> x * x`.
#[derive(Serialize, Deserialize, RemoteExecute)]
struct Square;

impl Operation for Square {
    type Input = u64;
    type Output = u64;

    fn execute(&self, input: u64) -> Result<u64> {
        MAP_TASKS.fetch_add(1, Ordering::Relaxed);
        Ok(input.checked_mul(input).ok_or_else(|| {
            FatalError::from_str("square overflows u64", FatalStrategy::Terminate)
        })?)
    }
}

/// `(a, b) -> a + b`, identity 0.
#[derive(Serialize, Deserialize, RemoteExecute)]
struct Add;

impl Monoid for Add {
    type Elem = u64;

    fn empty(&self) -> u64 {
        0
    }

    fn combine(&self, a: u64, b: u64) -> Result<u64> {
        FOLD_TASKS.fetch_add(1, Ordering::Relaxed);
        Ok(a.checked_add(b)
            .ok_or_else(|| FatalError::from_str("sum overflows u64", FatalStrategy::Terminate))?)
    }
}

struct Args {
    inputs: u64,
    runs: usize,
    workers: Option<usize>,
}

const USAGE: &str = "usage: paladin-bench [--inputs N] [--runs R] [--workers W]\n\
    \n  --inputs N   number of map inputs 1..=N (default 100000)\
    \n  --runs R     number of timed runs (default 3)\
    \n  --workers W  in-memory emulated workers (default: Paladin's default, 3)";

fn parse_args() -> std::result::Result<Args, String> {
    let mut args = Args {
        inputs: 100_000,
        runs: 3,
        workers: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match flag.as_str() {
            "--inputs" => {
                args.inputs = value("--inputs")?
                    .parse()
                    .map_err(|e| format!("--inputs: {e}"))?
            }
            "--runs" => {
                args.runs = value("--runs")?
                    .parse()
                    .map_err(|e| format!("--runs: {e}"))?
            }
            "--workers" => {
                args.workers = Some(
                    value("--workers")?
                        .parse()
                        .map_err(|e| format!("--workers: {e}"))?,
                )
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument: {other}")),
        }
    }
    if args.runs == 0 {
        return Err("--runs must be at least 1".into());
    }
    if args.workers == Some(0) {
        return Err("--workers must be at least 1".into());
    }
    Ok(args)
}

#[derive(Clone, Copy)]
struct RunResult {
    wall: Duration,
    map_tasks: u64,
    fold_tasks: u64,
}

impl RunResult {
    fn tasks(&self) -> u64 {
        self.map_tasks + self.fold_tasks
    }
}

fn line(label: &str, inputs: u64, r: &RunResult) -> String {
    let secs = r.wall.as_secs_f64();
    let tasks = r.tasks();
    let (per_task_us, per_s) = if tasks == 0 {
        (0.0, 0.0)
    } else {
        (secs * 1e6 / tasks as f64, tasks as f64 / secs)
    };
    let per_map_us = if r.map_tasks == 0 {
        0.0
    } else {
        secs * 1e6 / r.map_tasks as f64
    };
    format!(
        "paladin in-memory {label}: inputs={inputs} tasks={tasks} (map={} fold={}) \
         wall={secs:.3}s per_task={per_task_us:.2}us tasks/s={per_s:.0} per_input={per_map_us:.2}us",
        r.map_tasks, r.fold_tasks
    )
}

async fn one_run(args: &Args) -> anyhow::Result<RunResult> {
    // A fresh runtime per run, so every run starts with empty queues and idle
    // emulated workers. Start-up and shutdown are outside the timed section.
    let config = Config {
        runtime: RuntimeKind::InMemory,
        num_workers: args.workers,
        ..Default::default()
    };
    let runtime = Runtime::from_config(&config, register()).await?;

    MAP_TASKS.store(0, Ordering::Relaxed);
    FOLD_TASKS.store(0, Ordering::Relaxed);

    let start = Instant::now();
    let sum = IndexedStream::from(1..=args.inputs)
        .map(&Square)
        .fold(&Add)
        .run(&runtime)
        .await?;
    let wall = start.elapsed();

    runtime.close().await?;
    drop(runtime);

    let n = args.inputs as u128;
    let expected = n * (n + 1) * (2 * n + 1) / 6;
    if sum as u128 != expected {
        anyhow::bail!("wrong result: got {sum}, expected {expected}");
    }

    let r = RunResult {
        wall,
        map_tasks: MAP_TASKS.load(Ordering::Relaxed),
        fold_tasks: FOLD_TASKS.load(Ordering::Relaxed),
    };
    let expected_fold = args.inputs.saturating_sub(1);
    if r.map_tasks != args.inputs || r.fold_tasks != expected_fold {
        anyhow::bail!(
            "unexpected task counts: map={} (expected {}), fold={} (expected {expected_fold})",
            r.map_tasks,
            args.inputs,
            r.fold_tasks
        );
    }
    Ok(r)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };

    let n = args.inputs as u128;
    if n * (n + 1) * (2 * n + 1) / 6 > u64::MAX as u128 {
        eprintln!(
            "error: --inputs {} overflows a u64 sum of squares",
            args.inputs
        );
        return ExitCode::from(2);
    }

    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    // Tokio's multi-thread runtime defaults to one worker thread per core.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");

    println!(
        "machine: cores={cores} tokio_worker_threads={cores} paladin_emulated_workers={} \
         paladin-core={}",
        args.workers
            .map(|w| w.to_string())
            .unwrap_or_else(|| "3 (default)".into()),
        PALADIN_VERSION,
    );
    println!(
        "workload: IndexedStream::from(1..={}).map(&Square).fold(&Add); \
         map = 1 task per input, fold = 1 task per combine (n-1), total = 2n-1",
        args.inputs
    );

    let mut results = Vec::with_capacity(args.runs);
    for i in 0..args.runs {
        match rt.block_on(one_run(&args)) {
            Ok(r) => {
                println!(
                    "{}",
                    line(&format!("run {}/{}", i + 1, args.runs), args.inputs, &r)
                );
                results.push(r);
            }
            Err(e) => {
                eprintln!("error: run {}: {e:#}", i + 1);
                return ExitCode::FAILURE;
            }
        }
    }

    results.sort_by_key(|r| r.wall);
    let best = &results[0];
    let median = if results.len() % 2 == 1 {
        results[results.len() / 2]
    } else {
        let (a, b) = (&results[results.len() / 2 - 1], &results[results.len() / 2]);
        RunResult {
            wall: (a.wall + b.wall) / 2,
            ..*a
        }
    };
    println!("{}", line("best", args.inputs, best));
    println!("{}", line("median", args.inputs, &median));
    println!(
        "result: ok (sum of squares = {})",
        n * (n + 1) * (2 * n + 1) / 6
    );

    // Paladin's emulated workers are aborted when the runtime drops; shut the
    // tokio runtime down without waiting on anything left in spawn_blocking.
    rt.shutdown_background();
    ExitCode::SUCCESS
}

/// Version of paladin-core this is built against; keep in sync with the exact
/// pin in Cargo.toml.
const PALADIN_VERSION: &str = "0.4.3";
