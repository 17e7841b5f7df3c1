//! `colony delete NAME`: delete a function and all its revisions.

use std::process::ExitCode;

use crate::ServerArg;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The function.
    name: String,
    #[command(flatten)]
    server: ServerArg,
}

impl Args {
    pub(crate) async fn run(self) -> anyhow::Result<ExitCode> {
        self.server.client()?.delete(&self.name).await?;
        eprintln!("deleted {}", self.name);
        Ok(ExitCode::SUCCESS)
    }
}
