//! The server's connection limits: slow clients cannot hold it.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use colony_api::{AppState, ConnLimits, router, serve_with};

use super::Api;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_and_do_not_exhaust_the_server() {
    let api = Api::new().await;
    let app = router(AppState::open(api.worker.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let limits = ConnLimits {
        max_connections: 2,
        header_read_timeout: Duration::from_millis(300),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_with(
        listener,
        app,
        async move {
            let _ = stopped.await;
        },
        limits,
    ));

    let result = tokio::task::spawn_blocking(move || {
        // Two clients that never finish their headers take both slots.
        let mut slow: Vec<std::net::TcpStream> = (0..2)
            .map(|_| {
                let mut s = std::net::TcpStream::connect(addr).unwrap();
                s.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n").unwrap();
                s
            })
            .collect();
        // A normal client still gets its answer once they are cut off.
        let t = Instant::now();
        let mut ok = std::net::TcpStream::connect(addr).unwrap();
        ok.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        ok.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        ok.read_to_string(&mut answer).unwrap();
        let waited = t.elapsed();
        // The slow ones were closed by the server.
        let mut closed = 0;
        for s in &mut slow {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = [0u8; 256];
            if s.read(&mut buf).is_ok() {
                closed += 1;
            }
        }
        (answer, waited, closed)
    })
    .await
    .unwrap();
    let (answer, waited, closed) = result;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        waited >= Duration::from_millis(200),
        "served before a slot was free: {waited:?}"
    );
    assert_eq!(closed, 2);
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
