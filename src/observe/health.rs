//! Is the gateway answering? A TCP connect to its port on 127.0.0.1, then `GET /` over HTTP/1.1.
//! 200 or 401 means alive (401: it serves, and wants credentials).

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::model::Health;

/// Probes `127.0.0.1:port` with `timeout` for each of connect and reply. Blocking.
#[must_use]
pub fn probe(port: u16, timeout: Duration) -> Health {
    probe_path(port, "/", timeout)
}

/// Like [`probe`], asking for `path`.
#[must_use]
pub fn probe_path(port: u16, path: &str, timeout: Duration) -> Health {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = match TcpStream::connect_timeout(&addr, timeout) {
        Ok(s) => s,
        Err(e) => {
            return Health {
                tcp_open: false,
                http_status: None,
                answered: false,
                detail: Some(format!("connect: {e}")),
            };
        }
    };
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if let Err(e) = stream.write_all(request.as_bytes()) {
        return Health {
            tcp_open: true,
            http_status: None,
            answered: false,
            detail: Some(format!("HTTP request: {e}")),
        };
    }
    let mut head = [0u8; 64];
    let mut got = 0;
    while got < 12 {
        match stream.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) => {
                return Health {
                    tcp_open: true,
                    http_status: None,
                    answered: got > 0,
                    detail: Some(format!("HTTP reply: {e}")),
                };
            }
        }
    }
    let text = String::from_utf8_lossy(&head[..got]);
    match text
        .strip_prefix("HTTP/1.")
        .and_then(|r| r.get(2..5))
        .and_then(|c| c.parse().ok())
    {
        Some(code) => Health {
            tcp_open: true,
            http_status: Some(code),
            answered: true,
            detail: None,
        },
        None => Health {
            tcp_open: true,
            http_status: None,
            answered: got > 0,
            detail: Some(if got > 0 {
                "not an HTTP reply".to_owned()
            } else {
                "the connection was accepted, then closed without a reply".to_owned()
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_port_is_not_alive_and_says_why() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let h = probe(port, Duration::from_millis(200));
        assert!(!h.tcp_open && !h.alive() && h.detail.is_some());
    }

    #[test]
    fn an_http_server_answering_401_is_alive() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let t = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = [0u8; 256];
            let _ = s.read(&mut buf);
            s.write_all(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n")
                .unwrap();
        });
        let h = probe(port, Duration::from_secs(2));
        t.join().unwrap();
        assert_eq!(h.http_status, Some(401));
        assert!(h.alive());
    }
}
