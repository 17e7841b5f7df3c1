//! The NATS fixture starts a JetStream server new enough for Colony's
//! cluster, and restarts it on the same port and store.

use colony_testsupport::NatsServer;

fn version(v: &str) -> (u32, u32) {
    let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

#[test]
fn a_jetstream_server_of_2_11_or_newer_starts_and_restarts() {
    let mut nats = NatsServer::start();
    let info = nats.info();
    assert!(info.jetstream);
    assert!(
        version(&info.version) >= (2, 11),
        "nats-server {} is too old",
        info.version
    );
    let url = nats.url();
    assert!(url.starts_with("nats://127.0.0.1:"));
    nats.restart();
    assert_eq!(nats.url(), url);
    assert!(nats.info().jetstream);
}
