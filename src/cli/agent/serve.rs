//! The agent's `/metrics` endpoint and the counters behind it (one agent per process).

use std::time::Duration;

/// This process's metrics (one agent per process).
static METRICS: std::sync::LazyLock<std::sync::Mutex<crate::fleet::metrics::Metrics>> =
    std::sync::LazyLock::new(Default::default);

pub(super) fn metrics(update: impl FnOnce(&mut crate::fleet::metrics::Metrics)) {
    if let Ok(mut m) = METRICS.lock() {
        update(&mut m);
    }
}

/// Answers `GET /metrics` with the text format; anything else with 404.
pub(super) async fn serve(listener: tokio::net::TcpListener) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf))
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or(0);
            let request = String::from_utf8_lossy(&buf[..n]);
            let (status, body) = if request.starts_with("GET /metrics ") {
                let text = METRICS.lock().map(|m| m.render()).unwrap_or_default();
                ("200 OK", text)
            } else {
                ("404 Not Found", "not found\n".to_owned())
            };
            let head = format!(
                "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(head.as_bytes()).await;
            let _ = conn.write_all(body.as_bytes()).await;
        });
    }
}
