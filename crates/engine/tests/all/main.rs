//! Engine integration tests: real guests, real limits.

use std::time::{Duration, Instant};

use bytes::Bytes;
use colony_core::{Failure, Limits};
use colony_engine::{CancellationToken, Engine, EngineConfig, Error, Invocation, Output, Program};
use colony_testsupport::guests;

fn engine() -> Engine {
    Engine::new(EngineConfig {
        instances: 64,
        ..EngineConfig::default()
    })
    .unwrap()
}

async fn run(p: &Program, stdin: &[u8], limits: Limits) -> Result<Output, Failure> {
    let argv = vec!["f".to_owned()];
    p.run(Invocation {
        stdin: Bytes::copy_from_slice(stdin),
        argv: &argv,
        env: &[],
        limits,
        cancel: None,
        dirs: &[],
    })
    .await
}

#[tokio::test]
async fn echo_round_trip_and_instances_are_fresh() {
    let e = engine();
    let p = e.prepare(guests::ECHO.as_bytes()).unwrap();
    for payload in [&b""[..], b"hello", &vec![7u8; 200_000]] {
        let out = run(&p, payload, Limits::default()).await.unwrap();
        assert_eq!(&out.stdout[..], payload);
    }
}

#[tokio::test]
async fn args_and_env_come_from_the_invocation_only() {
    let e = engine();
    let p = e.prepare(&guests::c_guest("printenv")).unwrap();
    let argv = vec![
        "printenv".to_owned(),
        "--flag".to_owned(),
        "two words".to_owned(),
    ];
    let env = vec![("GREETING".to_owned(), "hi".to_owned())];
    let out = p
        .run(Invocation {
            stdin: Bytes::new(),
            argv: &argv,
            env: &env,
            limits: Limits::default(),
            cancel: None,
            dirs: &[],
        })
        .await
        .unwrap();
    let text = String::from_utf8(out.stdout.to_vec()).unwrap();
    assert_eq!(
        text,
        "arg[0]=printenv\narg[1]=--flag\narg[2]=two words\nenv:GREETING=hi\n"
    );
}

#[tokio::test]
async fn infinite_loop_times_out_on_time() {
    let e = engine();
    let p = e.prepare(guests::LOOP.as_bytes()).unwrap();
    let limits = Limits {
        timeout_ms: 300,
        ..Limits::default()
    };
    let t = Instant::now();
    let err = run(&p, b"", limits).await.unwrap_err();
    assert_eq!(err, Failure::Timeout { limit_ms: 300 });
    assert!(
        t.elapsed() < Duration::from_millis(1300),
        "took {:?}",
        t.elapsed()
    );
    assert!(t.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn guest_sleeping_in_the_host_is_stopped_by_the_backstop() {
    let e = engine();
    let p = e.prepare(guests::SLEEP.as_bytes()).unwrap();
    let t = Instant::now();
    let err = run(
        &p,
        b"",
        Limits {
            timeout_ms: 200,
            ..Limits::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err, Failure::Timeout { limit_ms: 200 });
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn cancel_interrupts_a_running_guest() {
    let e = engine();
    let p = e.prepare(guests::LOOP.as_bytes()).unwrap();
    let token = CancellationToken::new();
    let t2 = token.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        t2.cancel();
    });
    let argv = vec!["loop".to_owned()];
    let t = Instant::now();
    let err = p
        .run(Invocation {
            stdin: Bytes::new(),
            argv: &argv,
            env: &[],
            limits: Limits::default(),
            cancel: Some(&token),
            dirs: &[],
        })
        .await
        .unwrap_err();
    assert_eq!(err, Failure::Cancelled);
    assert!(
        t.elapsed() < Duration::from_millis(150),
        "took {:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn trap_reports_message_and_stderr() {
    let e = engine();
    let p = e.prepare(guests::TRAP.as_bytes()).unwrap();
    match run(&p, b"", Limits::default()).await.unwrap_err() {
        Failure::Trap {
            message,
            stderr_tail,
        } => {
            assert!(message.contains("unreachable"), "{message}");
            assert_eq!(stderr_tail, "about to trap\n");
        }
        other => panic!("expected a trap, got {other:?}"),
    }
}

#[tokio::test]
async fn nonzero_exit_reports_code_and_stderr() {
    let e = engine();
    let p = e.prepare(guests::EXIT3.as_bytes()).unwrap();
    let err = run(&p, b"", Limits::default()).await.unwrap_err();
    assert_eq!(
        err,
        Failure::Exit {
            exit_code: 3,
            stderr_tail: "bad input\n".into()
        }
    );
}

#[tokio::test]
async fn memory_growth_past_the_cap_is_a_memory_limit_failure() {
    let e = engine();
    let p = e.prepare(guests::GROW.as_bytes()).unwrap();
    let limits = Limits {
        memory_bytes: 4 << 20,
        ..Limits::default()
    };
    assert_eq!(
        run(&p, b"", limits).await.unwrap_err(),
        Failure::MemoryLimit {
            limit_bytes: 4 << 20
        }
    );
    // A C program whose allocation exceeds the cap fails the same way.
    let primes = e.prepare(&guests::c_guest("primes")).unwrap();
    let err = run(&primes, b"50000000", limits).await.unwrap_err();
    assert_eq!(
        err,
        Failure::MemoryLimit {
            limit_bytes: 4 << 20
        }
    );
    let ok = run(&primes, b"1000000", Limits::default()).await.unwrap();
    assert_eq!(&ok.stdout[..], b"78498\n");
}

#[tokio::test]
async fn output_past_the_cap_is_an_output_limit_failure() {
    let e = engine();
    let p = e.prepare(guests::SPAM.as_bytes()).unwrap();
    let err = run(&p, b"", Limits::default()).await.unwrap_err();
    assert_eq!(
        err,
        Failure::OutputLimit {
            limit_bytes: 8 << 20
        }
    );
}

#[tokio::test]
async fn host_paths_are_out_of_reach() {
    let e = engine();
    let p = e.prepare(&guests::c_guest("sandbox")).unwrap();
    let out = run(&p, b"", Limits::default()).await.unwrap();
    let text = String::from_utf8(out.stdout.to_vec()).unwrap();
    assert!(!text.contains("OPENED"), "{text}");
    for what in [
        "/etc/passwd: denied",
        "../../../../etc/passwd: denied",
        "/proc/self/environ: denied",
        "/: denied",
    ] {
        assert!(text.contains(what), "missing {what:?} in {text}");
    }
    assert!(text.contains("HOME=(unset) PATH=(unset)"), "{text}");
}

#[test]
fn malformed_and_non_command_modules_are_refused_with_reasons() {
    let e = engine();
    match e.prepare(b"\0asm\x01\0\0\0garbage").unwrap_err() {
        Error::InvalidModule { reason } => assert!(!reason.is_empty()),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        e.prepare(&[0xff, 0xfe, 0x00]),
        Err(Error::InvalidModule { .. })
    ));
    match e.prepare(guests::NO_START.as_bytes()).unwrap_err() {
        Error::NotACommand { reason } => assert!(reason.contains("_start"), "{reason}"),
        other => panic!("{other:?}"),
    }
    match e.prepare(guests::ENV_IMPORT.as_bytes()).unwrap_err() {
        Error::NotACommand { reason } => assert!(reason.contains("host_magic"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn compiled_artifacts_are_reused_across_engines() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = EngineConfig {
        cache_dir: Some(dir.path().to_owned()),
        instances: 8,
        ..EngineConfig::default()
    };
    let first = Engine::new(cfg.clone()).unwrap();
    first.prepare(guests::ECHO.as_bytes()).unwrap();
    assert_eq!((first.stats().compiled, first.stats().cache_hits), (1, 0));
    drop(first);
    let second = Engine::new(cfg).unwrap();
    second.prepare(guests::ECHO.as_bytes()).unwrap();
    assert_eq!((second.stats().compiled, second.stats().cache_hits), (0, 1));
}
