//! `upstream.proxy` and the proxy variables, resolved once per load into how
//! the upstream is reached. NO_PROXY follows curl's rules (hyper-util's
//! matcher applies them, and turns `user:password@` into Basic credentials).

use http::Uri;
use hyper_util::client::proxy::matcher::Matcher;

use super::{Egress, ProxyEnv};

/// How to reach `upstream`: `configured` (`upstream.proxy`: a URL, or
/// "none") wins; otherwise the proxy variables, except for a loopback upstream.
/// On error: the setting or variable to blame, and what is wrong.
pub(crate) fn resolve(
    configured: Option<&str>,
    upstream: &Uri,
    loopback: bool,
    env: &ProxyEnv,
) -> Result<Egress, (String, String)> {
    let (from, url) = match configured.map(str::trim) {
        Some(none) if none.eq_ignore_ascii_case("none") => return Ok(Egress::Direct),
        Some(url) => ("upstream.proxy", url.to_owned()),
        None if loopback => return Ok(Egress::Direct),
        None => {
            let https = upstream.scheme_str() == Some("https");
            let chosen = if https { env.https.as_ref() } else { env.http.as_ref() }.or(env.all.as_ref());
            let Some((name, url)) = chosen else { return Ok(Egress::Direct) };
            let (uri, auth) = proxy(url, upstream).map_err(|why| ((*name).to_owned(), why))?;
            // NO_PROXY, as curl reads it.
            let mut matcher = Matcher::builder().all(uri.to_string());
            if let Some(no) = &env.no {
                matcher = matcher.no(no.clone());
            }
            if matcher.build().intercept(upstream).is_none() {
                return Ok(Egress::Direct);
            }
            return Ok(Egress::Proxy { uri, auth, from: name });
        }
    };
    proxy(&url, upstream).map(|(uri, auth)| Egress::Proxy { uri, auth, from }).map_err(|why| (from.to_owned(), why))
}

/// Checks a proxy URL and returns it without credentials, and the credentials
/// as a `Proxy-Authorization` value. The URL itself is never echoed: it may
/// hold a password.
fn proxy(url: &str, upstream: &Uri) -> Result<(Uri, Option<http::HeaderValue>), String> {
    let fix = "write the proxy as http://host:port or http://user:password@host:port";
    let with_scheme = if url.contains("://") { url.to_owned() } else { format!("http://{url}") };
    let Ok(parsed) = with_scheme.parse::<Uri>() else {
        return Err(format!("is not a URL; {fix}"));
    };
    if parsed.scheme_str() != Some("http") {
        return Err(format!("only http:// proxies are supported (TLS to the upstream runs inside the tunnel); {fix}"));
    }
    let Some(authority) = parsed.authority() else {
        return Err(format!("has no host; {fix}"));
    };
    let host_port = authority.as_str().rsplit_once('@').map_or(authority.as_str(), |(_, hp)| hp);
    let Ok(bare) = format!("http://{host_port}").parse::<Uri>() else {
        return Err(format!("has an invalid host; {fix}"));
    };
    if bare.port_u16().is_none() {
        return Err(format!("needs a port; {fix}"));
    }
    // hyper-util decodes `user:password@` into Basic credentials.
    let auth = Matcher::builder()
        .all(with_scheme)
        .build()
        .intercept(upstream)
        .and_then(|intercept| intercept.basic_auth().cloned())
        .map(|mut value| {
            value.set_sensitive(true);
            value
        });
    Ok((bare, auth))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(https: Option<&str>, no: Option<&str>) -> ProxyEnv {
        ProxyEnv {
            https: https.map(|v| ("HTTPS_PROXY", v.to_owned())),
            http: Some(("HTTP_PROXY", "http://plain.proxy:8080".to_owned())),
            all: None,
            no: no.map(str::to_owned),
        }
    }

    fn mm() -> Uri {
        "https://api.machinemetrics.com".parse().unwrap()
    }

    fn shown(egress: &Result<Egress, (String, String)>) -> String {
        match egress {
            Ok(e) => e.to_string(),
            Err((key, why)) => format!("{key}: {why}"),
        }
    }

    #[test]
    fn the_variables_apply_unless_no_proxy_or_loopback() {
        let proxied = resolve(None, &mm(), false, &env(Some("http://proxy.plant:3128"), None));
        assert_eq!(shown(&proxied), "through proxy http://proxy.plant:3128/ (CONNECT; from HTTPS_PROXY)");
        for no in ["machinemetrics.com", ".machinemetrics.com", "*", "other.example, api.machinemetrics.com"] {
            let direct = resolve(None, &mm(), false, &env(Some("http://proxy.plant:3128"), Some(no)));
            assert_eq!(shown(&direct), "direct", "NO_PROXY={no}");
        }
        assert_eq!(shown(&resolve(None, &mm(), false, &env(None, None))), "direct", "no https proxy");
        let local = "http://127.0.0.1:9000".parse().unwrap();
        assert_eq!(shown(&resolve(None, &local, true, &env(Some("http://proxy.plant:3128"), None))), "direct");
        // An http:// upstream uses HTTP_PROXY (and is tunnelled too).
        let plain = "http://api.internal".parse().unwrap();
        assert!(shown(&resolve(None, &plain, false, &env(None, None))).contains("from HTTP_PROXY"));
    }

    #[test]
    fn upstream_proxy_wins_and_none_is_direct() {
        let e = env(Some("http://proxy.plant:3128"), None);
        assert_eq!(shown(&resolve(Some("none"), &mm(), false, &e)), "direct");
        let named = resolve(Some("http://other:8080"), &mm(), false, &e);
        assert_eq!(shown(&named), "through proxy http://other:8080/ (CONNECT; from upstream.proxy)");
        let local = "http://127.0.0.1:9000".parse().unwrap();
        assert!(shown(&resolve(Some("http://other:8080"), &local, true, &e)).contains("other:8080"));
    }

    #[test]
    fn credentials_become_proxy_authorization_and_are_never_shown() {
        let e = resolve(Some("http://plant%40user:s3cr%3Aet@proxy.plant:3128"), &mm(), false, &ProxyEnv::default());
        let text = format!("{} {:?}", shown(&e), e);
        assert!(!text.contains("s3cr") && !text.contains("plant%40user"), "{text}");
        let Ok(Egress::Proxy { auth: Some(auth), uri, .. }) = e else { panic!("{text}") };
        assert!(auth.is_sensitive());
        // base64("plant@user:s3cr:et")
        assert_eq!(auth, "Basic cGxhbnRAdXNlcjpzM2NyOmV0");
        assert_eq!(uri, "http://proxy.plant:3128/");
    }

    #[test]
    fn bad_proxy_urls_are_refused_without_echoing_them() {
        for (url, why) in [
            ("https://proxy:3128", "only http://"),
            ("http://user:hunter2@proxy", "needs a port"),
            ("socks5://proxy:1080", "only http://"),
            ("http://", "not a URL"),
        ] {
            let (key, message) = resolve(Some(url), &mm(), false, &ProxyEnv::default()).unwrap_err();
            assert_eq!(key, "upstream.proxy");
            assert!(message.contains(why), "{url}: {message}");
            assert!(!message.contains("hunter2"), "{message}");
        }
        let (key, _) = resolve(None, &mm(), false, &env(Some("ftp://x:1"), None)).unwrap_err();
        assert_eq!(key, "HTTPS_PROXY");
    }
}
