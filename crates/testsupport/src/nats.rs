//! A real `nats-server -js` on a free port with a temporary store, for
//! cluster tests; or any nats-server binary with any flags
//! ([`NatsServer::start_with`]), for tests of what Colony refuses (a
//! server without JetStream, or one older than 2.11:
//! [`old_nats_server_bin`]).

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

/// An old nats-server, 2.9.10 (Debian bookworm's), for the test that
/// Colony refuses a server older than 2.11: `$COLONY_NATS_SERVER_OLD`, or
/// `target/nats-old/usr/sbin/nats-server` as `scripts/install-nats-old.sh`
/// unpacks it (`scripts/test.sh` runs that script).
///
/// # Panics
///
/// When neither exists: a test that needs it must fail, not pass quietly.
pub fn old_nats_server_bin() -> PathBuf {
    if let Ok(p) = std::env::var("COLONY_NATS_SERVER_OLD") {
        return PathBuf::from(p);
    }
    let bin = crate::guests::root().join("target/nats-old/usr/sbin/nats-server");
    assert!(
        bin.is_file(),
        "{} is missing: run scripts/install-nats-old.sh (scripts/test.sh does), \
         or set COLONY_NATS_SERVER_OLD to a nats-server 2.9.10",
        bin.display()
    );
    bin
}

/// The server's `INFO` line, as sent to every client on connect.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    /// The server version, e.g. `2.15.1`.
    pub version: String,
    /// Whether JetStream is enabled.
    pub jetstream: bool,
}

/// A nats-server child process (`nats-server -js` from [`start`]), killed
/// on drop.
///
/// [`start`]: NatsServer::start
#[derive(Debug)]
pub struct NatsServer {
    child: Option<Child>,
    bin: PathBuf,
    args: Vec<String>,
    port: u16,
    store: PathBuf,
    /// Whether (re)starts check that JetStream is on ([`NatsServer::start`]).
    jetstream: bool,
    _tmp: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn spawn(bin: &Path, port: u16, store: &Path, args: &[String]) -> Child {
    Command::new(bin)
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(store)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()))
}

impl NatsServer {
    /// Starts `nats-server -js` ([`nats_server_bin`], 2.11 or newer) and
    /// waits until it accepts clients with JetStream on.
    pub fn start() -> Self {
        let mut s = Self::start_with(&nats_server_bin(), &["-js"]);
        s.jetstream = true;
        s.wait_ready();
        s
    }

    /// Starts `bin` with `args` on `127.0.0.1`, a free port and a
    /// temporary store directory (`-sd`; used only with `-js`), and waits
    /// until it answers clients. Checks neither JetStream nor the version:
    /// for servers Colony must refuse. [`NatsServer::info`] says what it is.
    pub fn start_with(bin: &Path, args: &[&str]) -> Self {
        let tmp = tempfile::tempdir().expect("temp dir");
        let store = tmp.path().join("jetstream");
        let port = free_port();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let child = spawn(bin, port, &store, &args);
        let s = Self {
            child: Some(child),
            bin: bin.to_owned(),
            args,
            port,
            store,
            jetstream: false,
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

    /// Waits until the server answers; from [`NatsServer::start`], also
    /// that it runs JetStream.
    fn wait_ready(&self) {
        let info = self.info();
        assert!(
            info.jetstream || !self.jetstream,
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

    /// Kills and restarts the server on the same port, store and flags.
    pub fn restart(&mut self) {
        self.kill();
        self.child = Some(spawn(&self.bin, self.port, &self.store, &self.args));
        self.wait_ready();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}
