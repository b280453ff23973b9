//! `mmgate healthcheck`: asks the running mmgate's admin listener for
//! `/healthz`, for container `HEALTHCHECK`s in images with no shell or curl
//! (the distroless image has neither).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;

use crate::config::{ConfigOrigin, ListenAddr, Settings};

/// How long the whole check may take.
const TIMEOUT: Duration = Duration::from_secs(3);

/// Why the check failed, for the one line it prints.
#[derive(Debug, thiserror::Error)]
pub enum Unhealthy {
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot reach the admin listener at {at}: {reason}")]
    Unreachable { at: String, reason: String },
    #[error("{at}/healthz answered {status}")]
    Status { at: String, status: StatusCode },
    #[error("{at}/healthz did not answer within {} s", TIMEOUT.as_secs())]
    Timeout { at: String },
}

/// Asks `/healthz` on the admin address of the config at `origin`.
pub fn run(origin: ConfigOrigin) -> Result<(), Unhealthy> {
    let settings = Settings::load(origin)?;
    let admin = settings.server().admin_listen.clone();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Unhealthy::Unreachable { at: admin.to_string(), reason: e.to_string() })?;
    runtime.block_on(async {
        let at = admin.to_string();
        match tokio::time::timeout(TIMEOUT, ask(&admin)).await {
            Err(_) => Err(Unhealthy::Timeout { at }),
            Ok(Err(reason)) => Err(Unhealthy::Unreachable { at, reason }),
            Ok(Ok(StatusCode::OK)) => Ok(()),
            Ok(Ok(status)) => Err(Unhealthy::Status { at, status }),
        }
    })
}

/// Where to connect for an address listened on: a wildcard means this host.
fn local(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}

async fn ask(admin: &ListenAddr) -> Result<StatusCode, String> {
    match admin {
        ListenAddr::Tcp(addr) => {
            let stream = tokio::net::TcpStream::connect(local(*addr)).await.map_err(|e| e.to_string())?;
            get_healthz(stream).await
        }
        ListenAddr::Unix(path) => {
            let stream = tokio::net::UnixStream::connect(path).await.map_err(|e| e.to_string())?;
            get_healthz(stream).await
        }
    }
}

async fn get_healthz<S>(stream: S) -> Result<StatusCode, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let request = Request::get("/healthz")
        .header(http::header::HOST, "localhost")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
    Ok(response.status())
}
