//! `colony serve` settings: raw values from flags, `COLONY_*` variables
//! and the TOML config file, merged (flag or variable over file over
//! default) and validated into [`ServeConfig`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use colony_api::{Auth, Scope};
use colony_core::units::{parse_duration, parse_size};
use colony_worker::WorkerConfig;
use serde::Deserialize;

/// Default listen address.
pub(crate) const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default data directory.
pub(crate) const DEFAULT_DATA_DIR: &str = "./colony-data";
/// Default grace period for in-flight calls at shutdown.
pub(crate) const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Settings as written: every field optional, durations and sizes as
/// human spellings. The config file has exactly these keys.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub(crate) listen: Option<String>,
    pub(crate) data_dir: Option<PathBuf>,
    pub(crate) concurrency: Option<usize>,
    pub(crate) queue: Option<usize>,
    pub(crate) queue_wait: Option<String>,
    pub(crate) max_body: Option<String>,
    pub(crate) max_code: Option<String>,
    pub(crate) max_timeout: Option<String>,
    pub(crate) max_memory: Option<String>,
    pub(crate) max_output: Option<String>,
    pub(crate) instances: Option<u32>,
    pub(crate) epoch_tick: Option<String>,
    pub(crate) drain_timeout: Option<String>,
    pub(crate) task_ttl: Option<String>,
    pub(crate) sweep_interval: Option<String>,
    pub(crate) result_inline_max: Option<String>,
    pub(crate) max_functions: Option<usize>,
    pub(crate) max_inflight_per_token: Option<usize>,
    pub(crate) log_format: Option<String>,
    /// Host directories manifests may mount (file and flags add up).
    #[serde(default)]
    pub(crate) allowed_dirs: Vec<PathBuf>,
    pub(crate) nats: Option<String>,
    pub(crate) nats_replicas: Option<usize>,
    pub(crate) role: Option<String>,
    pub(crate) ack_wait: Option<String>,
    pub(crate) heartbeat: Option<String>,
    /// Tokens from the file: `[[tokens]]` tables.
    #[serde(default)]
    pub(crate) tokens: Vec<TokenConfig>,
    /// `admin` tokens from flags or the environment (comma-separated).
    #[serde(skip)]
    pub(crate) admin_tokens: Vec<String>,
    /// `invoke` tokens from flags or the environment (comma-separated).
    #[serde(skip)]
    pub(crate) invoke_tokens: Vec<String>,
}

/// One `[[tokens]]` table of the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TokenConfig {
    /// A name for logs and task owners.
    pub(crate) name: String,
    /// The secret.
    pub(crate) token: String,
    /// `admin` or `invoke`.
    pub(crate) scope: String,
}

impl RawConfig {
    /// Reads a config file.
    pub(crate) fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
    }

    /// `self` with `over`'s set fields taking precedence.
    pub(crate) fn overlay(self, over: RawConfig) -> Self {
        Self {
            listen: over.listen.or(self.listen),
            data_dir: over.data_dir.or(self.data_dir),
            concurrency: over.concurrency.or(self.concurrency),
            queue: over.queue.or(self.queue),
            queue_wait: over.queue_wait.or(self.queue_wait),
            max_body: over.max_body.or(self.max_body),
            max_code: over.max_code.or(self.max_code),
            max_timeout: over.max_timeout.or(self.max_timeout),
            max_memory: over.max_memory.or(self.max_memory),
            max_output: over.max_output.or(self.max_output),
            instances: over.instances.or(self.instances),
            epoch_tick: over.epoch_tick.or(self.epoch_tick),
            drain_timeout: over.drain_timeout.or(self.drain_timeout),
            task_ttl: over.task_ttl.or(self.task_ttl),
            sweep_interval: over.sweep_interval.or(self.sweep_interval),
            result_inline_max: over.result_inline_max.or(self.result_inline_max),
            max_functions: over.max_functions.or(self.max_functions),
            max_inflight_per_token: over.max_inflight_per_token.or(self.max_inflight_per_token),
            log_format: over.log_format.or(self.log_format),
            allowed_dirs: [self.allowed_dirs, over.allowed_dirs].concat(),
            nats: over.nats.or(self.nats),
            nats_replicas: over.nats_replicas.or(self.nats_replicas),
            role: over.role.or(self.role),
            ack_wait: over.ack_wait.or(self.ack_wait),
            heartbeat: over.heartbeat.or(self.heartbeat),
            tokens: [self.tokens, over.tokens].concat(),
            admin_tokens: [self.admin_tokens, over.admin_tokens].concat(),
            invoke_tokens: [self.invoke_tokens, over.invoke_tokens].concat(),
        }
    }

    /// Validates and fills defaults.
    pub(crate) fn validate(self) -> anyhow::Result<ServeConfig> {
        let listen_text = self.listen.unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        let listen: SocketAddr = listen_text
            .parse()
            .with_context(|| format!("listen: {listen_text:?} is not an IP:PORT address"))?;
        let mut w = WorkerConfig::new(
            self.data_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
        );
        let duration = |key: &str, v: Option<String>| -> anyhow::Result<Option<Duration>> {
            v.map(|v| parse_duration(&v).map_err(|e| anyhow::anyhow!("{key}: {e}")))
                .transpose()
        };
        let size = |key: &str, v: Option<String>| -> anyhow::Result<Option<u64>> {
            v.map(|v| parse_size(&v).map_err(|e| anyhow::anyhow!("{key}: {e}")))
                .transpose()
        };
        if let Some(c) = self.concurrency {
            w.concurrency = c;
        }
        if let Some(q) = self.queue {
            w.queue = q;
        }
        if let Some(d) = duration("queue_wait", self.queue_wait)? {
            w.max_queue_wait = d;
        }
        if let Some(s) = size("max_code", self.max_code)? {
            w.max_code_bytes = s;
        }
        if let Some(d) = duration("max_timeout", self.max_timeout)? {
            w.max_timeout = d;
        }
        if let Some(s) = size("max_memory", self.max_memory)? {
            w.max_memory_bytes = s;
        }
        if let Some(s) = size("max_output", self.max_output)? {
            w.max_output_bytes = s;
        }
        if let Some(i) = self.instances {
            w.instances = i;
        }
        if let Some(d) = duration("epoch_tick", self.epoch_tick)? {
            w.epoch_tick = d;
        }
        if let Some(d) = duration("task_ttl", self.task_ttl)? {
            w.tasks.ttl = d;
        }
        if let Some(d) = duration("sweep_interval", self.sweep_interval)? {
            if d.is_zero() {
                bail!("sweep_interval: must be greater than zero");
            }
            w.tasks.sweep_interval = d;
        }
        if let Some(s) = size("result_inline_max", self.result_inline_max)? {
            w.tasks.result_inline_max =
                usize::try_from(s).context("result_inline_max is too large")?;
        }
        for d in &self.allowed_dirs {
            if !d.is_dir() {
                bail!("allowed_dirs: {} is not a directory", d.display());
            }
        }
        w.allowed_dirs = self.allowed_dirs;
        let cluster_only = [
            ("nats_replicas", self.nats_replicas.is_some()),
            ("role", self.role.is_some()),
            ("ack_wait", self.ack_wait.is_some()),
            ("heartbeat", self.heartbeat.is_some()),
        ];
        match self.nats.filter(|u| !u.trim().is_empty()) {
            Some(url) => {
                let mut c = colony_worker::ClusterConfig::new(url);
                if let Some(n) = self.nats_replicas {
                    c.replicas = n;
                }
                if let Some(d) = duration("ack_wait", self.ack_wait)? {
                    c.ack_wait = d;
                }
                if let Some(d) = duration("heartbeat", self.heartbeat)? {
                    c.heartbeat = d;
                }
                c.role = match self.role.as_deref() {
                    None | Some("worker") => colony_core::wire::WorkerRole::Worker,
                    Some("gateway") => colony_core::wire::WorkerRole::Gateway,
                    Some(other) => bail!("role: {other:?} is not worker or gateway"),
                };
                w.cluster = Some(c);
            }
            None => {
                if let Some((name, _)) = cluster_only.iter().find(|(_, set)| *set) {
                    bail!("{name}: only applies in a cluster; set nats (--nats URL) too");
                }
            }
        }
        // The pool needs a slot for every running call; grow it to fit a
        // large concurrency rather than refuse.
        if self.instances.is_none() && w.concurrency > w.instances as usize {
            w.instances = u32::try_from(w.concurrency).unwrap_or(u32::MAX);
        }
        if let Err(e) = w.validate() {
            bail!("{e}");
        }
        if let Some(n) = self.max_functions {
            w.max_functions = n;
        }
        let mut tokens = Vec::new();
        for t in self.tokens {
            let scope = t
                .scope
                .parse::<Scope>()
                .map_err(|e| anyhow::anyhow!("tokens: {e}"))?;
            tokens.push((t.name, t.token, scope));
        }
        for (scope, kind, list) in [
            (Scope::Admin, "admin", self.admin_tokens),
            (Scope::Invoke, "invoke", self.invoke_tokens),
        ] {
            let secrets = list
                .iter()
                .flat_map(|l| l.split(','))
                .map(str::trim)
                .filter(|s| !s.is_empty());
            for (i, secret) in secrets.enumerate() {
                tokens.push((format!("{kind}-{}", i + 1), secret.to_owned(), scope));
            }
        }
        let auth = Auth::new(tokens)
            .map_err(|e| anyhow::anyhow!("tokens: {e}"))?
            .with_max_inflight(self.max_inflight_per_token.unwrap_or(0));
        let log_format = match self.log_format.as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => bail!("log_format: {other:?} is not text or json"),
        };
        let max_body =
            size("max_body", self.max_body)?.unwrap_or(colony_api::DEFAULT_MAX_BODY_BYTES as u64);
        let drain_timeout =
            duration("drain_timeout", self.drain_timeout)?.unwrap_or(DEFAULT_DRAIN_TIMEOUT);
        Ok(ServeConfig {
            listen,
            auth,
            log_format,
            worker: w,
            max_body_bytes: usize::try_from(max_body).context("max_body is too large")?,
            drain_timeout,
        })
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Validated `colony serve` settings.
#[derive(Debug)]
pub(crate) struct ServeConfig {
    pub(crate) listen: SocketAddr,
    pub(crate) auth: Auth,
    pub(crate) log_format: LogFormat,
    pub(crate) worker: WorkerConfig,
    pub(crate) max_body_bytes: usize,
    pub(crate) drain_timeout: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let c = RawConfig::default().validate().unwrap();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.worker.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert_eq!(c.drain_timeout, DEFAULT_DRAIN_TIMEOUT);
    }

    #[test]
    fn the_file_is_parsed_and_flags_win() {
        let file: RawConfig = toml::from_str(
            r#"
            listen = "0.0.0.0:9000"
            concurrency = 4
            queue = 10
            queue_wait = "2s"
            max_body = "1MiB"
            max_memory = "512MiB"
            drain_timeout = "5s"
            "#,
        )
        .unwrap();
        let flags = RawConfig {
            concurrency: Some(8),
            ..Default::default()
        };
        let c = file.overlay(flags).validate().unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(c.worker.concurrency, 8);
        assert_eq!(c.worker.queue, 10);
        assert_eq!(c.worker.max_queue_wait, Duration::from_secs(2));
        assert_eq!(c.max_body_bytes, 1 << 20);
        assert_eq!(c.worker.max_memory_bytes, 512 << 20);
        assert_eq!(c.drain_timeout, Duration::from_secs(5));
    }

    #[test]
    fn mistakes_are_named() {
        let err = toml::from_str::<RawConfig>("concurency = 4")
            .unwrap_err()
            .to_string();
        assert!(err.contains("concurency"), "{err}");
        for (raw, needle) in [
            (
                RawConfig {
                    listen: Some("localhost".into()),
                    ..Default::default()
                },
                "listen",
            ),
            (
                RawConfig {
                    max_body: Some("big".into()),
                    ..Default::default()
                },
                "max_body",
            ),
            (
                RawConfig {
                    queue_wait: Some("soon".into()),
                    ..Default::default()
                },
                "queue_wait",
            ),
            (
                RawConfig {
                    concurrency: Some(0),
                    ..Default::default()
                },
                "concurrency",
            ),
            (
                RawConfig {
                    max_timeout: Some("5s".into()),
                    ..Default::default()
                },
                "default timeout",
            ),
            (
                RawConfig {
                    max_memory: Some("64MiB".into()),
                    ..Default::default()
                },
                "default memory",
            ),
        ] {
            let err = format!("{:#}", raw.validate().unwrap_err());
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }

    #[test]
    fn tokens_come_from_the_file_and_the_flags() {
        let file: RawConfig = toml::from_str(
            r#"
            [[tokens]]
            name = "ci"
            token = "0123456789abcdef-ci"
            scope = "admin"
            "#,
        )
        .unwrap();
        let flags = RawConfig {
            invoke_tokens: vec!["0123456789abcdef-a, 0123456789abcdef-b".into()],
            ..Default::default()
        };
        let c = file.overlay(flags).validate().unwrap();
        assert_eq!(c.auth.counts(), (1, 2));
        assert!(RawConfig::default().validate().unwrap().auth.is_open());
        let short = RawConfig {
            admin_tokens: vec!["short".into()],
            ..Default::default()
        };
        assert!(format!("{:#}", short.validate().unwrap_err()).contains("shorter"));
        let bad: RawConfig = toml::from_str(
            "[[tokens]]\nname = \"x\"\ntoken = \"0123456789abcdef\"\nscope = \"root\"",
        )
        .unwrap();
        assert!(format!("{:#}", bad.validate().unwrap_err()).contains("root"));
    }

    #[test]
    fn a_large_concurrency_grows_the_pool() {
        let c = RawConfig {
            concurrency: Some(2000),
            ..Default::default()
        }
        .validate()
        .unwrap();
        assert_eq!(c.worker.instances, 2000);
        let err = RawConfig {
            concurrency: Some(20),
            instances: Some(10),
            ..Default::default()
        }
        .validate();
        assert!(err.is_err());
    }
}

#[cfg(test)]
mod cluster_tests {
    use super::*;

    #[test]
    fn cluster_settings_come_from_the_file_and_need_nats() {
        let file: RawConfig = toml::from_str(
            r#"
            nats = "nats://n1:4222,nats://n2:4222"
            nats_replicas = 3
            role = "gateway"
            ack_wait = "10s"
            heartbeat = "500ms"
            "#,
        )
        .unwrap();
        let c = file.validate().unwrap().worker.cluster.unwrap();
        assert_eq!(c.url, "nats://n1:4222,nats://n2:4222");
        assert_eq!(c.replicas, 3);
        assert_eq!(c.role, colony_core::wire::WorkerRole::Gateway);
        assert_eq!(c.ack_wait, Duration::from_secs(10));
        assert_eq!(c.heartbeat_ttl(), Duration::from_millis(1500));

        for (raw, needle) in [
            (
                RawConfig {
                    role: Some("gateway".into()),
                    ..Default::default()
                },
                "role: only applies in a cluster",
            ),
            (
                RawConfig {
                    ack_wait: Some("5s".into()),
                    ..Default::default()
                },
                "ack_wait: only applies in a cluster",
            ),
            (
                RawConfig {
                    nats: Some("nats://x:4222".into()),
                    role: Some("router".into()),
                    ..Default::default()
                },
                "role: \"router\" is not worker or gateway",
            ),
            (
                RawConfig {
                    nats: Some("nats://x:4222".into()),
                    nats_replicas: Some(7),
                    ..Default::default()
                },
                "replicas: must be between 1 and 5",
            ),
            (
                RawConfig {
                    nats: Some("nats://x:4222".into()),
                    heartbeat: Some("10ms".into()),
                    ..Default::default()
                },
                "heartbeat: must be between 100ms and 60s",
            ),
        ] {
            let err = raw.validate().unwrap_err().to_string();
            assert!(err.contains(needle), "{err} should say {needle}");
        }
    }
}
