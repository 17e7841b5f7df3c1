//! `colony deploy NAME FILE`: upload code as a new revision.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use colony_client::DeployOptions;
use colony_core::RetryOn;

use crate::ServerArg;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The function's name.
    name: String,
    /// The module (.wasm or .wat); for `--executor builtin`, the builtin's
    /// name (echo, sha256, wordcount).
    file: String,
    /// The executor: wasm, cgi (an HTTP function served at /http/NAME),
    /// component (a wasi:http component served there) or builtin.
    #[arg(long, default_value = "wasm")]
    executor: String,
    /// The I/O runtime: stdio (payload on stdin, result on stdout) or
    /// files (named files in /input, the result the files in /output)
    /// [server default: stdio].
    #[arg(long, value_name = "RUNTIME")]
    io: Option<String>,
    /// With --io files: an input file calls must give (repeatable).
    #[arg(long = "input-file", value_name = "NAME")]
    input_files: Vec<String>,
    /// With --io files: an output file collected from /output
    /// (repeatable; without any, every file there).
    #[arg(long = "output-file", value_name = "NAME")]
    output_files: Vec<String>,
    /// Timeout per call, e.g. 500ms, 2s [server default: 10s].
    #[arg(long, value_name = "DURATION")]
    timeout: Option<String>,
    /// Linear memory cap, e.g. 64MiB [server default: 128MiB].
    #[arg(long, value_name = "SIZE")]
    memory: Option<String>,
    /// Output cap, e.g. 1MiB [server default: 8MiB].
    #[arg(long, value_name = "SIZE")]
    output: Option<String>,
    /// An environment variable for the guest (repeatable).
    #[arg(long, value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// An argument for the guest, after argv[0] (repeatable).
    #[arg(long = "arg", value_name = "ARG", allow_hyphen_values = true)]
    args: Vec<String>,
    /// A host directory the guest sees, HOST:GUEST or HOST:GUEST:ro
    /// (repeatable; the worker must allow it: serve --allow-dir).
    #[arg(long = "dir", value_name = "HOST:GUEST[:ro]")]
    dirs: Vec<String>,
    /// Deploy without making the revision the default.
    #[arg(long)]
    no_default: bool,
    /// Attempts per task [server default: 3].
    #[arg(long, value_name = "N")]
    max_attempts: Option<u32>,
    /// Which task failures are retried, comma-separated: trap, timeout,
    /// exit, worker_lost, limit; `none` (or '') retries nothing
    /// [server default: timeout,worker_lost].
    #[arg(long, value_name = "KINDS")]
    retry_on: Option<String>,
    /// Delay before a task's first retry, doubling each attempt, e.g. 1s
    /// [server default: 1s].
    #[arg(long, value_name = "DURATION")]
    backoff: Option<String>,
    /// Ceiling on the retry delay, e.g. 1m [server default: 1m].
    #[arg(long, value_name = "DURATION")]
    max_backoff: Option<String>,
    /// Most tasks of this function running at once; 0 means no limit
    /// [server default: 0].
    #[arg(long, value_name = "N")]
    concurrency: Option<u32>,
    #[command(flatten)]
    server: ServerArg,
}

impl Args {
    pub(crate) async fn run(self) -> anyhow::Result<ExitCode> {
        let code = if self.executor == "builtin" {
            self.file.clone().into_bytes()
        } else {
            let path = PathBuf::from(&self.file);
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?
        };
        for e in &self.env {
            anyhow::ensure!(e.contains('='), "--env {e:?}: expected KEY=VALUE");
        }
        let retry_on = self
            .retry_on
            .as_deref()
            .map(retry_kinds)
            .transpose()
            .context("--retry-on")?;
        let options = DeployOptions {
            executor: Some(self.executor),
            io: self.io,
            input_files: self.input_files,
            output_files: self.output_files,
            timeout: self.timeout,
            memory: self.memory,
            output: self.output,
            env: self.env,
            args: self.args,
            dirs: self.dirs,
            make_default: self.no_default.then_some(false),
            max_attempts: self.max_attempts,
            retry_on,
            backoff: self.backoff,
            max_backoff: self.max_backoff,
            concurrency: self.concurrency,
        };
        let d = self
            .server
            .client()?
            .deploy(&self.name, code, &options)
            .await?;
        println!("{}", d.revision);
        let what = if d.created {
            "deployed"
        } else {
            "already deployed"
        };
        let default = if d.default { ", default" } else { "" };
        eprintln!("{} revision {} ({what}{default})", d.function, d.number);
        Ok(ExitCode::SUCCESS)
    }
}

/// The kinds of `--retry-on`: a comma-separated list, checked here so a
/// typo is named before anything is sent; `none` or nothing is the empty
/// list.
fn retry_kinds(s: &str) -> anyhow::Result<Vec<String>> {
    let s = s.trim();
    if s.is_empty() || s == "none" {
        return Ok(Vec::new());
    }
    s.split(',')
        .map(|k| {
            let kind: RetryOn = k.trim().parse().map_err(anyhow::Error::msg)?;
            Ok(kind.as_str().to_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_kinds_are_checked() {
        assert_eq!(
            retry_kinds("trap, timeout,worker_lost").unwrap(),
            ["trap", "timeout", "worker_lost"]
        );
        assert!(retry_kinds("").unwrap().is_empty());
        assert!(retry_kinds("none").unwrap().is_empty());
        let err = retry_kinds("trap,oops").unwrap_err().to_string();
        assert!(err.contains("oops") && err.contains("worker_lost"), "{err}");
    }
}
