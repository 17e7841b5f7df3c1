//! Guest functions used by tests, built from source in this repository.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// `examples/echo.wat`: copies stdin to stdout.
pub const ECHO: &str = include_str!("../../../examples/echo.wat");
/// Spins forever.
pub const LOOP: &str = include_str!("../guests/loop.wat");
/// Writes "about to trap" to stderr, then traps with `unreachable`.
pub const TRAP: &str = include_str!("../guests/trap.wat");
/// Grows memory a page at a time without end.
pub const GROW: &str = include_str!("../guests/grow.wat");
/// Writes 100 MiB to stdout.
pub const SPAM: &str = include_str!("../guests/spam.wat");
/// Writes "bad input" to stderr and exits with status 3.
pub const EXIT3: &str = include_str!("../guests/exit.wat");
/// Sleeps 60 s inside a host call.
pub const SLEEP: &str = include_str!("../guests/sleep.wat");
/// A valid module without `_start`.
pub const NO_START: &str = include_str!("../guests/no_start.wat");
/// A valid module importing `env.host_magic`.
pub const ENV_IMPORT: &str = include_str!("../guests/env_import.wat");

/// Where C guests are built: `<workspace>/target/wasm-guests`.
pub fn c_build_dir() -> PathBuf {
    root().join("target").join("wasm-guests")
}

/// The path of a C guest or example module (`json-upper`, `primes`,
/// `sandbox`, `printenv`, `spin`), building all of them on first use.
///
/// Panics with the build script's output if clang is missing: run
/// `scripts/install-deps.sh`.
pub fn c_guest_path(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let out = Command::new("bash")
            .arg(root().join("scripts/build-examples.sh"))
            .arg(c_build_dir())
            .output()
            .expect("run scripts/build-examples.sh");
        assert!(
            out.status.success(),
            "scripts/build-examples.sh failed (run scripts/install-deps.sh for clang):\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    });
    let path = c_build_dir().join(format!("{name}.wasm"));
    assert!(path.exists(), "no C guest named {name}");
    path
}

/// The bytes of a C guest or example module.
pub fn c_guest(name: &str) -> Vec<u8> {
    std::fs::read(c_guest_path(name)).expect("read C guest")
}
