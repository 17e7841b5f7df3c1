//! The `files` I/O runtime: named input files staged read-only in
//! `/input`, the files written to `/output` the result; as a call, as a
//! task, and one task's output as the next one's input.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine as _;
use colony_testsupport::guests;
use serde_json::{Value, json};

use super::{Api, Reply};

const MERGE: &str = "executor=wasm&io=files&input_file=a.txt&input_file=b.txt\
                     &output_file=merged.txt&output_file=count.txt";

/// A multipart/form-data body with one part per `(name, content)`.
fn multipart(files: &[(&str, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "colony-test-boundary-7f3a";
    let mut body = Vec::new();
    for (name, content) in files {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; \
                 filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(content);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

impl Api {
    async fn run_files(&self, target: &str, files: &[(&str, &[u8])]) -> Reply {
        let (content_type, body) = multipart(files);
        self.request(
            Request::post(format!("/run/{target}"))
                .header("content-type", content_type)
                .body(Body::from(body))
                .unwrap(),
        )
        .await
    }
}

/// The files of a JSON files result, name to content.
fn files_of(v: &Value) -> Vec<(String, Vec<u8>)> {
    v["files"]
        .as_array()
        .unwrap_or_else(|| panic!("no files: {v}"))
        .iter()
        .map(|f| {
            let data = base64::engine::general_purpose::STANDARD
                .decode(f["base64"].as_str().unwrap())
                .unwrap();
            assert_eq!(f["size"], data.len(), "{f}");
            (f["name"].as_str().unwrap().to_owned(), data)
        })
        .collect()
}

fn file(name: &str, data: &str) -> (String, Vec<u8>) {
    (name.to_owned(), data.as_bytes().to_vec())
}

async fn merge_api(extra: &str) -> Api {
    let api = Api::new().await;
    api.deploy(
        "merge",
        &format!("{MERGE}{extra}"),
        guests::c_guest("merge"),
    )
    .await;
    api
}

#[tokio::test]
async fn merge_runs_as_a_call_with_multipart_files() {
    let api = merge_api("").await;
    let r = api
        .run_files("merge", &[("a.txt", b"hello, "), ("b.txt", b"world\n")])
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(
        files_of(&r.json()),
        vec![
            file("count.txt", "13\n"),
            file("merged.txt", "hello, world\n")
        ]
    );
    // Binary content of any size within the limits goes through untouched.
    let a: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let r = api
        .run_files("merge", &[("b.txt", b"\0end"), ("a.txt", &a)])
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let got = files_of(&r.json());
    let mut want = a.clone();
    want.extend_from_slice(b"\0end");
    assert_eq!(got[1], ("merged.txt".to_owned(), want));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_runs_as_a_task_and_its_output_feeds_the_next_task() {
    let api = merge_api("").await;
    let first = api
        .submit_ok(json!({"function": "merge", "files": {
            "a.txt": {"text": "one "},
            "b.txt": {"base64": base64::engine::general_purpose::STANDARD.encode("two\n")},
        }}))
        .await;
    let done = api.finished(&first).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let r = api
        .send("GET", &format!("/tasks/{first}/result"), Body::empty())
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(
        files_of(&r.json()),
        vec![file("count.txt", "8\n"), file("merged.txt", "one two\n")]
    );
    let r = api
        .send(
            "GET",
            &format!("/tasks/{first}/files/merged.txt"),
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.text(), "one two\n");

    // The second task takes the first one's merged.txt twice, by reference.
    let second = api
        .submit_ok(json!({"function": "merge", "files": {
            "a.txt": {"task": first, "file": "merged.txt"},
            "b.txt": {"task": first, "file": "merged.txt"},
        }}))
        .await;
    let done = api.finished(&second).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let r = api
        .send(
            "GET",
            &format!("/tasks/{second}/files/merged.txt"),
            Body::empty(),
        )
        .await;
    assert_eq!(r.text(), "one two\none two\n");
    let r = api
        .send(
            "GET",
            &format!("/tasks/{second}/files/count.txt"),
            Body::empty(),
        )
        .await;
    assert_eq!(r.text(), "16\n");

    // References that cannot be followed are refused at submit.
    for (files, needle) in [
        (
            json!({"a.txt": {"task": first, "file": "nope.txt"}, "b.txt": {"text": ""}}),
            "no output file nope.txt",
        ),
        (
            json!({"a.txt": {"task": first}, "b.txt": {"text": ""}}),
            "no output file a.txt",
        ),
        (
            json!({"a.txt": {"task": "not-an-id"}, "b.txt": {"text": ""}}),
            "not a task id",
        ),
        (
            json!({"a.txt": {"text": "x", "base64": "eA=="}, "b.txt": {"text": ""}}),
            "one of",
        ),
    ] {
        let v = api
            .submit(json!({"function": "merge", "files": files}))
            .await
            .expect_error(StatusCode::BAD_REQUEST, "bad_request");
        assert!(
            v["message"].as_str().unwrap().contains(needle),
            "{needle}: {v}"
        );
    }
    let r = api
        .send(
            "GET",
            &format!("/tasks/{first}/files/nope.txt"),
            Body::empty(),
        )
        .await;
    r.expect_error(StatusCode::NOT_FOUND, "result_not_found");
}

#[tokio::test]
async fn missing_unknown_and_malformed_inputs_are_refused() {
    let api = merge_api("").await;
    let cases: Vec<(Reply, &str)> = vec![
        (
            api.run_files("merge", &[("a.txt", b"x")]).await,
            "b.txt is missing",
        ),
        (
            api.run_files(
                "merge",
                &[("a.txt", b"x"), ("b.txt", b"y"), ("c.txt", b"z")],
            )
            .await,
            "c.txt is not one",
        ),
        (
            api.run_files("merge", &[("a.txt", b"x"), ("../b.txt", b"y")])
                .await,
            "not a file name",
        ),
        (
            api.run_files("merge", &[("a.txt", b"x"), ("a.txt", b"y")])
                .await,
            "given twice",
        ),
        (api.run("merge", "plain bytes").await, "multipart/form-data"),
    ];
    for (r, needle) in cases {
        let v = r.expect_error(StatusCode::BAD_REQUEST, "bad_request");
        assert!(
            v["message"].as_str().unwrap().contains(needle),
            "{needle}: {v}"
        );
    }
    let v = api
        .submit(json!({"function": "merge", "input": "plain"}))
        .await
        .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    assert!(v["message"].as_str().unwrap().contains("io=files"), "{v}");
    // Input and output names only go with io=files.
    let r = api
        .send(
            "PUT",
            "/functions/x?input_file=a.txt",
            guests::c_guest("merge"),
        )
        .await;
    r.expect_error(StatusCode::BAD_REQUEST, "invalid_manifest");
    api.still_serving().await;
}

#[tokio::test]
async fn outputs_over_the_limit_fail_the_call() {
    let api = merge_api("&output=1KiB").await;
    let r = api
        .run_files("merge", &[("a.txt", &[b'a'; 800]), ("b.txt", &[b'b'; 800])])
        .await;
    r.expect_error(StatusCode::INTERNAL_SERVER_ERROR, "output_limit_exceeded");
    let r = api
        .run_files("merge", &[("a.txt", b"small"), ("b.txt", b"")])
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}

#[tokio::test]
async fn a_guest_cannot_reach_outside_its_input_and_output() {
    let api = Api::new().await;
    api.deploy("escape", "io=files", guests::c_guest("escape"))
        .await;
    let r = api.run_files("escape", &[("a.txt", b"original")]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let files = files_of(&r.json());
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    // Symlinks (pointing out or in) and directories are not collected.
    assert_eq!(names, ["ok.txt", "report.txt"], "{files:?}");
    let report = String::from_utf8(files[1].1.clone()).unwrap();
    for tried in [
        "dotdot",
        "absolute",
        "relative",
        "proc",
        "write-input",
        "create-input",
        "escape-output",
        "abs-link",
        "rel-link",
    ] {
        assert!(
            report.contains(&format!("{tried}: denied")),
            "{tried} not denied:\n{report}"
        );
    }
    assert!(!report.contains("ALLOWED"), "{report}");
    // The scratch directories are gone once calls end.
    let scratch = api.data_dir().join("scratch");
    assert_eq!(std::fs::read_dir(&scratch).unwrap().count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_files_referenced_many_times_are_refused_past_the_body_limit() {
    let api = merge_api("&output=16MiB").await;
    let big = "x".repeat(9 << 20);
    let first = api
        .submit_ok(json!({"function": "merge", "files": {
            "a.txt": {"text": big}, "b.txt": {"text": ""},
        }}))
        .await;
    assert_eq!(api.finished(&first).await["state"], "succeeded");
    let r = api
        .submit(json!({"function": "merge", "files": {
            "a.txt": {"task": first, "file": "merged.txt"},
            "b.txt": {"task": first, "file": "merged.txt"},
        }}))
        .await;
    r.expect_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
}

#[tokio::test]
async fn files_go_with_the_wasm_executor_only() {
    let api = Api::new().await;
    for executor in ["cgi", "builtin", "component"] {
        let r = api
            .send(
                "PUT",
                &format!("/functions/x?executor={executor}&io=files"),
                "echo",
            )
            .await;
        let v = r.expect_error(StatusCode::BAD_REQUEST, "invalid_manifest");
        assert!(
            v["message"].as_str().unwrap().contains("executor wasm"),
            "{v}"
        );
    }
}
