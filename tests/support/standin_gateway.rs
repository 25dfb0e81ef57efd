//! A stand-in for `openshell-gateway` in tests (the real one is not installable here): listens on
//! `$OPENSHELL_BIND_ADDRESS:$OPENSHELL_SERVER_PORT` and answers every request with HTTP 200.
//! With `STANDIN_EXIT=<code>` it exits at once with that code, like a gateway that crashes at
//! start. Compiled by the tests with `rustc`; std only.

use std::io::{Read, Write};

fn main() {
    if let Ok(code) = std::env::var("STANDIN_EXIT") {
        eprintln!("standin: exiting with code {code} as asked");
        std::process::exit(code.parse().unwrap_or(1));
    }
    let port = std::env::var("OPENSHELL_SERVER_PORT").expect("OPENSHELL_SERVER_PORT is set");
    let bind = std::env::var("OPENSHELL_BIND_ADDRESS").unwrap_or_else(|_| "127.0.0.1".to_owned());
    let listener = std::net::TcpListener::bind(format!("{bind}:{port}")).expect("bind the gateway port");
    eprintln!("standin: listening on {bind}:{port}");
    for stream in listener.incoming() {
        if let Ok(mut s) = stream {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    }
}
