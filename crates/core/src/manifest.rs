//! Revision manifests: what a revision declares besides its code.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::task::{MAX_ATTEMPTS_CEILING, RetryPolicy};

/// Default guest timeout: 10 s.
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;
/// Default linear-memory cap: 128 MiB.
pub const DEFAULT_MEMORY_BYTES: u64 = 128 << 20;
/// Default output cap: 8 MiB.
pub const DEFAULT_OUTPUT_BYTES: u64 = 8 << 20;
/// Most environment variables a manifest may set.
pub const MAX_ENV_VARS: usize = 256;
/// Most arguments a manifest may pass.
pub const MAX_ARGS: usize = 256;
/// Most directories a manifest may mount.
pub const MAX_DIRS: usize = 16;

/// A host directory a function sees (a WASI preopen). The worker allows
/// only host paths under its operator's `allowed_dirs`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DirMount {
    /// The directory on the worker's host (absolute).
    pub host: String,
    /// Where the guest sees it, e.g. `/data`.
    pub guest: String,
    /// The guest may only read.
    #[serde(default)]
    pub read_only: bool,
}

impl DirMount {
    /// Parses `HOST:GUEST[:ro|:rw]` (read-write without a suffix).
    pub fn parse(s: &str) -> Result<Self, String> {
        let (rest, read_only) = if let Some(r) = s.strip_suffix(":ro") {
            (r, true)
        } else if let Some(r) = s.strip_suffix(":rw") {
            (r, false)
        } else {
            (s, false)
        };
        let (host, guest) = rest
            .rsplit_once(':')
            .ok_or_else(|| format!("{s:?} is not HOST:GUEST[:ro]"))?;
        Ok(Self {
            host: host.to_owned(),
            guest: guest.to_owned(),
            read_only,
        })
    }
}
/// Largest total size of environment and arguments, in bytes.
pub const MAX_ENV_ARGS_BYTES: usize = 64 << 10;

/// How inputs and outputs reach a function's code.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum IoRuntime {
    /// The payload is the guest's stdin; its stdout is the result.
    #[default]
    Stdio,
    /// The payload is named files, staged read-only in `/input`; the
    /// files the guest writes to `/output` are the result.
    Files,
}

/// Resource limits of one invocation, enforced by the executor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Wall-clock limit of one invocation, in milliseconds.
    pub timeout_ms: u64,
    /// Cap on the guest's linear memory, in bytes.
    pub memory_bytes: u64,
    /// Cap on the result (stdout), in bytes.
    pub output_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            timeout_ms: DEFAULT_TIMEOUT_MS,
            memory_bytes: DEFAULT_MEMORY_BYTES,
            output_bytes: DEFAULT_OUTPUT_BYTES,
        }
    }
}

impl Limits {
    /// The timeout as a [`Duration`].
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

/// What a revision declares: which executor runs it, how I/O reaches it, its
/// limits, environment and arguments. Part of the revision id, so it is
/// immutable once deployed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct Manifest {
    /// Executor name, e.g. `wasm` or `builtin`.
    pub executor: String,
    /// I/O runtime.
    pub io: IoRuntime,
    /// Limits of each invocation.
    pub limits: Limits,
    /// Environment variables visible to the guest (nothing is inherited).
    pub env: BTreeMap<String, String>,
    /// Arguments after `argv[0]` (which is the function name).
    pub args: Vec<String>,
    /// How the function's tasks retry. Left out of the canonical JSON when
    /// default, so revision ids of older manifests do not change.
    #[serde(skip_serializing_if = "is_default")]
    pub retry: RetryPolicy,
    /// Most invocations of this function running at once on a worker,
    /// calls and tasks together; 0 for no limit but the worker's.
    #[serde(skip_serializing_if = "is_default")]
    pub concurrency: u32,
    /// Host directories the guest sees (left out of the canonical JSON
    /// when empty).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dirs: Vec<DirMount>,
    /// With `io = files`: the input files a call must give (any when
    /// empty).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<String>,
    /// With `io = files`: the files of `/output` that are the result (all
    /// when empty).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<String>,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

impl Default for Manifest {
    fn default() -> Self {
        Self {
            executor: "wasm".to_owned(),
            io: IoRuntime::Stdio,
            limits: Limits::default(),
            env: BTreeMap::new(),
            args: Vec::new(),
            retry: RetryPolicy::default(),
            concurrency: 0,
            dirs: Vec::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
        }
    }
}

/// Why a manifest was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// A field has a value outside what is allowed.
    #[error("manifest field `{field}`: {reason}")]
    Invalid {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ManifestError {
    ManifestError::Invalid {
        field,
        reason: reason.into(),
    }
}

impl Manifest {
    /// The canonical JSON form that enters the revision id.
    pub fn canonical_json(&self) -> String {
        serde_json::to_string(self).expect("a manifest always serializes")
    }

    /// Checks the manifest's own consistency (not the worker's ceilings,
    /// which the worker checks against its configuration).
    pub fn validate(&self) -> Result<(), ManifestError> {
        let exec = &self.executor;
        if exec.is_empty()
            || exec.len() > 32
            || !exec
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(invalid(
                "executor",
                format!("{exec:?} is not an executor name"),
            ));
        }
        if self.limits.timeout_ms == 0 {
            return Err(invalid("limits.timeout_ms", "must be greater than zero"));
        }
        if self.limits.memory_bytes < 64 << 10 {
            return Err(invalid(
                "limits.memory_bytes",
                "must be at least 64KiB (one wasm page)",
            ));
        }
        if self.limits.output_bytes == 0 {
            return Err(invalid("limits.output_bytes", "must be greater than zero"));
        }
        let r = &self.retry;
        if r.max_attempts == 0 || r.max_attempts > MAX_ATTEMPTS_CEILING {
            return Err(invalid(
                "retry.max_attempts",
                format!("must be between 1 and {MAX_ATTEMPTS_CEILING}"),
            ));
        }
        if r.backoff_ms > r.max_backoff_ms {
            return Err(invalid(
                "retry.backoff_ms",
                "must not exceed retry.max_backoff_ms",
            ));
        }
        if self.env.len() > MAX_ENV_VARS {
            return Err(invalid(
                "env",
                format!("{} variables; the limit is {MAX_ENV_VARS}", self.env.len()),
            ));
        }
        if self.dirs.len() > MAX_DIRS {
            return Err(invalid(
                "dirs",
                format!("{} directories; the limit is {MAX_DIRS}", self.dirs.len()),
            ));
        }
        for (i, d) in self.dirs.iter().enumerate() {
            if !d.host.starts_with('/') || d.host.contains('\0') {
                return Err(invalid(
                    "dirs",
                    format!("host {:?} is not an absolute path", d.host),
                ));
            }
            let guest_ok = d.guest == "/"
                || d.guest.starts_with('/')
                    && !d.guest.ends_with('/')
                    && !d.guest.contains('\0')
                    && d.guest[1..]
                        .split('/')
                        .all(|c| !c.is_empty() && c != ".." && c != ".");
            if !guest_ok {
                return Err(invalid(
                    "dirs",
                    format!(
                        "guest {:?} is not an absolute path like /data (no ., .., // or trailing /)",
                        d.guest
                    ),
                ));
            }
            if self.dirs[..i].iter().any(|o| o.guest == d.guest) {
                return Err(invalid(
                    "dirs",
                    format!("guest {:?} is mounted twice", d.guest),
                ));
            }
        }
        if self.io == IoRuntime::Files && self.executor != "wasm" {
            return Err(invalid(
                "io",
                format!(
                    "the files I/O runtime runs on executor wasm, not {}",
                    self.executor
                ),
            ));
        }
        if self.io != IoRuntime::Files && !(self.inputs.is_empty() && self.outputs.is_empty()) {
            return Err(invalid("inputs", "inputs and outputs need io = files"));
        }
        for (field, names) in [("inputs", &self.inputs), ("outputs", &self.outputs)] {
            if names.len() > crate::files::MAX_FILES {
                return Err(invalid(
                    field,
                    format!(
                        "{} files; the limit is {}",
                        names.len(),
                        crate::files::MAX_FILES
                    ),
                ));
            }
            for (i, n) in names.iter().enumerate() {
                if !crate::files::valid_file_name(n) {
                    return Err(invalid(
                        field,
                        format!("{n:?} is not a file name (letters, digits, '.', '_', '-')"),
                    ));
                }
                if names[..i].contains(n) {
                    return Err(invalid(field, format!("{n} is named twice")));
                }
            }
        }
        if self.args.len() > MAX_ARGS {
            return Err(invalid(
                "args",
                format!("{} arguments; the limit is {MAX_ARGS}", self.args.len()),
            ));
        }
        let mut total = 0;
        for (k, v) in &self.env {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                return Err(invalid("env", format!("{k:?} is not a variable name")));
            }
            if v.contains('\0') {
                return Err(invalid(
                    "env",
                    format!("the value of {k} contains a NUL byte"),
                ));
            }
            total += k.len() + v.len() + 2;
        }
        for a in &self.args {
            if a.contains('\0') {
                return Err(invalid("args", "an argument contains a NUL byte"));
            }
            total += a.len() + 1;
        }
        if total > MAX_ENV_ARGS_BYTES {
            return Err(invalid(
                "env",
                format!(
                    "environment and arguments take {total} bytes; the limit is {MAX_ENV_ARGS_BYTES}"
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones() {
        let m = Manifest::default();
        assert_eq!(m.executor, "wasm");
        assert_eq!(m.limits.timeout(), Duration::from_secs(10));
        assert_eq!(m.limits.memory_bytes, 128 * 1024 * 1024);
        assert_eq!(m.limits.output_bytes, 8 * 1024 * 1024);
        m.validate().unwrap();
    }

    #[test]
    fn parses_partial_json_and_rejects_unknown_fields() {
        let m: Manifest =
            serde_json::from_str(r#"{"limits":{"timeout_ms":500},"args":["-v"]}"#).unwrap();
        assert_eq!(m.limits.timeout_ms, 500);
        assert_eq!(m.limits.memory_bytes, DEFAULT_MEMORY_BYTES);
        assert_eq!(m.args, ["-v"]);
        let err = serde_json::from_str::<Manifest>(r#"{"timeout":5}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `timeout`"), "{err}");
    }

    #[test]
    fn canonical_json_is_order_independent() {
        let mut a = Manifest::default();
        a.env.insert("B".into(), "2".into());
        a.env.insert("A".into(), "1".into());
        let mut b = Manifest::default();
        b.env.insert("A".into(), "1".into());
        b.env.insert("B".into(), "2".into());
        assert_eq!(a.canonical_json(), b.canonical_json());
    }

    #[test]
    fn rejects_bad_fields() {
        let mut m = Manifest::default();
        m.env.insert("A=B".into(), "x".into());
        assert!(matches!(
            m.validate(),
            Err(ManifestError::Invalid { field: "env", .. })
        ));
        let m = Manifest {
            executor: "../x".into(),
            ..Default::default()
        };
        assert!(matches!(
            m.validate(),
            Err(ManifestError::Invalid {
                field: "executor",
                ..
            })
        ));
        let mut m = Manifest::default();
        m.limits.timeout_ms = 0;
        assert!(m.validate().is_err());
        let m = Manifest {
            args: vec!["a".into(); MAX_ARGS + 1],
            ..Default::default()
        };
        assert!(matches!(
            m.validate(),
            Err(ManifestError::Invalid { field: "args", .. })
        ));
        let m = Manifest {
            args: vec!["a".repeat(1000); 100],
            ..Default::default()
        };
        assert!(m.validate().is_err());
    }
}
