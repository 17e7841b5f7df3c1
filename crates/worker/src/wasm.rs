//! The `wasm` executor: WASI preview1 command modules on [`colony_engine`].

use std::sync::Arc;

use bytes::Bytes;
use colony_core::{Failure, FunctionName, IoRuntime, Limits, Manifest};
use colony_engine::{Engine, Invocation, Preopen, Program};

use crate::executor::{Call, Executor, PrepareError, Runnable};

/// Runs WASI command modules: payload on stdin, result on stdout.
#[derive(Debug, Clone)]
pub struct WasmExecutor {
    engine: Engine,
    /// Host directories manifests may mount (canonical paths), and what
    /// is under them.
    allowed_dirs: Vec<std::path::PathBuf>,
    /// Where calls of `files` functions get their scratch directories.
    scratch: Option<std::path::PathBuf>,
}

impl WasmExecutor {
    /// An executor over `engine`; manifests may mount no directory.
    pub fn new(engine: Engine) -> Self {
        Self {
            engine,
            allowed_dirs: Vec::new(),
            scratch: None,
        }
    }

    /// Runs `files` functions with scratch directories under `dir` (which
    /// must exist); without one they are refused at deploy.
    pub fn with_scratch(mut self, dir: std::path::PathBuf) -> Self {
        self.scratch = Some(dir);
        self
    }

    /// Lets manifests mount these host directories and what is under them.
    pub fn with_allowed_dirs(mut self, dirs: &[std::path::PathBuf]) -> Self {
        self.allowed_dirs = canonical_dirs(dirs);
        self
    }
}

/// Canonical forms of the allowed directories that exist.
pub(crate) fn canonical_dirs(dirs: &[std::path::PathBuf]) -> Vec<std::path::PathBuf> {
    dirs.iter()
        .filter_map(|d| std::fs::canonicalize(d).ok())
        .collect()
}

/// A mount as a path below an allowed directory, opened afresh for every
/// call one component at a time without following symlinks: if anything
/// replaced a directory on the way with a symlink after deploy, the call
/// fails instead of following it out of the allowed directory.
#[derive(Debug, Clone)]
pub(crate) struct Mount {
    root: std::path::PathBuf,
    below: Vec<std::ffi::OsString>,
    guest: String,
    read_only: bool,
}

impl Mount {
    /// The directory, open, and the preopen that names it through
    /// `/proc/self/fd` (so WASI opens exactly that directory).
    fn open(&self) -> std::io::Result<(std::os::fd::OwnedFd, Preopen)> {
        use rustix::fs::{Mode, OFlags};
        use std::os::fd::AsRawFd;
        let flags = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC;
        let mut dir = rustix::fs::open(&self.root, flags, Mode::empty())?;
        for name in &self.below {
            dir = rustix::fs::openat(
                &dir,
                name.as_os_str(),
                flags | OFlags::NOFOLLOW,
                Mode::empty(),
            )?;
        }
        let host = std::path::PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
        Ok((
            dir,
            Preopen {
                host,
                guest: self.guest.clone(),
                read_only: self.read_only,
            },
        ))
    }

    fn host(&self) -> std::path::PathBuf {
        self.below.iter().fold(self.root.clone(), |p, c| p.join(c))
    }
}

/// A manifest's mounts, each checked against `allowed` (canonical paths):
/// the host directory must exist and lie under one of them.
pub(crate) fn preopens(
    allowed: &[std::path::PathBuf],
    manifest: &Manifest,
) -> Result<Vec<Mount>, String> {
    let mounts = mounts(allowed, manifest)?;
    // A writable mount overlapping another would reach what a read-only
    // one shows (read-only mounts may overlap).
    for (i, a) in mounts.iter().enumerate() {
        for b in &mounts[..i] {
            let (ha, hb) = (a.host(), b.host());
            let overlap = ha.starts_with(&hb) || hb.starts_with(&ha);
            if overlap && !(a.read_only && b.read_only) {
                return Err(format!(
                    "directories {} and {} overlap and one is writable; mount a tree \
                     read-write once",
                    hb.display(),
                    ha.display()
                ));
            }
        }
    }
    Ok(mounts)
}

fn mounts(allowed: &[std::path::PathBuf], manifest: &Manifest) -> Result<Vec<Mount>, String> {
    manifest
        .dirs
        .iter()
        .map(|d| {
            let refuse = |why: String| format!("directory {}: {why}", d.host);
            let host = std::fs::canonicalize(&d.host)
                .map_err(|e| refuse(format!("cannot be opened on this worker: {e}")))?;
            if !host.is_dir() {
                return Err(refuse("is not a directory".into()));
            }
            let Some(root) = allowed
                .iter()
                .filter(|a| host.starts_with(a))
                // The outermost: every directory below it is opened
                // without following symlinks, including nested allowed
                // directories a guest with the outer one mounted could swap.
                .min_by_key(|a| a.as_os_str().len())
            else {
                return Err(refuse(if allowed.is_empty() {
                    "this worker allows no directories (serve --allow-dir)".into()
                } else {
                    format!(
                        "is not under a directory this worker allows ({})",
                        allowed
                            .iter()
                            .map(|a| a.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }));
            };
            let below = host
                .strip_prefix(root)
                .expect("under root")
                .components()
                .map(|c| c.as_os_str().to_owned())
                .collect();
            Ok(Mount {
                root: root.clone(),
                below,
                guest: d.guest.clone(),
                read_only: d.read_only,
            })
        })
        .collect()
}

impl Executor for WasmExecutor {
    fn prepare(
        &self,
        name: &FunctionName,
        code: &[u8],
        manifest: &Manifest,
    ) -> Result<Arc<dyn Runnable>, PrepareError> {
        let dirs = preopens(&self.allowed_dirs, manifest)
            .map_err(|reason| PrepareError::InvalidCode { reason })?;
        let program = self.engine.prepare(code)?;
        let argv = std::iter::once(name.to_string())
            .chain(manifest.args.iter().cloned())
            .collect();
        let env = manifest
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let runnable = WasmRunnable {
            program,
            argv,
            env,
            limits: manifest.limits,
            dirs,
        };
        match manifest.io {
            IoRuntime::Stdio => Ok(Arc::new(runnable)),
            IoRuntime::Files => {
                let scratch = self.scratch.clone().ok_or_else(|| {
                    PrepareError::Internal("this worker has no scratch directory".into())
                })?;
                if let Some(d) = manifest.dirs.iter().find(|d| {
                    d.guest == "/"
                        || d.guest.starts_with("/input")
                        || d.guest.starts_with("/output")
                }) {
                    return Err(PrepareError::InvalidCode {
                        reason: format!(
                            "directory {}: a files function's /input and /output are its own",
                            d.guest
                        ),
                    });
                }
                Ok(Arc::new(crate::files::FilesRunnable::new(
                    runnable,
                    scratch,
                    manifest.outputs.clone(),
                )))
            }
        }
    }
}

#[derive(Debug)]
pub(crate) struct WasmRunnable {
    program: Program,
    argv: Vec<String>,
    env: Vec<(String, String)>,
    limits: Limits,
    dirs: Vec<Mount>,
}

#[async_trait::async_trait]
impl Runnable for WasmRunnable {
    async fn run(&self, call: Call<'_>) -> Result<Bytes, Failure> {
        let stdin = call.input.clone();
        Ok(self.run_with(call, stdin, &[]).await?.stdout)
    }
}

impl WasmRunnable {
    /// The output cap.
    pub(crate) fn output_bytes(&self) -> u64 {
        self.limits.output_bytes
    }

    /// Runs one call with `stdin` and, beside the manifest's mounts, the
    /// preopens `extra`.
    pub(crate) async fn run_with(
        &self,
        call: Call<'_>,
        stdin: Bytes,
        extra: &[Preopen],
    ) -> Result<colony_engine::Output, Failure> {
        let merged;
        let env = if call.env.is_empty() {
            &self.env
        } else {
            // The call's variables win over the manifest's.
            merged = self
                .env
                .iter()
                .filter(|(k, _)| !call.env.iter().any(|(c, _)| c == k))
                .chain(call.env)
                .cloned()
                .collect::<Vec<_>>();
            &merged
        };
        // Opened for this call; held until it ends.
        let mut held = Vec::with_capacity(self.dirs.len());
        let mut dirs = Vec::with_capacity(self.dirs.len() + extra.len());
        dirs.extend_from_slice(extra);
        for m in &self.dirs {
            let (fd, preopen) = m.open().map_err(|e| Failure::Internal {
                message: format!(
                    "cannot open {} for the guest (was it replaced after deploy?): {e}",
                    m.host().display()
                ),
            })?;
            held.push(fd);
            dirs.push(preopen);
        }
        self.program
            .run(Invocation {
                stdin,
                argv: &self.argv,
                env,
                limits: Limits {
                    timeout_ms: call.timeout_ms.unwrap_or(self.limits.timeout_ms),
                    ..self.limits
                },
                cancel: call.cancel,
                dirs: &dirs,
            })
            .await
    }
}
