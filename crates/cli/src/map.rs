//! `colony map NAME --inputs FILE.jsonl|DIR`: a function over many inputs,
//! as a directive of durable tasks.
//!
//! Each line of a JSONL file, or each file of a directory, is one task.
//! Results go to `--out` (a JSONL file in input order, or a directory of
//! files with the inputs' names) or to stdout, or are folded by another
//! function (`--fold`). Every task has an idempotency key made of the
//! function's revision and the input (its line number or file name, and
//! its content), so a run that was killed and is started again reuses the
//! tasks that already ran instead of running them again.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use colony_client::{Client, Directive, DirectiveOptions, Input, Stats, Tag, key_digest};
use futures_util::StreamExt;

use crate::ServerArg;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The function: NAME or NAME@REV.
    target: String,
    /// The inputs: a JSONL file (one input per non-empty line) or a
    /// directory (one input per regular file in it).
    #[arg(long, value_name = "FILE.jsonl|DIR")]
    inputs: PathBuf,
    /// Fold the results with this function (it gets `[a, b]` and returns
    /// their combination, e.g. a builtin `add`); print the fold.
    #[arg(long, value_name = "NAME")]
    fold: Option<String>,
    /// Where results go: a JSONL file (in input order) for JSONL inputs,
    /// a directory (same file names) for a directory of inputs, a file
    /// for the fold. Default: stdout (JSONL inputs, or --fold).
    #[arg(long, value_name = "FILE|DIR")]
    out: Option<PathBuf>,
    /// Most tasks unfinished at once.
    #[arg(long, value_name = "N", default_value_t = colony_client::DEFAULT_WINDOW)]
    window: usize,
    /// Prefix of the idempotency keys [default: map:NAME@REVISION].
    #[arg(long, value_name = "PREFIX")]
    key: Option<String>,
    /// Go on past failed inputs (listed at the end, exit status 1)
    /// instead of aborting at the first.
    #[arg(long, conflicts_with = "fold")]
    keep_going: bool,
    /// Attempts per task, overriding the function's retry policy.
    #[arg(long, value_name = "N")]
    max_attempts: Option<u32>,
    /// Timeout of each attempt, e.g. 30s.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    timeout: Option<Duration>,
    #[command(flatten)]
    server: ServerArg,
}

/// Where the inputs come from.
enum Source {
    Lines(PathBuf, u64),
    Files(PathBuf, Vec<String>),
}

impl Source {
    fn open(path: &Path) -> anyhow::Result<Self> {
        let meta =
            std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
        if meta.is_dir() {
            let mut names = Vec::new();
            for entry in std::fs::read_dir(path)
                .with_context(|| format!("cannot list {}", path.display()))?
            {
                let entry = entry?;
                if entry.file_type()?.is_file() {
                    let name = entry.file_name().into_string().map_err(|n| {
                        anyhow::anyhow!("{}: a file name that is not UTF-8: {n:?}", path.display())
                    })?;
                    names.push(name);
                }
            }
            names.sort();
            return Ok(Source::Files(path.to_owned(), names));
        }
        let file =
            std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
        let mut n = 0;
        for line in std::io::BufReader::new(file).split(b'\n') {
            if !line?.trim_ascii().is_empty() {
                n += 1;
            }
        }
        Ok(Source::Lines(path.to_owned(), n))
    }

    fn len(&self) -> u64 {
        match self {
            Source::Lines(_, n) => *n,
            Source::Files(_, names) => names.len() as u64,
        }
    }

    /// The inputs, read as they are submitted, each with its key (named
    /// by its line number or file name, and its content) and label.
    fn stream(
        &self,
        prefix: String,
    ) -> anyhow::Result<futures_util::stream::BoxStream<'static, colony_client::Result<Input>>>
    {
        let key = move |id: &str, content: &[u8]| format!("{prefix}:{}", key_digest(id, content));
        match self {
            Source::Lines(path, _) => {
                let file = std::fs::File::open(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                let shown = path.display().to_string();
                let lines = std::io::BufReader::new(file)
                    .split(b'\n')
                    .enumerate()
                    .filter_map(move |(i, line)| match line {
                        Ok(l) if l.trim_ascii().is_empty() => None,
                        Ok(l) => {
                            let l = l.trim_ascii().to_vec();
                            let preview =
                                String::from_utf8_lossy(&l[..l.len().min(60)]).into_owned();
                            Some(Ok(Input {
                                key: Some(key(&format!("line {}", i + 1), &l)),
                                label: Some(format!("{shown}:{} {preview:?}", i + 1)),
                                bytes: Bytes::from(l),
                            }))
                        }
                        Err(e) => Some(Err(colony_client::Error::Protocol {
                            url: shown.clone(),
                            reason: format!("cannot read line {}: {e}", i + 1),
                        })),
                    });
                Ok(futures_util::stream::iter(lines).boxed())
            }
            Source::Files(dir, names) => {
                let dir = dir.clone();
                let files = names.clone().into_iter().map(move |name| {
                    let path = dir.join(&name);
                    match std::fs::read(&path) {
                        Ok(data) => Ok(Input {
                            key: Some(key(&name, &data)),
                            label: Some(path.display().to_string()),
                            bytes: Bytes::from(data),
                        }),
                        Err(e) => Err(colony_client::Error::Protocol {
                            url: path.display().to_string(),
                            reason: format!("cannot read: {e}"),
                        }),
                    }
                });
                Ok(futures_util::stream::iter(files).boxed())
            }
        }
    }
}

/// One JSONL line of an output: as it is when it is one line, else
/// compact JSON, else a JSON string.
fn jsonl(out: &[u8]) -> Vec<u8> {
    let trimmed = out.trim_ascii_end();
    if !trimmed.contains(&b'\n') && !trimmed.is_empty() {
        return trimmed.to_vec();
    }
    match serde_json::from_slice::<serde_json::Value>(trimmed) {
        Ok(v) => serde_json::to_vec(&v).expect("JSON serializes"),
        Err(_) => serde_json::to_vec(&String::from_utf8_lossy(trimmed)).expect("a string"),
    }
}

/// Shows how far the run got: a bar on a terminal, else a line a second
/// on stderr.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    total: u64,
    started: Instant,
    last_line: Instant,
}

impl Progress {
    fn new(total: u64) -> Self {
        // The bar is drawn on stderr: only when both are a terminal, so
        // neither a redirected stderr nor results printed to a terminal
        // get it.
        let terminal = std::io::stdout().is_terminal() && std::io::stderr().is_terminal();
        let bar = terminal.then(|| {
            let bar = indicatif::ProgressBar::new(total);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {pos}/{len} {msg} {per_sec} ETA {eta}",
                )
                .expect("a valid template"),
            );
            bar
        });
        Self {
            bar,
            total,
            started: Instant::now(),
            last_line: Instant::now(),
        }
    }

    fn show(&mut self, stats: &Stats, done: u64) {
        match &self.bar {
            Some(bar) => {
                bar.set_position(done);
                bar.set_message(format!("failed {}", stats.failed));
            }
            None if self.last_line.elapsed() >= Duration::from_secs(1) => {
                self.last_line = Instant::now();
                eprintln!("{}", self.line(stats, done));
            }
            None => {}
        }
    }

    fn line(&self, stats: &Stats, done: u64) -> String {
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = done as f64 / secs;
        let eta = if rate > 0.0 {
            format!("{:.0}s", self.total.saturating_sub(done) as f64 / rate)
        } else {
            "-".into()
        };
        format!(
            "map: {done}/{} done, {} failed, {} reused, {rate:.0}/s, ETA {eta}",
            self.total, stats.failed, stats.reused
        )
    }

    fn finish(&self, stats: &Stats, done: u64) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        let cancelled = if stats.cancelled > 0 {
            format!(", {} cancelled", stats.cancelled)
        } else {
            String::new()
        };
        eprintln!(
            "map: {done}/{} done, {} failed{cancelled}, {} reused, {} tasks in {:.2}s",
            self.total,
            stats.failed,
            stats.reused,
            stats.submitted,
            self.started.elapsed().as_secs_f64()
        );
    }
}

/// Where `path` is written before it is renamed into place.
fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".colony-partial-{}", std::process::id()));
    path.with_file_name(name)
}

/// Writes `data` to `path` whole or not at all.
fn write_atomic(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    let tmp = partial_path(path);
    std::fs::write(&tmp, data).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

impl Args {
    /// `NAME@REV` of the revision the tasks run, so the keys name it.
    async fn pinned(&self, client: &Client) -> anyhow::Result<String> {
        if self.target.contains('@') {
            return Ok(self.target.clone());
        }
        let info = client.function(&self.target).await?;
        Ok(format!(
            "{}@{}",
            self.target,
            &info.default_revision.as_str()[..16]
        ))
    }

    pub(crate) async fn run(self) -> anyhow::Result<ExitCode> {
        let client = self.server.client()?;
        let source = Source::open(&self.inputs)?;
        let pinned = self.pinned(&client).await?;
        let prefix = self.key.clone().unwrap_or_else(|| format!("map:{pinned}"));
        let inputs = source.stream(prefix.clone())?;
        let options = DirectiveOptions {
            window: self.window.max(1),
            key_prefix: Some(prefix),
            max_attempts: self.max_attempts,
            timeout: self.timeout,
            ..Default::default()
        };
        let mut d = Directive::open(&client, &pinned, inputs, options).await?;
        let mut progress = Progress::new(source.len());
        if let Some(fold) = self.fold.clone() {
            return self.run_fold(&mut d, &fold, &mut progress).await;
        }
        match &source {
            Source::Files(_, names) => {
                let out = self
                    .out
                    .clone()
                    .context("a directory of inputs needs --out DIR for its results")?;
                std::fs::create_dir_all(&out)
                    .with_context(|| format!("cannot create {}", out.display()))?;
                self.run_files(&mut d, names, &out, &mut progress).await
            }
            Source::Lines(..) => self.run_lines(&mut d, &mut progress).await,
        }
    }

    async fn run_files(
        &self,
        d: &mut Directive,
        names: &[String],
        out: &Path,
        progress: &mut Progress,
    ) -> anyhow::Result<ExitCode> {
        let mut done = 0;
        let mut failures = Vec::new();
        while let Some(next) = d.next().await {
            let (tag, outcome) = next?;
            let Tag::Input(i) = tag else { continue };
            match outcome {
                Ok(bytes) => write_atomic(&out.join(&names[i as usize]), &bytes)?,
                Err(e) if self.keep_going => failures.push(e.to_string()),
                Err(e) => {
                    d.abort().await;
                    progress.finish(&d.stats(), done);
                    return Err(e.into());
                }
            }
            done += 1;
            progress.show(&d.stats(), done);
        }
        progress.finish(&d.stats(), done);
        report(failures)
    }

    async fn run_lines(
        &self,
        d: &mut Directive,
        progress: &mut Progress,
    ) -> anyhow::Result<ExitCode> {
        // --out is written aside and renamed once whole.
        let partial = self.out.as_ref().map(|p| partial_path(p));
        let mut sink: Box<dyn Write> = match &partial {
            Some(path) => Box::new(std::io::BufWriter::new(
                std::fs::File::create(path)
                    .with_context(|| format!("cannot create {}", path.display()))?,
            )),
            None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
        };
        // Results in input order: those ahead of a slower one wait here.
        let mut held: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        let mut next_out = 0;
        let mut done = 0;
        let mut failures = Vec::new();
        while let Some(next) = d.next().await {
            let (tag, outcome) = next?;
            let Tag::Input(i) = tag else { continue };
            let line = match outcome {
                Ok(bytes) => jsonl(&bytes),
                Err(e) if self.keep_going => {
                    let line = serde_json::json!({ "error": e.to_string(), "code": e.code() });
                    failures.push(e.to_string());
                    serde_json::to_vec(&line).expect("JSON")
                }
                Err(e) => {
                    d.abort().await;
                    progress.finish(&d.stats(), done);
                    if let Some(p) = &partial {
                        let _ = std::fs::remove_file(p);
                    }
                    return Err(e.into());
                }
            };
            held.insert(i, line);
            while let Some(line) = held.remove(&next_out) {
                sink.write_all(&line)?;
                sink.write_all(b"\n")?;
                next_out += 1;
            }
            done += 1;
            progress.show(&d.stats(), done);
        }
        sink.flush()?;
        drop(sink);
        if let (Some(partial), Some(out)) = (&partial, &self.out) {
            std::fs::rename(partial, out)
                .with_context(|| format!("cannot write {}", out.display()))?;
        }
        progress.finish(&d.stats(), done);
        report(failures)
    }

    async fn run_fold(
        &self,
        d: &mut Directive,
        fold: &str,
        progress: &mut Progress,
    ) -> anyhow::Result<ExitCode> {
        let mut done = 0;
        // Failures abort a fold: only successes are counted while it runs.
        let stats = Stats::default();
        let folded = d
            .fold(
                fold,
                None,
                |a, b| {
                    let mut pair = Vec::with_capacity(a.len() + b.len() + 3);
                    pair.push(b'[');
                    pair.extend_from_slice(a.trim_ascii());
                    pair.push(b',');
                    pair.extend_from_slice(b.trim_ascii());
                    pair.push(b']');
                    Ok(Bytes::from(pair))
                },
                |_, out| {
                    done += 1;
                    progress.show(&stats, done);
                    Ok(out)
                },
            )
            .await;
        progress.finish(&d.stats(), done);
        let Some(folded) = folded? else {
            bail!("no inputs in {}", self.inputs.display());
        };
        match &self.out {
            Some(path) => write_atomic(path, &folded)?,
            None => {
                let mut stdout = std::io::stdout().lock();
                stdout.write_all(folded.trim_ascii_end())?;
                stdout.write_all(b"\n")?;
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

fn report(failures: Vec<String>) -> anyhow::Result<ExitCode> {
    if failures.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    for f in &failures {
        eprintln!("colony: {f}");
    }
    eprintln!("colony: {} inputs failed", failures.len());
    Ok(ExitCode::FAILURE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_become_one_jsonl_line_each() {
        assert_eq!(jsonl(b"42\n"), b"42");
        assert_eq!(jsonl(b"{\n \"a\": 1\n}\n"), br#"{"a":1}"#);
        assert_eq!(jsonl(b"two\nlines"), br#""two\nlines""#);
        assert_eq!(jsonl(b""), br#""""#);
    }
}
