//! The seed's manual accept-loop test, automated.
//!
//! 1. Starts the guarded echo server in a child process (this same binary, `--serve`) with the
//!    open-files limit lowered to 100 (`ulimit -n 100`) and max connections 150, so the process
//!    runs out of file descriptors before it reaches its connection limit.
//! 2. Drives 1000 concurrent loopback clients at it for about 10 s (each connects, sends a line
//!    every 100 ms and reads the echo), with a live progress line.
//! 3. Checks, and exits 0 only if all hold: the server did not crash; a fresh connection gets
//!    its echo a few seconds after the storm; "Too many open files" was logged, a bounded number
//!    of times; the server's CPU time during the storm was under 10 % of one core.
//!
//! ```text
//! cargo run --release -p keel-tokio --example storm
//! ```

#[path = "support/echo_server.rs"]
mod echo_server;
#[path = "support/storm.rs"]
mod storm;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--serve") {
        echo_server::init_logging();
        let opts = echo_server::Options::parse(args).unwrap_or_else(|e| {
            eprintln!("storm server: {e}");
            std::process::exit(2)
        });
        let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
        if let Err(e) = rt.block_on(echo_server::run(opts)) {
            eprintln!("storm server: {e}");
            std::process::exit(1);
        }
        return;
    }
    let exe = std::env::current_exe().expect("path of this example");
    let code = storm::run(storm::Plan::seed(exe, vec!["--serve".into()]));
    std::process::exit(code);
}
