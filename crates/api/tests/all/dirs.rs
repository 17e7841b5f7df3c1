//! Host directories mounted for guests (`dir=HOST:GUEST[:ro]`): a guest
//! reads and writes what its manifest mounts and nothing else, read-only
//! mounts stay read-only, no path or symlink leads out of a mount, and the
//! worker refuses at deploy any host directory outside its `allowed_dirs`.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use axum::body::Body;
use axum::http::StatusCode;
use colony_testsupport::guests;

use super::{Api, Reply};

/// What no guest may ever print: the content of the file outside.
const SECRET: &str = "the-secret-outside-allowed";

/// A host tree: `allowed/data/in.txt` ("hello"), an empty `allowed/out`,
/// and `outside/secret.txt` next to `allowed/`, which the worker does not
/// allow.
struct Tree {
    _root: tempfile::TempDir,
    allowed: PathBuf,
    outside: PathBuf,
}

impl Tree {
    fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        let allowed = root.path().join("allowed");
        let outside = root.path().join("outside");
        fs::create_dir_all(allowed.join("data")).unwrap();
        fs::create_dir_all(allowed.join("out")).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(allowed.join("data/in.txt"), "hello").unwrap();
        fs::write(outside.join("secret.txt"), SECRET).unwrap();
        Self {
            _root: root,
            allowed,
            outside,
        }
    }

    fn data(&self) -> PathBuf {
        self.allowed.join("data")
    }

    fn out(&self) -> PathBuf {
        self.allowed.join("out")
    }

    /// A worker that allows `allowed/`.
    async fn api(&self) -> Api {
        let allowed = self.allowed.clone();
        Api::with(|c| c.allowed_dirs = vec![allowed]).await
    }
}

/// A deploy query string: the `executor` (when given) and a `dir` for each
/// mount, encoded.
fn query(executor: Option<&str>, dirs: &[String]) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    if let Some(e) = executor {
        q.append_pair("executor", e);
    }
    for d in dirs {
        q.append_pair("dir", d);
    }
    q.finish()
}

/// `HOST:GUEST`, or `HOST:GUEST:ro`.
fn mount(host: &Path, guest: &str, read_only: bool) -> String {
    let ro = if read_only { ":ro" } else { "" };
    format!("{}:{guest}{ro}", host.display())
}

/// The `files` guest with `data/` read-only at `/data` and `out/`
/// read-write at `/out`.
async fn deployed(tree: &Tree) -> Api {
    let api = tree.api().await;
    let dirs = [
        mount(&tree.data(), "/data", true),
        mount(&tree.out(), "/out", false),
    ];
    api.deploy("files", &query(None, &dirs), guests::c_guest("files"))
        .await;
    api
}

/// Asserts a call succeeded and returns its stdout.
#[track_caller]
fn ok(r: &Reply) -> String {
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    r.text()
}

/// Asserts the guest failed the command (exit 1, `error: ...` on stderr)
/// and that nothing from outside leaked into the reply.
#[track_caller]
fn refused(r: &Reply, command: &str) {
    let v = r.expect_error(StatusCode::INTERNAL_SERVER_ERROR, "guest_exit");
    assert_eq!(v["exit_code"], 1, "{command}: {v}");
    let stderr = v["stderr_tail"].as_str().unwrap_or_default();
    assert!(stderr.starts_with("error: "), "{command}: {v}");
    assert_no_leak(r, command);
}

#[track_caller]
fn assert_no_leak(r: &Reply, command: &str) {
    let text = r.text();
    assert!(!text.contains(SECRET), "{command}: {text}");
    assert!(!text.contains("root:"), "{command}: {text}");
}

#[tokio::test]
async fn a_guest_reads_and_writes_its_mounts_and_read_only_holds() {
    let tree = Tree::new();
    let api = deployed(&tree).await;

    assert_eq!(ok(&api.run("files", "read /data/in.txt").await), "hello");
    assert_eq!(ok(&api.run("files", "list /data").await), "in.txt\n");

    // Read-write: the file appears on the host.
    assert_eq!(ok(&api.run("files", "write /out/x.txt hi").await), "");
    assert_eq!(fs::read_to_string(tree.out().join("x.txt")).unwrap(), "hi");
    // Overwritten, not appended; several commands in one call.
    let r = api
        .run("files", "write /out/x.txt hi again\nread /out/x.txt\n")
        .await;
    assert_eq!(ok(&r), "hi again");
    assert_eq!(
        fs::read_to_string(tree.out().join("x.txt")).unwrap(),
        "hi again"
    );
    // What the host puts there the guest sees on its next call.
    fs::write(tree.out().join("from-host.txt"), "host").unwrap();
    assert_eq!(
        ok(&api.run("files", "list /out").await),
        "from-host.txt\nx.txt\n"
    );

    // Read-only: writing fails and nothing appears on the host.
    let r = api.run("files", "write /data/y.txt no").await;
    refused(&r, "write /data/y.txt");
    assert!(!tree.data().join("y.txt").exists());
    let r = api.run("files", "write /data/in.txt changed").await;
    refused(&r, "write /data/in.txt");
    assert_eq!(
        fs::read_to_string(tree.data().join("in.txt")).unwrap(),
        "hello"
    );
    api.still_serving().await;
}

#[tokio::test]
async fn no_path_or_symlink_leads_out_of_a_mount() {
    let tree = Tree::new();
    // Planted by the host: a file link and a directory link out of
    // `allowed/`, in the read-only mount and in the writable one.
    symlink(tree.outside.join("secret.txt"), tree.data().join("link")).unwrap();
    symlink(&tree.outside, tree.data().join("door")).unwrap();
    symlink(&tree.outside, tree.out().join("door")).unwrap();
    symlink("../../outside/secret.txt", tree.out().join("rel")).unwrap();
    let api = deployed(&tree).await;

    // The links are there, but lead nowhere.
    assert_eq!(
        ok(&api.run("files", "list /data").await),
        "door\nin.txt\nlink\n"
    );
    for command in [
        "read /data/../../etc/passwd",
        "read /data/../../outside/secret.txt",
        "read /etc/passwd",
        "read /data/link",
        "read /data/door/secret.txt",
        "list /data/door",
        "list /data/..",
        "list /",
        "read /out/rel",
        "read /out/door/secret.txt",
        "write /out/door/planted.txt x",
        "write /out/../../outside/planted.txt x",
    ] {
        let r = api.run("files", command).await;
        refused(&r, command);
    }
    assert_eq!(
        fs::read_dir(&tree.outside).unwrap().count(),
        1,
        "only secret.txt is outside"
    );
    assert_eq!(
        fs::read_to_string(tree.outside.join("secret.txt")).unwrap(),
        SECRET
    );
    api.still_serving().await;
}

/// The host path is checked at deploy, but the mount is opened again at
/// every call: a guest that may write above another mount must not be able
/// to swap that mount for a symlink leading out of `allowed/`.
#[tokio::test]
async fn a_mount_swapped_for_a_symlink_out_stays_shut() {
    let tree = Tree::new();
    let api = deployed(&tree).await;
    assert_eq!(ok(&api.run("files", "read /data/in.txt").await), "hello");

    // Another function mounts all of `allowed/` read-write and, inside its
    // own mount, moves `data` away and links `data` to `../outside`.
    let dirs = [mount(&tree.allowed, "/a", false)];
    api.deploy("mover", &query(None, &dirs), guests::c_guest("files"))
        .await;
    let r = api
        .run(
            "mover",
            "move /a/data /a/data-old\nlink ../outside /a/data\n",
        )
        .await;
    ok(&r);
    assert_eq!(
        fs::canonicalize(tree.data()).unwrap(),
        fs::canonicalize(&tree.outside).unwrap()
    );

    // `files` was deployed with `allowed/data`: it must not now see `outside/`.
    for command in ["read /data/secret.txt", "list /data"] {
        let r = api.run("files", command).await;
        assert_no_leak(&r, command);
        assert!(!r.text().contains("secret.txt"), "{command}: {}", r.text());
        assert_ne!(r.status, StatusCode::OK, "{command}: {}", r.text());
    }
    // A deploy of the same mount now is refused.
    let dirs = [mount(&tree.data(), "/data", true)];
    refused_at_deploy(
        &api,
        None,
        &dirs,
        "is not under a directory this worker allows",
    )
    .await;
}

/// Deploys `files` (or the builtin `echo` with `executor=builtin`) with
/// these mounts; asserts a 400 `invalid_manifest` whose message contains
/// `expect`.
async fn refused_at_deploy(api: &Api, executor: Option<&str>, dirs: &[String], expect: &str) {
    let code: Body = match executor {
        Some("builtin") => "echo".into(),
        _ => guests::c_guest("files").into(),
    };
    let v = api
        .send(
            "PUT",
            &format!("/functions/f?{}", query(executor, dirs)),
            code,
        )
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_manifest");
    let message = v["message"].as_str().unwrap();
    assert!(message.contains(expect), "{dirs:?}: {v}");
}

#[tokio::test]
async fn mounts_outside_the_allowed_dirs_or_malformed_are_refused_at_deploy() {
    let tree = Tree::new();
    let api = tree.api().await;
    let not_allowed = "is not under a directory this worker allows";

    // Host directories outside `allowed/`: beside it, a sibling whose
    // name merely starts with `allowed`, the filesystem root.
    let sibling = tree.allowed.with_file_name("allowed-not");
    fs::create_dir(&sibling).unwrap();
    for host in [tree.outside.as_path(), &sibling, Path::new("/")] {
        let dirs = [mount(host, "/data", false)];
        refused_at_deploy(&api, None, &dirs, not_allowed).await;
        // Read-only changes nothing, and neither does the cgi executor.
        let dirs = [mount(host, "/data", true)];
        refused_at_deploy(&api, None, &dirs, not_allowed).await;
        refused_at_deploy(&api, Some("cgi"), &dirs, not_allowed).await;
    }
    // `..` out of `allowed/`.
    let dirs = [mount(&tree.allowed.join("data/../../outside"), "/d", true)];
    refused_at_deploy(&api, None, &dirs, not_allowed).await;
    // A symlink inside `allowed/` leading out: its canonical path is outside.
    symlink(&tree.outside, tree.allowed.join("escape")).unwrap();
    let dirs = [mount(&tree.allowed.join("escape"), "/d", true)];
    refused_at_deploy(&api, None, &dirs, not_allowed).await;
    // One bad mount among good ones spoils the manifest.
    let dirs = [
        mount(&tree.data(), "/data", true),
        mount(&tree.outside, "/o", true),
    ];
    refused_at_deploy(&api, None, &dirs, not_allowed).await;

    // Host paths that are no directory.
    let dirs = [mount(&tree.allowed.join("missing"), "/d", false)];
    refused_at_deploy(&api, None, &dirs, "cannot be opened on this worker").await;
    let dirs = [mount(&tree.data().join("in.txt"), "/d", false)];
    refused_at_deploy(&api, None, &dirs, "is not a directory").await;
    let dirs = ["allowed/data:/d".to_owned()];
    refused_at_deploy(&api, None, &dirs, "not an absolute path").await;

    // Guest paths: relative, with `..` or `.`, twice.
    for guest in ["relative", "/a/../b", "/a/./b", ".."] {
        let dirs = [mount(&tree.data(), guest, true)];
        refused_at_deploy(&api, None, &dirs, guest).await;
    }
    let dirs = [
        mount(&tree.data(), "/same", true),
        mount(&tree.out(), "/same", false),
    ];
    refused_at_deploy(&api, None, &dirs, "mounted twice").await;
    // Not HOST:GUEST at all.
    refused_at_deploy(&api, None, &["/data".to_owned()], "HOST:GUEST").await;

    // Builtins see no directories, even allowed ones.
    let dirs = [mount(&tree.data(), "/data", true)];
    refused_at_deploy(
        &api,
        Some("builtin"),
        &dirs,
        "builtin functions see no directories",
    )
    .await;

    // At most 16 mounts.
    let seventeen: Vec<String> = (0..17)
        .map(|i| mount(&tree.data(), &format!("/d{i}"), true))
        .collect();
    refused_at_deploy(&api, None, &seventeen, "limit is 16").await;
    api.deploy(
        "many",
        &query(None, &seventeen[..16]),
        guests::c_guest("files"),
    )
    .await;
    let r = api.run("many", "read /d15/in.txt").await;
    assert_eq!(ok(&r), "hello");

    // Nothing else was stored.
    let v = api.send("GET", "/functions", Body::empty()).await.json();
    let names: Vec<&str> = v["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["many"], "{v}");
}

#[tokio::test]
async fn a_worker_that_allows_no_directories_refuses_every_mount() {
    let tree = Tree::new();
    let api = Api::new().await;
    for dirs in [
        vec![mount(&tree.data(), "/data", true)],
        vec![mount(&tree.allowed, "/", false)],
        vec![mount(Path::new("/"), "/host", true)],
    ] {
        refused_at_deploy(&api, None, &dirs, "allows no directories").await;
    }
    // Without mounts the same guest deploys and sees nothing of the host.
    api.deploy("files", "", guests::c_guest("files")).await;
    let r = api.run("files", "read /data/in.txt").await;
    refused(&r, "read /data/in.txt");
}

/// With nested allowed directories, a guest holding the outer one cannot
/// swap the inner one for a symlink out from under another function.
#[tokio::test]
async fn nested_allowed_dirs_give_no_way_out() {
    let tree = Tree::new();
    let (outer, inner) = (tree.allowed.clone(), tree.data());
    let api = Api::with(|c| c.allowed_dirs = vec![outer.clone(), inner.clone()]).await;
    api.deploy(
        "reader",
        &query(None, &[mount(&inner, "/pub", true)]),
        guests::c_guest("files"),
    )
    .await;
    assert_eq!(ok(&api.run("reader", "read /pub/in.txt").await), "hello");
    api.deploy(
        "mover",
        &query(None, &[mount(&outer, "/a", false)]),
        guests::c_guest("files"),
    )
    .await;
    ok(&api
        .run(
            "mover",
            "move /a/data /a/data-old\nlink ../outside /a/data\n",
        )
        .await);
    let r = api.run("reader", "read /pub/secret.txt").await;
    assert_no_leak(&r, "read /pub/secret.txt");
    assert_ne!(r.status, StatusCode::OK, "{}", r.text());
}

/// A writable mount may not overlap another mount; read-only ones may.
#[tokio::test]
async fn a_writable_mount_may_not_overlap_another() {
    let tree = Tree::new();
    let api = tree.api().await;
    let overlapping = [
        mount(&tree.allowed, "/all", false),
        mount(&tree.data(), "/data", true),
    ];
    refused_at_deploy(&api, None, &overlapping, "overlap and one is writable").await;
    let both_read_only = [
        mount(&tree.allowed, "/all", true),
        mount(&tree.data(), "/data", true),
    ];
    api.deploy("f", &query(None, &both_read_only), guests::c_guest("files"))
        .await;
    assert_eq!(ok(&api.run("f", "read /all/data/in.txt").await), "hello");
}

/// A worker refuses to start when an allowed directory overlaps its data
/// directory (where compiled code is loaded from).
#[tokio::test]
async fn an_allowed_dir_may_not_overlap_the_data_dir() {
    let root = tempfile::tempdir().unwrap();
    for allowed in [root.path().to_owned(), root.path().join("data/blobs")] {
        fs::create_dir_all(&allowed).unwrap();
        let mut config = colony_worker::WorkerConfig::new(root.path().join("data"));
        config.allowed_dirs = vec![allowed.clone()];
        let err = colony_worker::Worker::open(config)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("overlaps the data directory"),
            "{allowed:?}: {err}"
        );
    }
}
