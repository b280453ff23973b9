//! Egress proxy (DESIGN "Egress proxy"): the upstream through a `CONNECT`
//! tunnel, TLS end to end, the key only inside the tunnel, proxy
//! credentials sent to the proxy alone and never printed.

use mmgate::config::{ConfigOrigin, Overrides, ProxyEnv, Settings};

use crate::cli::{mmgate, spawn};
use crate::support::*;

/// The TLS fixture's certificate holds this name; only the proxy stub "resolves" it.
const API_HOST: &str = "api.machinemetrics.test";

fn trusting_test_ca() -> String {
    format!("ca_file = \"{}\"", tls_fixture("ca.pem").display())
}

#[tokio::test]
async fn an_https_upstream_is_reached_through_a_connect_tunnel_with_tls_end_to_end() {
    let upstream = TlsUpstream::start(&[b"h2", b"http/1.1"]).await;
    let proxy = ConnectProxy::start(upstream.addr).await;
    let keys = KeyDir::new();
    let url = format!("https://{API_HOST}:{}", upstream.addr.port());
    let proxy_line = format!("proxy = \"http://plant-user:pa55word@{}\"", proxy.addr);
    let toml = with_lines(&config(&url, &keys, ""), "upstream", &format!("{}\n{proxy_line}", trusting_test_ca()));
    let gate = Mmgate::start(&toml).await;

    let reply = get(&gate.url("/reports/production"), &[AS_DASHBOARD]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = upstream.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].authorization.as_deref(), Some(&*format!("Bearer {REPORTING_KEY}")));
    let asked = proxy.requests();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(asked[0].request_line, format!("CONNECT {API_HOST}:{} HTTP/1.1", upstream.addr.port()));
    // base64("plant-user:pa55word")
    assert_eq!(asked[0].proxy_authorization.as_deref(), Some("Basic cGxhbnQtdXNlcjpwYTU1d29yZA=="));
    let tunnelled = String::from_utf8_lossy(&asked[0].tunnelled);
    assert!(!asked[0].tunnelled.is_empty());
    assert!(!tunnelled.contains(REPORTING_KEY), "the key crossed the proxy in clear");
    assert!(!tunnelled.contains("Proxy-Authorization"), "credentials inside the tunnel");
}

#[tokio::test]
async fn a_plain_http_upstream_is_tunnelled_too_never_sent_in_absolute_form() {
    let upstream = Upstream::start().await;
    let proxy = ConnectProxy::start(upstream.addr).await;
    let keys = KeyDir::new();
    let toml = with_lines(&config(&upstream.url(), &keys, ""), "upstream", &format!("proxy = \"{}\"", proxy.url()));
    let gate = Mmgate::start(&toml).await;
    assert_eq!(get(&gate.url("/reports/a"), &[AS_DASHBOARD]).await.status, 200);
    let asked = proxy.requests();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(asked[0].request_line, format!("CONNECT {} HTTP/1.1", upstream.addr));
    assert_eq!(upstream.only().header("authorization"), Some(&*format!("Bearer {REPORTING_KEY}")));
}

#[tokio::test]
async fn https_proxy_applies_unless_no_proxy_names_the_host_and_none_goes_direct() {
    let upstream = TlsUpstream::start(&[b"http/1.1"]).await;
    let proxy = ConnectProxy::start(upstream.addr).await;
    let keys = KeyDir::new();
    let url = format!("https://{API_HOST}:{}", upstream.addr.port());
    let toml = with_lines(&config(&url, &keys, ""), "upstream", &trusting_test_ca());
    let path = keys.path("mmgate.toml");
    std::fs::write(&path, &toml).unwrap();
    let load = |no: Option<&str>| {
        let env =
            ProxyEnv { https: Some(("HTTPS_PROXY", proxy.url())), no: no.map(str::to_owned), ..ProxyEnv::default() };
        Settings::load_with(ConfigOrigin::File(path.clone()), &Overrides::default(), &env).unwrap()
    };
    let gate = Mmgate::start_settings(load(None)).await;
    assert_eq!(get(&gate.url("/reports/a"), &[AS_DASHBOARD]).await.status, 200);
    assert_eq!(proxy.requests().len(), 1);

    // NO_PROXY: mmgate connects itself, and the .test name resolves nowhere.
    let direct = Mmgate::start_settings(load(Some("localhost, .machinemetrics.test"))).await;
    get(&direct.url("/reports/a"), &[AS_DASHBOARD]).await.assert_error(502, "upstream_unreachable");
    assert_eq!(proxy.requests().len(), 1, "NO_PROXY was not honoured");
    let none = with_lines(&toml, "upstream", "proxy = \"none\"");
    std::fs::write(&path, none).unwrap();
    assert_eq!(load(None).upstream().egress.to_string(), "direct");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_credentials_never_appear_in_any_output() {
    let upstream = TlsUpstream::start(&[b"h2", b"http/1.1"]).await;
    let proxy = ConnectProxy::start(upstream.addr).await;
    let keys = KeyDir::new();
    let url = format!("https://{API_HOST}:{}", upstream.addr.port());
    let (port, admin, toml) = on_free_ports(&with_lines(&config(&url, &keys, ""), "upstream", &trusting_test_ca()));
    let path = keys.path("mmgate.toml");
    std::fs::write(&path, toml).unwrap();
    let proxy_url = format!("http://plant-user:s3cret-proxy-pass@{}", proxy.addr);

    let output = mmgate().args(["check", "--config"]).arg(&path).env("HTTPS_PROXY", &proxy_url).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{text}");
    assert!(
        text.contains(&format!("through proxy http://{}/ (CONNECT; from HTTPS_PROXY, with credentials)", proxy.addr)),
        "{text}"
    );

    let child = spawn(&path, &[("HTTPS_PROXY", &proxy_url), ("RUST_LOG", "trace")], admin);
    let reply = get(&format!("http://127.0.0.1:{port}/reports/a"), &[AS_DASHBOARD]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(proxy.requests().len(), 1);
    let (_, logs) = crate::cli::terminate(child);
    for secret in ["s3cret-proxy-pass", "cGxhbnQtdXNlcjpzM2NyZXQtcHJveHktcGFzcw", REPORTING_KEY] {
        assert!(!logs.contains(secret), "{secret} in the logs");
        assert!(!text.contains(secret));
    }
}
