//! `colony bench`: warm invoke latency and throughput over HTTP.
//!
//! Deploys the wasm echo (`examples/echo.wat`) and the builtin echo, then
//! for each concurrency keeps that many HTTP/1.1 keep-alive connections
//! busy, one request at a time each, and reports p50/p99 latency and
//! requests per second. Without `--server` it starts `colony serve` as a
//! child process on a temporary data directory, so client and server are
//! separate processes talking over loopback, as in production.

use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use colony_client::{Client, DeployOptions};
use colony_core::units::parse_duration;
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
}

/// A `colony serve` child, killed on drop.
struct ChildServer {
    child: tokio::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl ChildServer {
    async fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let exe = std::env::current_exe().context("cannot find the colony binary")?;
        let mut child = tokio::process::Command::new(exe)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
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
async fn connection(
    addr: String,
    path: String,
    body: Bytes,
    measure_from: Instant,
    end: Instant,
) -> anyhow::Result<RunStats> {
    let stream = TcpStream::connect(&addr)
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
        let req = Request::post(&path)
            .header("host", &addr)
            .body(Full::new(body.clone()))?;
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        let got = resp.into_body().collect().await?.to_bytes();
        let took = start.elapsed();
        if !status.is_success() || got != body {
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
    pub(crate) async fn run(self) -> anyhow::Result<ExitCode> {
        let duration =
            parse_duration(&self.duration).map_err(|e| anyhow::anyhow!("--duration: {e}"))?;
        let warmup = parse_duration(&self.warmup).map_err(|e| anyhow::anyhow!("--warmup: {e}"))?;
        anyhow::ensure!(
            self.concurrency.iter().all(|&c| c > 0),
            "--concurrency: levels must be at least 1"
        );

        let child = match &self.server {
            Some(_) => None,
            None => Some(ChildServer::start().await?),
        };
        let base = self
            .server
            .clone()
            .or_else(|| child.as_ref().map(|c| c.url.clone()))
            .expect("one of the two");
        let client = Client::new(&base)?;
        let mut targets = Vec::new();
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
        let addr = base
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let body = Bytes::from(vec![b'x'; self.size]);

        println!(
            "colony bench: {} B body, {:?} warm-up + {:?} per run, server {}",
            self.size,
            warmup,
            duration,
            if child.is_some() {
                "child process"
            } else {
                base.as_str()
            }
        );
        println!(
            "{:<20} {:<8} {:>5} {:>10} {:>10} {:>9} {:>9} {:>9} {:>7}",
            "FUNCTION", "EXECUTOR", "CONC", "REQUESTS", "REQ/S", "P50", "P99", "MAX", "ERRORS"
        );
        let mut failed = false;
        for (name, executor) in &targets {
            for &c in &self.concurrency {
                let measure_from = Instant::now() + warmup;
                let end = measure_from + duration;
                let path = format!("/run/{name}");
                let conns: Vec<_> = (0..c)
                    .map(|_| {
                        tokio::spawn(connection(
                            addr.clone(),
                            path.clone(),
                            body.clone(),
                            measure_from,
                            end,
                        ))
                    })
                    .collect();
                let mut all = RunStats::default();
                for conn in conns {
                    let s = conn.await.context("a bench connection panicked")??;
                    all.latencies_us.extend(s.latencies_us);
                    all.errors += s.errors;
                    all.first_error = all.first_error.or(s.first_error);
                }
                all.latencies_us.sort_unstable();
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
                if let Some(e) = all.first_error {
                    eprintln!("  first error: {e}");
                    failed = true;
                }
            }
        }
        drop(child);
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
