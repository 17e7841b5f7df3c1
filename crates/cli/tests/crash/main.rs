//! Crash test: tasks survive a SIGKILL of the worker.
//!
//! Submits 5,000 tasks of a ~1 ms function from 32 connections, kills the
//! real `colony serve` process with SIGKILL while tasks are queued and
//! running, restarts it on the same data directory, submits the rest, and
//! proves by counting ids that every task that got a 202 reached a
//! terminal state: none lost, none left queued or running.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use colony_client::{Client, TaskQuery};
use colony_core::TaskState;
use colony_core::wire::SubmitTask;
use colony_testsupport::{TestServer, guests};
use parking_lot::Mutex;

const TOTAL: usize = 5000;
const KILL_AT: usize = 2500;
const SUBMITTERS: usize = 32;

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_colony"))
}

/// Submits until `target` tasks were accepted in all, or the server goes
/// away; returns when either happens.
async fn submit_until(client: &Client, accepted: &Arc<Mutex<Vec<String>>>, target: usize) {
    let next = Arc::new(AtomicUsize::new(accepted.lock().len()));
    let mut joins = Vec::new();
    for _ in 0..SUBMITTERS {
        let (client, accepted, next) = (client.clone(), accepted.clone(), next.clone());
        joins.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::AcqRel) < target {
                let req = SubmitTask {
                    function: "work".into(),
                    input: Some("1".into()),
                    ..Default::default()
                };
                match client.submit(&req).await {
                    Ok(s) => accepted.lock().push(s.id.to_string()),
                    // The server was killed: whatever was not answered was
                    // not accepted, so it does not count.
                    Err(_) => return,
                }
            }
        }));
    }
    for j in joins {
        j.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_accepted_task_is_lost_when_the_worker_is_killed() {
    let mut server = TestServer::start(&bin(), &["--concurrency", "16"]);
    let client = Client::new(&server.url).unwrap();
    client
        .deploy("work", guests::c_guest("spin"), &Default::default())
        .await
        .unwrap();

    let accepted = Arc::new(Mutex::new(Vec::new()));
    // Kill the server once KILL_AT tasks are accepted, mid-stream.
    let submitting = {
        let (client, accepted) = (client.clone(), accepted.clone());
        tokio::spawn(async move { submit_until(&client, &accepted, TOTAL).await })
    };
    let t0 = Instant::now();
    while accepted.lock().len() < KILL_AT {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "submissions stalled"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let before_kill = client.status().await.unwrap();
    server.kill();
    submitting.await.unwrap();
    let accepted_before = accepted.lock().len();
    eprintln!(
        "killed with {accepted_before} accepted; status just before: {} queued, {} running, {} finished",
        before_kill.tasks.queued, before_kill.tasks.running, before_kill.tasks.finished
    );
    assert!(
        before_kill.tasks.queued + before_kill.tasks.running > 0,
        "nothing was in flight at the kill"
    );

    server.restart();
    let client = Client::new(&server.url).unwrap();
    submit_until(&client, &accepted, TOTAL).await;
    let accepted: Vec<String> = accepted.lock().clone();
    assert_eq!(accepted.len(), TOTAL);
    assert_eq!(
        accepted.iter().collect::<HashSet<_>>().len(),
        TOTAL,
        "duplicate ids"
    );

    // Wait until the worker has nothing queued or running.
    let t0 = Instant::now();
    loop {
        let s = client.status().await.unwrap();
        if s.tasks.queued == 0 && s.tasks.running == 0 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "tasks never finished: {:?}",
            s.tasks
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Count every task the store has, page by page.
    let mut states: HashMap<String, (TaskState, u32, Option<String>)> = HashMap::new();
    let mut after = None;
    loop {
        let page = client
            .tasks(&TaskQuery {
                limit: Some(1000),
                after: after.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        for t in &page.tasks {
            let code = t.error.as_ref().map(|e| e.code.clone());
            states.insert(t.id.to_string(), (t.state, t.attempts, code));
        }
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    let mut lost = 0;
    let mut by_state: HashMap<TaskState, usize> = HashMap::new();
    let mut retried = 0;
    for id in &accepted {
        match states.get(id) {
            None => lost += 1,
            Some((state, attempts, _)) => {
                *by_state.entry(*state).or_default() += 1;
                if *attempts > 1 {
                    retried += 1;
                }
            }
        }
    }
    eprintln!("after restart: {by_state:?}; {retried} ran again after the kill; {lost} lost");
    assert_eq!(lost, 0, "accepted tasks missing from the store");
    assert!(
        by_state.keys().all(|s| s.is_terminal()),
        "tasks left unfinished: {by_state:?}"
    );
    // A 1 ms function that retries a lost worker three times succeeds.
    assert_eq!(
        by_state.get(&TaskState::Succeeded).copied().unwrap_or(0),
        TOTAL,
        "{by_state:?}"
    );
}
