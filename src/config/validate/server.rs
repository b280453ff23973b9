//! `[server]` and `[upstream]`: addresses, sizes, timeouts, the upstream URL,
//! its CAs and the way out (egress).

use std::net::IpAddr;
use std::path::PathBuf;

use http::uri::Scheme;
use http::{HeaderValue, Uri};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use super::Checker;
use crate::config::raw::{RawLogFormat, RawServer, RawTelemetry, RawUpstream};
use crate::config::{Egress, ListenAddr, LogFormat, ProxyEnv, ServerSettings, TelemetrySettings, UpstreamSettings};

pub(super) fn server(c: &mut Checker, raw: &RawServer) -> Option<ServerSettings> {
    let listen = c.listen("server.listen", &raw.listen);
    let admin_listen = c.listen("server.admin_listen", &raw.admin_listen);
    let port_zero = matches!(&listen, Some(ListenAddr::Tcp(a)) if a.port() == 0);
    if listen.is_some() && listen == admin_listen && !port_zero {
        c.problem("server.admin_listen", "must differ from server.listen");
    }
    if raw.max_body.0 == 0 {
        c.problem("server.max_body", "must be more than zero, e.g. \"1MiB\"");
    }
    let max_header_bytes = usize::try_from(raw.max_header_bytes.0).unwrap_or(usize::MAX);
    if !(1024..=1024 * 1024).contains(&max_header_bytes) {
        c.problem("server.max_header_bytes", "must be between 1KiB and 1MiB, e.g. \"32KiB\"");
    }
    if !(1..=10_000).contains(&raw.max_headers) {
        c.problem("server.max_headers", "must be between 1 and 10000, e.g. 200");
    }
    if raw.max_connections == 0 {
        c.problem("server.max_connections", "must be at least 1, e.g. 10000");
    }
    Some(ServerSettings {
        listen: listen?,
        admin_listen: admin_listen?,
        max_body: raw.max_body.0,
        max_header_bytes,
        max_headers: usize::try_from(raw.max_headers).unwrap_or(usize::MAX),
        max_connections: usize::try_from(raw.max_connections).unwrap_or(usize::MAX),
        header_timeout: c.positive("server.header_timeout", raw.header_timeout.0),
        idle_timeout: c.positive("server.idle_timeout", raw.idle_timeout.0),
        body_idle_timeout: c.positive("server.body_idle_timeout", raw.body_idle_timeout.0),
        shutdown_grace: raw.shutdown_grace.0,
        unready_on_rejected_key: raw.unready_on_rejected_key,
        key_poll_interval: c.positive("server.key_poll_interval", raw.key_poll_interval.0),
        watch_key_files: raw.watch_key_files,
        log_format: match raw.log_format {
            RawLogFormat::Text => LogFormat::Text,
            RawLogFormat::Json => LogFormat::Json,
        },
        mode: raw.mode.into(),
    })
}

pub(super) fn upstream(c: &mut Checker, raw: &RawUpstream, proxies: &ProxyEnv) -> Option<UpstreamSettings> {
    let connect_timeout = c.positive("upstream.connect_timeout", raw.connect_timeout.0);
    let timeout = c.positive("upstream.timeout", raw.timeout.0);
    let body_idle_timeout = c.positive("upstream.body_idle_timeout", raw.body_idle_timeout.0);
    let max_cooldown = c.positive("upstream.max_cooldown", raw.max_cooldown.0);
    if raw.max_connections == 0 {
        c.problem("upstream.max_connections", "must be at least 1, e.g. 256");
    }
    let fix = "write the API's base URL, e.g. \"https://api.machinemetrics.com\"";
    let Ok(uri) = raw.url.parse::<Uri>() else {
        c.problem("upstream.url", format!("`{}` is not a URL; {fix}", raw.url));
        return None;
    };
    let scheme = match uri.scheme_str() {
        Some("https") => Scheme::HTTPS,
        Some("http") => Scheme::HTTP,
        _ => {
            c.problem("upstream.url", format!("must start with https:// (or http:// for a local test server); {fix}"));
            return None;
        }
    };
    let Some(authority) = uri.authority().cloned() else {
        c.problem("upstream.url", format!("has no host; {fix}"));
        return None;
    };
    if authority.as_str().contains('@') {
        c.problem("upstream.url", "must not carry a user name or password; keys go in [keys.*]");
        return None;
    }
    if uri.query().is_some() {
        c.problem("upstream.url", "must not have a query string");
        return None;
    }
    let default_port = if scheme == Scheme::HTTPS { 443 } else { 80 };
    let host_header = match authority.port_u16() {
        Some(port) if port != default_port => authority.as_str().to_owned(),
        _ => authority.host().to_owned(),
    };
    // The HTTP/1 client builds `Host` from the URL, and must be able to.
    let Ok(host_header) = HeaderValue::from_str(&host_header) else {
        c.problem("upstream.url", "has a host that is not a valid Host header");
        return None;
    };
    let http1_only = scheme == Scheme::HTTP || !raw.http2;
    if scheme == Scheme::HTTP && !is_loopback_host(authority.host()) {
        c.warnings.push(format!(
            "upstream.url: {} is plain http to a host that is not loopback: keys would cross the network unencrypted",
            raw.url
        ));
    }
    let egress =
        match crate::config::egress::resolve(raw.proxy.as_deref(), &uri, is_loopback_host(authority.host()), proxies) {
            Ok(egress) => egress,
            Err((key, why)) => {
                c.problem(key, why);
                Egress::Direct
            }
        };
    Some(UpstreamSettings {
        url: raw.url.clone(),
        scheme,
        authority: authority.clone(),
        host_header: http1_only.then_some(host_header),
        base_path: uri.path().trim_end_matches('/').to_owned(),
        connect_timeout,
        timeout,
        body_idle_timeout,
        max_cooldown,
        max_connections: usize::try_from(raw.max_connections).unwrap_or(usize::MAX).max(1),
        extra_roots: raw.ca_file.as_deref().and_then(|file| extra_roots(c, file)),
        http2: raw.http2,
        egress,
    })
}

/// Reads `upstream.ca_file`: at least one certificate, each usable as a trust anchor.
fn extra_roots(c: &mut Checker, file: &str) -> Option<(PathBuf, Vec<CertificateDer<'static>>)> {
    let key = "upstream.ca_file";
    let fix = "give a PEM file of CA certificates (-----BEGIN CERTIFICATE-----), or remove the line";
    let path = PathBuf::from(file);
    let certs = match CertificateDer::pem_file_iter(&path) {
        Ok(certs) => certs.collect::<Result<Vec<_>, _>>(),
        Err(e) => {
            let why = match &e {
                rustls::pki_types::pem::Error::Io(io) => crate::keys::unreadable(io),
                other => other.to_string(),
            };
            c.problem(key, format!("cannot read {}: {why}; {fix}", path.display()));
            return None;
        }
    };
    let certs = match certs {
        Ok(certs) if !certs.is_empty() => certs,
        Ok(_) => {
            c.problem(key, format!("{} holds no certificate; {fix}", path.display()));
            return None;
        }
        Err(e) => {
            c.problem(key, format!("{} is not valid PEM: {e}; {fix}", path.display()));
            return None;
        }
    };
    let mut store = rustls::RootCertStore::empty();
    for (i, cert) in certs.iter().enumerate() {
        if let Err(e) = store.add(cert.clone()) {
            c.problem(key, format!("certificate {} of {} is not a usable CA certificate: {e}", i + 1, path.display()));
            return None;
        }
    }
    Some((path, certs))
}

fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.trim_matches(['[', ']']).parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `[telemetry]`: nothing without an endpoint; an `http://` collector (run a
/// local OpenTelemetry Collector to forward to a remote one over TLS).
pub(super) fn telemetry(c: &mut Checker, raw: &RawTelemetry) -> Option<TelemetrySettings> {
    let endpoint = raw.otlp_endpoint.as_deref()?;
    if !(0.0..=1.0).contains(&raw.sampling_ratio) {
        c.problem("telemetry.sampling_ratio", "must be between 0 and 1, e.g. 0.01 for 1 % of traces");
    }
    if raw.max_queued_spans == 0 {
        c.problem("telemetry.max_queued_spans", "must be at least 1, e.g. 2048");
    }
    let timeout = c.positive("telemetry.export_timeout", raw.export_timeout.0);
    let fix = "write the collector's OTLP/HTTP address, e.g. \"http://localhost:4318\"";
    let uri = match endpoint.parse::<Uri>() {
        Ok(uri) if uri.scheme_str() == Some("http") && uri.authority().is_some() => uri,
        Ok(uri) if uri.scheme_str() == Some("https") => {
            c.problem(
                "telemetry.otlp_endpoint",
                format!("https is not supported: run an OpenTelemetry Collector next to mmgate and {fix}"),
            );
            return None;
        }
        _ => {
            c.problem("telemetry.otlp_endpoint", format!("`{endpoint}` is not an http:// URL; {fix}"));
            return None;
        }
    };
    // The base address, as OTEL_EXPORTER_OTLP_ENDPOINT takes it, gets the traces path.
    let endpoint = match uri.path() {
        "" | "/" => {
            format!("{}://{}/v1/traces", uri.scheme_str().unwrap_or("http"), uri.authority().map_or("", |a| a.as_str()))
        }
        _ => endpoint.to_owned(),
    };
    Some(TelemetrySettings {
        endpoint: endpoint.parse().unwrap_or(uri),
        trust_incoming: raw.trust_incoming,
        sampling_ratio: raw.sampling_ratio.clamp(0.0, 1.0),
        max_queued_spans: usize::try_from(raw.max_queued_spans).unwrap_or(usize::MAX).max(1),
        export_timeout: timeout,
        service_name: raw.service_name.clone(),
    })
}
