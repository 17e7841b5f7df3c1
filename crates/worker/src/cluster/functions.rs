//! The function registry over a KV bucket, code in an object store.
//!
//! One key per function (its name) holds the whole function: default
//! revision and revisions, as JSON. Writes are compare-and-set on the
//! key's revision, so concurrent deploys on different workers never lose
//! one another. Every worker watches the bucket and applies what it sees
//! to its in-memory index (compiling new revisions ahead of their first
//! call); a write returns once this worker's index shows it.

use std::collections::HashSet;
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_nats::jetstream::kv;
use async_trait::async_trait;
use bytes::Bytes;
use colony_core::{FunctionName, RevisionId};
use futures_util::StreamExt;
use tokio::sync::watch;
use tracing::{info, warn};

use super::{Nats, read_json, read_object, unavailable, write_object};
use crate::blobs::Blobs;
use crate::error::{Error, Result};
use crate::seams::{FunctionStore, get_blob, put_blob};
use crate::store::{FunctionRow, RevisionRow, now_ms};
use crate::worker::Worker;

/// The cluster's function store. `applied` is the last bucket sequence
/// this worker's index reflects.
#[derive(Debug)]
pub(crate) struct NatsFunctions {
    nats: Nats,
    /// Local cache of code fetched from the object store.
    cache: Blobs,
    applied: watch::Sender<u64>,
}

impl NatsFunctions {
    pub(crate) fn new(nats: Nats, cache: Blobs) -> Self {
        Self {
            nats,
            cache,
            applied: watch::Sender::new(0),
        }
    }

    /// Every function with the bucket sequence of its value, and the
    /// bucket's last sequence before they were read: following the
    /// bucket from just after it misses no change.
    pub(crate) async fn load_all(&self) -> Result<(Vec<(FunctionRow, u64)>, u64)> {
        let kv = &self.nats.functions;
        let last = self.last_sequence().await?;
        let mut keys = kv.keys().await.map_err(unavailable)?;
        let mut rows = Vec::new();
        while let Some(key) = keys.next().await {
            let key = key.map_err(unavailable)?;
            if let Some(entry) = kv.entry(key.as_str()).await.map_err(unavailable)?
                && entry.operation == kv::Operation::Put
            {
                match serde_json::from_slice::<FunctionRow>(&entry.value) {
                    Ok(row) => rows.push((row, entry.revision)),
                    Err(e) => warn!(key = %key, cause = %e, "unreadable function in the registry"),
                }
            }
        }
        self.applied.send_replace(last);
        Ok((rows, last))
    }

    /// The bucket's last sequence now (`kv::Store::status` answers what
    /// was cached when the bucket was opened).
    async fn last_sequence(&self) -> Result<u64> {
        let mut stream = self.nats.functions.stream.clone();
        Ok(stream
            .info()
            .await
            .map_err(unavailable)?
            .state
            .last_sequence)
    }

    /// Waits until this worker's index reflects bucket sequence `seq`.
    async fn applied(&self, seq: u64) -> Result<()> {
        let mut rx = self.applied.subscribe();
        match tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|s| *s >= seq)).await {
            Ok(_) => Ok(()),
            Err(_) => Err(Error::ClusterUnavailable(
                "the change was stored but this worker has not seen it within 10 s".into(),
            )),
        }
    }

    /// The function as stored (a deleted key is `None`: `create` takes it
    /// over).
    async fn current(&self, name: &FunctionName) -> Result<Option<(FunctionRow, u64)>> {
        read_json(&self.nats.functions, name.as_str(), || {
            format!("function {name} in the registry")
        })
        .await
    }

    /// Writes `row` over the key's revision `last` (0: the key is new or
    /// deleted); `Ok(None)` when another write came first.
    async fn write(&self, row: &FunctionRow, last: Option<u64>) -> Result<Option<u64>> {
        let json = Bytes::from(serde_json::to_vec(row).map_err(Error::internal)?);
        let kv = &self.nats.functions;
        let key = row.name.as_str();
        let put = match last {
            None => kv.create(key, json).await.map_err(|e| match e.kind() {
                kv::CreateErrorKind::AlreadyExists => None,
                _ => Some(unavailable(e)),
            }),
            Some(rev) => kv.update(key, json, rev).await.map_err(|e| match e.kind() {
                kv::UpdateErrorKind::WrongLastRevision => None,
                _ => Some(unavailable(e)),
            }),
        };
        match put {
            Ok(seq) => Ok(Some(seq)),
            Err(None) => Ok(None),
            Err(Some(e)) => Err(e),
        }
    }

    /// Applies one bucket entry to the worker's index.
    fn apply(&self, worker: &Arc<Worker>, entry: &kv::Entry) {
        let Ok(name) = FunctionName::new(&entry.key) else {
            warn!(key = %entry.key, "ignoring a registry key that is not a function name");
            self.applied.send_modify(|s| *s = (*s).max(entry.revision));
            return;
        };
        match entry.operation {
            kv::Operation::Put => match serde_json::from_slice::<FunctionRow>(&entry.value) {
                Ok(row) => worker.apply_function(row, entry.revision),
                Err(e) => {
                    warn!(function = %name, cause = %e, "unreadable function in the registry")
                }
            },
            kv::Operation::Delete | kv::Operation::Purge => {
                worker.apply_delete(&name, entry.revision)
            }
        }
        self.applied.send_modify(|s| *s = (*s).max(entry.revision));
    }

    /// Follows the bucket from sequence `from` for the worker's life,
    /// starting over after a NATS outage.
    pub(crate) async fn follow(self: Arc<Self>, worker: Weak<Worker>, mut from: u64) {
        loop {
            let watch = self.nats.functions.watch_all_from_revision(from).await;
            match watch {
                Ok(mut w) => {
                    while let Some(entry) = w.next().await {
                        let Some(worker) = worker.upgrade() else {
                            return;
                        };
                        match entry {
                            Ok(entry) => {
                                from = entry.revision + 1;
                                self.apply(&worker, &entry);
                            }
                            Err(e) => {
                                warn!(cause = %e, "registry watch interrupted; resuming");
                                break;
                            }
                        }
                    }
                }
                Err(e) => warn!(cause = %e, "cannot watch the registry; retrying"),
            }
            if worker.strong_count() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

#[async_trait]
impl FunctionStore for NatsFunctions {
    async fn put_code(&self, sha: &str, code: Bytes) -> Result<()> {
        put_blob(&self.cache, sha, code.clone()).await?;
        if self.nats.code.info(sha).await.is_ok() {
            return Ok(());
        }
        write_object(&self.nats.code, sha, &code)
            .await
            .map_err(unavailable)
    }

    async fn code(&self, sha: &str) -> Result<Bytes> {
        if let Ok(bytes) = get_blob(&self.cache, sha).await {
            return Ok(bytes);
        }
        let code = read_object(&self.nats.code, sha)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| Error::Internal(format!("code {sha} is missing from the cluster")))?;
        if colony_core::revision::sha256_hex(&code) != sha {
            return Err(Error::Internal(format!(
                "code {sha} in the cluster does not match its hash"
            )));
        }
        if let Err(e) = put_blob(&self.cache, sha, code.clone()).await {
            warn!(code = %sha, cause = %e, "cannot cache code locally");
        }
        Ok(code)
    }

    async fn insert_revision(
        &self,
        name: &FunctionName,
        row: &RevisionRow,
        make_default: bool,
    ) -> Result<u32> {
        loop {
            let now = now_ms();
            let current = self.current(name).await?;
            let last = current.as_ref().map(|(_, rev)| *rev);
            let mut f = match current {
                Some((f, _)) => f,
                None => FunctionRow {
                    name: name.clone(),
                    default_rev: row.id.clone(),
                    created_ms: now,
                    updated_ms: now,
                    revisions: Vec::new(),
                },
            };
            let number = match f.revisions.iter().find(|r| r.id == row.id) {
                Some(existing) => existing.number,
                None => {
                    let number = f.revisions.iter().map(|r| r.number).max().unwrap_or(0) + 1;
                    f.revisions.push(RevisionRow {
                        number,
                        ..row.clone()
                    });
                    number
                }
            };
            if make_default || f.revisions.len() == 1 {
                f.default_rev = row.id.clone();
            }
            f.updated_ms = now;
            if let Some(seq) = self.write(&f, last).await? {
                self.applied(seq).await?;
                return Ok(number);
            }
        }
    }

    async fn set_default(&self, name: &FunctionName, rev: &RevisionId) -> Result<()> {
        loop {
            let Some((mut f, last)) = self.current(name).await? else {
                return Err(Error::FunctionNotFound {
                    name: name.to_string(),
                });
            };
            if !f.revisions.iter().any(|r| &r.id == rev) {
                return Err(Error::RevisionNotFound {
                    name: name.to_string(),
                    rev: rev.to_string(),
                });
            }
            f.default_rev = rev.clone();
            f.updated_ms = now_ms();
            if let Some(seq) = self.write(&f, Some(last)).await? {
                return self.applied(seq).await;
            }
        }
    }

    async fn delete_function(
        &self,
        name: &FunctionName,
        in_use: HashSet<String>,
    ) -> Result<Vec<String>> {
        let f = loop {
            let Some((f, last)) = self.current(name).await? else {
                return Err(Error::FunctionNotFound {
                    name: name.to_string(),
                });
            };
            match self
                .nats
                .functions
                .delete_expect_revision(name.as_str(), Some(last))
                .await
            {
                Ok(()) => break f,
                // Changed meanwhile (a deploy elsewhere): delete that.
                Err(e) if e.kind() == kv::DeleteErrorKind::WrongLastRevision => continue,
                Err(e) => return Err(unavailable(e)),
            }
        };
        let seq = self.last_sequence().await?;
        self.applied(seq).await?;
        // Code objects stay: another worker may have deployed the same
        // code under another name just now, trusting they exist. Only
        // this worker's cache lets go of what it no longer needs.
        let orphaned: Vec<String> = f
            .revisions
            .iter()
            .map(|r| r.code_sha256.clone())
            .filter(|sha| !in_use.contains(sha))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        for sha in &orphaned {
            self.cache.remove(sha);
        }
        info!(function = %name, "deleted from the cluster registry");
        Ok(orphaned)
    }
}
