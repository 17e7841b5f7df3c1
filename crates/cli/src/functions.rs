//! `colony functions [NAME]`: list functions, or show one.

use std::process::ExitCode;

use colony_core::wire::FunctionInfo;

use crate::ServerArg;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Show this function with all its revisions.
    name: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: ServerArg,
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

impl Args {
    pub(crate) async fn run(self) -> anyhow::Result<ExitCode> {
        let client = self.server.client()?;
        match self.name {
            None => {
                let functions = client.functions().await?;
                if self.json {
                    println!("{}", serde_json::to_string_pretty(&functions)?);
                    return Ok(ExitCode::SUCCESS);
                }
                println!(
                    "{:<24} {:<14} {:>9} {:<8}",
                    "NAME", "DEFAULT", "REVISIONS", "EXECUTOR"
                );
                for f in &functions {
                    let executor = f
                        .revisions
                        .iter()
                        .find(|r| r.default)
                        .map_or("-", |r| r.manifest.executor.as_str());
                    println!(
                        "{:<24} {:<14} {:>9} {:<8}",
                        f.name.as_str(),
                        short(f.default_revision.as_str()),
                        f.revisions.len(),
                        executor
                    );
                }
            }
            Some(name) => {
                let f: FunctionInfo = client.function(&name).await?;
                if self.json {
                    println!("{}", serde_json::to_string_pretty(&f)?);
                    return Ok(ExitCode::SUCCESS);
                }
                println!("{}", f.name.as_str());
                println!(
                    "  {:>3} {:<64} {:<7} {:<8} {:>9} {:>10} {:>9}",
                    "#", "REVISION", "DEFAULT", "EXECUTOR", "TIMEOUT", "MEMORY", "SIZE"
                );
                for r in &f.revisions {
                    let m = &r.manifest;
                    println!(
                        "  {:>3} {:<64} {:<7} {:<8} {:>9} {:>10} {:>9}",
                        r.number,
                        r.id.as_str(),
                        if r.default { "*" } else { "" },
                        m.executor,
                        format!("{}ms", m.limits.timeout_ms),
                        colony_core::units::format_size(m.limits.memory_bytes),
                        colony_core::units::format_size(r.code_size),
                    );
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}
