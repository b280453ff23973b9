//! `listen = "unix:/path"`: the socket is created with mode 0660, removed on
//! exit, and a `unix_uid` client is identified by the peer's uid alone.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;

use mmgate::config::Settings;
use mmgate::Server;
use mmgate::{Gate, Runtime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

async fn over_socket(path: &std::path::Path, request: &str) -> String {
    let mut stream = tokio::net::UnixStream::connect(path).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn unix_socket_serves_and_identifies_by_peer_uid() {
    let upstream = Upstream::start().await;
    let keys = KeyDir::new();
    let socket = keys.path("mmgate.sock");
    let my_uid = std::fs::metadata(keys.path("reporting.key")).unwrap().uid();
    let toml = config(
        &upstream.url(),
        &keys,
        &format!("\n[clients.sidecar]\nunix_uid = {my_uid}\nscopes = [\"reporting\"]\n"),
    )
    .replace("\nlisten = \"127.0.0.1:0\"", &format!("\nlisten = \"unix:{}\"", socket.display()));
    let settings = Settings::from_toml(&toml).unwrap();
    let gate = Gate::new(Runtime::load(settings).unwrap());
    let server = Server::bind(gate.clone()).await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));

    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);

    // No token: the peer's uid names the client.
    let response =
        over_socket(&socket, "GET /reports/production HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert_eq!(raw_status(&response), 200, "{response}");
    let seen = upstream.only();
    assert_eq!(seen.header("authorization"), Some(&*format!("Bearer {REPORTING_KEY}")));
    // The uid client holds reporting only.
    let response = over_socket(&socket, "GET /erp/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert_eq!(raw_status(&response), 403, "{response}");
    // A token, when sent, decides alone: a wrong one is refused, not downgraded.
    let response = over_socket(
        &socket,
        "GET /reports/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer nope\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&response), 401, "{response}");
    let response = over_socket(
        &socket,
        "GET /erp/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer erp-token-2\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&response), 200, "{response}");

    let _ = stop.send(());
    task.await.unwrap();
    assert!(!socket.exists(), "the socket is removed on exit");
}

#[tokio::test]
async fn uid_clients_never_match_over_tcp() {
    let (gate, upstream, _keys) =
        Mmgate::with_upstream("\n[clients.sidecar]\nunix_uid = 0\nscopes = [\"reporting\"]\n").await;
    get(&gate.url("/reports/production"), &[]).await.assert_error(401, "unauthenticated");
    upstream.assert_untouched();
}
