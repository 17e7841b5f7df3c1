//! The seams between the worker and where its state lives: each a trait
//! with an embedded implementation (SQLite and files, this module) and a
//! cluster one (NATS JetStream, [`crate::cluster`]).
//!
//! | seam | embedded | cluster |
//! |---|---|---|
//! | [`TaskBackend`] | `Tasks` over SQLite | work-queue stream + KV |
//! | [`FunctionStore`] | SQLite + code files | KV + object store |
//! | membership | this process | KV heartbeats |

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use colony_core::wire::{Submitted, TaskInfo, TaskList};
use colony_core::{FunctionName, RevisionId, TaskId};
use parking_lot::Mutex;

use crate::blobs::Blobs;
use crate::error::{Error, Result};
use crate::store::{RevisionRow, Store};
use crate::tasks::{Submission, Tasks};
use crate::taskstore::ListQuery;

/// Where tasks are queued, recorded and found again.
#[async_trait]
pub(crate) trait TaskBackend: Send + Sync + std::fmt::Debug {
    /// Records and queues a task of `revision`; resolves once it is
    /// durable.
    async fn submit(
        &self,
        function: FunctionName,
        revision: RevisionId,
        max_attempts: u32,
        s: Submission,
    ) -> Result<Submitted>;
    /// One task.
    async fn get(&self, id: &TaskId) -> Result<TaskInfo>;
    /// One task, after waiting up to `wait` for it to finish.
    async fn wait(&self, id: &TaskId, wait: Duration) -> Result<TaskInfo>;
    /// A page of tasks, newest first.
    async fn list(&self, q: ListQuery) -> Result<TaskList>;
    /// The output of a succeeded task.
    async fn result(&self, id: &TaskId) -> Result<Bytes>;
    /// Cancels a task (queued: at once; running: interrupted).
    async fn cancel(&self, id: &TaskId) -> Result<TaskInfo>;
    /// Deletes expired tasks; returns how many.
    async fn sweep(&self) -> Result<usize>;
    /// (queued, running here, finished here since start).
    fn counts(&self) -> (usize, usize, u64);
}

/// The embedded task backend.
#[derive(Debug)]
pub(crate) struct LocalTasks(pub(crate) Arc<Tasks>);

#[async_trait]
impl TaskBackend for LocalTasks {
    async fn submit(
        &self,
        function: FunctionName,
        revision: RevisionId,
        max_attempts: u32,
        s: Submission,
    ) -> Result<Submitted> {
        self.0.submit(function, revision, max_attempts, s).await
    }
    async fn get(&self, id: &TaskId) -> Result<TaskInfo> {
        self.0.get(id).await
    }
    async fn wait(&self, id: &TaskId, wait: Duration) -> Result<TaskInfo> {
        self.0.wait(id, wait).await
    }
    async fn list(&self, q: ListQuery) -> Result<TaskList> {
        self.0.list(q).await
    }
    async fn result(&self, id: &TaskId) -> Result<Bytes> {
        self.0.result(id).await
    }
    async fn cancel(&self, id: &TaskId) -> Result<TaskInfo> {
        self.0.cancel(id).await
    }
    async fn sweep(&self) -> Result<usize> {
        self.0.sweep().await
    }
    fn counts(&self) -> (usize, usize, u64) {
        self.0.counts()
    }
}

/// Where functions, revisions and their code are kept. The worker's
/// in-memory index is the read side; this is the write side (and, in a
/// cluster, the source the index follows).
#[async_trait]
pub(crate) trait FunctionStore: Send + Sync + std::fmt::Debug {
    /// Keeps `code` under its sha256.
    async fn put_code(&self, sha: &str, code: Bytes) -> Result<()>;
    /// The code stored under `sha`.
    async fn code(&self, sha: &str) -> Result<Bytes>;
    /// Adds a revision (the default when `make_default`); returns its
    /// number within the function.
    async fn insert_revision(
        &self,
        name: &FunctionName,
        row: &RevisionRow,
        make_default: bool,
    ) -> Result<u32>;
    /// Makes `rev` the default of `name`.
    async fn set_default(&self, name: &FunctionName, rev: &RevisionId) -> Result<()>;
    /// Deletes a function; returns the code no longer used by it nor by
    /// any function whose code is in `in_use`.
    async fn delete_function(
        &self,
        name: &FunctionName,
        in_use: HashSet<String>,
    ) -> Result<Vec<String>>;
}

/// The embedded function store: SQLite rows and code files.
#[derive(Debug)]
pub(crate) struct LocalFunctions {
    pub(crate) store: Arc<Mutex<Store>>,
    pub(crate) blobs: Blobs,
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(Error::internal)?
}

/// Keeps `code` under `sha` in `blobs` (off the async threads).
pub(crate) async fn put_blob(blobs: &Blobs, sha: &str, code: Bytes) -> Result<()> {
    let (blobs, sha) = (blobs.clone(), sha.to_owned());
    blocking(move || Ok(blobs.put(&sha, &code)?)).await
}

/// The code under `sha` in `blobs` (off the async threads).
pub(crate) async fn get_blob(blobs: &Blobs, sha: &str) -> Result<Bytes> {
    let (blobs, sha) = (blobs.clone(), sha.to_owned());
    blocking(move || Ok(Bytes::from(blobs.get(&sha)?))).await
}

#[async_trait]
impl FunctionStore for LocalFunctions {
    async fn put_code(&self, sha: &str, code: Bytes) -> Result<()> {
        put_blob(&self.blobs, sha, code).await
    }

    async fn code(&self, sha: &str) -> Result<Bytes> {
        get_blob(&self.blobs, sha).await
    }

    async fn insert_revision(
        &self,
        name: &FunctionName,
        row: &RevisionRow,
        make_default: bool,
    ) -> Result<u32> {
        let (store, name, row) = (self.store.clone(), name.clone(), row.clone());
        blocking(move || store.lock().insert_revision(&name, &row, make_default)).await
    }

    async fn set_default(&self, name: &FunctionName, rev: &RevisionId) -> Result<()> {
        let (store, name, rev) = (self.store.clone(), name.clone(), rev.clone());
        blocking(move || store.lock().set_default(&name, &rev)).await
    }

    async fn delete_function(
        &self,
        name: &FunctionName,
        _in_use: HashSet<String>,
    ) -> Result<Vec<String>> {
        let (store, name) = (self.store.clone(), name.clone());
        let orphaned = blocking(move || store.lock().delete_function(&name)).await?;
        for sha in &orphaned {
            self.blobs.remove(sha);
        }
        Ok(orphaned)
    }
}
