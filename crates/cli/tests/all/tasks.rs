//! Tasks end to end: `colony submit`, `colony tasks ...` and
//! `colony bench --tasks` against a real `colony serve`.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use colony_testsupport::TestServer;
use colony_testsupport::guests;

use super::{bin, colony, ok, write_temp};

/// The exit status, stdout and stderr of a run that is expected to fail.
#[track_caller]
fn fails(out: Output) -> (Option<i32>, String, String) {
    assert!(
        !out.status.success(),
        "succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `colony tasks show ID --json` as JSON.
fn show(server: &TestServer, id: &str) -> serde_json::Value {
    serde_json::from_str(&ok(colony(server, &["tasks", "show", id, "--json"], None))).unwrap()
}

/// Deploys the WAT `source` as `name`, with `extra` deploy flags.
fn deploy_wat(
    server: &TestServer,
    dir: &std::path::Path,
    name: &str,
    source: &str,
    extra: &[&str],
) {
    let path = write_temp(dir, &format!("{name}.wat"), source.as_bytes());
    let mut args = vec!["deploy", name, path.as_str()];
    args.extend_from_slice(extra);
    ok(colony(server, &args, None));
}

#[test]
fn submit_and_wait_returns_the_result() {
    let server = TestServer::start(&bin(), &[]);
    let tmp = tempfile::tempdir().unwrap();
    deploy_wat(&server, tmp.path(), "echo", guests::ECHO, &[]);
    ok(colony(
        &server,
        &["deploy", "hash", "--executor", "builtin", "sha256"],
        None,
    ));

    let out = colony(
        &server,
        &["submit", "echo", "--data", "hello, tasks", "--wait"],
        None,
    );
    let id = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    assert_eq!(ok(out), "hello, tasks");
    assert_eq!(id.len(), 26, "the id on stderr: {id:?}");

    let out = colony(
        &server,
        &["submit", "hash", "--data", "abc", "--wait"],
        None,
    );
    assert_eq!(
        ok(out),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );

    // Input from stdin, and bytes that are not UTF-8 (sent as base64).
    let out = colony(&server, &["submit", "echo", "--wait"], Some(b"from stdin"));
    assert_eq!(ok(out), "from stdin");
    let raw = b"\xff\x00binary\xfe".to_vec();
    let file = write_temp(tmp.path(), "raw.bin", &raw);
    let out = colony(
        &server,
        &["submit", "echo", "--file", &file, "--wait"],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, raw);

    // Per-task options are accepted.
    let out = colony(
        &server,
        &[
            "submit",
            "echo",
            "--data",
            "opts",
            "--priority",
            "-3",
            "--max-attempts",
            "1",
            "--timeout",
            "5s",
            "--wait",
            "--wait-timeout",
            "1m",
        ],
        None,
    );
    assert_eq!(ok(out), "opts");
}

#[test]
fn submitted_tasks_can_be_shown_listed_and_fetched() {
    let server = TestServer::start(&bin(), &[]);
    let tmp = tempfile::tempdir().unwrap();
    deploy_wat(&server, tmp.path(), "echo", guests::ECHO, &[]);

    // Without --wait: the id on stdout, at once.
    let id = ok(colony(
        &server,
        &["submit", "echo", "--data", "later"],
        None,
    ))
    .trim()
    .to_owned();
    assert_eq!(id.len(), 26, "{id}");
    assert_eq!(
        ok(colony(
            &server,
            &["tasks", "wait", &id, "--timeout", "30s"],
            None
        ))
        .trim(),
        "succeeded"
    );

    let shown = ok(colony(&server, &["tasks", "show", &id], None));
    let field = |k: &str| {
        shown
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{k}:")))
            .map(str::trim)
            .unwrap_or_else(|| panic!("no {k} in {shown}"))
    };
    assert_eq!(field("id"), id);
    assert_eq!(field("function"), "echo");
    assert_eq!(field("state"), "succeeded");
    assert_eq!(field("output"), "5 bytes");
    let json = show(&server, &id);
    assert_eq!(json["state"], "succeeded");
    assert_eq!(json["attempts"], 1);
    assert_eq!(json["input_size"], 5);

    assert_eq!(
        ok(colony(&server, &["tasks", "result", &id], None)),
        "later"
    );

    // A second task, then the list: newest first, filtered, paged.
    let id2 = ok(colony(&server, &["submit", "echo", "--data", "two"], None))
        .trim()
        .to_owned();
    ok(colony(&server, &["tasks", "wait", &id2], None));
    let list = ok(colony(
        &server,
        &["tasks", "list", "--state", "succeeded"],
        None,
    ));
    let rows: Vec<&str> = list.lines().collect();
    assert!(rows[0].starts_with("ID "), "{list}");
    assert_eq!(rows.len(), 3, "{list}");
    assert!(
        rows[1].starts_with(&id2) && rows[2].starts_with(&id),
        "{list}"
    );
    let cols: Vec<&str> = rows[2].split_whitespace().collect();
    assert_eq!(cols[1..4], ["succeeded", "echo", "1/3"], "{list}");
    assert_eq!(cols[5], "-", "{list}");
    let none = ok(colony(
        &server,
        &["tasks", "list", "--state", "failed"],
        None,
    ));
    assert_eq!(none.lines().count(), 1, "{none}");

    let out = colony(&server, &["tasks", "list", "--limit", "1"], None);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let first = ok(out);
    assert!(first.lines().nth(1).unwrap().starts_with(&id2), "{first}");
    let cursor = stderr
        .split_whitespace()
        .last()
        .unwrap_or_else(|| panic!("no cursor on stderr: {stderr}"))
        .to_owned();
    let out = colony(
        &server,
        &[
            "tasks", "list", "--limit", "1", "--after", &cursor, "--json",
        ],
        None,
    );
    let page: serde_json::Value = serde_json::from_str(&ok(out)).unwrap();
    assert_eq!(page["tasks"][0]["id"], id.as_str(), "{page}");

    // Mistakes are named with their codes.
    let (_, _, err) = fails(colony(
        &server,
        &["tasks", "show", "7zzzzzzzzzzzzzzzzzzzzzzzzz"],
        None,
    ));
    assert!(err.contains("task_not_found"), "{err}");
    let (_, _, err) = fails(colony(&server, &["tasks", "show", "nope"], None));
    assert!(err.contains("bad_request"), "{err}");
    let (_, _, err) = fails(colony(&server, &["submit", "nosuch", "--data", "x"], None));
    assert!(err.contains("function_not_found"), "{err}");
}

#[test]
fn running_tasks_can_be_cancelled_and_finished_ones_cannot() {
    let server = TestServer::start(&bin(), &[]);
    let tmp = tempfile::tempdir().unwrap();
    deploy_wat(
        &server,
        tmp.path(),
        "spin",
        guests::LOOP,
        &["--timeout", "30s"],
    );
    deploy_wat(&server, tmp.path(), "echo", guests::ECHO, &[]);

    let id = ok(colony(&server, &["submit", "spin"], None))
        .trim()
        .to_owned();
    let deadline = Instant::now() + Duration::from_secs(20);
    while show(&server, &id)["state"] != "running" {
        assert!(
            Instant::now() < deadline,
            "never ran: {}",
            show(&server, &id)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        ok(colony(&server, &["tasks", "cancel", &id], None)).trim(),
        "cancelled"
    );
    assert_eq!(show(&server, &id)["state"], "cancelled");
    let (code, stdout, err) = fails(colony(&server, &["tasks", "wait", &id], None));
    assert_eq!((code, stdout.trim()), (Some(1), "cancelled"), "{err}");
    let (_, _, err) = fails(colony(&server, &["tasks", "result", &id], None));
    assert!(err.contains("result_not_found"), "{err}");

    // Cancelling a finished task is refused.
    let out = colony(&server, &["submit", "echo", "--data", "x", "--wait"], None);
    let done = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    assert_eq!(ok(out), "x");
    let (code, _, err) = fails(colony(&server, &["tasks", "cancel", &done], None));
    assert_eq!(code, Some(1));
    assert!(err.contains("task_finished"), "{err}");
    assert_eq!(show(&server, &done)["state"], "succeeded");

    // A wait that runs out reports the state it saw.
    let id = ok(colony(&server, &["submit", "spin"], None))
        .trim()
        .to_owned();
    let (code, _, err) = fails(colony(
        &server,
        &["tasks", "wait", &id, "--timeout", "1s"],
        None,
    ));
    assert_eq!(code, Some(1));
    assert!(err.contains("still"), "{err}");
    ok(colony(&server, &["tasks", "cancel", &id], None));
}

#[test]
fn an_idempotency_key_submits_once() {
    let server = TestServer::start(&bin(), &[]);
    let tmp = tempfile::tempdir().unwrap();
    deploy_wat(&server, tmp.path(), "echo", guests::ECHO, &[]);
    let submit = |key: &str| {
        let out = colony(
            &server,
            &["submit", "echo", "--data", "once", "--idempotency-key", key],
            None,
        );
        ok(out).trim().to_owned()
    };
    let first = submit("order-42");
    let again = submit("order-42");
    assert_eq!(first, again);
    assert_ne!(submit("order-43"), first);
    assert_eq!(show(&server, &first)["idempotency_key"], "order-42");
}

#[test]
fn a_failing_task_reports_the_guest_error_and_exit_status() {
    let server = TestServer::start(&bin(), &[]);
    let tmp = tempfile::tempdir().unwrap();
    deploy_wat(
        &server,
        tmp.path(),
        "exit3",
        guests::EXIT3,
        &["--retry-on", "none"],
    );
    let (code, stdout, err) = fails(colony(&server, &["submit", "exit3", "--wait"], None));
    assert_eq!(code, Some(3), "{err}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        err.contains("failed") && err.contains("guest_exit"),
        "{err}"
    );
    assert!(err.contains("bad input"), "{err}");
    let id = err.lines().next().unwrap().trim();
    let t = show(&server, id);
    assert_eq!(t["state"], "failed");
    assert_eq!(t["error"]["exit_code"], 3);
    let list = ok(colony(
        &server,
        &["tasks", "list", "--state", "failed"],
        None,
    ));
    assert!(
        list.lines()
            .any(|l| l.starts_with(id) && l.ends_with("guest_exit")),
        "{list}"
    );

    // Retried on exit: every attempt fails, and the task is dead.
    deploy_wat(
        &server,
        tmp.path(),
        "exit3r",
        guests::EXIT3,
        &[
            "--retry-on",
            "exit",
            "--max-attempts",
            "2",
            "--backoff",
            "10ms",
            "--max-backoff",
            "20ms",
        ],
    );
    let (code, _, err) = fails(colony(&server, &["submit", "exit3r", "--wait"], None));
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("dead"), "{err}");
    let id = err.lines().next().unwrap().trim();
    assert_eq!(show(&server, id)["attempts"], 2);

    // A bad retry kind is named before anything is sent.
    let exit3 = write_temp(tmp.path(), "x.wat", guests::EXIT3.as_bytes());
    let (_, _, err) = fails(colony(
        &server,
        &["deploy", "x", &exit3, "--retry-on", "exit,oops"],
        None,
    ));
    assert!(err.contains("--retry-on") && err.contains("oops"), "{err}");
}

#[test]
fn bench_runs_tasks_and_reports_figures() {
    let out = Command::new(bin())
        .args([
            "bench",
            "--tasks",
            "200",
            "--duration",
            "100ms",
            "--warmup",
            "0s",
            "--concurrency",
            "1,8",
        ])
        .output()
        .unwrap();
    let text = ok(out);
    let rows: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("bench-echo-"))
        .collect();
    assert_eq!(rows.len(), 2, "{text}");
    for row in rows {
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cols[2], "200", "tasks in {row}");
        let per_second: f64 = cols[4].parse().unwrap();
        assert!(per_second > 0.0, "{row}");
        assert_eq!(cols[8], "0", "failures in {row}");
    }
    assert!(text.contains("8 connections"), "{text}");
}
