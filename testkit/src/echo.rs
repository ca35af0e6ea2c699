//! The line echo served by every adapter's `echo` example and by the conformance suite's
//! in-process servers, and the example's command-line flags.
//!
//! - [`Options`]: `--addr`, `--max-connections`, `--grace`, `--idle-timeout`, `--max-line`,
//!   `--line-timeout` (the flags the storm, the conformance suite and `.ci/run` pass).
//! - [`echo_conn`]: one connection served by a keel `Server`: each line read with a bound
//!   ([`read_line_bounded`]) and a read deadline armed at its first byte
//!   ([`Conn::set_read_deadline`]), echoed back, except the line `HEALTH`, answered with the
//!   server's health line ([`echo_reply`]); when the drain starts an idle connection ends at
//!   once and a line in flight is finished and answered first. The server then closes the
//!   connection with a lingering close.
//! - [`echo_futures_io`]: the same echo on a raw `futures-io` stream (no server).

use std::borrow::Cow;
use std::io;
use std::time::Duration;

use futures_lite::{AsyncRead, AsyncWrite, AsyncWriteExt as _};
use keel_core::driver::{read_line_bounded, Conn, ConnIo, Draining, Line, ServeHandle};

/// Command-line options of the echo server.
#[derive(Clone, Debug)]
pub struct Options {
    /// `--addr HOST:PORT` (default 127.0.0.1:7878).
    pub addr: String,
    /// `--max-connections N` (default 1024).
    pub max_connections: usize,
    /// `--grace SECONDS` (default 5): how long the drain waits for connections in flight.
    pub grace: Duration,
    /// `--idle-timeout SECONDS` (default 60; 0: off): a connection silent this long is closed.
    pub idle_timeout: Option<Duration>,
    /// `--max-line BYTES` (default 65536) and `--line-timeout SECONDS` (default 10).
    pub limits: EchoLimits,
}

/// How the echo bounds a line: its length and the time from its first byte to its newline.
#[derive(Clone, Copy, Debug)]
pub struct EchoLimits {
    /// The longest line echoed, newline included (`--max-line BYTES`, default 64 KiB). A longer
    /// one is answered with `ERR line longer than N bytes` and the connection is closed.
    pub max_line: usize,
    /// The read deadline of a line, armed at its first byte (`--line-timeout SECONDS`, default
    /// 10; 0: off): a trickler that never sends the newline is closed when it passes.
    pub line_timeout: Option<Duration>,
}

impl Default for EchoLimits {
    fn default() -> Self {
        EchoLimits {
            max_line: 64 * 1024,
            line_timeout: Some(Duration::from_secs(10)),
        }
    }
}

fn seconds(name: &str, v: &str) -> Result<Duration, String> {
    v.parse::<f64>()
        .ok()
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .ok_or(format!("{name}: `{v}` is not a number of seconds"))
}

impl Options {
    /// Parses this process's arguments as [`parse`](Self::parse) does; on a bad flag, prints
    /// `echo: <what is wrong>` on stderr and exits with code 2 (what every echo example does).
    pub fn from_args_or_exit() -> Options {
        Options::parse(std::env::args().skip(1)).unwrap_or_else(|e| {
            eprintln!("echo: {e}");
            std::process::exit(2)
        })
    }

    /// Parses `--addr HOST:PORT`, `--max-connections N`, `--grace SECONDS`,
    /// `--idle-timeout SECONDS`, `--max-line BYTES` and `--line-timeout SECONDS` (`--serve` is
    /// accepted and ignored).
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Options, String> {
        let mut opts = Options {
            addr: "127.0.0.1:7878".into(),
            max_connections: 1024,
            grace: Duration::from_secs(5),
            idle_timeout: Some(Duration::from_secs(60)),
            limits: EchoLimits::default(),
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
                "--grace" => opts.grace = seconds("--grace", &value("--grace")?)?,
                "--idle-timeout" => {
                    let d = seconds("--idle-timeout", &value("--idle-timeout")?)?;
                    opts.idle_timeout = (!d.is_zero()).then_some(d);
                }
                "--line-timeout" => {
                    let d = seconds("--line-timeout", &value("--line-timeout")?)?;
                    opts.limits.line_timeout = (!d.is_zero()).then_some(d);
                }
                "--max-line" => {
                    let v = value("--max-line")?;
                    opts.limits.max_line = v
                        .parse()
                        .ok()
                        .filter(|&n: &usize| n > 0)
                        .ok_or(format!("--max-line: `{v}` is not a positive byte count"))?;
                }
                "--serve" => {}
                other => {
                    return Err(format!(
                        "unknown argument `{other}` (try --addr, --max-connections, --grace, \
                         --idle-timeout, --max-line, --line-timeout)"
                    ))
                }
            }
        }
        Ok(opts)
    }
}

/// What the echo server answers to `line`: the health line for `HEALTH` (with a server), else
/// the line itself.
pub fn echo_reply<'a>(line: &'a [u8], server: Option<&ServeHandle>) -> Cow<'a, [u8]> {
    match server {
        Some(server) if line.trim_ascii() == b"HEALTH" => {
            Cow::Owned(format!("{}\n", server.health()).into_bytes())
        }
        _ => Cow::Borrowed(line),
    }
}

/// The line echo for streams with `futures-io` traits (smol's, async-std's, tokio's through a
/// bridge), with the default [`EchoLimits`] and no read deadline. With a `server`: answers
/// `HEALTH` (see [`echo_reply`]) and follows the drain: an idle connection is closed when it
/// starts, a line in flight is finished and answered first.
pub async fn echo_futures_io<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    server: Option<ServeHandle>,
) {
    echo_lines(stream, server, EchoLimits::default(), |_, _| {}).await;
}

/// The echo of the `echo` example on a connection served by `Server`: lines bounded by
/// `limits.max_line`, each line's read deadline armed at its first byte
/// ([`Conn::set_read_deadline`]); the connection is closed by the server with a lingering close
/// when this returns.
pub async fn echo_conn<L: ConnIo>(conn: Conn<L>, server: Option<ServeHandle>, limits: EchoLimits) {
    echo_lines(conn, server, limits, |conn: &Conn<L>, d| {
        conn.set_read_deadline(d);
    })
    .await;
}

/// Reads the next bounded line, arming the read deadline at its first byte.
async fn next_line<S, A>(
    lines: &mut futures_lite::io::BufReader<S>,
    line: &mut Vec<u8>,
    limits: EchoLimits,
    arm: &A,
) -> io::Result<Line>
where
    S: AsyncRead + Unpin,
    A: Fn(&S, Option<Duration>),
{
    read_line_bounded(lines, line, limits.max_line, |r| {
        arm(r.get_ref(), limits.line_timeout);
    })
    .await
}

async fn echo_lines<S, A>(stream: S, server: Option<ServeHandle>, limits: EchoLimits, arm: A)
where
    S: AsyncRead + AsyncWrite + Unpin,
    A: Fn(&S, Option<Duration>),
{
    let draining = server.as_ref().map(ServeHandle::draining);
    let mut lines = futures_lite::io::BufReader::new(stream);
    let mut line = Vec::with_capacity(128);
    loop {
        line.clear();
        // The bounded read keeps what it read when interrupted by the drain.
        let read = match &draining {
            Some(d) => match d
                .run_until_draining(next_line(&mut lines, &mut line, limits, &arm))
                .await
            {
                Some(read) => read,
                None if line.is_empty() && lines.buffer().is_empty() => break,
                None => next_line(&mut lines, &mut line, limits, &arm).await,
            },
            None => next_line(&mut lines, &mut line, limits, &arm).await,
        };
        arm(lines.get_ref(), None);
        let reply = match read {
            Ok(Line::Complete(_)) => echo_reply(&line, server.as_ref()),
            // A last line without a newline is echoed as it is.
            Ok(Line::Eof) if !line.is_empty() => Cow::Borrowed(&line[..]),
            Ok(Line::TooLong) => {
                let err = format!("ERR line longer than {} bytes\n", limits.max_line);
                let _ = lines.get_mut().write_all(err.as_bytes()).await;
                break;
            }
            Ok(Line::Eof) | Err(_) => break,
        };
        if lines.get_mut().write_all(&reply).await.is_err()
            || draining.as_ref().is_some_and(Draining::is_draining)
        {
            break;
        }
    }
}
