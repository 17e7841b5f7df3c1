//! On-disk cache of compiled modules.
//!
//! Artifacts live under `<root>/<engine fingerprint>/<sha256 of code>.cwasm`.
//! The fingerprint covers wasmtime's version and every compilation setting,
//! so an upgrade or a settings change starts a fresh directory instead of
//! loading incompatible code. Writes go to a temporary file renamed into
//! place, so a crash never leaves a torn artifact behind.

use std::hash::{Hash, Hasher};
use std::io;
use std::path::{Path, PathBuf};

use tracing::warn;
use wasmtime::Module;
use wasmtime::component::Component;

/// Compiled code the cache holds: core modules and components.
pub(crate) trait Artifact: Sized {
    /// Loads an artifact this engine serialized.
    ///
    /// # Safety
    /// The file must have been written by [`Artifact::serialize`] of an
    /// engine with the same settings (see [`ModuleCache::load`]).
    #[allow(unsafe_code)]
    unsafe fn deserialize_file(engine: &wasmtime::Engine, path: &Path) -> wasmtime::Result<Self>;
    fn serialize(&self) -> wasmtime::Result<Vec<u8>>;
}

#[allow(unsafe_code)]
impl Artifact for Module {
    unsafe fn deserialize_file(engine: &wasmtime::Engine, path: &Path) -> wasmtime::Result<Self> {
        // SAFETY: as the caller promised.
        unsafe { Module::deserialize_file(engine, path) }
    }
    fn serialize(&self) -> wasmtime::Result<Vec<u8>> {
        Module::serialize(self)
    }
}

#[allow(unsafe_code)]
impl Artifact for Component {
    unsafe fn deserialize_file(engine: &wasmtime::Engine, path: &Path) -> wasmtime::Result<Self> {
        // SAFETY: as the caller promised.
        unsafe { Component::deserialize_file(engine, path) }
    }
    fn serialize(&self) -> wasmtime::Result<Vec<u8>> {
        Component::serialize(self)
    }
}

#[derive(Debug)]
pub(crate) struct ModuleCache {
    dir: PathBuf,
}

impl ModuleCache {
    pub(crate) fn open(root: &Path, engine: &wasmtime::Engine) -> io::Result<Self> {
        let mut h = std::hash::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        let dir = root.join(format!("{:016x}", h.finish()));
        std::fs::create_dir_all(&dir)?;
        Ok(Self { dir })
    }

    fn path(&self, sha: &str) -> PathBuf {
        self.dir.join(format!("{sha}.cwasm"))
    }

    /// Loads the artifact for the code with this sha256, if one is cached
    /// and loads cleanly; a corrupt or incompatible one is removed.
    pub(crate) fn load<A: Artifact>(&self, engine: &wasmtime::Engine, sha: &str) -> Option<A> {
        let path = self.path(sha);
        if !path.exists() {
            return None;
        }
        // SAFETY: `deserialize_file` trusts its input to be an artifact this
        // engine produced. The file is written only by `store` below, under a
        // directory named by this engine's compatibility fingerprint and
        // keyed by the sha256 of the source; the data directory is the
        // worker's own. wasmtime still checks the header and refuses an
        // artifact from another version or configuration.
        #[allow(unsafe_code)]
        let loaded = unsafe { A::deserialize_file(engine, &path) };
        match loaded {
            Ok(module) => Some(module),
            Err(e) => {
                warn!(path = %path.display(), cause = %e, "discarding unusable compiled artifact");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Stores a compiled module; failures are logged, not fatal (the module
    /// is simply compiled again next time).
    pub(crate) fn store(&self, module: &impl Artifact, sha: &str) {
        let path = self.path(sha);
        let result = module
            .serialize()
            .map_err(|e| io::Error::other(e.to_string()))
            .and_then(|bytes| {
                // A file of its own per writer (compiles of the same code
                // may overlap), synced, then renamed into place: a loaded
                // artifact is never rewritten, and a crash leaves either
                // the whole file or none.
                static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let tmp = self
                    .dir
                    .join(format!(".{sha}.{}.{n}.tmp", std::process::id()));
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&tmp)?;
                io::Write::write_all(&mut f, &bytes)?;
                f.sync_all()?;
                drop(f);
                if path.exists() {
                    // Another writer got there first; keep its file.
                    return std::fs::remove_file(&tmp);
                }
                std::fs::rename(&tmp, &path)?;
                std::fs::File::open(&self.dir)?.sync_all()
            });
        if let Err(e) = result {
            warn!(path = %path.display(), cause = %e, "could not cache compiled module");
        }
    }

    /// Removes the artifact of code no revision uses any more.
    pub(crate) fn remove(&self, sha: &str) {
        let _ = std::fs::remove_file(self.path(sha));
    }
}
