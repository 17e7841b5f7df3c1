//! Membership: every worker puts its load into the `colony-workers`
//! bucket each heartbeat; the bucket's max age drops a worker that stops
//! (a limit marker announces it), and a worker that shuts down deletes
//! its key at once.

use std::sync::Weak;
use std::time::Duration;

use async_nats::jetstream::kv;
use bytes::Bytes;
use colony_core::wire::WorkerInfo;
use futures_util::StreamExt;
use tracing::{debug, info, warn};

use super::{Nats, read_json, unavailable};
use crate::error::Result;
use crate::store::now_ms;
use crate::worker::Worker;

/// A worker id as a bucket key (`host:pid` → `host_pid`).
pub(crate) fn key(id: &str) -> String {
    id.chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' => c,
            _ => '_',
        })
        .collect()
}

/// Puts this worker's heartbeat every interval while it lives.
pub(crate) async fn heartbeat(nats: Nats, worker: Weak<Worker>) {
    let mut tick = tokio::time::interval(nats.config.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tick.tick().await;
        let Some(w) = worker.upgrade() else { return };
        if w.is_draining() {
            // Gone from the list at once, and not put back.
            let id = w.member_info().id;
            drop(w);
            leave(&nats, &id).await;
            return;
        }
        w.refresh_cluster_load().await;
        let me = w.member_info();
        drop(w);
        let json = Bytes::from(serde_json::to_vec(&me).expect("worker info serializes"));
        match nats.workers.put(key(&me.id), json).await {
            Ok(_) if failing => {
                info!("heartbeats reach the cluster again");
                failing = false;
            }
            Ok(_) => {}
            Err(e) if !failing => {
                warn!(cause = %e, "cannot send a heartbeat");
                failing = true;
            }
            Err(e) => debug!(cause = %e, "cannot send a heartbeat"),
        }
    }
}

/// Leaves the cluster now (at shutdown), not after the TTL.
pub(crate) async fn leave(nats: &Nats, id: &str) {
    if let Err(e) = nats.workers.purge(key(id)).await {
        warn!(cause = %e, "cannot remove this worker from the cluster's member list");
    }
}

/// The live workers, sorted by id.
pub(crate) async fn list(nats: &Nats) -> Result<Vec<WorkerInfo>> {
    let ttl = nats.config.heartbeat_ttl().as_millis() as i64;
    let now = now_ms();
    let mut keys = nats.workers.keys().await.map_err(unavailable)?;
    let mut out = Vec::new();
    while let Some(k) = keys.next().await {
        let k = k.map_err(unavailable)?;
        let heartbeat =
            read_json::<WorkerInfo>(&nats.workers, k.as_str(), || format!("heartbeat {k}"));
        // The bucket's max age drops a silent worker soon; until then, the
        // age says it is gone.
        if let Some((w, _)) = heartbeat.await?
            && now - w.heartbeat_ms <= ttl
        {
            out.push(w);
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

/// Logs workers joining and leaving, as the bucket announces them.
pub(crate) async fn follow(nats: Nats, me: String, worker: Weak<Worker>) {
    let mut known = std::collections::HashSet::new();
    while worker.strong_count() > 0 {
        match nats.workers.watch_all().await {
            Ok(mut w) => {
                while let Some(entry) = w.next().await {
                    let Ok(entry) = entry else { break };
                    if worker.strong_count() == 0 {
                        return;
                    }
                    if entry.key == key(&me) {
                        continue;
                    }
                    match entry.operation {
                        kv::Operation::Put => {
                            if known.insert(entry.key.clone()) {
                                info!(worker = %entry.key, "a worker joined the cluster");
                            }
                        }
                        kv::Operation::Delete | kv::Operation::Purge => {
                            if known.remove(&entry.key) {
                                info!(worker = %entry.key, "a worker left the cluster");
                            }
                        }
                    }
                }
            }
            Err(e) => debug!(cause = %e, "cannot watch the member list"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
