//! `colony invoke NAME[@REV]`: run a function once.

use std::io::Write;
use std::process::ExitCode;

use crate::ServerArg;
use crate::input::InputArgs;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The function, optionally pinned to a revision: NAME or NAME@REV.
    target: String,
    #[command(flatten)]
    input: InputArgs,
    /// For a function on the files I/O runtime: an input file, from a
    /// local file (NAME=@PATH) or as text (NAME=TEXT); repeatable. The
    /// answer lists the output files as JSON.
    #[arg(long = "in", value_name = "NAME=SOURCE")]
    files: Vec<String>,
    /// With --in: write the output files into this directory instead of
    /// printing the JSON.
    #[arg(long, value_name = "DIR", requires = "files")]
    out_dir: Option<std::path::PathBuf>,
    #[command(flatten)]
    server: ServerArg,
}

/// The input files of `--in NAME=@PATH|TEXT`, as a file set.
fn file_set(specs: &[String]) -> anyhow::Result<bytes::Bytes> {
    use anyhow::Context;
    let mut set = colony_core::files::FileSet::new();
    for spec in specs {
        let (name, source) = spec
            .split_once('=')
            .with_context(|| format!("--in {spec}: expected NAME=@PATH or NAME=TEXT"))?;
        let data = match source.strip_prefix('@') {
            Some(path) => std::fs::read(path).with_context(|| format!("cannot read {path}"))?,
            None => source.as_bytes().to_vec(),
        };
        set.insert(name, data.into())
            .map_err(|e| anyhow::anyhow!("--in {spec}: {e}"))?;
    }
    Ok(set.encode())
}

/// Writes the files of a JSON files answer into `dir`.
fn write_files(answer: &[u8], dir: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context;
    use base64::Engine as _;
    let result: colony_core::wire::FilesResult =
        serde_json::from_slice(answer).context("the answer is not a files result")?;
    std::fs::create_dir_all(dir)?;
    for f in result.files {
        anyhow::ensure!(
            colony_core::files::valid_file_name(&f.name),
            "the answer names a file {:?}",
            f.name
        );
        let data = base64::engine::general_purpose::STANDARD.decode(f.base64)?;
        std::fs::write(dir.join(&f.name), data)?;
        eprintln!("{}", dir.join(&f.name).display());
    }
    Ok(())
}

impl Args {
    pub(crate) async fn run(self) -> anyhow::Result<ExitCode> {
        let input = if self.files.is_empty() {
            self.input.read()?.into()
        } else {
            file_set(&self.files)?
        };
        match self.server.client()?.invoke(&self.target, input).await {
            Ok(out) if self.out_dir.is_some() => {
                write_files(&out.output, self.out_dir.as_deref().expect("checked"))?;
                Ok(ExitCode::SUCCESS)
            }
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
                let exit = body.details.get("exit_code").and_then(|v| v.as_i64());
                Ok(crate::exit_code(exit))
            }
            Err(e) => Err(e.into()),
        }
    }
}
