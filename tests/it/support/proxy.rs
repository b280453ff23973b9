//! An egress proxy stub: answers `CONNECT host:port` by connecting to one
//! address of the test's choosing (the proxy, not mmgate, resolves names),
//! and records what it was asked and every byte the client sent through.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One request the proxy received.
#[derive(Debug, Clone, Default)]
pub struct Proxied {
    /// `CONNECT api.example:443 HTTP/1.1`, or whatever else was sent.
    pub request_line: String,
    pub proxy_authorization: Option<String>,
    /// Bytes the client sent through the tunnel.
    pub tunnelled: Vec<u8>,
}

/// The running proxy stub.
pub struct ConnectProxy {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Proxied>>>,
}

impl ConnectProxy {
    /// Tunnels every `CONNECT` to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else { continue };
                tokio::spawn(tunnel(client, target, record.clone()));
            }
        });
        Self { addr, seen }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Proxied> {
        self.seen.lock().unwrap().clone()
    }
}

async fn tunnel(mut client: TcpStream, target: SocketAddr, seen: Arc<Mutex<Vec<Proxied>>>) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if client.read(&mut byte).await.unwrap_or(0) == 0 {
            return;
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_owned();
    let proxy_authorization = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("proxy-authorization"))
        .map(|(_, v)| v.trim().to_owned());
    let index = {
        let mut all = seen.lock().unwrap();
        all.push(Proxied { request_line: request_line.clone(), proxy_authorization, tunnelled: Vec::new() });
        all.len() - 1
    };
    if !request_line.starts_with("CONNECT ") {
        let _ = client.write_all(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n").await;
        return;
    }
    let Ok(mut upstream) = TcpStream::connect(target).await else {
        let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n").await;
        return;
    };
    if client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await.is_err() {
        return;
    }
    let (mut client_read, mut client_write) = client.split();
    let (mut upstream_read, mut upstream_write) = upstream.split();
    let up = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = client_read.read(&mut buf).await.unwrap_or(0);
            if n == 0 || upstream_write.write_all(&buf[..n]).await.is_err() {
                let _ = upstream_write.shutdown().await;
                return;
            }
            seen.lock().unwrap()[index].tunnelled.extend_from_slice(&buf[..n]);
        }
    };
    let down = tokio::io::copy(&mut upstream_read, &mut client_write);
    let _ = tokio::join!(up, down);
}
