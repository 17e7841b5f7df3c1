//! `colony deploy NAME FILE`: upload code as a new revision.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use colony_client::DeployOptions;

use crate::ServerArg;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The function's name.
    name: String,
    /// The module (.wasm or .wat); for `--executor builtin`, the builtin's
    /// name (echo, sha256, wordcount).
    file: String,
    /// The executor: wasm or builtin.
    #[arg(long, default_value = "wasm")]
    executor: String,
    /// Timeout per call, e.g. 500ms, 2s [server default: 10s].
    #[arg(long, value_name = "DURATION")]
    timeout: Option<String>,
    /// Linear memory cap, e.g. 64MiB [server default: 128MiB].
    #[arg(long, value_name = "SIZE")]
    memory: Option<String>,
    /// Output cap, e.g. 1MiB [server default: 8MiB].
    #[arg(long, value_name = "SIZE")]
    output: Option<String>,
    /// An environment variable for the guest (repeatable).
    #[arg(long, value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// An argument for the guest, after argv[0] (repeatable).
    #[arg(long = "arg", value_name = "ARG", allow_hyphen_values = true)]
    args: Vec<String>,
    /// Deploy without making the revision the default.
    #[arg(long)]
    no_default: bool,
    #[command(flatten)]
    server: ServerArg,
}

impl Args {
    pub(crate) async fn run(self) -> anyhow::Result<ExitCode> {
        let code = if self.executor == "builtin" {
            self.file.clone().into_bytes()
        } else {
            let path = PathBuf::from(&self.file);
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?
        };
        for e in &self.env {
            anyhow::ensure!(e.contains('='), "--env {e:?}: expected KEY=VALUE");
        }
        let options = DeployOptions {
            executor: Some(self.executor),
            io: None,
            timeout: self.timeout,
            memory: self.memory,
            output: self.output,
            env: self.env,
            args: self.args,
            make_default: self.no_default.then_some(false),
        };
        let d = self
            .server
            .client()?
            .deploy(&self.name, code, &options)
            .await?;
        println!("{}", d.revision);
        let what = if d.created {
            "deployed"
        } else {
            "already deployed"
        };
        let default = if d.default { ", default" } else { "" };
        eprintln!("{} revision {} ({what}{default})", d.function, d.number);
        Ok(ExitCode::SUCCESS)
    }
}
