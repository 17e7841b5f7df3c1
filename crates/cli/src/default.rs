//! `colony default NAME REV`: switch a function's default revision.

use std::process::ExitCode;

use crate::ServerArg;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The function.
    name: String,
    /// The revision: its id or a unique prefix of 8 or more hex digits.
    revision: String,
    #[command(flatten)]
    server: ServerArg,
}

impl Args {
    pub(crate) async fn run(self) -> anyhow::Result<ExitCode> {
        let set = self
            .server
            .client()?
            .set_default(&self.name, &self.revision)
            .await?;
        println!("{}", set.default_revision);
        Ok(ExitCode::SUCCESS)
    }
}
