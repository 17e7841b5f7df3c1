//! The durable task table, with group commit.
//!
//! One writer thread owns a SQLite connection and applies every write
//! (submit, start, finish, requeue, cancel, sweep) in batches: it takes
//! whatever queued up while the previous transaction committed, applies
//! it all in one transaction, commits once (WAL, `synchronous=FULL`: one
//! fsync for the whole batch), then answers each writer. Latency is one
//! commit at most behind; throughput grows with load instead of being
//! capped at one fsync per task. Reads go through a second connection,
//! which WAL lets run beside the writer.

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use colony_core::wire::{TaskInfo, TaskList};
use colony_core::{FunctionName, RevisionId, TaskError, TaskId, TaskState};
use parking_lot::Mutex;
use rusqlite::types::Type;
use rusqlite::{Connection, OptionalExtension, Row, params};
use tokio::sync::oneshot;
use tracing::error;

use crate::error::{Error, Result};
use crate::metrics::Metrics;
use std::sync::Arc;

/// Most writes applied in one transaction.
const MAX_BATCH: usize = 4096;
/// Most expired tasks deleted in one transaction, so a large sweep does
/// not hold up submissions.
pub(crate) const SWEEP_BATCH: usize = 2000;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tasks (
    id              TEXT PRIMARY KEY,
    function        TEXT NOT NULL,
    revision        TEXT NOT NULL,
    state           TEXT NOT NULL,
    priority        INTEGER NOT NULL,
    attempts        INTEGER NOT NULL,
    max_attempts    INTEGER NOT NULL,
    timeout_ms      INTEGER,
    created_ms      INTEGER NOT NULL,
    started_ms      INTEGER,
    finished_ms     INTEGER,
    not_before_ms   INTEGER,
    worker          TEXT,
    error           TEXT,
    input           BLOB NOT NULL,
    input_size      INTEGER NOT NULL,
    output          BLOB,
    output_size     INTEGER,
    output_in_file  INTEGER NOT NULL DEFAULT 0,
    idempotency_key TEXT,
    expires_ms      INTEGER,
    owner           TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    directive       TEXT
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS tasks_by_key ON tasks(idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS tasks_by_state ON tasks(state, id);
CREATE INDEX IF NOT EXISTS tasks_by_function ON tasks(function, id);
CREATE INDEX IF NOT EXISTS tasks_by_expiry ON tasks(expires_ms) WHERE expires_ms IS NOT NULL;
";

/// Made after the columns that tables of older versions gain at open.
const LATE_INDEXES: &str = "
CREATE INDEX IF NOT EXISTS tasks_by_directive ON tasks(directive, id) WHERE directive IS NOT NULL;
";

const INFO_COLUMNS: &str = "id, function, revision, state, priority, attempts, max_attempts, timeout_ms, \
     created_ms, started_ms, finished_ms, not_before_ms, worker, error, input_size, output_size, \
     idempotency_key, expires_ms, owner, directive";

/// A task to insert.
#[derive(Debug, Clone)]
pub(crate) struct NewTask {
    pub(crate) id: TaskId,
    pub(crate) function: FunctionName,
    pub(crate) revision: RevisionId,
    pub(crate) priority: i32,
    pub(crate) max_attempts: u32,
    pub(crate) timeout_ms: Option<u64>,
    pub(crate) created_ms: i64,
    pub(crate) input: Bytes,
    pub(crate) idempotency_key: Option<String>,
    pub(crate) owner: Option<String>,
    pub(crate) directive: Option<String>,
}

/// What an insert did.
#[derive(Debug, Clone)]
pub(crate) enum Inserted {
    Created,
    /// The idempotency key belongs to this task already.
    Existing(TaskId, TaskState),
}

/// A queued task as loaded at start.
#[derive(Debug, Clone)]
pub(crate) struct QueuedRow {
    pub(crate) id: TaskId,
    pub(crate) function: FunctionName,
    pub(crate) revision: RevisionId,
    pub(crate) priority: i32,
    pub(crate) attempts: u32,
    pub(crate) max_attempts: u32,
    pub(crate) timeout_ms: Option<u64>,
    pub(crate) not_before_ms: Option<i64>,
    pub(crate) directive: Option<String>,
    pub(crate) owner: Option<String>,
}

/// How a terminal task's output is kept.
#[derive(Debug, Clone)]
pub(crate) enum StoredOutput {
    None,
    Inline(Bytes),
    /// In the results directory; the size.
    File(u64),
}

/// Where a task's result is.
#[derive(Debug, Clone)]
pub(crate) enum ResultRow {
    Inline(Vec<u8>),
    File,
}

/// A change to one task. Each carries the state it expects the task to be
/// in, so a write that raced with another changes nothing.
#[derive(Debug, Clone)]
pub(crate) enum Change {
    Start {
        attempts: u32,
        started_ms: i64,
        worker: std::sync::Arc<str>,
    },
    Finish {
        from: TaskState,
        to: TaskState,
        at_ms: i64,
        expires_ms: i64,
        error: Option<TaskError>,
        output: StoredOutput,
    },
    Requeue {
        not_before_ms: i64,
        error: Option<TaskError>,
    },
    /// A cancel of a running task, kept so that a crash before the guest
    /// stops does not run it again.
    RequestCancel,
}

enum Write {
    Insert(NewTask, oneshot::Sender<Result<Inserted>>),
    Change(TaskId, Change, Option<oneshot::Sender<Result<bool>>>),
    Sweep(i64, oneshot::Sender<Result<Vec<(TaskId, bool)>>>),
}

/// Filters of a task list.
#[derive(Debug, Clone, Default)]
pub(crate) struct ListQuery {
    pub(crate) state: Option<TaskState>,
    pub(crate) function: Option<FunctionName>,
    pub(crate) limit: u32,
    pub(crate) after: Option<TaskId>,
    /// Only tasks of this owner.
    pub(crate) owner: Option<String>,
    /// Only tasks of this directive.
    pub(crate) directive: Option<String>,
}

/// The task table: a group-committing writer and a reader.
#[derive(Debug)]
pub(crate) struct TaskStore {
    tx: mpsc::Sender<Write>,
    reader: Mutex<Connection>,
}

impl std::fmt::Debug for Write {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Write")
    }
}

fn open(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))?;
    conn.execute_batch("PRAGMA synchronous=FULL;")?;
    Ok(conn)
}

fn info_from_row(r: &Row<'_>) -> rusqlite::Result<TaskInfo> {
    let text = |i: usize| -> rusqlite::Result<String> { r.get::<_, String>(i) };
    let bad =
        |i: usize, e: String| rusqlite::Error::FromSqlConversionFailure(i, Type::Text, e.into());
    let error: Option<String> = r.get(13)?;
    Ok(TaskInfo {
        id: TaskId::parse(&text(0)?).map_err(|e| bad(0, e.to_string()))?,
        function: FunctionName::new(text(1)?).map_err(|e| bad(1, e.to_string()))?,
        revision: RevisionId::from_hex(&text(2)?)
            .ok_or_else(|| bad(2, "corrupt revision id".into()))?,
        state: text(3)?.parse().map_err(|e: String| bad(3, e))?,
        priority: r.get(4)?,
        attempts: r.get(5)?,
        max_attempts: r.get(6)?,
        timeout_ms: r.get::<_, Option<i64>>(7)?.map(|v| v as u64),
        created_ms: r.get(8)?,
        started_ms: r.get(9)?,
        finished_ms: r.get(10)?,
        not_before_ms: r.get(11)?,
        worker: r.get(12)?,
        error: error
            .map(|e| serde_json::from_str(&e).map_err(|x| bad(13, x.to_string())))
            .transpose()?,
        input_size: r.get::<_, i64>(14)? as u64,
        output_size: r.get::<_, Option<i64>>(15)?.map(|v| v as u64),
        idempotency_key: r.get(16)?,
        expires_ms: r.get(17)?,
        owner: r.get(18)?,
        directive: r.get(19)?,
    })
}

impl TaskStore {
    /// Opens the table in the database at `path`, recovering tasks that a
    /// previous process left running: back to `queued` (their attempt is
    /// counted) or `dead` when no attempt is left (or the policy does not
    /// retry a lost worker, per `retries_lost(function, revision)`).
    /// Returns the store and every queued task.
    pub(crate) fn open(
        path: &Path,
        ttl_ms: i64,
        retries_lost: impl Fn(&str, &str) -> bool,
        metrics: Option<Arc<Metrics>>,
    ) -> Result<(Self, Vec<QueuedRow>, usize)> {
        let mut conn = open(path)?;
        conn.execute_batch(SCHEMA)?;
        // Tables made before tasks had owners.
        let has_owner: bool = conn
            .prepare("SELECT 1 FROM pragma_table_info('tasks') WHERE name = 'owner'")?
            .exists([])?;
        if !has_owner {
            conn.execute_batch("ALTER TABLE tasks ADD COLUMN owner TEXT")?;
        }
        let has_cancel: bool = conn
            .prepare("SELECT 1 FROM pragma_table_info('tasks') WHERE name = 'cancel_requested'")?
            .exists([])?;
        if !has_cancel {
            conn.execute_batch(
                "ALTER TABLE tasks ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0",
            )?;
        }
        let has_directive: bool = conn
            .prepare("SELECT 1 FROM pragma_table_info('tasks') WHERE name = 'directive'")?
            .exists([])?;
        if !has_directive {
            conn.execute_batch("ALTER TABLE tasks ADD COLUMN directive TEXT")?;
        }
        conn.execute_batch(LATE_INDEXES)?;
        let recovered = recover(&mut conn, ttl_ms, retries_lost)?;
        let queued = load_queued(&conn)?;
        let reader = open(path)?;
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("colony-task-writer".into())
            .spawn(move || writer(conn, rx, metrics))
            .map_err(Error::internal)?;
        Ok((
            Self {
                tx,
                reader: Mutex::new(reader),
            },
            queued,
            recovered,
        ))
    }

    fn send(&self, w: Write) -> Result<()> {
        self.tx
            .send(w)
            .map_err(|_| Error::Internal("the task writer stopped".into()))
    }

    /// Inserts a task; resolves once committed.
    pub(crate) async fn insert(&self, task: NewTask) -> Result<Inserted> {
        let (reply, rx) = oneshot::channel();
        self.send(Write::Insert(task, reply))?;
        rx.await
            .map_err(|_| Error::Internal("the task writer stopped".into()))?
    }

    /// Applies a change; resolves once committed, with whether the task was
    /// in the expected state.
    pub(crate) async fn change(&self, id: TaskId, change: Change) -> Result<bool> {
        let (reply, rx) = oneshot::channel();
        self.send(Write::Change(id, change, Some(reply)))?;
        rx.await
            .map_err(|_| Error::Internal("the task writer stopped".into()))?
    }

    /// Applies a change without waiting for its commit (a lost `Start` only
    /// means the attempt is not counted if the process dies right away).
    pub(crate) fn change_later(&self, id: TaskId, change: Change) {
        if self.send(Write::Change(id, change, None)).is_err() {
            error!("the task writer stopped");
        }
    }

    /// Deletes up to [`SWEEP_BATCH`] terminal tasks that expired by
    /// `now_ms`; returns their ids and whether each had a result file.
    pub(crate) async fn sweep(&self, now_ms: i64) -> Result<Vec<(TaskId, bool)>> {
        let (reply, rx) = oneshot::channel();
        self.send(Write::Sweep(now_ms, reply))?;
        rx.await
            .map_err(|_| Error::Internal("the task writer stopped".into()))?
    }

    /// One task.
    pub(crate) fn get(&self, id: &TaskId) -> Result<Option<TaskInfo>> {
        let conn = self.reader.lock();
        let mut stmt =
            conn.prepare_cached(&format!("SELECT {INFO_COLUMNS} FROM tasks WHERE id = ?1"))?;
        Ok(stmt.query_row([id.as_str()], info_from_row).optional()?)
    }

    /// A task's input.
    pub(crate) fn input(&self, id: &TaskId) -> Result<Option<Bytes>> {
        let conn = self.reader.lock();
        let mut stmt = conn.prepare_cached("SELECT input FROM tasks WHERE id = ?1")?;
        Ok(stmt
            .query_row([id.as_str()], |r| r.get::<_, Vec<u8>>(0))
            .optional()?
            .map(Bytes::from))
    }

    /// A task's state and where its result is.
    pub(crate) fn result(&self, id: &TaskId) -> Result<Option<(TaskState, Option<ResultRow>)>> {
        let conn = self.reader.lock();
        let mut stmt =
            conn.prepare_cached("SELECT state, output, output_in_file FROM tasks WHERE id = ?1")?;
        let row = stmt
            .query_row([id.as_str()], |r| {
                let state: String = r.get(0)?;
                let output: Option<Vec<u8>> = r.get(1)?;
                let in_file: bool = r.get(2)?;
                Ok((state, output, in_file))
            })
            .optional()?;
        let Some((state, output, in_file)) = row else {
            return Ok(None);
        };
        let state: TaskState = state.parse().map_err(Error::Internal)?;
        let result = match (output, in_file) {
            (_, true) => Some(ResultRow::File),
            (Some(bytes), false) => Some(ResultRow::Inline(bytes)),
            (None, false) => None,
        };
        Ok(Some((state, result)))
    }

    /// A page of tasks, newest first.
    pub(crate) fn list(&self, q: &ListQuery) -> Result<TaskList> {
        let conn = self.reader.lock();
        let mut sql = format!("SELECT {INFO_COLUMNS} FROM tasks WHERE 1=1");
        let mut args: Vec<String> = Vec::new();
        if let Some(s) = q.state {
            args.push(s.as_str().to_owned());
            sql.push_str(&format!(" AND state = ?{}", args.len()));
        }
        if let Some(f) = &q.function {
            args.push(f.as_str().to_owned());
            sql.push_str(&format!(" AND function = ?{}", args.len()));
        }
        if let Some(o) = &q.owner {
            args.push(o.clone());
            sql.push_str(&format!(" AND owner = ?{}", args.len()));
        }
        if let Some(d) = &q.directive {
            args.push(d.clone());
            sql.push_str(&format!(" AND directive = ?{}", args.len()));
        }
        if let Some(a) = &q.after {
            args.push(a.as_str().to_owned());
            sql.push_str(&format!(" AND id < ?{}", args.len()));
        }
        sql.push_str(&format!(" ORDER BY id DESC LIMIT {}", q.limit + 1));
        let mut stmt = conn.prepare_cached(&sql)?;
        let mut tasks = stmt
            .query_map(rusqlite::params_from_iter(args.iter()), info_from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let next = if tasks.len() > q.limit as usize {
            tasks.truncate(q.limit as usize);
            tasks.last().map(|t| t.id.to_string())
        } else {
            None
        };
        Ok(TaskList { tasks, next })
    }
}

fn recover(
    conn: &mut Connection,
    ttl_ms: i64,
    retries_lost: impl Fn(&str, &str) -> bool,
) -> Result<usize> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let running: Vec<(String, String, String, u32, u32, bool)> = {
        let mut stmt = tx.prepare(
            "SELECT id, function, revision, attempts, max_attempts, cancel_requested FROM tasks WHERE state = 'running'",
        )?;
        stmt.query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })?
        .collect::<rusqlite::Result<_>>()?
    };
    let now = crate::store::now_ms();
    let lost = serde_json::to_string(&TaskError::worker_lost()).expect("serializes");
    for (id, function, revision, attempts, max_attempts, cancel_requested) in &running {
        let event = if *cancel_requested {
            colony_core::TaskEvent::Cancel
        } else {
            colony_core::TaskEvent::Fail {
                retryable: retries_lost(function, revision),
                attempts_left: attempts < max_attempts,
            }
        };
        let next = TaskState::Running.apply(event).map_err(Error::internal)?;
        if next == TaskState::Queued {
            tx.execute(
                "UPDATE tasks SET state = 'queued', error = ?2 WHERE id = ?1",
                params![id, lost],
            )?;
        } else {
            let error = (next != TaskState::Cancelled).then_some(&lost);
            tx.execute(
                "UPDATE tasks SET state = ?2, error = ?3, finished_ms = ?4, expires_ms = ?5 WHERE id = ?1",
                params![id, next.as_str(), error, now, now.saturating_add(ttl_ms)],
            )?;
        }
    }
    tx.commit()?;
    Ok(running.len())
}

fn load_queued(conn: &Connection) -> Result<Vec<QueuedRow>> {
    let mut stmt = conn.prepare(
        "SELECT id, function, revision, priority, attempts, max_attempts, timeout_ms, not_before_ms, \
         directive, owner FROM tasks WHERE state = 'queued' ORDER BY id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, i32>(3)?,
            r.get::<_, u32>(4)?,
            r.get::<_, u32>(5)?,
            r.get::<_, Option<i64>>(6)?,
            r.get::<_, Option<i64>>(7)?,
            r.get::<_, Option<String>>(8)?,
            r.get::<_, Option<String>>(9)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (
            id,
            function,
            revision,
            priority,
            attempts,
            max_attempts,
            timeout_ms,
            not_before_ms,
            directive,
            owner,
        ) = row?;
        out.push(QueuedRow {
            id: TaskId::parse(&id).map_err(Error::internal)?,
            function: FunctionName::new(function).map_err(Error::internal)?,
            revision: RevisionId::from_hex(&revision)
                .ok_or_else(|| Error::Internal(format!("corrupt revision id {revision:?}")))?,
            priority,
            attempts,
            max_attempts,
            timeout_ms: timeout_ms.map(|v| v as u64),
            not_before_ms,
            directive,
            owner,
        });
    }
    Ok(out)
}

enum Reply {
    Insert(oneshot::Sender<Result<Inserted>>, Result<Inserted>),
    Change(oneshot::Sender<Result<bool>>, Result<bool>),
    Sweep(
        oneshot::Sender<Result<Vec<(TaskId, bool)>>>,
        Result<Vec<(TaskId, bool)>>,
    ),
    /// A change nobody waits for (a task start): applied, or to retry.
    Later(TaskId, Change),
}

/// The writer thread: batches, one transaction and one commit per batch.
///
/// If the transaction is lost (the commit fails, or a statement fails in
/// a way that rolls the whole transaction back: a full disk, an I/O
/// error), every write of the batch is told it failed, none is told it
/// succeeded; writes not yet applied go to the next batch, and so do
/// changes nobody waits for, which would otherwise be lost silently.
fn writer(mut conn: Connection, rx: mpsc::Receiver<Write>, metrics: Option<Arc<Metrics>>) {
    let mut pending: std::collections::VecDeque<Write> = std::collections::VecDeque::new();
    loop {
        if pending.is_empty() {
            match rx.recv() {
                Ok(w) => pending.push_back(w),
                Err(_) => return,
            }
        }
        while pending.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(w) => pending.push_back(w),
                Err(_) => break,
            }
        }
        let batch: Vec<Write> = pending.drain(..).collect();
        let size = batch.len();
        let started = std::time::Instant::now();
        let mut replies = Vec::with_capacity(size);
        let mut not_applied = Vec::new();
        let committed: rusqlite::Result<()> = match conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        {
            Err(e) => {
                // Nothing was applied: those who wait hear so at once;
                // changes nobody waits for are tried again.
                for w in batch {
                    replies.push(match w {
                        Write::Insert(_, reply) => Reply::Insert(reply, Ok(Inserted::Created)),
                        Write::Change(_, _, Some(reply)) => Reply::Change(reply, Ok(false)),
                        Write::Change(id, c, None) => Reply::Later(id, c),
                        Write::Sweep(_, reply) => Reply::Sweep(reply, Ok(Vec::new())),
                    });
                }
                Err(e)
            }
            Ok(tx) => {
                let mut lost = None;
                for w in batch {
                    if lost.is_some() {
                        not_applied.push(w);
                        continue;
                    }
                    replies.push(match w {
                        Write::Insert(t, reply) => Reply::Insert(reply, insert(&tx, &t)),
                        Write::Change(id, c, Some(reply)) => {
                            Reply::Change(reply, change(&tx, &id, c))
                        }
                        Write::Change(id, c, None) => {
                            let res = change(&tx, &id, c.clone());
                            if let Err(e) = res {
                                error!(task = %id, cause = %e, "a task change failed");
                            }
                            Reply::Later(id, c)
                        }
                        Write::Sweep(now, reply) => Reply::Sweep(reply, sweep(&tx, now)),
                    });
                    if tx.is_autocommit() {
                        lost = Some(rusqlite::Error::SqliteFailure(
                            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ABORT),
                            Some("the transaction was rolled back by a failed statement".into()),
                        ));
                    }
                }
                match lost {
                    Some(e) => {
                        drop(tx);
                        Err(e)
                    }
                    None => tx.commit(),
                }
            }
        };
        if let Some(m) = &metrics {
            m.commit_seconds.observe(started.elapsed().as_secs_f64());
            m.commit_batch.observe(size as f64);
        }
        if let Err(e) = &committed {
            error!(cause = %e, writes = size, "task store commit failed; the batch is refused");
        }
        let failed = |e: &rusqlite::Error| Error::Internal(format!("task store commit: {e}"));
        let mut retry = Vec::new();
        for r in replies {
            match r {
                Reply::Insert(tx, res) => {
                    let _ = tx.send(committed.as_ref().map_err(failed).and(res));
                }
                Reply::Change(tx, res) => {
                    let _ = tx.send(committed.as_ref().map_err(failed).and(res));
                }
                Reply::Sweep(tx, res) => {
                    let _ = tx.send(committed.as_ref().map_err(failed).and(res));
                }
                Reply::Later(id, c) => {
                    if committed.is_err() {
                        retry.push(Write::Change(id, c, None));
                    }
                }
            }
        }
        // Unapplied writes and lost starts go first into the next batch,
        // in their order.
        for w in retry.into_iter().chain(not_applied).rev() {
            pending.push_front(w);
        }
        if committed.is_err() {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn insert(tx: &rusqlite::Transaction<'_>, t: &NewTask) -> Result<Inserted> {
    if let Some(key) = &t.idempotency_key {
        let mut stmt =
            tx.prepare_cached("SELECT id, state FROM tasks WHERE idempotency_key = ?1")?;
        let found = stmt
            .query_row([key], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .optional()?;
        if let Some((id, state)) = found {
            return Ok(Inserted::Existing(
                TaskId::parse(&id).map_err(Error::internal)?,
                state.parse().map_err(Error::Internal)?,
            ));
        }
    }
    let mut stmt = tx.prepare_cached(
        "INSERT INTO tasks (id, function, revision, state, priority, attempts, max_attempts, timeout_ms, \
         created_ms, input, input_size, idempotency_key, owner, directive) \
         VALUES (?1, ?2, ?3, 'queued', ?4, 0, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?;
    stmt.execute(params![
        t.id.as_str(),
        t.function.as_str(),
        t.revision.as_str(),
        t.priority,
        t.max_attempts,
        t.timeout_ms.map(|v| v as i64),
        t.created_ms,
        t.input.as_ref(),
        t.input.len() as i64,
        t.idempotency_key,
        t.owner,
        t.directive,
    ])?;
    Ok(Inserted::Created)
}

fn change(tx: &rusqlite::Transaction<'_>, id: &TaskId, c: Change) -> Result<bool> {
    let n = match c {
        Change::Start {
            attempts,
            started_ms,
            worker,
        } => {
            let mut stmt = tx.prepare_cached(
                "UPDATE tasks SET state = 'running', attempts = ?2, started_ms = ?3, worker = ?4, not_before_ms = NULL \
                 WHERE id = ?1 AND state = 'queued'",
            )?;
            stmt.execute(params![id.as_str(), attempts, started_ms, &*worker])?
        }
        Change::Finish {
            from,
            to,
            at_ms,
            expires_ms,
            error,
            output,
        } => {
            let error = error.map(|e| serde_json::to_string(&e).expect("serializes"));
            let (inline, size, in_file): (Option<&[u8]>, Option<i64>, bool) = match &output {
                StoredOutput::None => (None, None, false),
                StoredOutput::Inline(b) => (Some(b.as_ref()), Some(b.len() as i64), false),
                StoredOutput::File(n) => (None, Some(*n as i64), true),
            };
            let mut stmt = tx.prepare_cached(
                "UPDATE tasks SET state = ?3, finished_ms = ?4, expires_ms = ?5, error = ?6, output = ?7, \
                 output_size = ?8, output_in_file = ?9, not_before_ms = NULL WHERE id = ?1 AND state = ?2",
            )?;
            stmt.execute(params![
                id.as_str(),
                from.as_str(),
                to.as_str(),
                at_ms,
                expires_ms,
                error,
                inline,
                size,
                in_file
            ])?
        }
        Change::Requeue {
            not_before_ms,
            error,
        } => {
            let error = error.map(|e| serde_json::to_string(&e).expect("serializes"));
            let mut stmt = tx.prepare_cached(
                "UPDATE tasks SET state = 'queued', not_before_ms = ?2, error = ?3 WHERE id = ?1 AND state = 'running'",
            )?;
            stmt.execute(params![id.as_str(), not_before_ms, error])?
        }
        Change::RequestCancel => {
            let mut stmt = tx.prepare_cached(
                "UPDATE tasks SET cancel_requested = 1 WHERE id = ?1 AND state = 'running'",
            )?;
            stmt.execute(params![id.as_str()])?
        }
    };
    Ok(n == 1)
}

fn sweep(tx: &rusqlite::Transaction<'_>, now: i64) -> Result<Vec<(TaskId, bool)>> {
    let mut stmt = tx.prepare_cached(
        "DELETE FROM tasks WHERE id IN \
         (SELECT id FROM tasks WHERE expires_ms IS NOT NULL AND expires_ms <= ?1 LIMIT ?2) \
         RETURNING id, output_in_file",
    )?;
    let rows = stmt
        .query_map(params![now, SWEEP_BATCH as i64], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, bool>(1)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.into_iter()
        .map(|(id, f)| Ok((TaskId::parse(&id).map_err(Error::internal)?, f)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_task(max_attempts: u32, key: Option<&str>) -> NewTask {
        NewTask {
            id: TaskId::generate(),
            function: FunctionName::new("f").unwrap(),
            revision: RevisionId::from_hex(&"ab".repeat(32)).unwrap(),
            priority: 0,
            max_attempts,
            timeout_ms: None,
            created_ms: 1,
            input: Bytes::from_static(b"in"),
            idempotency_key: key.map(str::to_owned),
            owner: None,
            directive: None,
        }
    }

    #[tokio::test]
    async fn a_restart_requeues_or_buries_what_was_running() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("colony.db");
        let (store, queued, _) = TaskStore::open(&db, 1000, |_, _| true, None).unwrap();
        assert!(queued.is_empty());
        let last_try = new_task(1, None);
        let more = new_task(3, Some("k"));
        let never = new_task(3, None);
        let stopping = new_task(3, None);
        for t in [&last_try, &more, &never, &stopping] {
            assert!(matches!(
                store.insert(t.clone()).await.unwrap(),
                Inserted::Created
            ));
        }
        // The same key again: the first task.
        match store.insert(new_task(3, Some("k"))).await.unwrap() {
            Inserted::Existing(id, TaskState::Queued) => assert_eq!(id, more.id),
            other => panic!("{other:?}"),
        }
        for t in [&last_try, &more, &stopping] {
            let start = Change::Start {
                attempts: 1,
                started_ms: 2,
                worker: "w:1".into(),
            };
            assert!(store.change(t.id.clone(), start).await.unwrap());
        }
        // A cancel asked while it ran.
        assert!(
            store
                .change(stopping.id.clone(), Change::RequestCancel)
                .await
                .unwrap()
        );
        // A change from the wrong state changes nothing.
        let requeue = Change::Requeue {
            not_before_ms: 0,
            error: None,
        };
        assert!(!store.change(never.id.clone(), requeue).await.unwrap());
        drop(store);

        // The process "died" with two tasks running.
        let (store, queued, recovered) = TaskStore::open(&db, 1000, |_, _| true, None).unwrap();
        assert_eq!(recovered, 3);
        let cancelled = store.get(&stopping.id).unwrap().unwrap();
        assert_eq!(cancelled.state, TaskState::Cancelled);
        assert!(cancelled.error.is_none());
        let ids: Vec<_> = queued.iter().map(|q| q.id.clone()).collect();
        assert_eq!(ids, [more.id.clone(), never.id.clone()]);
        assert_eq!(queued[0].attempts, 1, "the lost attempt counts");
        let dead = store.get(&last_try.id).unwrap().unwrap();
        assert_eq!(dead.state, TaskState::Dead);
        assert_eq!(dead.error.unwrap().code, "worker_lost");
        assert!(dead.expires_ms.is_some());
        let again = store.get(&more.id).unwrap().unwrap();
        assert_eq!((again.state, again.attempts), (TaskState::Queued, 1));

        // Swept once expired.
        assert!(
            store
                .sweep(dead.finished_ms.unwrap() + 999)
                .await
                .unwrap()
                .is_empty()
        );
        let swept = store.sweep(dead.finished_ms.unwrap() + 1000).await.unwrap();
        let mut swept: Vec<TaskId> = swept.into_iter().map(|(id, _)| id).collect();
        swept.sort();
        assert_eq!(swept, [last_try.id.clone(), stopping.id.clone()]);
        assert!(store.get(&last_try.id).unwrap().is_none());
    }

    #[tokio::test]
    async fn a_failed_batch_never_acknowledges_what_did_not_commit() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("colony.db");
        let conn = open(&db).unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        // A database that cannot grow much: a big input fills it.
        let pages: i64 = conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        conn.query_row(
            &format!("PRAGMA max_page_count = {}", pages + 16),
            [],
            |_| Ok(()),
        )
        .unwrap();
        let (tx, rx) = mpsc::channel();
        let mut tasks = Vec::new();
        let mut replies = Vec::new();
        for size in [10usize, 4 << 20, 10] {
            let mut t = new_task(3, None);
            t.input = Bytes::from(vec![b'x'; size]);
            let (reply, answer) = oneshot::channel();
            tx.send(Write::Insert(t.clone(), reply)).unwrap();
            tasks.push(t);
            replies.push(answer);
        }
        // All three are in the channel before the writer starts: one batch.
        let writer = std::thread::spawn(move || writer(conn, rx, None));
        let mut acked = Vec::new();
        for r in replies {
            acked.push(r.await.unwrap().is_ok());
        }
        drop(tx);
        writer.join().unwrap();
        assert!(!acked[1], "the write that cannot fit is refused");
        let check = open(&db).unwrap();
        for (t, ok) in tasks.iter().zip(&acked) {
            let stored: bool = check
                .prepare("SELECT 1 FROM tasks WHERE id = ?1")
                .unwrap()
                .exists([t.id.as_str()])
                .unwrap();
            assert_eq!(
                stored, *ok,
                "acknowledged = stored, for every write ({acked:?})"
            );
        }
    }
}
