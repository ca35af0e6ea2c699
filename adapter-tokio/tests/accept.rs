//! The guarded listener's permit accounting on real loopback sockets.

use std::time::Duration;

use keel_tokio::GuardConfig;
use tokio::net::TcpStream;

#[tokio::test]
async fn an_idle_listener_holds_no_permit_and_backpressure_still_holds() {
    let config = GuardConfig::builder()
        .max_connections(1)
        .build()
        .expect("valid config");
    let mut incoming = keel_tokio::bind("127.0.0.1:0", &config)
        .await
        .expect("bind");
    let addr = incoming.get_ref().0.local_addr().expect("local addr");

    // Idle: polling for a connection must not reserve the only slot.
    assert!(
        tokio::time::timeout(Duration::from_millis(50), incoming.next())
            .await
            .is_err()
    );
    assert_eq!(incoming.stats().limit.in_use, 0);
    assert_eq!(incoming.limit().available(), 1);

    let _a = TcpStream::connect(addr).await.expect("connect a");
    let (permit, _sa, _) = incoming.next().await.expect("a accepted").into_parts();
    assert_eq!(incoming.stats().limit.in_use, 1);

    // At the limit the second client waits in the backlog, not accepted.
    let _b = TcpStream::connect(addr)
        .await
        .expect("connect b (kernel backlog)");
    assert!(
        tokio::time::timeout(Duration::from_millis(100), incoming.next())
            .await
            .is_err()
    );
    assert_eq!(incoming.stats().accept.accepted, 1);

    // Dropping the permit wakes the acceptor, which takes b.
    drop(permit);
    let (permit_b, _sb, _) = tokio::time::timeout(Duration::from_secs(5), incoming.next())
        .await
        .expect("b accepted after the release")
        .expect("stream open")
        .into_parts();
    assert_eq!(incoming.stats().limit.in_use, 1);
    assert_eq!(incoming.stats().limit.peak, 1);
    drop(permit_b);
    assert_eq!(incoming.stats().limit.in_use, 0);
}

/// A Unix-domain guarded listener yields the peer's Unix address: an unbound client's is
/// unnamed (the listener's own address is the socket path).
#[cfg(unix)]
#[tokio::test]
async fn unix_listener_yields_the_peers_unix_address() {
    let dir = std::env::temp_dir().join(format!("keel-unix-peer-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("server.sock");
    let listener = tokio::net::UnixListener::bind(&path).expect("bind");
    let config = GuardConfig::builder()
        .max_connections(4)
        .build()
        .expect("valid config");
    let mut incoming = keel_tokio::guard_unix(listener, &config);

    let _unnamed = tokio::net::UnixStream::connect(&path)
        .await
        .expect("connect");
    let accepted = tokio::time::timeout(Duration::from_secs(5), incoming.next())
        .await
        .expect("accepted in time")
        .expect("a connection");
    assert!(accepted.peer.is_unnamed(), "{:?}", accepted.peer);

    let _ = std::fs::remove_dir_all(&dir);
}
