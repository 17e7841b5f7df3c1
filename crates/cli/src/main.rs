//! `colony`: run a Colony worker and talk to one.
//!
//! One file per subcommand: `serve` runs a worker (the only subcommand
//! that embeds the runtime); `deploy`, `invoke`, `functions`, `default`
//! and `delete` are thin shells over [`colony_client`]; `bench` measures
//! invoke latency and throughput over HTTP.
#![forbid(unsafe_code)]

mod bench;
mod config;
mod default;
mod delete;
mod deploy;
mod functions;
mod invoke;
mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Colony: a serverless worker for sandboxed WebAssembly functions.
#[derive(Debug, Parser)]
#[command(name = "colony", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the client subcommands find the server.
#[derive(Debug, clap::Args)]
struct ServerArg {
    /// The Colony server's URL.
    #[arg(
        long,
        env = "COLONY_SERVER",
        default_value = "http://127.0.0.1:8080",
        value_name = "URL"
    )]
    server: String,
}

impl ServerArg {
    fn client(&self) -> anyhow::Result<colony_client::Client> {
        Ok(colony_client::Client::new(&self.server)?)
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a worker: the HTTP API over the embedded store.
    Serve(serve::Args),
    /// Deploy code as a new revision of a function; prints the revision id.
    Deploy(deploy::Args),
    /// Run a function once: input from --data, --file or stdin; output to stdout.
    Invoke(invoke::Args),
    /// List functions, or show one with its revisions.
    Functions(functions::Args),
    /// Make a revision the default of its function.
    Default(default::Args),
    /// Delete a function and all its revisions.
    Delete(delete::Args),
    /// Measure warm invoke latency and throughput over HTTP.
    Bench(bench::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("colony: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => args.run().await,
            Command::Deploy(args) => args.run().await,
            Command::Invoke(args) => args.run().await,
            Command::Functions(args) => args.run().await,
            Command::Default(args) => args.run().await,
            Command::Delete(args) => args.run().await,
            Command::Bench(args) => args.run().await,
        }
    })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn documented_spellings_parse() {
        for line in [
            "colony serve --listen 127.0.0.1:8080 --data-dir ./colony-data --config colony.toml",
            "colony deploy echo echo.wasm --executor wasm --timeout 2s --memory 64MiB --env A=1 --env B=2 --arg x --arg y",
            "colony deploy hash --executor builtin sha256",
            "colony invoke echo@abcdef12 --data hello",
            "colony invoke echo --file input.bin",
            "colony invoke echo",
            "colony functions",
            "colony functions echo",
            "colony default echo abcdef12",
            "colony delete echo",
            "colony bench --concurrency 1,64 --duration 5s",
        ] {
            let args = line.split(' ');
            if let Err(e) = Cli::try_parse_from(args) {
                panic!("{line}: {e}");
            }
        }
        assert!(
            Cli::try_parse_from(["colony", "invoke", "echo", "--data", "x", "--file", "y"])
                .is_err()
        );
    }
}
