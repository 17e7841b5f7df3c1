//! Map/fold directives of the SDK against a real worker: exact results,
//! abort on a fatal failure, isolation of concurrent directives, formats.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use colony_client::{Client, DirectiveOptions, Error, Format, Operation, TaskQuery};
use colony_core::TaskState;
use colony_core::wire::DirectiveEvent;
use colony_testsupport::{TestServer, guests};

use super::bin;

#[path = "../common/directives.rs"]
mod common;
use common::{deploy_builtins, directive_tasks, settled};

pub(crate) const SUM_OF_SQUARES_100K: u64 = 100_000 * 100_001 * 200_001 / 6;

#[tokio::test(flavor = "multi_thread")]
async fn sum_of_squares_over_100000_inputs_is_exact() {
    let server = TestServer::start(&bin(), &[]);
    let client = Client::new(&server.url).unwrap();
    deploy_builtins(&client).await;
    let square = Operation::<u64, u64>::new("square");
    let add = Operation::<(u64, u64), u64>::new("add");
    let started = Instant::now();
    let sum = client
        .map(&square, 1..=100_000u64)
        .fold_op(&add, 0)
        .await
        .unwrap();
    eprintln!("map+fold_op of 100,000 inputs: {:?}", started.elapsed());
    assert_eq!(sum, SUM_OF_SQUARES_100K);
    assert_eq!(sum, 333_338_333_350_000);
    // Every input was one task and every combination one more.
    let status = client.status().await.unwrap();
    assert_eq!(status.tasks.finished, 200_000, "{status:?}");
    // A local fold and an ordered collect agree.
    let local = client
        .map(&square, 1..=1000u64)
        .fold(0, |a, b| a + b)
        .await
        .unwrap();
    assert_eq!(local, 1000 * 1001 * 2001 / 6);
    let squares = client.map(&square, 1..=300u64).collect().await.unwrap();
    assert_eq!(squares, (1..=300u64).map(|i| i * i).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fatal_error_aborts_the_directive_and_names_the_input() {
    let server = TestServer::start(&bin(), &["--concurrency", "4"]);
    let client = Client::new(&server.url).unwrap();
    client
        .deploy("work", guests::c_guest("work"), &Default::default())
        .await
        .unwrap();
    let work = Operation::<i64, i64>::new("work");
    // 200 ms each; input #40 is refused (exit 2, not retried).
    let inputs = (0..1000).map(|i| if i == 40 { -7 } else { 200 });
    let options = DirectiveOptions {
        id: Some("fatal".into()),
        window: 64,
        ..Default::default()
    };
    let err = client
        .map(&work, inputs)
        .options(options)
        .collect()
        .await
        .unwrap_err();
    let returned = Instant::now();
    match &err {
        Error::TaskFailed {
            input,
            state,
            error,
            ..
        } => {
            assert!(input.contains("#40") && input.contains("-7"), "{err}");
            assert_eq!(*state, TaskState::Failed);
            let e = error.as_ref().unwrap();
            assert_eq!(e.exit_code, Some(2));
            assert!(
                e.stderr_tail
                    .as_deref()
                    .unwrap()
                    .contains("refused input -7")
            );
        }
        other => panic!("expected TaskFailed, got {other:?}"),
    }
    // Within 1 s, nothing of it is queued or running.
    let took = settled(&client, "fatal", returned, Duration::from_secs(1)).await;
    eprintln!("nothing queued or running {took:?} after the error returned");
    let all = directive_tasks(&client, "fatal", None).await;
    let cancelled = all
        .iter()
        .filter(|t| t.state == TaskState::Cancelled)
        .count();
    assert!(cancelled > 0, "the window held unfinished tasks: {all:?}");
    // It stopped submitting: far fewer than 1000 tasks exist.
    assert!(all.len() < 200, "{} tasks submitted", all.len());
    // The worker goes on serving.
    assert_eq!(client.invoke("work", "1").await.unwrap().output, "1");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_explicit_abort_cancels_what_is_unfinished() {
    let server = TestServer::start(&bin(), &["--concurrency", "2"]);
    let client = Client::new(&server.url).unwrap();
    client
        .deploy("work", guests::c_guest("work"), &Default::default())
        .await
        .unwrap();
    let work = Operation::<i64, i64>::new("work");
    let map = client
        .map(&work, std::iter::repeat_n(300i64, 100))
        .options(DirectiveOptions {
            id: Some("stopped".into()),
            window: 16,
            ..Default::default()
        });
    let abort = map.abort_handle();
    let run = tokio::spawn(map.collect());
    // Once some tasks run, abort.
    let deadline = Instant::now() + Duration::from_secs(10);
    while directive_tasks(&client, "stopped", Some(TaskState::Running))
        .await
        .is_empty()
    {
        assert!(Instant::now() < deadline, "nothing started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    abort.abort();
    let err = run.await.unwrap().unwrap_err();
    assert!(
        matches!(err, Error::Aborted { ref directive } if directive == "stopped"),
        "{err}"
    );
    // Cancelling a running guest may take an epoch tick.
    settled(&client, "stopped", Instant::now(), Duration::from_secs(1)).await;
    let all = directive_tasks(&client, "stopped", None).await;
    assert!(all.len() <= 32, "{}", all.len());
    assert!(all.iter().any(|t| t.state == TaskState::Cancelled));
}

#[tokio::test(flavor = "multi_thread")]
async fn two_directives_at_once_receive_only_their_own_results() {
    let server = TestServer::start(&bin(), &[]);
    let client = Client::new(&server.url).unwrap();
    deploy_builtins(&client).await;
    // A third channel, leased by hand, with no task of its own: it must
    // hear nothing while the two run.
    let mut quiet = client.directive_events("quiet").await.unwrap();
    let first = quiet.chunk().await.unwrap().unwrap();
    let open: DirectiveEvent = serde_json::from_slice(first.trim_ascii_end()).unwrap();
    assert_eq!(
        open,
        DirectiveEvent::Open {
            directive: "quiet".into()
        }
    );
    let square = Operation::<i64, i64>::new("square");
    let echo = Operation::<String, String>::new("echo");
    let a = client.map(&square, 1..=3000i64).options(DirectiveOptions {
        id: Some("a".into()),
        ..Default::default()
    });
    let b = client
        .map(&echo, (0..3000).map(|i| format!("b-{i}")))
        .options(DirectiveOptions {
            id: Some("b".into()),
            ..Default::default()
        });
    let (a, b) = tokio::join!(a.collect(), b.collect());
    assert_eq!(a.unwrap(), (1..=3000i64).map(|i| i * i).collect::<Vec<_>>());
    assert_eq!(
        b.unwrap(),
        (0..3000).map(|i| format!("b-{i}")).collect::<Vec<_>>()
    );
    let ids_a: HashSet<_> = directive_tasks(&client, "a", None)
        .await
        .into_iter()
        .map(|t| t.id)
        .collect();
    let ids_b: HashSet<_> = directive_tasks(&client, "b", None)
        .await
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!((ids_a.len(), ids_b.len()), (3000, 3000));
    assert!(ids_a.is_disjoint(&ids_b));
    let heard = tokio::time::timeout(Duration::from_millis(300), quiet.chunk()).await;
    assert!(heard.is_err(), "the quiet channel heard {heard:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn operations_speak_messagepack_and_rerun_keys_reuse_tasks() {
    let server = TestServer::start(&bin(), &[]);
    let client = Client::new(&server.url).unwrap();
    deploy_builtins(&client).await;
    let echo = Operation::<Vec<u32>, Vec<u32>>::new("echo").with_format(Format::MessagePack);
    assert_eq!(
        echo.encode(&vec![1, 2, 300]).unwrap().as_ref(),
        [0x93, 1, 2, 0xcd, 1, 44]
    );
    let inputs: Vec<Vec<u32>> = (0..200u32)
        .map(|i| (0..i % 7).map(|j| i * j).collect())
        .collect();
    let options = DirectiveOptions {
        key_prefix: Some("mp-run".into()),
        ..Default::default()
    };
    let out = client
        .map(&echo, inputs.clone())
        .options(options.clone())
        .collect()
        .await
        .unwrap();
    assert_eq!(out, inputs);
    let finished = client.status().await.unwrap().tasks.finished;
    // The same keys again: the same results, no task runs again.
    let again = client.map(&echo, inputs.clone()).options(options);
    let mut got = vec![Vec::new(); inputs.len()];
    let stats = again.for_each(|n, o| got[n as usize] = o).await.unwrap();
    assert_eq!(got, inputs);
    assert_eq!((stats.submitted, stats.reused), (200, 200), "{stats:?}");
    assert_eq!(client.status().await.unwrap().tasks.finished, finished);
    // A decode failure names the operation and the format.
    let wrong = Operation::<Vec<u32>, String>::new("echo").with_format(Format::MessagePack);
    let err = client
        .map(&wrong, vec![vec![1u32]])
        .collect()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Codec { .. }), "{err}");
    assert!(err.to_string().contains("MessagePack"), "{err}");
    // An unknown function is refused at the first submission, named.
    let nope = Operation::<u64, u64>::new("nope");
    let err = client.map(&nope, [1u64]).collect().await.unwrap_err();
    assert_eq!(err.code(), Some("function_not_found"), "{err}");
    assert!(err.to_string().contains("input #0"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn colony_map_over_1000_files_is_killed_and_rerun_without_redoing_work() {
    let server = TestServer::start(&bin(), &["--concurrency", "4"]);
    let client = Client::new(&server.url).unwrap();
    client
        .deploy("work", guests::c_guest("work"), &Default::default())
        .await
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (inputs, out) = (tmp.path().join("in"), tmp.path().join("out"));
    std::fs::create_dir(&inputs).unwrap();
    for i in 0..1000 {
        std::fs::write(inputs.join(format!("f{i:04}")), format!("{}", 2 + i % 5)).unwrap();
    }
    let map = |out: &std::path::Path| {
        let mut cmd = std::process::Command::new(bin());
        cmd.args(["map", "work", "--inputs"])
            .arg(&inputs)
            .arg("--out")
            .arg(out)
            .args(["--window", "16"])
            .env("COLONY_SERVER", &server.url)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        cmd
    };
    // Killed once a few hundred results are written.
    let mut first = map(&out).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let count = |dir: &std::path::Path| std::fs::read_dir(dir).map_or(0, |d| d.count());
    while count(&out) < 200 {
        assert!(Instant::now() < deadline, "no progress");
        assert!(
            first.try_wait().unwrap().is_none(),
            "finished before the kill"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    first.kill().unwrap();
    first.wait().unwrap();
    let written = count(&out);
    assert!(
        (200..1000).contains(&written),
        "{written} written before the kill"
    );
    // Run again with the same keys: it completes, reusing what ran.
    let again = map(&out).output().unwrap();
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success(), "{stderr}");
    let summary = stderr.lines().last().unwrap();
    assert!(
        summary.starts_with("map: 1000/1000 done, 0 failed"),
        "{summary}"
    );
    let reused: usize = summary
        .split(", ")
        .find_map(|p| p.strip_suffix(" reused"))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        reused >= written,
        "{summary}; {written} were written before the kill"
    );
    // Non-terminal runs print a plain progress line (not a bar) and the
    // summary.
    assert!(!stderr.contains('\u{1b}'), "{stderr}");
    for i in 0..1000 {
        let got = std::fs::read_to_string(out.join(format!("f{i:04}"))).unwrap();
        assert_eq!(got, format!("{}", 2 + i % 5), "f{i:04}");
    }
    // One task per file, each run once: nothing was redone.
    let query = TaskQuery {
        function: Some("work".into()),
        limit: Some(1000),
        ..Default::default()
    };
    let tasks = client.all_tasks(&query).await.unwrap();
    assert_eq!(tasks.len(), 1000);
    assert!(
        tasks
            .iter()
            .all(|t| t.state == TaskState::Succeeded && t.attempts == 1)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn colony_map_folds_and_writes_jsonl_in_input_order() {
    let server = TestServer::start(&bin(), &[]);
    let client = Client::new(&server.url).unwrap();
    deploy_builtins(&client).await;
    let tmp = tempfile::tempdir().unwrap();
    let inputs = tmp.path().join("in.jsonl");
    let lines: String = (1..=2000).map(|i| format!("{i}\n\n")).collect();
    std::fs::write(&inputs, lines).unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(bin())
            .args(["map", "square", "--inputs"])
            .arg(&inputs)
            .args(args)
            .env("COLONY_SERVER", &server.url)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let folded = run(&["--fold", "add", "--window", "50"]);
    assert!(
        folded.status.success(),
        "{}",
        String::from_utf8_lossy(&folded.stderr)
    );
    assert_eq!(
        String::from_utf8(folded.stdout).unwrap(),
        format!("{}\n", 2000u64 * 2001 * 4001 / 6)
    );
    let out = tmp.path().join("out.jsonl");
    let mapped = run(&["--out", out.to_str().unwrap(), "--window", "7"]);
    assert!(
        mapped.status.success(),
        "{}",
        String::from_utf8_lossy(&mapped.stderr)
    );
    let want: String = (1..=2000u64).map(|i| format!("{}\n", i * i)).collect();
    assert_eq!(std::fs::read_to_string(&out).unwrap(), want);
    // A bad line aborts, named by file and line.
    std::fs::write(&inputs, "1\n2\n\"three\"\n4\n").unwrap();
    let bad = run(&[]);
    assert_eq!(bad.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("in.jsonl:3"), "{stderr}");
    assert!(stderr.contains("expected a JSON number"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn large_results_are_fetched_and_shared_keys_are_refused() {
    use colony_client::{Directive, Input};
    use futures_util::StreamExt;
    let server = TestServer::start(&bin(), &[]);
    let client = Client::new(&server.url).unwrap();
    deploy_builtins(&client).await;
    // Results over 64 KiB are not inline in the channel: fetched, and
    // counted in the window until they are.
    let echo = Operation::<String, String>::new("echo");
    let big: Vec<String> = (0..12).map(|i| format!("{i}").repeat(100_000)).collect();
    let out = client
        .map(&echo, big.clone())
        .window(4)
        .collect()
        .await
        .unwrap();
    assert_eq!(out, big);
    // Two inputs with one key would be one task: the second is refused,
    // named, and the first still gets its result.
    let inputs = vec![
        Ok(Input {
            bytes: "one".into(),
            key: Some("same-key".into()),
            label: Some("first".into()),
        }),
        Ok(Input {
            bytes: "two".into(),
            key: Some("same-key".into()),
            label: Some("second".into()),
        }),
    ];
    let mut d = Directive::open(
        &client,
        "echo",
        futures_util::stream::iter(inputs).boxed(),
        DirectiveOptions::default(),
    )
    .await
    .unwrap();
    let mut outcomes = Vec::new();
    while let Some(next) = d.next().await {
        outcomes.push(next.unwrap());
    }
    assert_eq!(outcomes.len(), 2, "{outcomes:?}");
    let ok: Vec<_> = outcomes
        .iter()
        .filter_map(|(_, o)| o.as_ref().ok())
        .collect();
    assert_eq!(ok.len(), 1);
    assert!(ok[0] == "one" || ok[0] == "two");
    let err = outcomes
        .iter()
        .find_map(|(_, o)| o.as_ref().err())
        .unwrap()
        .to_string();
    assert!(
        err.contains("same-key") && err.contains("also the key of"),
        "{err}"
    );
}
