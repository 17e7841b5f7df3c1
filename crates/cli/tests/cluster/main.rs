//! Cluster tests: several real `colony serve --nats` processes around one
//! real `nats-server -js`.
//!
//! Each test starts its own NATS server and workers (every worker on its
//! own data directory), drives them over HTTP with [`Client`], and breaks
//! things the way production does: SIGKILL or SIGTERM of a worker, a
//! restart of NATS, a submit right after a deploy elsewhere, calls on a
//! worker with no free slot. Workers run with `--ack-wait 3s --heartbeat
//! 250ms` so a dead worker's tasks come back, and its entry leaves
//! `/workers`, within seconds.
//!
//! Before any of that, `colony serve --nats` must refuse, with a clear
//! error and a non-zero exit, a NATS it cannot use: an unreachable one, a
//! real nats-server without JetStream, and a real one older than 2.11
//! (Debian's 2.9.10, unpacked by `scripts/install-nats-old.sh`); and a
//! worker must refuse to join a cluster whose ack wait, heartbeat or task
//! TTL differ from its own.
//!
//! The tests take a process-wide lock, so they run one at a time even
//! under a parallel test runner: each starts up to four processes on a
//! small machine.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use colony_client::{Client, DeployOptions};
use colony_core::TaskState;
use colony_core::wire::{SubmitTask, TaskInfo, WorkerList, WorkerRole, WorkerState};
use colony_testsupport::{NatsServer, TestServer, guests, nats_server_bin, old_nats_server_bin};
use parking_lot::Mutex;

mod directives;

/// A dead worker's unacknowledged tasks are redelivered after this.
const ACK_WAIT: &str = "3s";
/// Workers beat this often; one is gone after three missed beats.
const HEARTBEAT: &str = "250ms";

/// One test at a time: each runs a NATS server and up to four workers.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_colony"))
}

/// Starts a worker in the cluster of `nats`, with `extra` flags.
fn worker(nats: &NatsServer, extra: &[&str]) -> TestServer {
    let url = nats.url();
    let mut args = vec![
        "--nats",
        url.as_str(),
        "--ack-wait",
        ACK_WAIT,
        "--heartbeat",
        HEARTBEAT,
    ];
    args.extend_from_slice(extra);
    TestServer::start(&bin(), &args)
}

fn client(server: &TestServer) -> Client {
    Client::new(&server.url).unwrap()
}

/// `host:port` of a URL, without scheme or trailing slash.
fn host_port(url: &str) -> &str {
    let url = url.split_once("://").map_or(url, |(_, rest)| rest);
    url.trim_end_matches('/')
}

/// The id `server` has in `list`: its entry's id ends with `:<pid>`
/// (ids are `host:pid`) or its address is the server's.
fn id_in(list: &WorkerList, server: &TestServer) -> Option<String> {
    let pid = format!(":{}", server.pid());
    list.workers
        .iter()
        .find(|w| {
            w.id.ends_with(&pid)
                || w.address
                    .as_deref()
                    .is_some_and(|a| host_port(a) == host_port(&server.url))
        })
        .map(|w| w.id.clone())
}

/// The worker id of `server`, from its own `GET /workers` (waiting up
/// to 10 s for it to list itself).
async fn own_id(server: &TestServer) -> String {
    let c = client(server);
    let what = format!("{} lists itself in /workers", server.url);
    let (id, _) = eventually(Duration::from_secs(10), &what, || {
        let c = c.clone();
        async move { id_in(&c.workers().await.ok()?, server) }
    })
    .await;
    id
}

/// Polls `check` every 20 ms until it returns `Some`, or panics after
/// `limit` with `what`. Returns the value and how long it took.
async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> (T, Duration)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let t0 = Instant::now();
    loop {
        if let Some(v) = check().await {
            return (v, t0.elapsed());
        }
        assert!(t0.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until every one of `servers` knows function `name`.
async fn known_everywhere(servers: &[&TestServer], name: &str) {
    for s in servers {
        let c = client(s);
        let (_, took) = eventually(
            Duration::from_secs(10),
            &format!("{name} known on {}", s.url),
            || {
                let c = c.clone();
                async move { c.function(name).await.ok() }
            },
        )
        .await;
        eprintln!("{name} known on {} after {took:?}", s.url);
    }
}

/// Deploys the ~1 ms task function `work` (the `spin` C guest; input "1"
/// is 1 ms of CPU) on `on`, and waits until `all` know it.
async fn deploy_work(on: &TestServer, all: &[&TestServer]) {
    client(on)
        .deploy("work", guests::c_guest("spin"), &DeployOptions::default())
        .await
        .unwrap();
    known_everywhere(all, "work").await;
}

/// A task of `work` that burns `ms` milliseconds of CPU.
fn work_task(ms: u32) -> SubmitTask {
    SubmitTask {
        function: "work".into(),
        input: Some(ms.to_string()),
        ..Default::default()
    }
}

/// What the submitters did.
#[derive(Debug, Default)]
struct Submissions {
    /// Ids answered 202 (created), in the order the answers came.
    accepted: Mutex<Vec<String>>,
    /// Submits that failed or timed out: not accepted, tried again.
    errors: AtomicUsize,
}

/// Submits copies of `task` from `submitters` concurrent loops until
/// `target` were accepted, the n-th on `clients[n % len]`; a failed submit
/// is tried again on the next client after 10 ms. Panics after `limit`.
async fn submit_spread(
    clients: Vec<Client>,
    subs: Arc<Submissions>,
    task: SubmitTask,
    target: usize,
    submitters: usize,
    limit: Duration,
) {
    let task = Arc::new(task);
    let claimed = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + limit;
    let mut joins = Vec::new();
    for _ in 0..submitters {
        let (clients, subs, claimed) = (clients.clone(), subs.clone(), claimed.clone());
        let task = task.clone();
        joins.push(tokio::spawn(async move {
            loop {
                let mut n = claimed.fetch_add(1, Ordering::AcqRel);
                if n >= target {
                    return;
                }
                loop {
                    assert!(
                        Instant::now() < deadline,
                        "submissions did not finish within {limit:?}: {} accepted, {} errors",
                        subs.accepted.lock().len(),
                        subs.errors.load(Ordering::Relaxed)
                    );
                    let c = &clients[n % clients.len()];
                    let answer =
                        tokio::time::timeout(Duration::from_secs(10), c.submit(&task)).await;
                    match answer {
                        Ok(Ok(s)) if s.created => {
                            subs.accepted.lock().push(s.id.to_string());
                            break;
                        }
                        Ok(Ok(s)) => panic!("a submit without a key was not created: {s:?}"),
                        Ok(Err(_)) | Err(_) => {
                            subs.errors.fetch_add(1, Ordering::Relaxed);
                            n += 1;
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
            }
        }));
    }
    for j in joins {
        j.await.unwrap();
    }
}

/// Queries every id (the i-th on `clients[i % len]`, 16 at a time) until
/// all are `succeeded`; panics when one ends otherwise or after `limit`.
/// Returns each task as last read.
async fn all_succeed(clients: &[Client], ids: &[String], limit: Duration) -> Vec<TaskInfo> {
    let t0 = Instant::now();
    let mut pending: Vec<(usize, String)> = ids.iter().cloned().enumerate().collect();
    let mut done: HashMap<String, TaskInfo> = HashMap::new();
    let mut last_report = Instant::now();
    while !pending.is_empty() {
        let chunk = pending.len().div_ceil(16);
        let mut joins = Vec::new();
        for part in pending.chunks(chunk) {
            let part = part.to_vec();
            let clients = clients.to_vec();
            joins.push(tokio::spawn(async move {
                let mut read = Vec::new();
                for (i, id) in part {
                    let info = clients[i % clients.len()].task(&id).await.ok();
                    read.push((i, id, info));
                }
                read
            }));
        }
        let mut still = Vec::new();
        let mut states: HashMap<String, usize> = HashMap::new();
        // A few of those not finished, as read, for the failure message.
        let mut stuck: Vec<Option<TaskInfo>> = Vec::new();
        for j in joins {
            for (i, id, info) in j.await.unwrap() {
                match info {
                    Some(t) if t.state == TaskState::Succeeded => {
                        done.insert(id, t);
                    }
                    Some(t) if t.state.is_terminal() => {
                        panic!("task {id} ended {}: {t:?}", t.state)
                    }
                    other => {
                        let state = other
                            .as_ref()
                            .map_or("unreadable".to_owned(), |t| t.state.to_string());
                        *states.entry(state).or_default() += 1;
                        if stuck.len() < 3 {
                            stuck.push(other);
                        }
                        still.push((i, id));
                    }
                }
            }
        }
        pending = still;
        if pending.is_empty() {
            break;
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            eprintln!(
                "{:?}: {} succeeded, {} not yet: {states:?}",
                t0.elapsed(),
                done.len(),
                pending.len()
            );
            last_report = Instant::now();
        }
        assert!(
            t0.elapsed() < limit,
            "{} tasks not succeeded within {limit:?}: {states:?}, e.g. {stuck:#?}",
            pending.len(),
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("all {} succeeded after {:?}", done.len(), t0.elapsed());
    ids.iter().map(|id| done[id].clone()).collect()
}

/// Tasks finished on these workers, by their `/status`.
async fn finished(clients: &[Client]) -> u64 {
    let mut sum = 0;
    for c in clients {
        if let Ok(s) = c.status().await {
            sum += s.tasks.finished;
        }
    }
    sum
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_lose_no_task_when_one_is_killed() {
    const TOTAL: usize = 2000;
    const SUBMITTERS: usize = 16;
    let _serial = SERIAL.lock().await;
    let nats = NatsServer::start();
    let a = worker(&nats, &["--concurrency", "8"]);
    let mut b = worker(&nats, &["--concurrency", "8"]);
    let c = worker(&nats, &["--concurrency", "8"]);
    deploy_work(&a, &[&a, &b, &c]).await;
    let (ca, cb, cc) = (client(&a), client(&b), client(&c));

    let subs = Arc::new(Submissions::default());
    let submitting = tokio::spawn(submit_spread(
        vec![ca.clone(), cb.clone(), cc.clone()],
        subs.clone(),
        work_task(1),
        TOTAL,
        SUBMITTERS,
        Duration::from_secs(120),
    ));

    // Kill B once about a third have succeeded (by the workers' own
    // counts), or at the latest once two thirds were accepted.
    let all = [ca.clone(), cb.clone(), cc.clone()];
    let t0 = Instant::now();
    let why = loop {
        let done = finished(&all).await;
        if done >= (TOTAL / 3) as u64 {
            break format!("{done} finished");
        }
        let accepted = subs.accepted.lock().len();
        if accepted >= TOTAL * 2 / 3 {
            break format!("{accepted} accepted, only {done} finished by /status");
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "no progress: {done} finished, {accepted} accepted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let before = cb.status().await.unwrap();
    b.kill();
    let killed_at = Instant::now();
    eprintln!(
        "killed B at {why}, {} accepted; B just before: {} running, {} tasks running, {} tasks queued",
        subs.accepted.lock().len(),
        before.running,
        before.tasks.running,
        before.tasks.queued
    );

    submitting.await.unwrap();
    let accepted: Vec<String> = subs.accepted.lock().clone();
    eprintln!(
        "{} accepted, {} submit errors",
        accepted.len(),
        subs.errors.load(Ordering::Relaxed)
    );
    assert_eq!(accepted.len(), TOTAL);
    let distinct: HashSet<&String> = accepted.iter().collect();
    assert_eq!(distinct.len(), TOTAL, "an id was accepted twice");

    let left = Duration::from_secs(120).saturating_sub(killed_at.elapsed());
    let infos = all_succeed(&[ca, cc], &accepted, left).await;
    let succeeded: HashSet<&str> = infos
        .iter()
        .filter(|t| t.state == TaskState::Succeeded)
        .map(|t| t.id.as_str())
        .collect();
    assert_eq!(succeeded.len(), TOTAL);

    let again: Vec<(&str, u32, Option<&str>)> = infos
        .iter()
        .filter(|t| t.attempts > 1)
        .map(|t| (t.id.as_str(), t.attempts, t.worker.as_deref()))
        .collect();
    eprintln!(
        "{} of {TOTAL} ran more than once (in flight on B at the kill): {again:?}",
        again.len()
    );
    assert!(again.len() < 100, "{} tasks ran again", again.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restart_during_submissions_loses_no_accepted_task() {
    const TOTAL: usize = 1500;
    const RESTART_AT: usize = 500;
    let _serial = SERIAL.lock().await;
    let mut nats = NatsServer::start();
    let a = worker(&nats, &["--concurrency", "8"]);
    let b = worker(&nats, &["--concurrency", "8"]);
    deploy_work(&a, &[&a, &b]).await;
    let (ca, cb) = (client(&a), client(&b));

    let subs = Arc::new(Submissions::default());
    let submitting = tokio::spawn(submit_spread(
        vec![ca.clone(), cb.clone()],
        subs.clone(),
        work_task(1),
        TOTAL,
        8,
        Duration::from_secs(120),
    ));
    let (_, took) = eventually(
        Duration::from_secs(60),
        "submissions before the restart",
        || {
            let n = subs.accepted.lock().len();
            async move { (n >= RESTART_AT).then_some(()) }
        },
    )
    .await;
    let errors_before = subs.errors.load(Ordering::Relaxed);
    let accepted_before = subs.accepted.lock().len();
    // Down for half a second, then back on the same port and store.
    tokio::task::block_in_place(|| {
        nats.kill();
        std::thread::sleep(Duration::from_millis(500));
        nats.restart();
    });
    let accepted_at_restart = subs.accepted.lock().len();
    eprintln!(
        "restarted NATS after {took:?}: {accepted_before} accepted before the kill, \
         {accepted_at_restart} when it was back"
    );

    submitting.await.unwrap();
    let accepted: Vec<String> = subs.accepted.lock().clone();
    eprintln!(
        "{} accepted; {} submit errors ({} before the restart)",
        accepted.len(),
        subs.errors.load(Ordering::Relaxed),
        errors_before
    );
    assert_eq!(accepted.len(), TOTAL);
    assert_eq!(
        accepted.iter().collect::<HashSet<_>>().len(),
        TOTAL,
        "an id was accepted twice"
    );

    let infos = all_succeed(&[ca, cb], &accepted, Duration::from_secs(120)).await;
    let again = infos.iter().filter(|t| t.attempts > 1).count();
    eprintln!("{again} of {TOTAL} ran more than once");
    assert_eq!(
        infos
            .iter()
            .filter(|t| t.state == TaskState::Succeeded)
            .count(),
        TOTAL
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_on_a_runs_on_c_and_default_switch_on_b_shows_everywhere() {
    let _serial = SERIAL.lock().await;
    let nats = NatsServer::start();
    let a = worker(&nats, &[]);
    let b = worker(&nats, &[]);
    let c = worker(&nats, &[]);
    let (ca, cb, cc) = (client(&a), client(&b), client(&c));

    let rev1 = ca
        .deploy("echo", guests::ECHO, &DeployOptions::default())
        .await
        .unwrap();
    assert!(rev1.created && rev1.default, "{rev1:?}");
    let rev1 = rev1.revision.as_str().to_owned();

    // A call on C runs what was deployed on A.
    let (out, took) = eventually(Duration::from_secs(10), "echo runs on C", || {
        let cc = cc.clone();
        async move { cc.invoke("echo", "hello from C").await.ok() }
    })
    .await;
    eprintln!("deployed on A, first call on C succeeded after {took:?}");
    assert_eq!(&out.output[..], b"hello from C");
    assert_eq!(out.revision, rev1);

    // So does a task submitted, and waited for, on C.
    let task = cc
        .submit(&SubmitTask {
            function: "echo".into(),
            input: Some("task on C".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let id = task.id.to_string();
    let done = cc.wait_task(&id, Duration::from_secs(30)).await.unwrap();
    assert_eq!(done.state, TaskState::Succeeded, "{done:?}");
    assert_eq!(done.revision.as_str(), rev1);
    assert_eq!(&cc.task_result(&id).await.unwrap()[..], b"task on C");

    // A second revision, not the default.
    let rev2 = ca
        .deploy(
            "echo",
            guests::ECHO,
            &DeployOptions {
                timeout: Some("2s".into()),
                make_default: Some(false),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(rev2.created && !rev2.default, "{rev2:?}");
    let rev2 = rev2.revision.as_str().to_owned();
    assert_ne!(rev1, rev2);

    // B switches the default once it knows the revision.
    let (_, took) = eventually(Duration::from_secs(10), "rev2 known on B", || {
        let cb = cb.clone();
        let rev2 = rev2.clone();
        async move {
            let f = cb.function("echo").await.ok()?;
            f.revisions
                .iter()
                .any(|r| r.id.as_str() == rev2)
                .then_some(())
        }
    })
    .await;
    eprintln!("rev2 deployed on A known on B after {took:?}");
    let set = cb.set_default("echo", &rev2).await.unwrap();
    assert_eq!(set.default_revision.as_str(), rev2);
    let switched = Instant::now();
    assert_eq!(
        cb.function("echo").await.unwrap().default_revision.as_str(),
        rev2
    );

    // A and C show it, and run it, within a second.
    for (name, cl) in [("A", &ca), ("C", &cc)] {
        eventually(
            Duration::from_secs(1),
            &format!("rev2 default on {name}"),
            || {
                let cl = cl.clone();
                let rev2 = rev2.clone();
                async move {
                    let f = cl.function("echo").await.ok()?;
                    if f.default_revision.as_str() != rev2 {
                        return None;
                    }
                    let out = cl.invoke("echo", "which").await.ok()?;
                    (out.revision == rev2).then_some(())
                }
            },
        )
        .await;
        eprintln!(
            "default switched on B: {name} shows and runs rev2 {:?} after the switch",
            switched.elapsed()
        );
    }
    assert!(switched.elapsed() < Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_leaves_workers_within_its_ttl() {
    let _serial = SERIAL.lock().await;
    let nats = NatsServer::start();
    let a = worker(&nats, &["--concurrency", "4"]);
    let b = worker(&nats, &["--concurrency", "4"]);
    let mut c = worker(&nats, &["--concurrency", "4"]);
    let ca = client(&a);
    ca.deploy("echo", guests::ECHO, &DeployOptions::default())
        .await
        .unwrap();
    ca.invoke("echo", "warm up").await.unwrap();

    // All three listed, with their load; echo warm on A.
    let a_id = own_id(&a).await;
    let (list, took) = eventually(Duration::from_secs(10), "3 workers listed on A", || {
        let ca = ca.clone();
        async move {
            let list = ca.workers().await.ok()?;
            (list.workers.len() == 3).then_some(list)
        }
    })
    .await;
    let (_, warm) = eventually(Duration::from_secs(5), "echo warm on A in /workers", || {
        let ca = ca.clone();
        let a_id = a_id.clone();
        async move {
            let list = ca.workers().await.ok()?;
            let me = list.workers.into_iter().find(|w| w.id == a_id)?;
            me.warm_functions.iter().any(|f| f == "echo").then_some(())
        }
    })
    .await;
    eprintln!("echo listed warm on A {warm:?} after the 3 workers were");
    eprintln!("3 workers listed after {took:?}: {list:#?}");
    assert!(list.cluster);
    assert_eq!(list.heartbeat_ttl_ms, 750, "3 × {HEARTBEAT}");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    for w in &list.workers {
        assert_eq!(w.role, WorkerRole::Worker, "{w:?}");
        assert_eq!(w.state, WorkerState::Ready, "{w:?}");
        assert_eq!(w.concurrency, 4, "{w:?}");
        assert!(!w.version.is_empty(), "{w:?}");
        assert!(w.running <= w.concurrency, "{w:?}");
        assert!(w.started_ms <= w.heartbeat_ms, "{w:?}");
        assert!(
            now_ms - w.heartbeat_ms < list.heartbeat_ttl_ms as i64 + 1000,
            "a stale heartbeat listed: {w:?}"
        );
    }
    let ids: Vec<String> = [&a, &b, &c]
        .iter()
        .map(|s| id_in(&list, s).unwrap_or_else(|| panic!("{} not listed: {list:?}", s.url)))
        .collect();
    let distinct: HashSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), 3, "{ids:?}");

    c.kill();
    let (list, took) = eventually(
        Duration::from_millis(list.heartbeat_ttl_ms + 5000),
        "C leaves /workers on A",
        || {
            let ca = ca.clone();
            async move {
                let list = ca.workers().await.ok()?;
                (list.workers.len() == 2).then_some(list)
            }
        },
    )
    .await;
    eprintln!(
        "C left /workers {took:?} after its SIGKILL (ttl {} ms)",
        list.heartbeat_ttl_ms
    );
    let left: HashSet<&str> = list.workers.iter().map(|w| w.id.as_str()).collect();
    assert_eq!(left, HashSet::from([ids[0].as_str(), ids[1].as_str()]));
    assert!(
        took < Duration::from_millis(list.heartbeat_ttl_ms + 1000),
        "took {took:?}"
    );

    // The CLI shows the same two.
    let out = tokio::task::block_in_place(|| {
        std::process::Command::new(bin())
            .args(["workers", "--server", &a.url])
            .output()
            .unwrap()
    });
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("colony workers:\n{text}");
    let rows: Vec<&str> = text
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(rows.len(), 2, "{text}");
    for id in &ids[..2] {
        assert!(rows.contains(&id.as_str()), "{id} missing:\n{text}");
    }
    assert!(!rows.contains(&ids[2].as_str()), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_across_workers() {
    let _serial = SERIAL.lock().await;
    let nats = NatsServer::start();
    let servers = [
        worker(&nats, &["--concurrency", "1"]),
        worker(&nats, &["--concurrency", "1"]),
        worker(&nats, &["--concurrency", "1"]),
    ];
    let ca = client(&servers[0]);
    ca.deploy(
        "spin",
        guests::LOOP,
        &DeployOptions {
            timeout: Some("10m".into()),
            max_attempts: Some(1),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    known_everywhere(&servers.iter().collect::<Vec<_>>(), "spin").await;
    let a_id = own_id(&servers[0]).await;

    // Long tasks, submitted on A, until one runs elsewhere.
    let mut ids = Vec::new();
    let t0 = Instant::now();
    let (target, worker_id) = loop {
        if ids.len() < 3 || (t0.elapsed() > Duration::from_secs(3) && ids.len() < 10) {
            let s = ca
                .submit(&SubmitTask {
                    function: "spin".into(),
                    ..Default::default()
                })
                .await
                .unwrap();
            ids.push(s.id.to_string());
        }
        let mut found = None;
        for id in &ids {
            let t = ca.task(id).await.unwrap();
            if t.state == TaskState::Running
                && let Some(w) = t.worker.as_deref()
                && w != a_id
            {
                found = Some((id.clone(), w.to_owned()));
                break;
            }
        }
        if let Some(f) = found {
            break f;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no task ran outside A ({a_id}): {ids:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!("task {target} runs on {worker_id}, cancelling it on A ({a_id})");

    let t0 = Instant::now();
    let first = ca.cancel_task(&target).await.unwrap();
    let answered = t0.elapsed();
    let mut state = first.state;
    while state != TaskState::Cancelled {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "still {state} after cancel"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
        state = ca.task(&target).await.unwrap().state;
    }
    let took = t0.elapsed();
    eprintln!(
        "cancel on A of a task on another worker: answered {answered:?} ({}), reads cancelled after {took:?}",
        first.state
    );
    assert!(took < Duration::from_millis(200), "took {took:?}");

    // The worker that ran it stops the guest: once the others are
    // cancelled too, it runs nothing.
    for id in ids.iter().filter(|id| **id != target) {
        let _ = ca.cancel_task(id).await;
    }
    let list = ca.workers().await.unwrap();
    let runner = servers
        .iter()
        .find(|s| id_in(&list, s).as_deref() == Some(worker_id.as_str()))
        .unwrap_or_else(|| panic!("{worker_id} is none of the servers: {list:?}"));
    let cr = client(runner);
    let (_, idle) = eventually(Duration::from_secs(5), "the runner goes idle", || {
        let cr = cr.clone();
        async move {
            let s = cr.status().await.ok()?;
            (s.running == 0 && s.tasks.running == 0).then_some(())
        }
    })
    .await;
    eprintln!("the worker that ran it was idle {idle:?} after the other cancels");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_routes_calls() {
    let _serial = SERIAL.lock().await;
    let nats = NatsServer::start();
    let gateway = worker(&nats, &["--role", "gateway"]);
    let runner = worker(&nats, &[]);
    let (cg, cr) = (client(&gateway), client(&runner));
    cr.deploy("echo", guests::ECHO, &DeployOptions::default())
        .await
        .unwrap();
    known_everywhere(&[&gateway, &runner], "echo").await;
    let runner_id = own_id(&runner).await;
    let gateway_list = cg.workers().await.unwrap();
    let gateway_id = id_in(&gateway_list, &gateway);
    eprintln!("gateway {gateway_id:?}, runner {runner_id}; {gateway_list:?}");
    if let Some(id) = &gateway_id {
        let me = gateway_list.workers.iter().find(|w| &w.id == id).unwrap();
        assert_eq!(me.role, WorkerRole::Gateway, "{me:?}");
    }

    let before = cr.status().await.unwrap().invocations.succeeded;
    let out = cg.invoke("echo", "through the gateway").await.unwrap();
    assert_eq!(&out.output[..], b"through the gateway");
    let after = cr.status().await.unwrap().invocations.succeeded;
    let g = cg.status().await.unwrap();
    eprintln!(
        "runner invocations {before} -> {after}; gateway: {:?}, engine {:?}",
        g.invocations, g.engine
    );
    assert!(
        after > before || g.invocations.succeeded == 0,
        "the gateway ran the call itself"
    );

    let s = cg
        .submit(&SubmitTask {
            function: "echo".into(),
            input: Some("a task through the gateway".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let id = s.id.to_string();
    let done = cg.wait_task(&id, Duration::from_secs(30)).await.unwrap();
    assert_eq!(done.state, TaskState::Succeeded, "{done:?}");
    assert_eq!(done.worker.as_deref(), Some(runner_id.as_str()), "{done:?}");
    assert_eq!(
        &cg.task_result(&id).await.unwrap()[..],
        b"a task through the gateway"
    );
}

/// C may not have seen a function deployed on A a moment ago: it may
/// refuse it (`function_not_found`) until its registry shows it, never
/// after, and a task of it, wherever it runs, succeeds. 20 rounds, each
/// with a new function.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_submitted_right_after_a_deploy_elsewhere_runs() {
    const ROUNDS: usize = 20;
    let _serial = SERIAL.lock().await;
    let nats = NatsServer::start();
    let a = worker(&nats, &[]);
    let c = worker(&nats, &[]);
    let (ca, cc) = (client(&a), client(&c));
    let (a_id, c_id) = (own_id(&a).await, own_id(&c).await);

    let mut refused_submits = 0;
    let mut refused_runs = 0;
    let mut tries_per_round = Vec::new();
    let mut ran_on: HashMap<String, usize> = HashMap::new();
    for round in 0..ROUNDS {
        let name = format!("race-{round:02}");
        let input = format!("round {round}");
        let deployed = ca
            .deploy(&name, guests::ECHO, &DeployOptions::default())
            .await
            .unwrap();
        assert!(deployed.created && deployed.default, "{deployed:?}");
        let rev = deployed.revision.as_str().to_owned();

        // At once on C: a call (never retried) and a submit. Each may be
        // refused, as function_not_found, only while C has not seen it.
        let run_input = format!("call {round}");
        let task = SubmitTask {
            function: name.clone(),
            input: Some(input.clone()),
            ..Default::default()
        };
        let (run, first) = tokio::join!(cc.invoke(&name, run_input.clone()), cc.submit(&task));
        match run {
            Ok(out) => {
                assert_eq!(&out.output[..], run_input.as_bytes(), "{name}");
                assert_eq!(out.revision, rev, "{name}");
            }
            Err(e) if e.code() == Some("function_not_found") => refused_runs += 1,
            Err(e) => panic!("/run/{name} on C right after the deploy on A: {e}"),
        }

        // The submit, tried again until accepted; once C shows the
        // function it must never refuse it.
        let t0 = Instant::now();
        let mut tries = 1;
        let mut answer = first;
        let submitted = loop {
            let e = match answer {
                Ok(s) => break s,
                Err(e) => e,
            };
            assert_eq!(
                e.code(),
                Some("function_not_found"),
                "submit of {name} on C, try {tries}: {e}"
            );
            if tries == 1 {
                refused_submits += 1;
            }
            let seen = cc.function(&name).await.is_ok();
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "{name} still refused on C after {tries} tries"
            );
            tries += 1;
            answer = cc.submit(&task).await;
            if seen && let Err(e) = &answer {
                panic!("C showed {name}, then refused a submit of it: {e}");
            }
        };
        assert!(submitted.created, "{submitted:?}");
        tries_per_round.push(tries);

        // Once accepted, a call on C runs at the first try.
        let out = cc
            .invoke(&name, run_input.clone())
            .await
            .unwrap_or_else(|e| {
                panic!("/run/{name} on C after C accepted a task of it: {e}");
            });
        assert_eq!(&out.output[..], run_input.as_bytes());
        assert_eq!(out.revision, rev);

        let id = submitted.id.to_string();
        let done = cc.wait_task(&id, Duration::from_secs(30)).await.unwrap();
        assert_eq!(done.state, TaskState::Succeeded, "{name}: {done:?}");
        assert_eq!(done.revision.as_str(), rev, "{done:?}");
        assert_eq!(&cc.task_result(&id).await.unwrap()[..], input.as_bytes());
        let by = match done.worker.as_deref() {
            Some(w) if w == a_id => "A",
            Some(w) if w == c_id => "C",
            _ => "?",
        };
        *ran_on.entry(by.to_owned()).or_default() += 1;
    }
    eprintln!(
        "{refused_submits} of {ROUNDS} first submits on C refused as function_not_found; \
         tries per round {tries_per_round:?}; {refused_runs} of {ROUNDS} racing calls on C \
         refused; tasks ran on {ran_on:?}"
    );
    assert_eq!(tries_per_round.len(), ROUNDS);
    assert_eq!(ran_on.values().sum::<usize>(), ROUNDS);
}

/// A worker stopped with SIGTERM exits 0 promptly and its tasks finish
/// elsewhere, none twice. (It once failed one run in ten: the draining
/// worker handed deliveries back while still pulling, got them straight
/// back, and spent their delivery limit in ~50 ms.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_stopped_with_sigterm_hands_its_tasks_over() {
    const TOTAL: usize = 400;
    const STOP_AT: u64 = 100;
    let _serial = SERIAL.lock().await;
    let nats = NatsServer::start();
    let a = worker(&nats, &["--concurrency", "4"]);
    let mut b = worker(&nats, &["--concurrency", "4"]);
    deploy_work(&a, &[&a, &b]).await;
    let (ca, cb) = (client(&a), client(&b));
    let b_id = own_id(&b).await;

    // 50 ms tasks, submitted on both.
    let subs = Arc::new(Submissions::default());
    let submitting = tokio::spawn(submit_spread(
        vec![ca.clone(), cb.clone()],
        subs.clone(),
        work_task(50),
        TOTAL,
        16,
        Duration::from_secs(60),
    ));
    let both = [ca.clone(), cb.clone()];
    let (done, took) = eventually(
        Duration::from_secs(60),
        &format!("{STOP_AT} tasks finished"),
        || {
            let both = both.clone();
            async move {
                let done = finished(&both).await;
                (done >= STOP_AT).then_some(done)
            }
        },
    )
    .await;
    let before = cb.status().await.unwrap();

    let stopped_at = Instant::now();
    let status = tokio::task::block_in_place(|| b.terminate(Duration::from_secs(10)));
    let stop_took = stopped_at.elapsed();
    eprintln!(
        "SIGTERM to B after {took:?} at {done} finished, {} accepted (B: {} tasks running, \
         {} finished): {status:?} after {stop_took:?}",
        subs.accepted.lock().len(),
        before.tasks.running,
        before.tasks.finished
    );
    let status = status.expect("B still ran 10 s after SIGTERM");
    assert!(status.success(), "B exited {status}");

    submitting.await.unwrap();
    let accepted: Vec<String> = subs.accepted.lock().clone();
    eprintln!(
        "{} accepted, {} submit errors",
        accepted.len(),
        subs.errors.load(Ordering::Relaxed)
    );
    assert_eq!(accepted.len(), TOTAL);
    assert_eq!(
        accepted.iter().collect::<HashSet<_>>().len(),
        TOTAL,
        "an id was accepted twice"
    );

    let limit = Duration::from_secs(60);
    let infos = all_succeed(std::slice::from_ref(&ca), &accepted, limit).await;
    let finish = stopped_at.elapsed();
    let succeeded: HashSet<&str> = infos
        .iter()
        .filter(|t| t.state == TaskState::Succeeded)
        .map(|t| t.id.as_str())
        .collect();
    assert_eq!(succeeded.len(), TOTAL);
    let on_b = infos
        .iter()
        .filter(|t| t.worker.as_deref() == Some(b_id.as_str()))
        .count();
    let again: Vec<(&str, u32)> = infos
        .iter()
        .filter(|t| t.attempts > 1)
        .map(|t| (t.id.as_str(), t.attempts))
        .collect();
    eprintln!(
        "all {TOTAL} succeeded {finish:?} after the SIGTERM ({on_b} finished on B); \
         {} ran more than once: {again:?}",
        again.len()
    );
    assert!(finish < limit, "took {finish:?}");
}

/// Starts a call of `function` with `input` on `c` in the background and
/// waits until `c` runs it (its `/status` shows one call running).
async fn long_call_on(
    c: &Client,
    function: &'static str,
    input: &'static str,
) -> tokio::task::JoinHandle<colony_client::Result<colony_client::Invocation>> {
    let call = tokio::spawn({
        let c = c.clone();
        async move { c.invoke(function, input).await }
    });
    eventually(
        Duration::from_secs(5),
        &format!("{} runs the long call", c.base()),
        || {
            let c = c.clone();
            async move { (c.status().await.ok()?.running == 1).then_some(()) }
        },
    )
    .await;
    call
}

/// A call on a worker whose one slot is taken runs on a free worker;
/// with no other worker it waits for the slot here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_worker_forwards_calls_to_a_free_one() {
    /// The long call: the `spin` guest burns this many ms.
    const LONG: &str = "800";
    let _serial = SERIAL.lock().await;
    let nats = NatsServer::start();
    let a = worker(&nats, &["--concurrency", "1"]);
    let mut b = worker(&nats, &["--concurrency", "1"]);
    let (ca, cb) = (client(&a), client(&b));
    ca.deploy(
        "slow",
        guests::c_guest("spin"),
        &DeployOptions {
            timeout: Some("5s".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    known_everywhere(&[&a, &b], "slow").await;
    own_id(&a).await;
    own_id(&b).await;
    // Compiled on both before anything is timed.
    assert_eq!(&ca.invoke("slow", "1").await.unwrap().output[..], b"done\n");
    assert_eq!(&cb.invoke("slow", "1").await.unwrap().output[..], b"done\n");

    let succeeded = |c: &Client| {
        let c = c.clone();
        async move { c.status().await.unwrap().invocations.succeeded }
    };

    // B free: A's second call runs there.
    let (a0, b0) = (succeeded(&ca).await, succeeded(&cb).await);
    let first = long_call_on(&ca, "slow", LONG).await;
    let t0 = Instant::now();
    let second = ca.invoke("slow", "10").await.unwrap();
    let took = t0.elapsed();
    assert_eq!(&second.output[..], b"done\n");
    let first = first.await.unwrap().unwrap();
    assert_eq!(&first.output[..], b"done\n");
    let (a1, b1) = (succeeded(&ca).await, succeeded(&cb).await);
    eprintln!(
        "A busy, B free: the second call took {took:?}; succeeded on A {a0} -> {a1}, on B {b0} -> {b1}"
    );
    assert_eq!(b1 - b0, 1, "the second call did not run on B");
    assert_eq!(a1 - a0, 1, "A ran more than the first call");

    // B gone: A runs its second call itself, once the first is done.
    b.kill();
    let (a0, first_at) = (succeeded(&ca).await, Instant::now());
    let first = long_call_on(&ca, "slow", LONG).await;
    let t0 = Instant::now();
    let second = tokio::time::timeout(Duration::from_secs(20), ca.invoke("slow", "10"))
        .await
        .expect("a call on a busy A, with no other worker, not answered within 20 s")
        .unwrap();
    let took = t0.elapsed();
    assert_eq!(&second.output[..], b"done\n");
    let first = first.await.unwrap().unwrap();
    assert_eq!(&first.output[..], b"done\n");
    let a1 = succeeded(&ca).await;
    eprintln!(
        "A busy, B killed: the second call took {took:?} ({:?} after the first started); \
         succeeded on A {a0} -> {a1}",
        first_at.elapsed()
    );
    assert_eq!(a1 - a0, 2, "A did not run both calls");
}

/// What a `colony serve --nats` that had to refuse to start did.
#[derive(Debug)]
struct Refusal {
    status: std::process::ExitStatus,
    stdout: String,
    stderr: String,
}

/// How long a refusing `colony serve` may take to exit: the NATS
/// connection times out after 5 s.
const REFUSAL_LIMIT: Duration = Duration::from_secs(20);

/// Runs `colony serve --nats <url>`, with `extra` flags, on a fresh data
/// directory and waits for it to exit; kills it and panics if it still
/// runs after [`REFUSAL_LIMIT`].
fn serve_with_nats(url: &str, extra: &[&str]) -> Refusal {
    use std::io::Read;
    use std::process::{Command, Stdio};

    let tmp = tempfile::tempdir().unwrap();
    let mut child = Command::new(bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(tmp.path().join("data"))
        .args(["--nats", url])
        .args(extra)
        .env("COLONY_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let t0 = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if t0.elapsed() > REFUSAL_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
    let Some(status) = status else {
        panic!(
            "colony serve --nats {url} {} still ran after {REFUSAL_LIMIT:?}\n\
             stdout:\n{stdout}\nstderr:\n{stderr}",
            extra.join(" ")
        );
    };
    eprintln!(
        "colony serve --nats {url} {}: {status} after {:?}; stderr:\n{stderr}",
        extra.join(" "),
        t0.elapsed()
    );
    Refusal {
        status,
        stdout,
        stderr,
    }
}

/// `serve` exited non-zero, never listened, and said each of `needles`
/// on stderr.
fn assert_refused(r: &Refusal, needles: &[&str]) {
    assert!(!r.status.success(), "exited {}: {r:#?}", r.status);
    assert!(
        !r.stdout.contains("listening on") && !r.stderr.contains("listening on"),
        "it listened: {r:#?}"
    );
    for needle in needles {
        assert!(r.stderr.contains(needle), "no {needle:?} on stderr: {r:#?}");
    }
}

#[test]
fn serve_refuses_an_unreachable_nats() {
    let _serial = SERIAL.blocking_lock();
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("nats://127.0.0.1:{port}");
    let r = serve_with_nats(&url, &[]);
    assert_refused(&r, &[&format!("cannot connect to NATS at {url}")]);
}

/// While NATS is away a submit is refused with `503 cluster_unavailable`
/// (nothing accepted); once it is back the same worker takes and runs
/// tasks again, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_nats_a_submit_is_cluster_unavailable_and_work_resumes_after() {
    let _serial = SERIAL.lock().await;
    let mut nats = NatsServer::start();
    let a = worker(&nats, &[]);
    deploy_work(&a, &[&a]).await;
    let ca = client(&a);
    tokio::task::block_in_place(|| nats.kill());
    let started = Instant::now();
    let err = ca.submit(&work_task(1)).await.unwrap_err();
    eprintln!("submit without NATS: {err} after {:?}", started.elapsed());
    assert_eq!(err.code(), Some("cluster_unavailable"), "{err}");
    assert!(
        matches!(
            err,
            colony_client::Error::Api {
                status: 503,
                retry_after: Some(_),
                ..
            }
        ),
        "{err:?}"
    );

    tokio::task::block_in_place(|| nats.restart());
    let (id, took) = eventually(
        Duration::from_secs(30),
        "a submit after the restart",
        || {
            let ca = ca.clone();
            async move {
                ca.submit(&work_task(1))
                    .await
                    .ok()
                    .map(|s| s.id.to_string())
            }
        },
    )
    .await;
    let done = ca.wait_task(&id, Duration::from_secs(30)).await.unwrap();
    eprintln!(
        "accepted again {took:?} after the restart; the task is {}",
        done.state
    );
    assert_eq!(done.state, TaskState::Succeeded, "{done:?}");
}

/// `--nats` takes the servers of a NATS cluster comma-separated: with the
/// first one down, the worker joins through the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_takes_several_nats_urls() {
    let _serial = SERIAL.lock().await;
    let nats = NatsServer::start();
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let urls = format!("nats://127.0.0.1:{dead}, {}", nats.url());
    let w = TestServer::start(
        &bin(),
        &[
            "--nats",
            &urls,
            "--ack-wait",
            ACK_WAIT,
            "--heartbeat",
            HEARTBEAT,
        ],
    );
    let id = own_id(&w).await;
    let list = client(&w).workers().await.unwrap();
    assert!(list.cluster, "{list:?}");
    assert!(list.workers.iter().any(|x| x.id == id), "{list:?}");
}

#[test]
fn serve_refuses_a_nats_without_jetstream() {
    let _serial = SERIAL.blocking_lock();
    let nats = NatsServer::start_with(&nats_server_bin(), &[]);
    let info = nats.info();
    assert!(!info.jetstream, "started without -js: {info:?}");
    let url = nats.url();
    let r = serve_with_nats(&url, &[]);
    assert_refused(
        &r,
        &[
            &format!("NATS at {url} has no JetStream"),
            "start nats-server with -js",
        ],
    );
}

#[test]
fn serve_refuses_a_nats_older_than_2_11() {
    let _serial = SERIAL.blocking_lock();
    let nats = NatsServer::start_with(&old_nats_server_bin(), &["-js"]);
    let info = nats.info();
    assert_eq!(info.version, "2.9.10", "{info:?}");
    assert!(info.jetstream, "only its version is wrong: {info:?}");
    let url = nats.url();
    let r = serve_with_nats(&url, &[]);
    assert_refused(
        &r,
        &[&format!(
            "NATS at {url} is version 2.9.10; Colony needs 2.11 or newer"
        )],
    );
}

/// The HTTP status of `GET /status` on `url`, read off the wire (the
/// client takes a draining worker's 503 as a status too); `None` when
/// the worker does not answer.
async fn status_code(url: &str) -> Option<u16> {
    Some(raw_get(url, "/status").await?.0)
}

/// `GET path` on `url` read off the wire: the status and the whole answer
/// (head and body) as text; `None` when the worker does not answer.
async fn raw_get(url: &str, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let addr = host_port(url);
    let mut conn = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    conn.write_all(request.as_bytes()).await.ok()?;
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer).await.ok()?;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, text))
}

/// An HTTP (cgi) function called at a gateway runs on a worker, with the
/// request's CGI variables carried along.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_forwards_http_functions_with_their_request() {
    let _serial = SERIAL.lock().await;
    let nats = NatsServer::start();
    let gateway = worker(&nats, &["--role", "gateway"]);
    let runner = worker(&nats, &[]);
    let (cg, cr) = (client(&gateway), client(&runner));
    let opts = DeployOptions {
        executor: Some("cgi".into()),
        ..Default::default()
    };
    cr.deploy("hello", guests::c_guest("cgi-hello"), &opts)
        .await
        .unwrap();
    known_everywhere(&[&gateway, &runner], "hello").await;
    let before = cr.status().await.unwrap().invocations.succeeded;
    let (status, text) = raw_get(&gateway.url, "/http/hello/?who=ada").await.unwrap();
    eprintln!("GET /http/hello/?who=ada at the gateway: {text}");
    assert_eq!(status, 200, "{text}");
    for expected in ["GET", "who=ada", "/http/hello"] {
        assert!(text.contains(expected), "{expected} missing: {text}");
    }
    let after = cr.status().await.unwrap().invocations.succeeded;
    assert_eq!(after, before + 1, "the runner ran it");
    assert_eq!(cg.status().await.unwrap().invocations.succeeded, 0);
}

/// A wasi:http component called at a gateway runs on a worker; a files
/// task submitted at the gateway runs on the worker, and its output file
/// feeds a second task submitted to the worker, read back at the gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn components_and_files_functions_work_across_the_cluster() {
    use colony_core::wire::{FileInput, FilesResult};
    let _serial = SERIAL.lock().await;
    let nats = NatsServer::start();
    let gateway = worker(&nats, &["--role", "gateway"]);
    let runner = worker(&nats, &[]);
    let (cg, cr) = (client(&gateway), client(&runner));
    let component = DeployOptions {
        executor: Some("component".into()),
        ..Default::default()
    };
    cr.deploy("web", guests::c_guest("http-hello"), &component)
        .await
        .unwrap();
    let files = DeployOptions {
        io: Some("files".into()),
        input_files: vec!["a.txt".into(), "b.txt".into()],
        ..Default::default()
    };
    cr.deploy("merge", guests::c_guest("merge"), &files)
        .await
        .unwrap();
    known_everywhere(&[&gateway, &runner], "web").await;
    known_everywhere(&[&gateway, &runner], "merge").await;

    let (status, text) = raw_get(&gateway.url, "/http/web/x?y=1").await.unwrap();
    assert_eq!(status, 200, "{text}");
    assert!(
        text.contains("Hello, world! You asked for /x?y=1"),
        "{text}"
    );
    assert!(
        text.to_ascii_lowercase().contains("x-hello: component"),
        "{text}"
    );

    let text_file = |t: &str| FileInput {
        text: Some(t.to_owned()),
        ..Default::default()
    };
    let first = cg
        .submit(&SubmitTask {
            function: "merge".into(),
            files: Some(
                [
                    ("a.txt".to_owned(), text_file("one ")),
                    ("b.txt".to_owned(), text_file("two")),
                ]
                .into(),
            ),
            ..Default::default()
        })
        .await
        .unwrap();
    let first = first.id.as_str().to_owned();
    let info = cg.wait_task(&first, Duration::from_secs(30)).await.unwrap();
    assert_eq!(info.state, TaskState::Succeeded, "{info:?}");
    let reference = FileInput {
        task: Some(first.clone()),
        file: Some("merged.txt".into()),
        ..Default::default()
    };
    let second = cr
        .submit(&SubmitTask {
            function: "merge".into(),
            files: Some(
                [
                    ("a.txt".to_owned(), reference.clone()),
                    ("b.txt".to_owned(), reference),
                ]
                .into(),
            ),
            ..Default::default()
        })
        .await
        .unwrap();
    let second = second.id.as_str().to_owned();
    let info = cr
        .wait_task(&second, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(info.state, TaskState::Succeeded, "{info:?}");
    let listing: FilesResult =
        serde_json::from_slice(&cg.task_result(&second).await.unwrap()).unwrap();
    let merged = listing
        .files
        .iter()
        .find(|f| f.name == "merged.txt")
        .unwrap_or_else(|| panic!("no merged.txt: {listing:?}"));
    use base64::Engine as _;
    let merged = base64::engine::general_purpose::STANDARD
        .decode(&merged.base64)
        .unwrap();
    assert_eq!(merged, b"one twoone two");
}

/// A worker started with an ack wait, heartbeat or task TTL other than
/// the cluster's refuses to start, naming the cluster's value and the
/// flag to fix; the running worker is not disturbed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_with_other_cluster_settings_is_refused() {
    let _serial = SERIAL.lock().await;
    let nats = NatsServer::start();
    let a = worker(&nats, &[]);
    own_id(&a).await;
    assert_eq!(status_code(&a.url).await, Some(200));

    // A's /status, every 50 ms while the others try to join.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watching = tokio::spawn({
        let (url, stop) = (a.url.clone(), stop.clone());
        async move {
            let mut answers: HashMap<Option<u16>, usize> = HashMap::new();
            while !stop.load(Ordering::Acquire) {
                *answers.entry(status_code(&url).await).or_default() += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            answers
        }
    });

    let url = nats.url();
    let cases: [(&[&str], &[&str]); 3] = [
        (
            &["--ack-wait", "5s", "--heartbeat", HEARTBEAT],
            &["the cluster's ack wait is 3s", "--ack-wait"],
        ),
        (
            &["--ack-wait", ACK_WAIT, "--heartbeat", "500ms"],
            &["heartbeat TTL", "--heartbeat"],
        ),
        (
            &[
                "--ack-wait",
                ACK_WAIT,
                "--heartbeat",
                HEARTBEAT,
                "--task-ttl",
                "1h",
            ],
            &["task TTL", "--task-ttl"],
        ),
    ];
    for (extra, needles) in cases {
        let r = tokio::task::spawn_blocking({
            let url = url.clone();
            move || serve_with_nats(&url, extra)
        })
        .await
        .unwrap();
        assert_refused(&r, needles);
        assert_eq!(
            status_code(&a.url).await,
            Some(200),
            "A after a refused {extra:?}"
        );
    }

    stop.store(true, Ordering::Release);
    let answers = watching.await.unwrap();
    eprintln!("A's GET /status while the others were refused: {answers:?}");
    assert_eq!(
        answers.keys().collect::<Vec<_>>(),
        [&Some(200)],
        "{answers:?}"
    );
    assert_eq!(status_code(&a.url).await, Some(200));
    let list = client(&a).workers().await.unwrap();
    assert_eq!(
        list.workers.len(),
        1,
        "a refused worker is listed: {list:?}"
    );
}

/// A call forwarded from a busy worker whose output is larger than a
/// NATS message (1 MiB) comes back whole, through the object store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_call_returns_an_output_larger_than_a_nats_message() {
    /// The long call that keeps A's one slot: the `spin` guest burns
    /// this many ms.
    const LONG: &str = "800";
    /// Bytes the forwarded call writes: three NATS messages' worth.
    const SIZE: usize = 3_000_000;
    let _serial = SERIAL.lock().await;
    let nats = NatsServer::start();
    let a = worker(&nats, &["--concurrency", "1"]);
    let b = worker(&nats, &["--concurrency", "1"]);
    let (ca, cb) = (client(&a), client(&b));
    ca.deploy(
        "slow",
        guests::c_guest("spin"),
        &DeployOptions {
            timeout: Some("5s".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    ca.deploy(
        "repeat",
        guests::c_guest("repeat"),
        &DeployOptions {
            output: Some("8MiB".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    known_everywhere(&[&a, &b], "slow").await;
    known_everywhere(&[&a, &b], "repeat").await;
    own_id(&a).await;
    own_id(&b).await;
    // Compiled on both before anything is timed.
    for c in [&ca, &cb] {
        assert_eq!(&c.invoke("slow", "1").await.unwrap().output[..], b"done\n");
        assert_eq!(&c.invoke("repeat", "3").await.unwrap().output[..], b"xxx");
    }

    let succeeded = |c: &Client| {
        let c = c.clone();
        async move { c.status().await.unwrap().invocations.succeeded }
    };
    let (a0, b0) = (succeeded(&ca).await, succeeded(&cb).await);
    let first = long_call_on(&ca, "slow", LONG).await;
    let t0 = Instant::now();
    let big = ca
        .invoke("repeat", SIZE.to_string())
        .await
        .unwrap_or_else(|e| panic!("/run/repeat {SIZE} on a busy A: {e}"));
    let took = t0.elapsed();
    let first = first.await.unwrap().unwrap();
    assert_eq!(&first.output[..], b"done\n");
    let (a1, b1) = (succeeded(&ca).await, succeeded(&cb).await);
    eprintln!(
        "A busy, B free: /run/repeat {SIZE} on A answered {} bytes in {took:?} \
         (ran {} µs); succeeded on A {a0} -> {a1}, on B {b0} -> {b1}",
        big.output.len(),
        big.duration_us
    );
    assert_eq!(big.output.len(), SIZE);
    assert!(
        big.output.iter().all(|&b| b == b'x'),
        "the output is not all 'x'"
    );
    assert_eq!(b1 - b0, 1, "the big call did not run on B");
    assert_eq!(a1 - a0, 1, "A ran more than the long call");
}

/// Whether `e` is the server's 404 `function_not_found`.
fn is_function_not_found(e: &colony_client::Error) -> bool {
    match e {
        colony_client::Error::Api { status, body, .. } => {
            *status == 404 && body.code == "function_not_found"
        }
        _ => false,
    }
}

/// A delete on one worker reaches the others within a second; the same
/// code deployed again, under the old name and a new one, runs anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_on_one_worker_is_seen_on_the_others() {
    let _serial = SERIAL.lock().await;
    let nats = NatsServer::start();
    let a = worker(&nats, &[]);
    let b = worker(&nats, &[]);
    let c = worker(&nats, &[]);
    let (ca, cb, cc) = (client(&a), client(&b), client(&c));

    let first = ca
        .deploy("f", guests::ECHO, &DeployOptions::default())
        .await
        .unwrap();
    assert!(first.created, "{first:?}");
    known_everywhere(&[&c, &b], "f").await;
    assert_eq!(
        &cc.invoke("f", "before").await.unwrap().output[..],
        b"before"
    );

    cb.delete("f").await.unwrap();
    let deleted = Instant::now();
    // The deleting worker shows its own delete at once (as it shows
    // its own deploy or default switch).
    match cb.function("f").await {
        Err(e) if is_function_not_found(&e) => {}
        other => panic!("GET /functions/f on B right after B answered its DELETE: {other:?}"),
    }
    for (name, cl) in [("C", &cc), ("A", &ca)] {
        eventually(
            Duration::from_secs(10),
            &format!("GET /functions/f is 404 on {name}"),
            || {
                let cl = cl.clone();
                async move {
                    match cl.function("f").await {
                        Err(colony_client::Error::Api { status: 404, .. }) => Some(()),
                        _ => None,
                    }
                }
            },
        )
        .await;
        let took = deleted.elapsed();
        eprintln!("deleted on B: {name} answers 404 {took:?} after the delete");
        assert!(took < Duration::from_secs(1), "{name}: took {took:?}");
    }
    match cc.invoke("f", "after").await {
        Err(e) if is_function_not_found(&e) => {}
        other => panic!("/run/f on C after the delete: {other:?}"),
    }

    // The same code again: as f on C, and as g on A.
    let f = cc
        .deploy("f", guests::ECHO, &DeployOptions::default())
        .await
        .unwrap();
    let g = ca
        .deploy("g", guests::ECHO, &DeployOptions::default())
        .await
        .unwrap();
    assert!(f.created && f.default, "{f:?}");
    assert!(g.created && g.default, "{g:?}");
    for (name, rev) in [("f", f.revision.as_str()), ("g", g.revision.as_str())] {
        let input = format!("{name} on B");
        let (out, took) = eventually(
            Duration::from_secs(10),
            &format!("{name} runs on B"),
            || {
                let cb = cb.clone();
                let input = input.clone();
                async move {
                    match cb.invoke(name, input).await {
                        Ok(out) => Some(out),
                        Err(e) if is_function_not_found(&e) => None,
                        Err(e) => panic!("/run/{name} on B after the redeploy: {e}"),
                    }
                }
            },
        )
        .await;
        eprintln!("{name} deployed again ran on B after {took:?}");
        assert_eq!(&out.output[..], input.as_bytes());
        assert_eq!(out.revision, rev);
    }
}
