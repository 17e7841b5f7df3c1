//! `colony invoke NAME[@REV]`: run a function once.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::ServerArg;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The function, optionally pinned to a revision: NAME or NAME@REV.
    target: String,
    /// The input, as a string.
    #[arg(long, conflicts_with = "file")]
    data: Option<String>,
    /// The input, from a file.
    #[arg(long, value_name = "PATH")]
    file: Option<PathBuf>,
    #[command(flatten)]
    server: ServerArg,
}

impl Args {
    pub(crate) async fn run(self) -> anyhow::Result<ExitCode> {
        let input = match (self.data, self.file) {
            (Some(d), _) => d.into_bytes(),
            (None, Some(path)) => {
                std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?
            }
            (None, None) => {
                let mut buf = Vec::new();
                std::io::stdin()
                    .read_to_end(&mut buf)
                    .context("cannot read stdin")?;
                buf
            }
        };
        match self.server.client()?.invoke(&self.target, input).await {
            Ok(out) => {
                let mut stdout = std::io::stdout().lock();
                stdout.write_all(&out.output)?;
                stdout.flush()?;
                Ok(ExitCode::SUCCESS)
            }
            Err(colony_client::Error::Api { body, .. }) => {
                // A guest failure: the message, then what the guest left on stderr.
                eprintln!("colony: {} ({})", body.message, body.code);
                if let Some(tail) = body.details.get("stderr_tail").and_then(|v| v.as_str())
                    && !tail.is_empty()
                {
                    eprintln!("--- guest stderr (tail) ---\n{}", tail.trim_end());
                }
                let exit = body
                    .details
                    .get("exit_code")
                    .and_then(|v| v.as_i64())
                    .filter(|c| (1..=255).contains(c));
                Ok(ExitCode::from(exit.map_or(1, |c| c as u8)))
            }
            Err(e) => Err(e.into()),
        }
    }
}
