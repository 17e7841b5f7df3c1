//! Map/fold directives in a cluster: results come back over the
//! directive's NATS subject from whichever worker ran each task.

use std::time::{Duration, Instant};

use colony_client::{Client, DirectiveOptions, Error, Operation};
use colony_core::TaskState;
use colony_core::wire::DirectiveEvent;
use colony_testsupport::{NatsServer, TestServer, guests};

use super::{SERIAL, client, known_everywhere, worker};

#[path = "../common/directives.rs"]
mod common;
use common::{deploy_builtins, directive_tasks, settled};

/// Three workers on `nats`, each with `extra` flags.
fn three_workers(nats: &NatsServer, extra: &[&str]) -> [TestServer; 3] {
    [
        worker(nats, extra),
        worker(nats, extra),
        worker(nats, extra),
    ]
}

/// The builtins, deployed on the first and known to all.
async fn with_builtins(w: &[TestServer; 3]) {
    deploy_builtins(&client(&w[0])).await;
    let all: Vec<_> = w.iter().collect();
    for name in ["square", "add", "echo"] {
        known_everywhere(&all, name).await;
    }
}

/// How many tasks of a directive are in `state` (any, when `None`).
async fn count(client: &Client, directive: &str, state: Option<TaskState>) -> usize {
    directive_tasks(client, directive, state).await.len()
}

#[tokio::test(flavor = "multi_thread")]
async fn sum_of_squares_over_100000_inputs_in_a_three_worker_cluster() {
    let _serial = SERIAL.lock().await;
    let nats = NatsServer::start();
    let w = three_workers(&nats, &[]);
    with_builtins(&w).await;
    let square = Operation::<u64, u64>::new("square");
    let add = Operation::<(u64, u64), u64>::new("add");
    let started = Instant::now();
    let sum = client(&w[1])
        .map(&square, 1..=100_000u64)
        .window(512)
        .fold(0, |a, b| a + b)
        .await
        .unwrap();
    eprintln!(
        "cluster map of 100,000 inputs, local fold: {:?}",
        started.elapsed()
    );
    assert_eq!(sum, 333_338_333_350_000);
    // Every worker ran some: the results came back over NATS.
    let mut finished = Vec::new();
    for s in &w {
        finished.push(client(s).status().await.unwrap().tasks.finished);
    }
    assert_eq!(finished.iter().sum::<u64>(), 100_000, "{finished:?}");
    assert!(finished.iter().all(|&n| n > 0), "{finished:?}");
    // The remote fold: every combination a task too.
    let started = Instant::now();
    let sum = client(&w[2])
        .map(&square, 1..=5000u64)
        .fold_op(&add, 0)
        .await
        .unwrap();
    eprintln!(
        "cluster map+fold_op of 5,000 inputs: {:?}",
        started.elapsed()
    );
    assert_eq!(sum, 5000 * 5001 * 10001 / 6);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_directives_on_two_workers_receive_only_their_own_results() {
    let _serial = SERIAL.lock().await;
    let nats = NatsServer::start();
    let w = three_workers(&nats, &[]);
    with_builtins(&w).await;
    // A channel with no task of its own, on the third worker.
    let mut quiet = client(&w[2]).directive_events("quiet").await.unwrap();
    let first = quiet.chunk().await.unwrap().unwrap();
    let open: DirectiveEvent = serde_json::from_slice(first.trim_ascii_end()).unwrap();
    assert!(matches!(open, DirectiveEvent::Open { .. }));
    let square = Operation::<i64, i64>::new("square");
    let echo = Operation::<String, String>::new("echo");
    let a = client(&w[0])
        .map(&square, 1..=2000i64)
        .options(DirectiveOptions {
            id: Some("a".into()),
            ..Default::default()
        });
    let b = client(&w[1])
        .map(&echo, (0..2000).map(|i| format!("b-{i}")))
        .options(DirectiveOptions {
            id: Some("b".into()),
            ..Default::default()
        });
    let (a, b) = tokio::join!(a.collect(), b.collect());
    assert_eq!(a.unwrap(), (1..=2000i64).map(|i| i * i).collect::<Vec<_>>());
    assert_eq!(
        b.unwrap(),
        (0..2000).map(|i| format!("b-{i}")).collect::<Vec<_>>()
    );
    let heard = tokio::time::timeout(Duration::from_millis(300), quiet.chunk()).await;
    assert!(heard.is_err(), "the quiet channel heard {heard:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fatal_error_aborts_a_directive_across_the_cluster() {
    let _serial = SERIAL.lock().await;
    let nats = NatsServer::start();
    let w = three_workers(&nats, &["--concurrency", "2"]);
    let all: Vec<_> = w.iter().collect();
    client(&w[0])
        .deploy("work", guests::c_guest("work"), &Default::default())
        .await
        .unwrap();
    known_everywhere(&all, "work").await;
    let work = Operation::<i64, i64>::new("work");
    let c = client(&w[1]);
    let err = c
        .map(&work, (0..500).map(|i| if i == 30 { -3 } else { 150 }))
        .options(DirectiveOptions {
            id: Some("fatal".into()),
            window: 48,
            ..Default::default()
        })
        .collect()
        .await
        .unwrap_err();
    let returned = Instant::now();
    assert!(
        matches!(err, Error::TaskFailed { ref input, .. } if input.contains("#30")),
        "{err}"
    );
    assert!(err.to_string().contains("refused input -3"), "{err}");
    let took = settled(&c, "fatal", returned, Duration::from_secs(1)).await;
    eprintln!("nothing queued or running {took:?} after the error returned");
    assert!(count(&c, "fatal", Some(TaskState::Cancelled)).await > 0);
    assert!(count(&c, "fatal", None).await < 150);
}
