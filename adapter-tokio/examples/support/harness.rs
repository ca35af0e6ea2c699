//! keel-tokio as the shared examples and conformance suite (in keel-benches) drive it.

use keel_tokio::{GuardConfig, Incoming, Tcp, TokioRuntime};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};

/// tokio's multi-threaded runtime, `tokio::spawn` and listener.
pub(crate) struct Tokio;

impl keel_benches::Harness for Tokio {
    const NAME: &'static str = "tokio";
    type Runtime = TokioRuntime;
    type Listener = Tcp;
    fn block_on<F: std::future::Future>(fut: F) -> F::Output {
        let rt = tokio::runtime::Runtime::new().expect("a tokio runtime");
        rt.block_on(fut)
    }
    fn spawn<F: std::future::Future<Output = ()> + Send + 'static>(fut: F) {
        drop(tokio::spawn(fut));
    }
    async fn bind(addr: &str, config: &GuardConfig) -> std::io::Result<Incoming<Tcp>> {
        keel_tokio::bind(addr, config).await
    }
    fn local_addr(listener: &Tcp) -> std::io::Result<std::net::SocketAddr> {
        listener.0.local_addr()
    }
    async fn echo(stream: tokio::net::TcpStream) {
        let (read, mut write) = stream.into_split();
        let mut lines = tokio::io::BufReader::new(read);
        let mut line = Vec::with_capacity(128);
        while let Ok(n @ 1..) = lines.read_until(b'\n', &mut line).await {
            if write.write_all(&line[..n]).await.is_err() {
                break;
            }
            line.clear();
        }
    }
}
