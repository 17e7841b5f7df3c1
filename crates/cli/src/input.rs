//! The input of `invoke` and `submit`: `--data`, `--file`, or stdin.

use std::io::Read;
use std::path::PathBuf;

use anyhow::Context;

/// Input flags shared by the subcommands that run a function.
#[derive(Debug, clap::Args)]
pub(crate) struct InputArgs {
    /// The input, as a string.
    #[arg(long, conflicts_with = "file")]
    data: Option<String>,
    /// The input, from a file.
    #[arg(long, value_name = "PATH")]
    file: Option<PathBuf>,
}

impl InputArgs {
    /// The input bytes: `--data`, else `--file`, else all of stdin.
    pub(crate) fn read(self) -> anyhow::Result<Vec<u8>> {
        match (self.data, self.file) {
            (Some(d), _) => Ok(d.into_bytes()),
            (None, Some(path)) => {
                std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))
            }
            (None, None) => {
                let mut buf = Vec::new();
                std::io::stdin()
                    .read_to_end(&mut buf)
                    .context("cannot read stdin")?;
                Ok(buf)
            }
        }
    }
}
