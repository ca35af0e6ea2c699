//! keel's accept stream with a stream-utilities trait in scope (issue 18): `futures-lite`'s
//! `StreamExt` imported beside everything keel-tokio exports. With keel's old blanket
//! `StreamExt` (re-exported by `use keel_tokio::*`) this file did not compile:
//! `incoming.next()` was error E0034 (multiple applicable items in scope). Now `next` is an
//! inherent method of the accept stream, which wins over any trait's, and the `Stream` impl is
//! still there for the trait's combinators.

use std::time::Duration;

use futures_lite::StreamExt as _;
use keel_tokio::*;

#[tokio::test]
async fn next_is_inherent_and_the_stream_impl_serves_combinators() {
    let config = GuardConfig::builder()
        .max_connections(4)
        .build()
        .expect("valid config");
    let mut incoming = bind("127.0.0.1:0", &config).await.expect("bind");
    let addr = incoming.get_ref().0.local_addr().expect("local addr");

    let client = tokio::net::TcpStream::connect(addr).await.expect("connect");
    // The inherent method: no ambiguity with futures-lite's `StreamExt::next`.
    let first: Accepted<Tcp> = tokio::time::timeout(Duration::from_secs(5), incoming.next())
        .await
        .expect("accepted in time")
        .expect("a connection");
    assert_eq!(first.peer, client.local_addr().expect("client addr"));

    // The trait's combinators still work on the same stream.
    let second_client = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut peers = (&mut incoming).map(|accepted| accepted.peer).take(1);
    let second = tokio::time::timeout(Duration::from_secs(5), peers.next())
        .await
        .expect("accepted in time")
        .expect("a connection");
    assert_eq!(second, second_client.local_addr().expect("client addr"));
}
