//! The `files` I/O runtime: a call's payload is named files
//! ([`FileSet`]), staged read-only in the guest's `/input`; the files the
//! guest leaves in `/output` are its result. Each call gets a fresh scratch
//! directory, removed when it ends.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use colony_core::Failure;
use colony_core::files::{FileSet, MAX_FILES, valid_file_name};
use colony_engine::Preopen;

use crate::executor::{Call, Runnable};
use crate::wasm::WasmRunnable;

/// A `wasm` function on the `files` runtime.
#[derive(Debug)]
pub(crate) struct FilesRunnable {
    inner: WasmRunnable,
    scratch: PathBuf,
    /// The outputs collected; every regular file of `/output` when empty.
    outputs: Vec<String>,
}

impl FilesRunnable {
    pub(crate) fn new(inner: WasmRunnable, scratch: PathBuf, outputs: Vec<String>) -> Self {
        Self {
            inner,
            scratch,
            outputs,
        }
    }
}

fn internal(what: &str, e: impl std::fmt::Display) -> Failure {
    Failure::Internal {
        message: format!("{what}: {e}"),
    }
}

#[async_trait::async_trait]
impl Runnable for FilesRunnable {
    async fn run(&self, call: Call<'_>) -> Result<Bytes, Failure> {
        let inputs =
            FileSet::decode(&call.input).map_err(|e| internal("the input is not a file set", e))?;
        let scratch = self.scratch.clone();
        let (dir, input, output) = tokio::task::spawn_blocking(move || stage(&scratch, &inputs))
            .await
            .map_err(|e| internal("staging the input files", e))?
            .map_err(|e| internal("cannot stage the input files", e))?;
        let preopens = [
            Preopen {
                host: input,
                guest: "/input".to_owned(),
                read_only: true,
            },
            Preopen {
                host: output.clone(),
                guest: "/output".to_owned(),
                read_only: false,
            },
        ];
        let cap = self.inner.output_bytes();
        self.inner.run_with(call, Bytes::new(), &preopens).await?;
        let wanted = self.outputs.clone();
        let collected = tokio::task::spawn_blocking(move || {
            let r = collect(&output, &wanted, cap);
            // The scratch directory goes whatever happened (remove_dir_all
            // does not follow the symlinks a guest may have left).
            drop(dir);
            r
        })
        .await
        .map_err(|e| internal("collecting the output files", e))??;
        Ok(collected.encode())
    }
}

/// A fresh scratch directory with `input/` holding `inputs` and an empty
/// `output/`.
fn stage(
    scratch: &Path,
    inputs: &FileSet,
) -> std::io::Result<(tempfile::TempDir, PathBuf, PathBuf)> {
    let dir = tempfile::Builder::new()
        .prefix("call-")
        .tempdir_in(scratch)?;
    let input = dir.path().join("input");
    let output = dir.path().join("output");
    std::fs::create_dir(&input)?;
    std::fs::create_dir(&output)?;
    for (name, data) in inputs.iter() {
        // Names are plain file names (FileSet checks them): no separator,
        // no `..`; create_new never follows or reuses anything.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(input.join(name))?;
        std::io::Write::write_all(&mut f, data)?;
    }
    Ok((dir, input, output))
}

/// The regular files directly in `output` (only `wanted` ones when given):
/// symlinks, directories and other names are not collected; opened
/// without following symlinks. More than `cap` bytes or [`MAX_FILES`]
/// files is an output-limit failure.
fn collect(output: &Path, wanted: &[String], cap: u64) -> Result<FileSet, Failure> {
    use rustix::fs::{FileType, Mode, OFlags};
    let over = || Failure::OutputLimit { limit_bytes: cap };
    let dir = rustix::fs::open(
        output,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
    )
    .map_err(|e| internal("cannot open the output directory", e))?;
    // Listed through the descriptor the files are opened from.
    let mut names = Vec::new();
    let listing =
        rustix::fs::Dir::read_from(&dir).map_err(|e| internal("cannot list the outputs", e))?;
    for entry in listing {
        let entry = entry.map_err(|e| internal("cannot list the outputs", e))?;
        let Ok(name) = entry.file_name().to_str() else {
            continue;
        };
        if !valid_file_name(name) || !(wanted.is_empty() || wanted.iter().any(|w| w == name)) {
            continue;
        }
        names.push(name.to_owned());
    }
    names.sort();
    let mut set = FileSet::new();
    let mut total = 0u64;
    for name in names {
        let fd = match rustix::fs::openat(
            &dir,
            name.as_str(),
            OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NONBLOCK,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            // A symlink (ELOOP with O_NOFOLLOW) or gone: not an output.
            Err(_) => continue,
        };
        let st = rustix::fs::fstat(&fd).map_err(|e| internal("cannot stat an output", e))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            continue;
        }
        if set.len() == MAX_FILES {
            return Err(over());
        }
        let size = st.st_size as u64;
        total += size;
        if total > cap {
            return Err(over());
        }
        let mut data = Vec::with_capacity(size as usize);
        std::fs::File::from(fd)
            .take(cap - (total - size) + 1)
            .read_to_end(&mut data)
            .map_err(|e| internal("cannot read an output", e))?;
        if data.len() as u64 > size {
            return Err(over());
        }
        set.insert(&name, Bytes::from(data))
            .map_err(|e| internal("an output name", e))?;
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collect_takes_regular_files_only_and_enforces_the_caps() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        std::fs::write(out.join("a.txt"), "aa").unwrap();
        std::fs::write(out.join("b.txt"), "bbb").unwrap();
        std::fs::write(out.join("bad name"), "x").unwrap();
        std::fs::create_dir(out.join("sub")).unwrap();
        std::fs::write(out.join("sub/c.txt"), "c").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", out.join("link")).unwrap();
        std::os::unix::fs::symlink("a.txt", out.join("inner")).unwrap();

        let all = collect(out, &[], 1 << 20).unwrap();
        let names: Vec<_> = all.iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["a.txt", "b.txt"]);
        assert_eq!(all.get("b.txt").unwrap().as_ref(), b"bbb");

        let wanted = collect(out, &["b.txt".into(), "link".into()], 1 << 20).unwrap();
        assert_eq!(wanted.iter().map(|(n, _)| n).collect::<Vec<_>>(), ["b.txt"]);

        assert!(matches!(
            collect(out, &[], 4),
            Err(Failure::OutputLimit { limit_bytes: 4 })
        ));
        for i in 0..MAX_FILES {
            std::fs::write(out.join(format!("f{i}")), "").unwrap();
        }
        assert!(matches!(
            collect(out, &[], 1 << 20),
            Err(Failure::OutputLimit { .. })
        ));
    }
}
