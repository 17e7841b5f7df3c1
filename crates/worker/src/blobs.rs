//! Content-addressed code files.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Code blobs under `<dir>/<first two hex digits>/<sha256>`. A blob is
/// written to a temporary file, synced, then renamed into place, so a
/// crash leaves either the whole blob or none.
#[derive(Debug, Clone)]
pub(crate) struct Blobs {
    dir: PathBuf,
}

impl Blobs {
    pub(crate) fn open(dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    fn path(&self, sha: &str) -> PathBuf {
        self.dir.join(&sha[..2]).join(sha)
    }

    /// Stores `bytes` under `sha` (their sha256) unless already present.
    pub(crate) fn put(&self, sha: &str, bytes: &[u8]) -> io::Result<()> {
        let path = self.path(sha);
        if path.exists() {
            return Ok(());
        }
        let parent = path.parent().expect("blob path has a parent");
        fs::create_dir_all(parent)?;
        let tmp = parent.join(format!(".{sha}.{}.tmp", std::process::id()));
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, &path)?;
        File::open(parent)?.sync_all()
    }

    pub(crate) fn get(&self, sha: &str) -> io::Result<Vec<u8>> {
        fs::read(self.path(sha))
    }

    pub(crate) fn remove(&self, sha: &str) {
        let _ = fs::remove_file(self.path(sha));
    }
}
