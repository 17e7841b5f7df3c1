//! End-to-end tests of the `colony` binary: a real `colony serve` process
//! on a free port, driven by the CLI's own subcommands and the client.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use colony_client::Client;
use colony_testsupport::TestServer;
use colony_testsupport::guests;

mod directives;
mod tasks;

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_colony"))
}

fn colony(server: &TestServer, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut cmd = Command::new(bin());
    cmd.args(args).env("COLONY_SERVER", &server.url);
    match stdin {
        None => cmd.stdin(std::process::Stdio::null()).output().unwrap(),
        Some(data) => {
            use std::io::Write;
            let mut child = cmd
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            child.stdin.take().unwrap().write_all(data).unwrap();
            child.wait_with_output().unwrap()
        }
    }
}

#[track_caller]
fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn write_temp(dir: &Path, name: &str, data: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p.to_str().unwrap().to_owned()
}

/// Peak resident memory of a process, from /proc, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

#[test]
fn cli_round_trip() {
    let server = TestServer::start(&bin(), &[]);
    let tmp = tempfile::tempdir().unwrap();
    let echo = guests::root().join("examples/echo.wat");
    let echo = echo.to_str().unwrap();

    let rev1 = ok(colony(
        &server,
        &[
            "deploy",
            "echo",
            echo,
            "--timeout",
            "2s",
            "--memory",
            "16MiB",
        ],
        None,
    ));
    let rev1 = rev1.trim().to_owned();
    assert_eq!(rev1.len(), 64, "{rev1}");
    // Deploying the same again prints the same revision.
    let again = ok(colony(
        &server,
        &[
            "deploy",
            "echo",
            echo,
            "--timeout",
            "2s",
            "--memory",
            "16MiB",
        ],
        None,
    ));
    assert_eq!(again.trim(), rev1);

    // Input from --data, --file and stdin.
    assert_eq!(
        ok(colony(
            &server,
            &["invoke", "echo", "--data", "hello"],
            None
        )),
        "hello"
    );
    let file = write_temp(tmp.path(), "in.bin", b"from a file\n\x00\x01");
    assert_eq!(
        ok(colony(&server, &["invoke", "echo", "--file", &file], None)).as_bytes(),
        b"from a file\n\x00\x01"
    );
    assert_eq!(
        ok(colony(&server, &["invoke", "echo"], Some(b"from stdin"))),
        "from stdin"
    );

    // A builtin.
    ok(colony(
        &server,
        &["deploy", "hash", "--executor", "builtin", "sha256"],
        None,
    ));
    assert_eq!(
        ok(colony(&server, &["invoke", "hash", "--data", "abc"], None)),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );

    // A second revision, not the default; pinned; then made the default.
    let upper = write_temp(tmp.path(), "upper.wasm", &guests::c_guest("json-upper"));
    let rev2 = ok(colony(
        &server,
        &["deploy", "echo", &upper, "--no-default"],
        None,
    ))
    .trim()
    .to_owned();
    assert_ne!(rev1, rev2);
    assert_eq!(
        ok(colony(
            &server,
            &["invoke", "echo", "--data", "{\"a\":\"b\"}"],
            None
        )),
        "{\"a\":\"b\"}"
    );
    let pinned = format!("echo@{}", &rev2[..8]);
    assert_eq!(
        ok(colony(
            &server,
            &["invoke", &pinned, "--data", "{\"a\":\"b\"}"],
            None
        ))
        .trim(),
        "{\"a\":\"B\"}"
    );
    assert_eq!(
        ok(colony(&server, &["default", "echo", &rev2[..10]], None)).trim(),
        rev2
    );
    assert_eq!(
        ok(colony(
            &server,
            &["invoke", "echo", "--data", "{\"a\":\"b\"}"],
            None
        ))
        .trim(),
        "{\"a\":\"B\"}"
    );

    // Listing.
    let list = ok(colony(&server, &["functions"], None));
    assert!(
        list.lines()
            .any(|l| l.starts_with("echo ") && l.contains(&rev2[..12])),
        "{list}"
    );
    assert!(
        list.lines()
            .any(|l| l.starts_with("hash ") && l.contains("builtin")),
        "{list}"
    );
    let show = ok(colony(&server, &["functions", "echo"], None));
    assert!(show.contains(&rev1) && show.contains(&rev2), "{show}");
    assert!(show.contains("2000ms") && show.contains("16MiB"), "{show}");

    // Delete.
    ok(colony(&server, &["delete", "hash"], None));
    let out = colony(&server, &["invoke", "hash", "--data", "abc"], None);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("function_not_found"), "{err}");
}

#[test]
fn cli_failures_are_reported_with_codes_and_exit_status() {
    let server = TestServer::start(&bin(), &[]);
    let tmp = tempfile::tempdir().unwrap();

    // A guest exiting 3: the CLI exits 3 and shows the guest's stderr.
    let exit3 = write_temp(tmp.path(), "exit3.wat", guests::EXIT3.as_bytes());
    ok(colony(&server, &["deploy", "exit3", &exit3], None));
    let out = colony(&server, &["invoke", "exit3"], None);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("guest_exit") && err.contains("bad input"),
        "{err}"
    );
    assert!(out.stdout.is_empty());

    // A malformed module: the deploy fails with the reason.
    let junk = write_temp(tmp.path(), "junk.wasm", b"\0asm\x01\0\0\0junk");
    let out = colony(&server, &["deploy", "junk", &junk], None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid_module"), "{err}");

    // Bad spellings are refused before anything is sent.
    let out = colony(&server, &["deploy", "x", &exit3, "--env", "NOEQUALS"], None);
    assert!(String::from_utf8_lossy(&out.stderr).contains("KEY=VALUE"));
    let out = colony(&server, &["deploy", "x", &exit3, "--timeout", "soon"], None);
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid_manifest"));
    let out = colony(&server, &["deploy", "x", "/no/such/file.wasm"], None);
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));

    // No server there.
    let out = Command::new(bin())
        .args([
            "invoke",
            "echo",
            "--data",
            "x",
            "--server",
            "http://127.0.0.1:9",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot reach"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_keeps_functions_and_never_recompiles() {
    let mut server = TestServer::start(&bin(), &[]);
    let client = Client::new(&server.url).unwrap();
    client
        .deploy("echo", guests::ECHO, &Default::default())
        .await
        .unwrap();
    client
        .deploy("primes", guests::c_guest("primes"), &Default::default())
        .await
        .unwrap();
    let opts = colony_client::DeployOptions {
        executor: Some("builtin".into()),
        ..Default::default()
    };
    client.deploy("wc", "wordcount", &opts).await.unwrap();
    let before = client.invoke("primes", "100").await.unwrap().output;
    let status = client.status().await.unwrap();
    assert_eq!(status.engine.compiled, 2);

    server.restart();
    let client = Client::new(&server.url).unwrap();
    let names: Vec<String> = client
        .functions()
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.name.to_string())
        .collect();
    assert_eq!(names, ["echo", "primes", "wc"]);
    assert_eq!(client.invoke("echo", "back").await.unwrap().output, "back");
    assert_eq!(client.invoke("primes", "100").await.unwrap().output, before);
    assert_eq!(
        client.invoke("wc", "a b\n").await.unwrap().output,
        r#"{"lines":1,"words":2,"bytes":4}"#
    );
    let status = client.status().await.unwrap();
    assert_eq!(status.engine.compiled, 0, "{status:?}");
    assert_eq!(status.engine.cache_hits, 2, "{status:?}");
    assert_eq!(status.functions, 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_output_does_not_grow_the_worker() {
    let server = TestServer::start(&bin(), &[]);
    let client = Client::new(&server.url).unwrap();
    client
        .deploy("spam", guests::SPAM, &Default::default())
        .await
        .unwrap();
    client
        .deploy("echo", guests::ECHO, &Default::default())
        .await
        .unwrap();
    client.invoke("echo", "warm").await.unwrap();
    let before = peak_rss(server.pid());
    // The guest writes 100 MiB; the default output cap is 8 MiB.
    let err = client.invoke("spam", "").await.unwrap_err();
    assert_eq!(err.code(), Some("output_limit_exceeded"), "{err}");
    let after = peak_rss(server.pid());
    let grew = after.saturating_sub(before);
    eprintln!("peak RSS {} MiB -> {} MiB", before >> 20, after >> 20);
    assert!(grew < 40 << 20, "peak RSS grew by {} MiB", grew >> 20);
    assert_eq!(
        client.invoke("echo", "still fine").await.unwrap().output,
        "still fine"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_in_flight_calls() {
    let mut server = TestServer::start(&bin(), &["--drain-timeout", "10s"]);
    let client = Client::new(&server.url).unwrap();
    client
        .deploy("spin", guests::c_guest("spin"), &Default::default())
        .await
        .unwrap();
    client.invoke("spin", "1").await.unwrap();

    let c2 = client.clone();
    let call = tokio::spawn(async move { c2.invoke("spin", "1500").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    let exit = tokio::task::spawn_blocking(move || {
        let status = server.terminate(Duration::from_secs(20));
        (status, server)
    });
    // The call in flight finishes normally.
    let out = call.await.unwrap().expect("the in-flight call completes");
    assert_eq!(out.output, "done\n");
    let (status, _server) = exit.await.unwrap();
    let status = status.expect("the server exits by itself");
    assert!(status.success(), "{status:?}");
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "exited before the call finished: {:?}",
        t.elapsed()
    );
    // And nothing listens any more.
    assert!(client.status().await.is_err());
}

#[test]
fn serve_explains_bad_configuration() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = write_temp(tmp.path(), "colony.toml", b"concurency = 4\n");
    let data = tmp.path().join("data");
    let out = Command::new(bin())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--config",
            &bad,
            "--data-dir",
        ])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("concurency") && err.contains("colony.toml"),
        "{err}"
    );

    let out = Command::new(bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .env("COLONY_QUEUE_WAIT", "eventually")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("queue_wait"));
}

#[tokio::test(flavor = "multi_thread")]
async fn config_file_and_env_set_the_worker() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_temp(tmp.path(), "colony.toml", b"concurrency = 3\nqueue = 7\n");
    // The flag beats the file.
    let server = TestServer::start(&bin(), &["--config", &cfg, "--queue", "9"]);
    let s = Client::new(&server.url).unwrap().status().await.unwrap();
    assert_eq!(s.concurrency, 3);
    assert_eq!(s.queue, 9);
}

#[test]
fn bench_runs_and_reports_figures() {
    let out = Command::new(bin())
        .args([
            "bench",
            "--duration",
            "300ms",
            "--warmup",
            "100ms",
            "--concurrency",
            "1,4",
        ])
        .output()
        .unwrap();
    let text = ok(out);
    let rows: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("bench-echo-"))
        .collect();
    assert_eq!(rows.len(), 4, "{text}");
    for row in rows {
        let cols: Vec<&str> = row.split_whitespace().collect();
        let requests: u64 = cols[3].parse().unwrap();
        assert!(requests > 0, "{row}");
        assert_eq!(cols[8], "0", "errors in {row}");
    }
}

#[test]
fn json_logs_have_one_line_per_request_and_task_transition() {
    use std::io::{BufRead, BufReader};
    let tmp = tempfile::tempdir().unwrap();
    let mut child = Command::new(bin())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--data-dir",
        ])
        .arg(tmp.path().join("data"))
        .env("COLONY_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_owned();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = Client::new(&url).unwrap();
        let opts = colony_client::DeployOptions {
            executor: Some("builtin".into()),
            ..Default::default()
        };
        client.deploy("echo", "echo", &opts).await.unwrap();
        client.invoke("echo", "hi").await.unwrap();
        let req = colony_core::wire::SubmitTask {
            function: "echo".into(),
            ..Default::default()
        };
        let id = client.submit(&req).await.unwrap().id;
        client
            .wait_task(id.as_str(), Duration::from_secs(10))
            .await
            .unwrap();
    });
    let _ = child.kill();
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    let _ = child.wait();
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let run = lines
        .iter()
        .find(|l| l["target"] == "colony::access" && l["route"] == "/run/{target}")
        .expect("an access line for /run");
    assert_eq!(run["status"], 200);
    assert_eq!(run["method"], "POST");
    assert!(run["duration_us"].as_u64().is_some());
    assert_eq!(run["revision"].as_str().unwrap().len(), 64);
    let states: Vec<&str> = lines
        .iter()
        .filter(|l| l["target"] == "colony::task")
        .map(|l| l["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["queued", "running", "succeeded"], "{stderr}");
}

#[test]
fn one_process_per_data_directory() {
    let server = TestServer::start(&bin(), &[]);
    let out = Command::new(bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&server.data_dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by another colony process"), "{err}");
    // The first one is unharmed.
    let out = colony(&server, &["functions"], None);
    assert!(out.status.success());
}

#[test]
fn workers_on_a_single_worker_lists_itself() {
    let server = TestServer::start(&bin(), &["--concurrency", "3"]);

    let text = ok(colony(&server, &["workers"], None));
    let lines: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines.len(), 2, "a header and one row: {text}");
    assert_eq!(lines[0][0], "ID", "{text}");
    let row = &lines[1];
    // ID ROLE STATE RUNNING QUEUED CONCURRENCY TASKS HEARTBEAT-AGE ADDRESS
    assert_eq!(row.len(), 9, "{text}");
    assert_eq!(&row[1..6], ["worker", "ready", "0", "0", "3"], "{text}");

    let json: serde_json::Value =
        serde_json::from_str(&ok(colony(&server, &["workers", "--json"], None))).unwrap();
    assert_eq!(json["cluster"], false, "{json}");
    let workers = json["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 1, "{json}");
    assert_eq!(workers[0]["id"].as_str(), Some(row[0]), "{json}");
    assert_eq!(workers[0]["concurrency"], 3, "{json}");
}
