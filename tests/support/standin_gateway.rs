//! A stand-in for `openshell-gateway` in tests (the real one is not installable in CI): listens on
//! `$OPENSHELL_BIND_ADDRESS:$OPENSHELL_SERVER_PORT` and answers every request with HTTP 404.
//! Where each behaviour comes from:
//! - the two variables are the real gateway's listen settings (recorded
//!   `shared/reference/openshell-0.0.72/help/gw-help.piped.stdout:20,26`: `[env:
//!   OPENSHELL_BIND_ADDRESS=]`, `[env: OPENSHELL_SERVER_PORT=]`), and NemoClaw 3aa9a59f configures
//!   its gateway through the environment alone (`src/lib/onboard.ts:3740-3752`);
//! - 404 to `GET /`: recorded against the real 0.0.72 gateway
//!   (`shared/reference/openshell-0.0.72/README.md:54`), and what NemoClaw 3aa9a59f says of the
//!   docker-driver gateway (`src/lib/onboard/gateway-tcp-readiness.ts:27-29`); the engine counts
//!   any HTTP answer as alive;
//! - `--version` prints one line `openshell-gateway <version>` (recorded
//!   `shared/reference/openshell-0.0.72/help/gw-version.piped.stdout`: `openshell-gateway 0.0.72`);
//!   the stand-in says 0.0.37, the version NemoClaw 3aa9a59f pins
//!   (`nemoclaw-blueprint/blueprint.yaml:5-6`).
//!
//! Behaviours a test asks for:
//! - `STANDIN_EXIT=<code>`: exit at once with that code, like a gateway that crashes at start;
//! - `STANDIN_NO_LISTEN=1`: run without ever listening, like a wedged gateway;
//! - `STANDIN_DIE_AFTER_MS=<ms>`: listen, then exit 3 that long after, like a gateway that dies
//!   after answering;
//! - it prints every `STANDIN_*` variable to stderr at start, like a gateway that logs its
//!   environment (the engine must redact the file's values from what it shows).
//!
//! Compiled by the tests with `rustc`; std only.

use std::io::{Read, Write};

fn main() {
    if std::env::args().nth(1).as_deref() == Some("--version") {
        println!("openshell-gateway 0.0.37");
        return;
    }
    for (k, v) in std::env::vars().filter(|(k, _)| k.starts_with("STANDIN_")) {
        eprintln!("standin: env {k}={v}");
    }
    if let Ok(code) = std::env::var("STANDIN_EXIT") {
        eprintln!("standin: exiting with code {code} as asked");
        std::process::exit(code.parse().unwrap_or(1));
    }
    if std::env::var_os("STANDIN_NO_LISTEN").is_some() {
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
    let port = std::env::var("OPENSHELL_SERVER_PORT").expect("OPENSHELL_SERVER_PORT is set");
    let bind = std::env::var("OPENSHELL_BIND_ADDRESS").unwrap_or_else(|_| "127.0.0.1".to_owned());
    let listener = std::net::TcpListener::bind(format!("{bind}:{port}")).expect("bind the gateway port");
    eprintln!("standin: listening on {bind}:{port}");
    if let Some(ms) = std::env::var("STANDIN_DIE_AFTER_MS").ok().and_then(|m| m.parse().ok()) {
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(ms));
            eprintln!("standin: dying as asked");
            std::process::exit(3);
        });
    }
    for stream in listener.incoming() {
        if let Ok(mut s) = stream {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    }
}
