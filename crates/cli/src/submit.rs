//! `colony submit NAME[@REV]`: run a function as a durable task.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use base64::Engine;
use colony_core::TaskState;
use colony_core::units::parse_duration;
use colony_core::wire::{FileInput, SubmitTask};

use crate::ServerArg;
use crate::input::InputArgs;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The function, optionally pinned to a revision: NAME or NAME@REV.
    /// The revision is fixed when the task is submitted.
    target: String,
    #[command(flatten)]
    input: InputArgs,
    /// For a function on the files I/O runtime: an input file, from a
    /// local file (NAME=@PATH), as text (NAME=TEXT), or an output file of
    /// an earlier task (NAME=task:ID, or NAME=task:ID:FILE when it is
    /// named FILE there); repeatable.
    #[arg(long = "in", value_name = "NAME=SOURCE")]
    files: Vec<String>,
    /// Wait for the task to finish: write its result to stdout, or its
    /// error to stderr (exiting with the guest's exit status).
    #[arg(long)]
    wait: bool,
    /// How long --wait waits before giving up (the task keeps going).
    #[arg(
        long,
        default_value = "10m",
        value_name = "DURATION",
        requires = "wait"
    )]
    wait_timeout: String,
    /// Higher runs first among queued tasks [default: 0].
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    priority: Option<i32>,
    /// Attempts, overriding the function's retry policy.
    #[arg(long, value_name = "N")]
    max_attempts: Option<u32>,
    /// Timeout of each attempt, overriding the function's, e.g. 30s.
    #[arg(long, value_name = "DURATION")]
    timeout: Option<String>,
    /// Submitting the same key again returns the first task instead of a
    /// new one (while that task is retained).
    #[arg(long, value_name = "KEY")]
    idempotency_key: Option<String>,
    #[command(flatten)]
    server: ServerArg,
}

/// One `--in NAME=SOURCE`.
fn file_input(spec: &str) -> anyhow::Result<(String, FileInput)> {
    let (name, source) = spec
        .split_once('=')
        .context("expected NAME=@PATH, NAME=TEXT or NAME=task:ID[:FILE]")?;
    let input = if let Some(path) = source.strip_prefix('@') {
        let data = std::fs::read(path).with_context(|| format!("cannot read {path}"))?;
        FileInput {
            base64: Some(base64::engine::general_purpose::STANDARD.encode(data)),
            ..Default::default()
        }
    } else if let Some(reference) = source.strip_prefix("task:") {
        let (task, file) = match reference.split_once(':') {
            Some((t, f)) => (t, Some(f.to_owned())),
            None => (reference, None),
        };
        FileInput {
            task: Some(task.to_owned()),
            file,
            ..Default::default()
        }
    } else {
        FileInput {
            text: Some(source.to_owned()),
            ..Default::default()
        }
    };
    Ok((name.to_owned(), input))
}

impl Args {
    pub(crate) async fn run(self) -> anyhow::Result<ExitCode> {
        let wait_timeout = parse_duration(&self.wait_timeout)
            .map_err(|e| anyhow::anyhow!("--wait-timeout: {e}"))?;
        let timeout_ms = self
            .timeout
            .as_deref()
            .map(parse_duration)
            .transpose()
            .map_err(|e| anyhow::anyhow!("--timeout: {e}"))?
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let files = if self.files.is_empty() {
            None
        } else {
            Some(
                self.files
                    .iter()
                    .map(|f| file_input(f).with_context(|| format!("--in {f}")))
                    .collect::<anyhow::Result<_>>()?,
            )
        };
        let (input, input_base64) = if files.is_some() {
            (None, None)
        } else {
            match String::from_utf8(self.input.read()?) {
                Ok(text) => (Some(text), None),
                Err(e) => (
                    None,
                    Some(base64::engine::general_purpose::STANDARD.encode(e.into_bytes())),
                ),
            }
        };
        let task = SubmitTask {
            function: self.target,
            input,
            input_base64,
            idempotency_key: self.idempotency_key,
            max_attempts: self.max_attempts,
            timeout_ms,
            priority: self.priority,
            files,
            directive: None,
        };
        let client = self.server.client()?;
        let submitted = client.submit(&task).await?;
        let id = submitted.id.as_str();
        if !self.wait {
            println!("{id}");
            if !submitted.created {
                eprintln!("task {id} already submitted with this idempotency key");
            }
            return Ok(ExitCode::SUCCESS);
        }

        eprintln!("{id}");
        let info = client.wait_task(id, wait_timeout).await?;
        match info.state {
            TaskState::Succeeded => {
                let output = client.task_result(id).await.with_context(|| {
                    format!("task {id} succeeded but its result is unavailable")
                })?;
                let mut stdout = std::io::stdout().lock();
                stdout.write_all(&output)?;
                stdout.flush()?;
                Ok(ExitCode::SUCCESS)
            }
            _ => Ok(crate::tasks::report_unfinished(&info, wait_timeout)),
        }
    }
}
