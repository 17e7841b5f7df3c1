//! `colony tasks list|show|result|cancel|wait`: look after submitted tasks.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Subcommand;
use colony_client::TaskQuery;
use colony_core::TaskState;
use colony_core::units::parse_duration;
use colony_core::wire::TaskInfo;

use crate::ServerArg;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List tasks, newest first, one page at a time.
    List(ListArgs),
    /// Show one task.
    Show(ShowArgs),
    /// Write a succeeded task's result to stdout.
    Result(IdArgs),
    /// Cancel a queued or running task; prints its final state.
    Cancel(IdArgs),
    /// Wait for a task to finish; prints its final state and exits
    /// non-zero unless it succeeded.
    Wait(WaitArgs),
}

#[derive(Debug, clap::Args)]
struct ListArgs {
    /// Only tasks in this state: queued, running, succeeded, failed,
    /// cancelled or dead.
    #[arg(long, value_name = "STATE")]
    state: Option<TaskState>,
    /// Only tasks of this function.
    #[arg(long, value_name = "NAME")]
    function: Option<String>,
    /// Tasks per page [server default: 50, at most 1000].
    #[arg(long, value_name = "N")]
    limit: Option<u32>,
    /// Start after this cursor (printed at the end of the previous page).
    #[arg(long, value_name = "CURSOR")]
    after: Option<String>,
    /// Only tasks of this directive (e.g. a `colony map` run).
    #[arg(long, value_name = "ID")]
    directive: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: ServerArg,
}

#[derive(Debug, clap::Args)]
struct ShowArgs {
    /// The task's id.
    id: String,
    /// Print JSON instead of key: value lines.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: ServerArg,
}

#[derive(Debug, clap::Args)]
struct IdArgs {
    /// The task's id.
    id: String,
    #[command(flatten)]
    server: ServerArg,
}

#[derive(Debug, clap::Args)]
struct WaitArgs {
    /// The task's id.
    id: String,
    /// How long to wait before giving up (the task keeps going).
    #[arg(long, default_value = "10m", value_name = "DURATION")]
    timeout: String,
    #[command(flatten)]
    server: ServerArg,
}

impl Args {
    pub(crate) async fn run(self) -> anyhow::Result<ExitCode> {
        match self.command {
            Command::List(a) => a.run().await,
            Command::Show(a) => a.run().await,
            Command::Result(a) => {
                let output = a.server.client()?.task_result(&a.id).await?;
                let mut stdout = std::io::stdout().lock();
                stdout.write_all(&output)?;
                stdout.flush()?;
                Ok(ExitCode::SUCCESS)
            }
            Command::Cancel(a) => {
                let info = a.server.client()?.cancel_task(&a.id).await?;
                println!("{}", info.state);
                Ok(ExitCode::SUCCESS)
            }
            Command::Wait(a) => {
                let timeout =
                    parse_duration(&a.timeout).map_err(|e| anyhow::anyhow!("--timeout: {e}"))?;
                let info = a.server.client()?.wait_task(&a.id, timeout).await?;
                println!("{}", info.state);
                Ok(match info.state {
                    TaskState::Succeeded => ExitCode::SUCCESS,
                    _ => report_unfinished(&info, timeout),
                })
            }
        }
    }
}

impl ListArgs {
    async fn run(self) -> anyhow::Result<ExitCode> {
        let query = TaskQuery {
            state: self.state,
            function: self.function,
            limit: self.limit,
            after: self.after,
            directive: self.directive,
        };
        let page = self.server.client()?.tasks(&query).await?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&page)?);
            return Ok(ExitCode::SUCCESS);
        }
        let now = now_ms();
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "{:<26} {:<9} {:<24} {:>8} {:>6} ERROR-CODE",
            "ID", "STATE", "FUNCTION", "ATTEMPTS", "AGE"
        )?;
        for t in &page.tasks {
            writeln!(
                out,
                "{:<26} {:<9} {:<24} {:>8} {:>6} {}",
                t.id.as_str(),
                t.state.as_str(),
                t.function.as_str(),
                format!("{}/{}", t.attempts, t.max_attempts),
                age(now - t.created_ms),
                t.error.as_ref().map_or("-", |e| e.code.as_str()),
            )?;
        }
        out.flush()?;
        if let Some(next) = &page.next {
            eprintln!("more: --after {next}");
        }
        Ok(ExitCode::SUCCESS)
    }
}

impl ShowArgs {
    async fn run(self) -> anyhow::Result<ExitCode> {
        let info = self.server.client()?.task(&self.id).await?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&info)?);
        } else {
            print!("{}", describe(&info, now_ms()));
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// Reports on stderr a task that did not succeed, and returns the exit
/// status for it: the guest's exit status when it exited non-zero, else 1.
pub(crate) fn report_unfinished(info: &TaskInfo, waited: Duration) -> ExitCode {
    let id = info.id.as_str();
    if !info.state.is_terminal() {
        eprintln!(
            "colony: task {id} is still {} after {}; `colony tasks wait {id}` waits longer",
            info.state,
            humantime::format_duration(waited)
        );
        return ExitCode::FAILURE;
    }
    match &info.error {
        Some(e) => {
            eprintln!(
                "colony: task {id} {}: {} ({})",
                info.state, e.message, e.code
            );
            if let Some(tail) = e.stderr_tail.as_deref()
                && !tail.trim().is_empty()
            {
                eprintln!("--- guest stderr (tail) ---\n{}", tail.trim_end());
            }
            crate::exit_code(e.exit_code.map(i64::from))
        }
        None => {
            eprintln!("colony: task {id} {}", info.state);
            ExitCode::FAILURE
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A short age: `42s`, `5m`, `3h`, `2d`.
fn age(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// A timestamp (ms since the Unix epoch) in UTC, with how long ago it was.
fn when(ms: i64, now: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    let stamp = humantime::format_rfc3339_millis(t);
    if ms <= now {
        format!("{stamp} ({} ago)", age(now - ms))
    } else {
        format!("{stamp} (in {})", age(ms - now))
    }
}

/// `key: value` lines, for people.
fn describe(t: &TaskInfo, now: i64) -> String {
    let mut lines: Vec<(&str, String)> = vec![
        ("id", t.id.to_string()),
        ("function", t.function.as_str().to_owned()),
        ("revision", t.revision.as_str().to_owned()),
        ("state", t.state.to_string()),
        ("attempts", format!("{} of {}", t.attempts, t.max_attempts)),
        ("priority", t.priority.to_string()),
    ];
    if let Some(ms) = t.timeout_ms {
        lines.push(("timeout", format!("{ms}ms")));
    }
    if let Some(k) = &t.idempotency_key {
        lines.push(("idempotency key", k.clone()));
    }
    lines.push(("input", format!("{} bytes", t.input_size)));
    if let Some(n) = t.output_size {
        lines.push(("output", format!("{n} bytes")));
    }
    lines.push(("created", when(t.created_ms, now)));
    let times = [
        ("started", t.started_ms),
        ("finished", t.finished_ms),
        ("retry after", t.not_before_ms),
        ("expires", t.expires_ms),
    ];
    for (k, v) in times {
        if let Some(ms) = v {
            lines.push((k, when(ms, now)));
        }
    }
    if let Some(w) = &t.worker {
        lines.push(("worker", w.clone()));
    }
    if let Some(e) = &t.error {
        lines.push(("error", format!("{} ({})", e.message, e.code)));
        if let Some(c) = e.exit_code {
            lines.push(("exit code", c.to_string()));
        }
    }
    let mut out = String::new();
    for (k, v) in lines {
        // Aligned for the longest key, "idempotency key:".
        out.push_str(&format!("{:<16} {v}\n", format!("{k}:")));
    }
    if let Some(tail) = t.error.as_ref().and_then(|e| e.stderr_tail.as_deref())
        && !tail.trim().is_empty()
    {
        out.push_str("--- guest stderr (tail) ---\n");
        out.push_str(tail.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_are_short() {
        assert_eq!(age(-5), "0s");
        assert_eq!(age(42_000), "42s");
        assert_eq!(age(5 * 60_000 + 1), "5m");
        assert_eq!(age(3 * 3_600_000), "3h");
        assert_eq!(age(2 * 86_400_000), "2d");
    }

    #[test]
    fn a_task_is_described_line_by_line() {
        let t: TaskInfo = serde_json::from_value(serde_json::json!({
            "id": "01jd0000000000000000000000",
            "function": "exit3",
            "revision": "ab".repeat(32),
            "state": "failed",
            "priority": 0,
            "attempts": 1,
            "max_attempts": 3,
            "created_ms": 1_000,
            "finished_ms": 3_000,
            "input_size": 0,
            "error": {"code": "guest_exit", "message": "exited with 3", "exit_code": 3,
                      "stderr_tail": "bad input\n"},
        }))
        .unwrap();
        let text = describe(&t, 63_000);
        let has = |k: &str, v: &str| {
            text.lines()
                .any(|l| l == format!("{:<16} {v}", format!("{k}:")))
        };
        assert!(has("state", "failed"), "{text}");
        assert!(has("attempts", "1 of 3"), "{text}");
        assert!(
            has("created", "1970-01-01T00:00:01.000Z (1m ago)"),
            "{text}"
        );
        assert!(
            has("finished", "1970-01-01T00:00:03.000Z (1m ago)"),
            "{text}"
        );
        assert!(has("error", "exited with 3 (guest_exit)"), "{text}");
        assert!(has("exit code", "3"), "{text}");
        assert!(!text.contains("started:"), "{text}");
        assert!(
            text.ends_with("--- guest stderr (tail) ---\nbad input\n"),
            "{text}"
        );
    }
}
