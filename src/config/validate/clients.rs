//! `[clients.*]`: how each caller is recognised and what it may do.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::Checker;
use crate::client::{Client, Credential, TokenHash};
use crate::config::raw::RawClient;

fn token_hash(c: &mut Checker, key: &str, hex_text: &str) -> Option<TokenHash> {
    let mut hash = [0u8; 32];
    if hex_text.len() != 64 || hex::decode_to_slice(hex_text, &mut hash).is_err() {
        c.problem(
            key,
            "must be 64 hex digits (the SHA-256 of the token); `mmgate token NAME` prints a token and its hash",
        );
        return None;
    }
    Some(hash)
}

pub(super) fn clients(c: &mut Checker, raw: &BTreeMap<String, RawClient>) -> Vec<Client> {
    let mut out: Vec<Client> = Vec::new();
    let mut anonymous: Option<&str> = None;
    for (name, client) in raw {
        let at = format!("clients.{name}");
        c.name(&at, name);
        let credential = match (&client.token_sha256, client.anonymous, client.unix_uid) {
            (Some(hex_text), false, None) => match token_hash(c, &format!("{at}.token_sha256"), hex_text) {
                Some(hash) => Credential::Token(hash),
                None => continue,
            },
            (None, true, None) => {
                if let Some(first) = anonymous {
                    c.problem(
                        format!("{at}.anonymous"),
                        format!("clients.{first} is already the anonymous client; keep one"),
                    );
                }
                anonymous = Some(name);
                Credential::Anonymous
            }
            (None, false, Some(uid)) => Credential::UnixUid(uid),
            _ => {
                c.problem(
                    &at,
                    "set exactly one of `token_sha256 = \"<64 hex>\"`, `anonymous = true` or `unix_uid = <uid>`",
                );
                continue;
            }
        };
        if let Some(other) = out.iter().find(|o| o.credential == credential && credential != Credential::Anonymous) {
            let (key, what) = match credential {
                Credential::UnixUid(_) => ("unix_uid", "the same uid as"),
                _ => ("token_sha256", "the same hash as"),
            };
            c.problem(
                format!("{at}.{key}"),
                format!("{what} clients.{}; mint a token per client with `mmgate token {name}`", other.name),
            );
        }
        let scopes = c.scope_set(&format!("{at}.scopes"), &client.scopes);
        let limit = client.limit.as_ref().and_then(|l| c.limit(&format!("{at}.limit"), l));
        if let Some(raw) = &client.limit {
            c.max_wait(&format!("{at}.limit"), raw, false);
        }
        if client.graphql_fields.as_ref().is_some_and(Vec::is_empty) {
            c.warnings.push(format!("{at}.graphql_fields: empty, so this client can select no GraphQL field"));
        }
        let graphql_fields = client.graphql_fields.clone();
        if !client.anonymous_from.is_empty() && credential != Credential::Anonymous {
            c.problem(
                format!("{at}.anonymous_from"),
                "only the anonymous client (`anonymous = true`) takes anonymous_from",
            );
        }
        let mut anonymous_from = Vec::new();
        for (i, net) in client.anonymous_from.iter().enumerate() {
            match net.parse::<ipnet::IpNet>().or_else(|_| net.parse::<IpAddr>().map(ipnet::IpNet::from)) {
                Ok(net) => anonymous_from.push(net.trunc()),
                Err(_) => c.problem(
                    format!("{at}.anonymous_from[{i}]"),
                    format!("`{net}` is not a network; write a CIDR range such as \"172.16.0.0/12\" or an address"),
                ),
            }
        }
        out.push(Client {
            id: 0,
            name: name.as_str().into(),
            credential,
            scopes,
            limit,
            graphql_fields,
            anonymous_from,
            mode: client.mode.map(Into::into),
            limit_mode: client.limit.as_ref().and_then(|l| l.mode).map(Into::into),
        });
    }
    out
}
