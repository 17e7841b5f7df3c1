//! `colony`: run a Colony worker and talk to one.
//!
//! One file per subcommand: `serve` runs a worker (the only subcommand
//! that embeds the runtime); `deploy`, `invoke`, `submit`, `tasks`,
//! `functions`, `default` and `delete` are thin shells over
//! [`colony_client`], as is `workers`, which lists a cluster's live
//! workers; `bench` measures invoke latency and throughput, or
//! task throughput, over HTTP. `input` reads a function's input for
//! `invoke` and `submit`.
#![forbid(unsafe_code)]

mod bench;
mod config;
mod default;
mod delete;
mod deploy;
mod functions;
mod input;
mod invoke;
mod map;
mod serve;
mod submit;
mod tasks;
mod workers;

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
    /// Run a worker: the HTTP API over the embedded store, or in a
    /// cluster with --nats.
    // Boxed: its flags outweigh every other subcommand's.
    Serve(Box<serve::Args>),
    /// Deploy code as a new revision of a function; prints the revision id.
    Deploy(deploy::Args),
    /// Run a function once: input from --data, --file or stdin; output to stdout.
    Invoke(invoke::Args),
    /// Submit a task (a durable, retried call); prints its id, or with
    /// --wait its result.
    Submit(submit::Args),
    /// Run a function over many inputs (lines of a JSONL file, or files
    /// of a directory) as durable tasks; collect or fold the results.
    Map(map::Args),
    /// List, show, wait for, cancel tasks, and fetch their results.
    Tasks(tasks::Args),
    /// List functions, or show one with its revisions.
    Functions(functions::Args),
    /// Make a revision the default of its function.
    Default(default::Args),
    /// Delete a function and all its revisions.
    Delete(delete::Args),
    /// List the live workers (of the cluster, or just this one) and their load.
    Workers(workers::Args),
    /// Measure warm invoke latency and throughput over HTTP, or task
    /// throughput with --tasks.
    Bench(bench::Args),
}

/// The exit status for a guest's exit status: the same when it fits
/// (1 to 255), else 1.
fn exit_code(guest: Option<i64>) -> ExitCode {
    match guest {
        Some(c @ 1..=255) => ExitCode::from(c as u8),
        _ => ExitCode::FAILURE,
    }
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
            Command::Serve(args) => (*args).run().await,
            Command::Deploy(args) => args.run().await,
            Command::Invoke(args) => args.run().await,
            Command::Submit(args) => args.run().await,
            Command::Map(args) => args.run().await,
            Command::Tasks(args) => args.run().await,
            Command::Functions(args) => args.run().await,
            Command::Default(args) => args.run().await,
            Command::Delete(args) => args.run().await,
            Command::Workers(args) => args.run().await,
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
            "colony serve --nats nats://127.0.0.1:4222 --role gateway --nats-replicas 3 --ack-wait 30s --heartbeat 1s",
            "colony workers",
            "colony workers --json --server http://127.0.0.1:9000",
            "colony bench --concurrency 1,64 --duration 5s",
            "colony bench --tasks 20000 --concurrency 64",
            "colony deploy echo echo.wasm --max-attempts 5 --retry-on trap,timeout --backoff 1s --max-backoff 1m --concurrency 4",
            "colony deploy echo echo.wasm --retry-on none",
            "colony submit echo --data hello",
            "colony submit echo@abcdef12 --file input.bin --priority 5 --max-attempts 2 --timeout 30s --idempotency-key order-42",
            "colony submit echo --priority -1",
            "colony submit echo --data hello --wait",
            "colony submit echo --data hello --wait --wait-timeout 1h",
            "colony tasks list",
            "colony tasks list --state succeeded --function echo --limit 100 --after 01jd0000000000000000000000 --json",
            "colony tasks show 01jd0000000000000000000000",
            "colony tasks show 01jd0000000000000000000000 --json",
            "colony tasks result 01jd0000000000000000000000",
            "colony tasks cancel 01jd0000000000000000000000",
            "colony tasks wait 01jd0000000000000000000000 --timeout 30s",
        ] {
            let args = line.split(' ');
            if let Err(e) = Cli::try_parse_from(args) {
                panic!("{line}: {e}");
            }
        }
        for bad in [
            "colony invoke echo --data x --file y",
            "colony submit echo --data x --file y",
            "colony submit echo --wait-timeout 1m",
            "colony tasks list --state done",
            "colony tasks",
        ] {
            assert!(Cli::try_parse_from(bad.split(' ')).is_err(), "{bad}");
        }
    }
}
