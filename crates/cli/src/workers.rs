//! `colony workers`: the live workers of a cluster and their load.

use std::io::Write;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use colony_core::wire::{WorkerList, WorkerState};

use crate::ServerArg;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: ServerArg,
}

impl Args {
    pub(crate) async fn run(self) -> anyhow::Result<ExitCode> {
        let list = self.server.client()?.workers().await?;
        let mut out = std::io::stdout().lock();
        if self.json {
            writeln!(out, "{}", serde_json::to_string_pretty(&list)?)?;
        } else {
            out.write_all(table(&list, now_ms()).as_bytes())?;
        }
        out.flush()?;
        Ok(ExitCode::SUCCESS)
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// How long ago a heartbeat was: `250ms` under ten seconds, then `42s`.
fn heartbeat_age(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 10_000 {
        format!("{ms}ms")
    } else {
        format!("{}s", ms / 1000)
    }
}

fn state(s: WorkerState) -> &'static str {
    match s {
        WorkerState::Ready => "ready",
        WorkerState::Draining => "draining",
    }
}

/// One line per worker, under a header.
fn table(list: &WorkerList, now: i64) -> String {
    let row = |c: [&str; 9]| {
        format!(
            "{:<24} {:<8} {:<8} {:>7} {:>6} {:>11} {:>5} {:>13} {}\n",
            c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8]
        )
    };
    let mut out = row([
        "ID",
        "ROLE",
        "STATE",
        "RUNNING",
        "QUEUED",
        "CONCURRENCY",
        "TASKS",
        "HEARTBEAT AGE",
        "ADDRESS",
    ]);
    for w in &list.workers {
        out.push_str(&row([
            &w.id,
            w.role.as_str(),
            state(w.state),
            &w.running.to_string(),
            &w.queued.to_string(),
            &w.concurrency.to_string(),
            &w.tasks_running.to_string(),
            &heartbeat_age(now - w.heartbeat_ms),
            w.address.as_deref().unwrap_or("-"),
        ]));
    }
    out
}

#[cfg(test)]
mod tests {
    use colony_core::wire::{WorkerInfo, WorkerRole};

    use super::*;

    fn worker(id: &str, role: WorkerRole, heartbeat_ms: i64) -> WorkerInfo {
        WorkerInfo {
            id: id.into(),
            address: None,
            role,
            state: WorkerState::Ready,
            version: "0.1.0".into(),
            running: 3,
            queued: 1,
            concurrency: 8,
            tasks_running: 2,
            warm_functions: vec!["echo".into()],
            started_ms: 0,
            heartbeat_ms,
        }
    }

    #[test]
    fn the_table_has_a_row_per_worker() {
        let mut a = worker("host-a:41", WorkerRole::Worker, 99_750);
        a.address = Some("http://10.0.0.1:8080".into());
        let mut b = worker("host-b:42", WorkerRole::Gateway, 40_000);
        b.state = WorkerState::Draining;
        let list = WorkerList {
            cluster: true,
            heartbeat_ttl_ms: 3000,
            workers: vec![a, b],
        };
        let text = table(&list, 100_000);
        let lines: Vec<Vec<&str>> = text
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(
            lines[0],
            [
                "ID",
                "ROLE",
                "STATE",
                "RUNNING",
                "QUEUED",
                "CONCURRENCY",
                "TASKS",
                "HEARTBEAT",
                "AGE",
                "ADDRESS"
            ]
        );
        assert_eq!(
            lines[1],
            [
                "host-a:41",
                "worker",
                "ready",
                "3",
                "1",
                "8",
                "2",
                "250ms",
                "http://10.0.0.1:8080"
            ]
        );
        assert_eq!(
            lines[2],
            [
                "host-b:42",
                "gateway",
                "draining",
                "3",
                "1",
                "8",
                "2",
                "60s",
                "-"
            ]
        );
    }

    #[test]
    fn heartbeat_ages_are_short() {
        assert_eq!(heartbeat_age(-3), "0ms");
        assert_eq!(heartbeat_age(9_999), "9999ms");
        assert_eq!(heartbeat_age(42_500), "42s");
    }
}
