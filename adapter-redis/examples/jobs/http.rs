//! A minimal HTTP/1.1 client for the load script (keep-alive, `Content-Length` bodies only:
//! what axum answers), so the script needs no client library.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

pub struct Http {
    addr: SocketAddr,
    stream: Option<BufReader<TcpStream>>,
}

impl Http {
    pub fn new(addr: SocketAddr) -> Http {
        Http { addr, stream: None }
    }

    /// `(status, body)`; one reconnect on a broken connection; 5 s at most.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &str,
    ) -> Result<(u16, String), String> {
        let mut last = String::new();
        for _ in 0..2 {
            match tokio::time::timeout(Duration::from_secs(5), self.once(method, path, headers))
                .await
            {
                Ok(Ok(r)) => return Ok(r),
                Ok(Err(e)) => last = e,
                Err(_) => last = "timed out after 5 s".into(),
            }
            self.stream = None;
        }
        Err(last)
    }

    async fn once(
        &mut self,
        method: &str,
        path: &str,
        headers: &str,
    ) -> Result<(u16, String), String> {
        if self.stream.is_none() {
            let s = TcpStream::connect(self.addr)
                .await
                .map_err(|e| e.to_string())?;
            let _ = s.set_nodelay(true);
            self.stream = Some(BufReader::new(s));
        }
        let s = self.stream.as_mut().ok_or("no connection")?;
        let req =
            format!("{method} {path} HTTP/1.1\r\nhost: load\r\ncontent-length: 0\r\n{headers}\r\n");
        s.get_mut()
            .write_all(req.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut line = String::new();
        if s.read_line(&mut line).await.map_err(|e| e.to_string())? == 0 {
            return Err("connection closed".into());
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("bad status line {line:?}"))?;
        let mut len = 0usize;
        let mut close = false;
        loop {
            line.clear();
            if s.read_line(&mut line).await.map_err(|e| e.to_string())? == 0 {
                return Err("connection closed in the headers".into());
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
                if k == "content-length" {
                    len = v.parse().map_err(|_| format!("bad content-length {v:?}"))?;
                } else if k == "connection" && v.eq_ignore_ascii_case("close") {
                    close = true;
                } else if k == "transfer-encoding" {
                    return Err("chunked bodies are not supported".into());
                }
            }
        }
        let mut body = vec![0u8; len.min(64 << 20)];
        s.read_exact(&mut body).await.map_err(|e| e.to_string())?;
        if close {
            self.stream = None;
        }
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}
