//! keel's conformance suite (`keel_testkit::conformance`) run on tokio.

use keel_tokio::{GuardConfig, Incoming, ServeHandle, Tcp, TokioRuntime};
use tokio_util::compat::TokioAsyncReadCompatExt as _;

/// tokio's multi-threaded runtime, `tokio::spawn` and listener.
struct Tokio;

impl keel_testkit::Harness for Tokio {
    const NAME: &'static str = "tokio";
    const PACKAGE: &'static str = "keel-tokio";
    const ECHO_EXAMPLE: &'static str = "echo";
    type Runtime = TokioRuntime;
    type Listener = Tcp;
    fn block_on<F: std::future::Future>(fut: F) -> F::Output {
        let rt = tokio::runtime::Runtime::new().expect("a tokio runtime");
        rt.block_on(fut)
    }
    fn block_on_current_thread<F: std::future::Future>(fut: F) -> F::Output {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread tokio runtime");
        rt.block_on(fut)
    }
    async fn bind(addr: &str, config: &GuardConfig) -> std::io::Result<Incoming<Tcp>> {
        keel_tokio::bind(addr, config).await
    }
    fn local_addr(listener: &Tcp) -> std::io::Result<std::net::SocketAddr> {
        listener.0.local_addr()
    }
    /// The shared line echo, through tokio-util's bridge to the `futures-io` traits.
    async fn echo(stream: tokio::net::TcpStream, server: Option<ServeHandle>) {
        keel_testkit::echo::echo_futures_io(stream.compat(), server).await;
    }
}

keel_testkit::conformance_suite!(Tokio, keel_tokio);
