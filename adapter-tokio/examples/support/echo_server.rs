//! The guarded echo server shared by the `echo` and `storm` examples.

use std::io;
use std::net::SocketAddr;

use keel_tokio::core::driver::{GuardConfig, StreamExt as _};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// Command-line options of the echo server.
#[derive(Clone, Debug)]
pub(crate) struct Options {
    pub(crate) addr: String,
    pub(crate) max_connections: usize,
}

impl Options {
    /// Parses `--addr HOST:PORT` and `--max-connections N` (defaults 127.0.0.1:7878 and 1024).
    pub(crate) fn parse(args: impl IntoIterator<Item = String>) -> Result<Options, String> {
        let mut opts = Options {
            addr: "127.0.0.1:7878".into(),
            max_connections: 1024,
        };
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
            match arg.as_str() {
                "--addr" => opts.addr = value("--addr")?,
                "--max-connections" => {
                    let v = value("--max-connections")?;
                    opts.max_connections = v
                        .parse()
                        .map_err(|_| format!("--max-connections: `{v}` is not a count"))?;
                }
                "--serve" => {}
                other => {
                    return Err(format!(
                        "unknown argument `{other}` (try --addr, --max-connections)"
                    ))
                }
            }
        }
        Ok(opts)
    }
}

/// Logs to stderr, `info` by default (`RUST_LOG` overrides).
pub(crate) fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(false)
        .init();
}

/// Binds, prints `listening on ADDR` on stdout, and echoes lines until the process ends.
pub(crate) async fn run(opts: Options) -> io::Result<()> {
    let config = GuardConfig::builder()
        .max_connections(opts.max_connections)
        .build()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut incoming = keel_tokio::bind(&opts.addr, &config).await?;
    let local: SocketAddr = incoming.get_ref().0.local_addr()?;
    println!("listening on {local}");
    tracing::info!(addr = %local, max_connections = opts.max_connections, "echo server listening");
    while let Some((permit, stream)) = incoming.next().await {
        tokio::spawn(async move {
            let _permit = permit;
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read);
            let mut line = Vec::with_capacity(128);
            loop {
                line.clear();
                match lines.read_until(b'\n', &mut line).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if write.write_all(&line).await.is_err() {
                            break;
                        }
                    }
                }
            }
        });
    }
    match incoming.take_error() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
