//! A guarded echo server: each line is echoed back; a connection is held until the client
//! closes it. Accept errors are classified and paused on, connections are limited.
//!
//! ```text
//! cargo run --release -p keel-tokio --example echo -- --addr 127.0.0.1:7878 --max-connections 1024
//! ```

#[path = "support/echo_server.rs"]
mod echo_server;

#[tokio::main]
async fn main() {
    echo_server::init_logging();
    let opts = match echo_server::Options::parse(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("echo: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = echo_server::run(opts).await {
        eprintln!("echo: {e}");
        std::process::exit(1);
    }
}
