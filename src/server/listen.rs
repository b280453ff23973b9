//! Listening sockets, bound before anything is served so that a bad address
//! fails start-up at once. They are bound as std sockets and handed to a
//! tokio runtime when serving starts: the admin listener is served by a
//! thread of its own (see `admin_thread`), with its own runtime.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::config::ListenAddr;

/// A bound listening socket, not yet tied to a runtime.
#[derive(Debug)]
pub enum Bound {
    /// TCP.
    Tcp(std::net::TcpListener),
    /// A Unix socket, removed again when its file guard is dropped.
    Unix(std::os::unix::net::UnixListener, UnixSocketFile),
}

/// Removes a Unix socket's file when dropped.
#[derive(Debug)]
pub struct UnixSocketFile(PathBuf);

impl Drop for UnixSocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Bound {
    /// Binds `addr`. A stale Unix socket file is replaced; any other file is left alone.
    pub fn bind(addr: &ListenAddr) -> io::Result<Self> {
        let bound = match addr {
            ListenAddr::Tcp(addr) => Self::Tcp(std::net::TcpListener::bind(addr)?),
            ListenAddr::Unix(path) => {
                use std::os::unix::fs::{FileTypeExt, PermissionsExt};
                if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
                    std::fs::remove_file(path)?;
                }
                let listener = std::os::unix::net::UnixListener::bind(path)?;
                let file = UnixSocketFile(path.clone());
                // Callers in the socket's group may connect; others may not.
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
                Self::Unix(listener, file)
            }
        };
        match &bound {
            Self::Tcp(l) => l.set_nonblocking(true)?,
            Self::Unix(l, _) => l.set_nonblocking(true)?,
        }
        Ok(bound)
    }

    /// The bound TCP address (useful after binding port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            Self::Tcp(l) => l.local_addr().ok(),
            Self::Unix(..) => None,
        }
    }

    /// The listener on the current tokio runtime.
    pub fn into_tokio(self) -> io::Result<Listener> {
        Ok(match self {
            Self::Tcp(l) => Listener::Tcp(tokio::net::TcpListener::from_std(l)?),
            Self::Unix(l, file) => Listener::Unix { listener: tokio::net::UnixListener::from_std(l)?, _file: file },
        })
    }
}

/// A listening socket served by a tokio runtime.
#[derive(Debug)]
pub enum Listener {
    /// TCP.
    Tcp(tokio::net::TcpListener),
    /// A Unix socket; its file is removed when the listener is dropped.
    Unix { listener: tokio::net::UnixListener, _file: UnixSocketFile },
}

/// An accepted connection.
pub enum Accepted {
    /// TCP, with the peer's address.
    Tcp(tokio::net::TcpStream, SocketAddr),
    /// A Unix socket connection.
    Unix(tokio::net::UnixStream),
}

impl Listener {
    /// Waits for the next connection.
    pub async fn accept(&self) -> io::Result<Accepted> {
        match self {
            Self::Tcp(l) => l.accept().await.map(|(s, peer)| Accepted::Tcp(s, peer)),
            Self::Unix { listener, .. } => listener.accept().await.map(|(s, _)| Accepted::Unix(s)),
        }
    }
}
