//! Cluster mode: the seams over NATS JetStream.
//!
//! | what | JetStream resource |
//! |---|---|
//! | task queue | stream `COLONY_TASKS` (work queue, subject `colony.tasks`), one durable pull consumer `colony-workers` shared by all workers |
//! | task records, small results | KV `colony-tasks` (max age = task TTL) |
//! | large inputs and results | object store `colony-data` |
//! | function registry | KV `colony-functions`, watched by every worker |
//! | code | object store `colony-code`, addressed by sha256 |
//! | membership | KV `colony-workers` (max age = heartbeat TTL, limit markers) |
//! | cancel | subject `colony.cancel`, heard by every worker |
//! | forwarded calls | subject `colony.run.<function>`, queue group `colony-run` |
//!
//! Everything is created idempotently at start with explicit settings
//! (file storage, `replicas`). A task message is delivered until a worker
//! settles it; at its 110th delivery the worker that gets it records the
//! task `dead`. A task message is acknowledged only after
//! the task's terminal record is stored; while it runs, progress acks hold
//! it; if its worker dies, JetStream redelivers it after the ack wait.

pub(crate) mod forward;
pub(crate) mod functions;
pub(crate) mod members;
pub(crate) mod tasks;

use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv, object_store, stream};
use colony_core::wire::WorkerRole;

use crate::error::{Error, Result};

/// The oldest NATS server this design works with: 2.9 and 2.10 lack KV
/// limit markers and message TTLs, and the current client cannot create
/// KV buckets on them.
pub const MIN_NATS_VERSION: (u64, u64) = (2, 11);

pub(crate) const FUNCTIONS_BUCKET: &str = "colony-functions";
pub(crate) const CODE_BUCKET: &str = "colony-code";
pub(crate) const TASKS_BUCKET: &str = "colony-tasks";
pub(crate) const DATA_BUCKET: &str = "colony-data";
pub(crate) const WORKERS_BUCKET: &str = "colony-workers";
pub(crate) const TASK_STREAM: &str = "COLONY_TASKS";
pub(crate) const TASK_SUBJECT: &str = "colony.tasks";
pub(crate) const TASK_CONSUMER: &str = "colony-workers";
pub(crate) const CANCEL_SUBJECT: &str = "colony.cancel";
pub(crate) const RUN_PREFIX: &str = "colony.run.";
pub(crate) const RUN_QUEUE: &str = "colony-run";
/// Deliveries of one task message before Colony gives up on it (`dead`):
/// above the attempt ceiling, so the task's own retry policy decides
/// first. JetStream itself delivers without limit, so that no message is
/// left in the stream with no one to settle it.
pub(crate) const MAX_DELIVERIES: u64 = colony_core::task::MAX_ATTEMPTS_CEILING as u64 + 10;

/// How a worker joins a cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// NATS server URL(s), comma-separated.
    pub url: String,
    /// Replicas of every stream and bucket (1 for a single server; 3 for a
    /// clustered NATS).
    pub replicas: usize,
    /// How long a delivered task may go without an ack or progress before
    /// JetStream redelivers it (a dead worker's tasks move after this).
    pub ack_wait: Duration,
    /// How often this worker heartbeats; it is gone after 3 missed.
    pub heartbeat: Duration,
    /// What this worker does.
    pub role: WorkerRole,
}

impl ClusterConfig {
    /// The defaults for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            replicas: 1,
            ack_wait: Duration::from_secs(30),
            heartbeat: Duration::from_secs(1),
            role: WorkerRole::Worker,
        }
    }

    /// A worker whose last heartbeat is older than this is gone.
    pub fn heartbeat_ttl(&self) -> Duration {
        self.heartbeat * 3
    }

    /// Checks the settings.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.url.trim().is_empty() {
            return Err("nats: the URL is empty".into());
        }
        if !(1..=5).contains(&self.replicas) {
            return Err("nats replicas: must be between 1 and 5".into());
        }
        if self.ack_wait < Duration::from_secs(1) {
            return Err("ack wait: must be at least 1s".into());
        }
        if self.heartbeat < Duration::from_millis(100) || self.heartbeat > Duration::from_secs(60) {
            return Err("heartbeat: must be between 100ms and 60s".into());
        }
        Ok(())
    }
}

/// The connection and the JetStream resources of a cluster.
#[derive(Clone)]
pub(crate) struct Nats {
    pub(crate) client: async_nats::Client,
    pub(crate) js: jetstream::Context,
    pub(crate) functions: kv::Store,
    pub(crate) code: object_store::ObjectStore,
    pub(crate) tasks: kv::Store,
    pub(crate) data: object_store::ObjectStore,
    pub(crate) workers: kv::Store,
    pub(crate) consumer: consumer::PullConsumer,
    pub(crate) config: ClusterConfig,
}

impl std::fmt::Debug for Nats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nats")
            .field("url", &self.config.url)
            .field("role", &self.config.role)
            .finish_non_exhaustive()
    }
}

/// Any NATS failure on a request path: the caller may retry.
pub(crate) fn unavailable(e: impl std::fmt::Display) -> Error {
    Error::ClusterUnavailable(e.to_string())
}

fn parse_version(v: &str) -> Option<(u64, u64)> {
    let mut parts = v.trim_start_matches('v').split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

impl Nats {
    /// Connects, checks the server, and creates (or updates) every
    /// resource. Errors say what is wrong: unreachable, too old, no
    /// JetStream.
    pub(crate) async fn connect(
        config: &ClusterConfig,
        name: &str,
        task_ttl: Duration,
    ) -> Result<Self> {
        config.validate().map_err(Error::Internal)?;
        let url = config.url.clone();
        let client = async_nats::ConnectOptions::new()
            .name(format!("colony {name}"))
            // A forwarded call never comes back to its sender, and a
            // cancel this worker publishes it applies itself first.
            .no_echo()
            .connection_timeout(Duration::from_secs(5))
            .request_timeout(Some(Duration::from_secs(10)))
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Connected => tracing::info!("connected to NATS"),
                    async_nats::Event::Disconnected => {
                        tracing::warn!("disconnected from NATS; reconnecting")
                    }
                    other => tracing::debug!(event = %other, "NATS event"),
                }
            })
            // Several servers of a NATS cluster, comma-separated.
            .connect(
                url.split(',')
                    .map(str::trim)
                    .filter(|u| !u.is_empty())
                    .collect::<Vec<_>>(),
            )
            .await
            .map_err(|e| Error::Internal(format!("cannot connect to NATS at {url}: {e}")))?;
        let info = client.server_info();
        match parse_version(&info.version) {
            Some(v) if v >= MIN_NATS_VERSION => {}
            _ => {
                return Err(Error::Internal(format!(
                    "NATS at {url} is version {}; Colony needs {}.{} or newer (with JetStream)",
                    info.version, MIN_NATS_VERSION.0, MIN_NATS_VERSION.1
                )));
            }
        }
        let js = jetstream::new(client.clone());
        js.query_account().await.map_err(|e| {
            Error::Internal(format!(
                "NATS at {url} has no JetStream ({e}); start nats-server with -js"
            ))
        })?;
        let setup = |what: &str, e: &dyn std::fmt::Display| {
            Error::Internal(format!("cannot set up {what} on NATS at {url}: {e}"))
        };
        // The cluster's settings are shared: a worker started with other
        // ones would change them for all. Refuse instead.
        let ttl = config.heartbeat_ttl();
        for (stream, what, max_age, flag) in [
            (
                format!("KV_{TASKS_BUCKET}"),
                "task TTL",
                Some(task_ttl),
                "--task-ttl",
            ),
            (
                format!("KV_{WORKERS_BUCKET}"),
                "heartbeat TTL (3 heartbeats)",
                Some(ttl),
                "--heartbeat",
            ),
            (format!("KV_{FUNCTIONS_BUCKET}"), "registry", None, ""),
            (TASK_STREAM.to_owned(), "task stream", None, ""),
        ] {
            let Ok(mut existing) = js.get_stream(&stream).await else {
                continue;
            };
            let Ok(info) = existing.info().await else {
                continue;
            };
            let c = &info.config;
            if let Some(want) = max_age
                && c.max_age != want
            {
                return Err(Error::Internal(format!(
                    "the cluster's {what} is {:?}; this worker was given {want:?}: start it with \
                     {flag} matching the other workers",
                    c.max_age
                )));
            }
            if c.num_replicas != config.replicas {
                return Err(Error::Internal(format!(
                    "the cluster's {what} has {} replica(s); this worker was given \
                     --nats-replicas {}",
                    c.num_replicas, config.replicas
                )));
            }
        }
        if let Ok(mut existing) = js
            .get_consumer_from_stream::<consumer::pull::Config, _, _>(TASK_CONSUMER, TASK_STREAM)
            .await
            && let Ok(info) = existing.info().await
            && info.config.ack_wait != config.ack_wait
        {
            return Err(Error::Internal(format!(
                "the cluster's ack wait is {:?}; this worker was given {:?}: start it with \
                 --ack-wait matching the other workers",
                info.config.ack_wait, config.ack_wait
            )));
        }
        let replicas = config.replicas;
        let bucket = |name: &str, max_age: Duration| kv::Config {
            bucket: name.to_owned(),
            history: 1,
            max_age,
            storage: stream::StorageType::File,
            num_replicas: replicas,
            ..Default::default()
        };
        let functions = js
            .create_or_update_key_value(bucket(FUNCTIONS_BUCKET, Duration::ZERO))
            .await
            .map_err(|e| setup(FUNCTIONS_BUCKET, &e))?;
        let tasks = js
            .create_or_update_key_value(bucket(TASKS_BUCKET, task_ttl))
            .await
            .map_err(|e| setup(TASKS_BUCKET, &e))?;
        let workers = js
            .create_or_update_key_value(kv::Config {
                // Announces an expired heartbeat with a marker.
                limit_markers: Some(ttl.max(Duration::from_secs(1))),
                ..bucket(WORKERS_BUCKET, ttl)
            })
            .await
            .map_err(|e| setup(WORKERS_BUCKET, &e))?;
        let objects = |name: &str, max_age: Duration| object_store::Config {
            bucket: name.to_owned(),
            max_age,
            storage: stream::StorageType::File,
            num_replicas: replicas,
            ..Default::default()
        };
        let code = match js.get_object_store(CODE_BUCKET).await {
            Ok(s) => s,
            Err(_) => js
                .create_object_store(objects(CODE_BUCKET, Duration::ZERO))
                .await
                .map_err(|e| setup(CODE_BUCKET, &e))?,
        };
        let data = match js.get_object_store(DATA_BUCKET).await {
            Ok(s) => s,
            Err(_) => js
                .create_object_store(objects(DATA_BUCKET, task_ttl))
                .await
                .map_err(|e| setup(DATA_BUCKET, &e))?,
        };
        let stream = js
            .create_or_update_stream(stream::Config {
                name: TASK_STREAM.to_owned(),
                subjects: vec![TASK_SUBJECT.to_owned()],
                retention: stream::RetentionPolicy::WorkQueue,
                storage: stream::StorageType::File,
                num_replicas: replicas,
                // A resubmission with the same task id within this window
                // is dropped by JetStream.
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            })
            .await
            .map_err(|e| setup(TASK_STREAM, &e))?;
        let _ = stream;
        let consumer = js
            .create_consumer_on_stream(
                consumer::pull::Config {
                    durable_name: Some(TASK_CONSUMER.to_owned()),
                    description: Some("every Colony worker pulls tasks here".to_owned()),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: config.ack_wait,
                    max_deliver: -1,
                    max_ack_pending: 100_000,
                    num_replicas: replicas,
                    ..Default::default()
                },
                TASK_STREAM,
            )
            .await
            .map_err(|e| setup(TASK_CONSUMER, &e))?;
        tracing::info!(url = %url, server = %info.version, replicas, "joined the cluster");
        Ok(Self {
            client,
            js,
            functions,
            code,
            tasks,
            data,
            workers,
            consumer,
            config: config.clone(),
        })
    }
}

/// A JSON value of a KV bucket and its revision; `None` when the key is
/// absent or deleted. `what` names it in the error when it is unreadable.
pub(crate) async fn read_json<T: serde::de::DeserializeOwned>(
    store: &kv::Store,
    key: &str,
    what: impl FnOnce() -> String,
) -> Result<Option<(T, u64)>> {
    match store.entry(key).await.map_err(unavailable)? {
        Some(e) if e.operation == kv::Operation::Put => {
            let value = serde_json::from_slice(&e.value)
                .map_err(|err| Error::Internal(format!("{} is unreadable: {err}", what())))?;
            Ok(Some((value, e.revision)))
        }
        _ => Ok(None),
    }
}

/// Reads a whole object.
pub(crate) async fn read_object(
    store: &object_store::ObjectStore,
    name: &str,
) -> std::result::Result<Option<bytes::Bytes>, String> {
    use tokio::io::AsyncReadExt;
    match store.get(name).await {
        Ok(mut obj) => {
            let mut buf = Vec::with_capacity(obj.info().size);
            obj.read_to_end(&mut buf).await.map_err(|e| e.to_string())?;
            Ok(Some(bytes::Bytes::from(buf)))
        }
        Err(e) if e.kind() == object_store::GetErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// Writes a whole object.
pub(crate) async fn write_object(
    store: &object_store::ObjectStore,
    name: &str,
    bytes: &[u8],
) -> std::result::Result<(), String> {
    let mut reader = bytes;
    store
        .put(name, &mut reader)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::parse_version;

    #[test]
    fn versions_parse() {
        assert_eq!(parse_version("2.15.1"), Some((2, 15)));
        assert_eq!(parse_version("v2.11.0-RC.1"), Some((2, 11)));
        assert_eq!(parse_version("2.9.10"), Some((2, 9)));
        assert!(parse_version("2.9.10") < Some(super::MIN_NATS_VERSION));
        assert_eq!(parse_version("garbage"), None);
    }
}
