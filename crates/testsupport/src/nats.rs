//! A real `nats-server -js` on a free port with a temporary store, for
//! cluster tests.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The nats-server binary: `$COLONY_NATS_SERVER`, or what
/// `scripts/install-nats.sh` finds or installs (2.11 or newer).
pub fn nats_server_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(p) = std::env::var("COLONY_NATS_SERVER") {
            return PathBuf::from(p);
        }
        let root = crate::guests::root();
        let out = Command::new("bash")
            .arg(root.join("scripts/install-nats.sh"))
            .current_dir(&root)
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/install-nats.sh");
        assert!(out.status.success(), "scripts/install-nats.sh failed");
        let path = String::from_utf8(out.stdout)
            .expect("a path")
            .trim()
            .to_owned();
        let path = PathBuf::from(path);
        if path.is_absolute() {
            path
        } else {
            root.join(path)
        }
    })
    .clone()
}

/// The server's `INFO` line, as sent to every client on connect.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    /// The server version, e.g. `2.15.1`.
    pub version: String,
    /// Whether JetStream is enabled.
    pub jetstream: bool,
}

/// A `nats-server -js` child process, killed on drop.
#[derive(Debug)]
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    store: PathBuf,
    _tmp: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn spawn(port: u16, store: &Path) -> Child {
    Command::new(nats_server_bin())
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(store)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn nats-server")
}

impl NatsServer {
    /// Starts a server and waits until it accepts clients.
    pub fn start() -> Self {
        let tmp = tempfile::tempdir().expect("temp dir");
        let store = tmp.path().join("jetstream");
        let port = free_port();
        let child = spawn(port, &store);
        let s = Self {
            child: Some(child),
            port,
            store,
            _tmp: tmp,
        };
        s.wait_ready();
        s
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Reads the server's `INFO` line, retrying until it answers (30 s).
    pub fn info(&self) -> ServerInfo {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(stream) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut line = String::new();
                if BufReader::new(stream).read_line(&mut line).is_ok()
                    && let Some(json) = line.strip_prefix("INFO ")
                {
                    let field = |name: &str| {
                        let key = format!("\"{name}\":");
                        json.split(&key).nth(1).map(|rest| {
                            rest.trim_start()
                                .trim_start_matches('"')
                                .split(['"', ',', '}'])
                                .next()
                                .unwrap_or("")
                                .to_owned()
                        })
                    };
                    return ServerInfo {
                        version: field("version").unwrap_or_default(),
                        jetstream: field("jetstream").as_deref() == Some("true"),
                    };
                }
            }
            assert!(
                Instant::now() < deadline,
                "nats-server on port {} did not answer",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_ready(&self) {
        let info = self.info();
        assert!(
            info.jetstream,
            "nats-server {} runs without JetStream",
            info.version
        );
    }

    /// Kills the server (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills and restarts the server on the same port and store.
    pub fn restart(&mut self) {
        self.kill();
        self.child = Some(spawn(self.port, &self.store));
        self.wait_ready();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}
