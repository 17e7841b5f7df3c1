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
    #[command(flatten)]
    server: ServerArg,
}

impl Args {
    pub(crate) async fn run(self) -> anyhow::Result<ExitCode> {
        let input = self.input.read()?;
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
                let exit = body.details.get("exit_code").and_then(|v| v.as_i64());
                Ok(crate::exit_code(exit))
            }
            Err(e) => Err(e.into()),
        }
    }
}
