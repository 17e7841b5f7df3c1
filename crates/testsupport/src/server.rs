//! A real `colony serve` process for end-to-end tests.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A `colony serve` child process on `127.0.0.1:<free port>`, killed on drop.
#[derive(Debug)]
pub struct TestServer {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The server's data directory.
    pub data_dir: PathBuf,
    bin: PathBuf,
    extra: Vec<String>,
    _tmp: Option<tempfile::TempDir>,
}

impl TestServer {
    /// Starts `bin serve` on a fresh temporary data directory, with `extra`
    /// arguments, and waits until it listens.
    pub fn start(bin: &Path, extra: &[&str]) -> Self {
        let tmp = tempfile::tempdir().expect("temp dir");
        let data_dir = tmp.path().join("data");
        let mut s = Self::start_in(bin, &data_dir, extra);
        s._tmp = Some(tmp);
        s
    }

    /// Starts `bin serve` on `data_dir` (kept after the server stops).
    pub fn start_in(bin: &Path, data_dir: &Path, extra: &[&str]) -> Self {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let (child, url) = spawn(bin, data_dir, &extra);
        Self {
            child,
            url,
            data_dir: data_dir.to_owned(),
            bin: bin.to_owned(),
            extra,
            _tmp: None,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the server with SIGKILL and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits up to `timeout` for a clean exit; returns the
    /// exit status, or `None` if it had to be killed.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        None
    }

    /// Kills the server and starts it again on the same data directory
    /// and arguments (on a new port).
    pub fn restart(&mut self) {
        self.kill();
        let (child, url) = spawn(&self.bin, &self.data_dir, &self.extra);
        self.child = child;
        self.url = url;
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn(bin: &Path, data_dir: &Path, extra: &[String]) -> (Child, String) {
    let mut child = Command::new(bin)
        .arg("serve")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(data_dir)
        .args(extra)
        .env(
            "COLONY_LOG",
            std::env::var("COLONY_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn colony serve");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if !sent && let Some(url) = line.strip_prefix("listening on ") {
                let _ = tx.send(url.trim().to_owned());
                sent = true;
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(url) => (child, url),
        Err(_) => {
            let _ = child.kill();
            panic!("colony serve did not report its address within 60 s");
        }
    }
}
