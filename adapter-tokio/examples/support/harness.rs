//! keel-tokio as the shared examples and conformance suite (in keel-benches) drive it.

use keel_tokio::{GuardConfig, Incoming, ServeHandle, Tcp, TokioRuntime};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};

/// tokio's multi-threaded runtime, `tokio::spawn` and listener.
pub(crate) struct Tokio;

impl keel_benches::Harness for Tokio {
    const NAME: &'static str = "tokio";
    const PACKAGE: &'static str = "keel-tokio";
    type Runtime = TokioRuntime;
    type Listener = Tcp;
    fn block_on<F: std::future::Future>(fut: F) -> F::Output {
        let rt = tokio::runtime::Runtime::new().expect("a tokio runtime");
        rt.block_on(fut)
    }
    async fn bind(addr: &str, config: &GuardConfig) -> std::io::Result<Incoming<Tcp>> {
        keel_tokio::bind(addr, config).await
    }
    fn local_addr(listener: &Tcp) -> std::io::Result<std::net::SocketAddr> {
        listener.0.local_addr()
    }
    /// The same loop as `keel_benches::storm::echo_futures_io`, on tokio's I/O traits.
    async fn echo(stream: tokio::net::TcpStream, server: Option<ServeHandle>) {
        let draining = server.as_ref().map(ServeHandle::draining);
        let (read, mut write) = stream.into_split();
        let mut lines = tokio::io::BufReader::new(read);
        let mut line = Vec::with_capacity(128);
        loop {
            line.clear();
            // `read_until` keeps what it read when interrupted by the drain.
            let read = match &draining {
                Some(d) => match d
                    .run_until_draining(lines.read_until(b'\n', &mut line))
                    .await
                {
                    Some(read) => read,
                    None if line.is_empty() && lines.buffer().is_empty() => break,
                    None => lines.read_until(b'\n', &mut line).await,
                },
                None => lines.read_until(b'\n', &mut line).await,
            };
            if read.is_err() || line.is_empty() {
                break;
            }
            let reply = keel_benches::storm::echo_reply(&line, server.as_ref());
            if write.write_all(&reply).await.is_err()
                || draining.as_ref().is_some_and(|d| d.is_draining())
            {
                break;
            }
        }
    }
}
