//! Caller identity: step 2 of the request path, after routing and before
//! the scope check.
//!
//! Tokens are never stored, only their SHA-256. A presented token is hashed
//! and compared against every configured hash in constant time, so neither the
//! answer nor its timing tells which client (if any) came close.

use http::header::AUTHORIZATION;
use http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::limit::Limit;
use crate::policy::{Mode, ScopeSet};

/// Why a caller could not be identified (401 `unauthenticated`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("this route needs `Authorization: Bearer <token>`")]
    NoCredentials,
    #[error("send one Authorization header, not several")]
    SeveralHeaders,
    #[error("Authorization must be `Bearer <token>`")]
    NotBearer,
    #[error(
        "unknown token: mmgate holds the MachineMetrics API key itself, so callers send the token mmgate gave them (`mmgate token NAME` mints one), or no Authorization header where an anonymous client is allowed"
    )]
    UnknownToken,
}

/// SHA-256 of a client token.
pub type TokenHash = [u8; 32];

/// How a client proves who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// `Authorization: Bearer <token>` whose SHA-256 is this.
    Token(TokenHash),
    /// No `Authorization` header at all.
    Anonymous,
    /// No `Authorization` header, on the Unix socket, from this user id.
    UnixUid(u32),
}

/// Who is at the other end of a caller's connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// A TCP peer, by address.
    Tcp(std::net::SocketAddr),
    /// A peer on the Unix socket, by user id when its credentials could be read.
    Unix {
        /// The peer process's user id.
        uid: Option<u32>,
    },
}

/// One configured caller.
#[derive(Debug, Clone)]
pub struct Client {
    /// Position in the client table, which limiters are indexed by.
    pub id: usize,
    /// The name in `[clients.NAME]`, used in logs and metrics.
    pub name: std::sync::Arc<str>,
    /// How it is recognised.
    pub credential: Credential,
    /// The scopes it may use.
    pub scopes: ScopeSet,
    /// Its own rate limit, if any.
    pub limit: Option<Limit>,
    /// GraphQL root fields it may select; `None` allows all.
    pub graphql_fields: Option<Vec<String>>,
    /// Besides loopback and Unix socket peers, the networks whose peers may
    /// be this (anonymous) client.
    pub anonymous_from: Vec<ipnet::IpNet>,
    /// The mode of its scope checks (and of limits without a mode of their own).
    pub mode: Option<Mode>,
    /// Its own limit's mode.
    pub limit_mode: Option<Mode>,
}

impl Client {
    /// Whether `peer` may be this anonymous client: on loopback, on the Unix
    /// socket, or in one of its `anonymous_from` networks.
    fn may_be_anonymous(&self, peer: Peer) -> bool {
        match peer {
            Peer::Unix { .. } => true,
            Peer::Tcp(addr) => {
                let ip = addr.ip().to_canonical();
                ip.is_loopback() || self.anonymous_from.iter().any(|net| net.contains(&ip))
            }
        }
    }
}

/// Every configured client, searchable by credential.
#[derive(Debug, Clone, Default)]
pub struct ClientTable {
    clients: Vec<Client>,
    anonymous: Option<usize>,
}

impl ClientTable {
    /// Builds the table; the config has already rejected duplicate credentials.
    pub fn new(mut clients: Vec<Client>) -> Self {
        for (id, client) in clients.iter_mut().enumerate() {
            client.id = id;
        }
        let anonymous = clients.iter().position(|c| c.credential == Credential::Anonymous);
        Self { clients, anonymous }
    }

    /// Every client, in config order.
    pub fn iter(&self) -> impl Iterator<Item = &Client> {
        self.clients.iter()
    }

    /// Identifies the caller from its request headers (and its uid, on a Unix socket).
    ///
    /// A token, when sent, decides alone; without one, a client matching the
    /// peer's uid comes before the anonymous client.
    pub fn identify(&self, headers: &HeaderMap, peer: Peer) -> Result<&Client, IdentityError> {
        let mut values = headers.get_all(AUTHORIZATION).iter();
        let Some(value) = values.next() else {
            let uid = match peer {
                Peer::Unix { uid } => uid,
                Peer::Tcp(_) => None,
            };
            let by_uid = uid.and_then(|uid| self.clients.iter().find(|c| c.credential == Credential::UnixUid(uid)));
            let anonymous = || self.anonymous.and_then(|i| self.clients.get(i)).filter(|c| c.may_be_anonymous(peer));
            return by_uid.or_else(anonymous).ok_or(IdentityError::NoCredentials);
        };
        if values.next().is_some() {
            return Err(IdentityError::SeveralHeaders);
        }
        let token = bearer_token(value.as_bytes()).ok_or(IdentityError::NotBearer)?;
        self.by_token(&Sha256::digest(token).into()).ok_or(IdentityError::UnknownToken)
    }

    fn by_token(&self, presented: &TokenHash) -> Option<&Client> {
        // Visit every client whatever matches, so the time taken does not
        // depend on where (or whether) the match is.
        let mut found = None;
        for (i, client) in self.clients.iter().enumerate() {
            if let Credential::Token(hash) = &client.credential {
                if bool::from(hash.ct_eq(presented)) {
                    found = Some(i);
                }
            }
        }
        found.and_then(|i| self.clients.get(i))
    }
}

/// The token of a `Bearer <token>` header value (scheme case-insensitive).
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") || rest.first() != Some(&b' ') {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty() && !token.contains(&b' ')).then_some(token)
}

/// SHA-256 of `token` as 64 lower-case hex digits, as `token_sha256` expects.
pub fn token_sha256_hex(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn table(anonymous: bool) -> ClientTable {
        let mut clients = vec![Client {
            id: 0,
            name: "dashboard".into(),
            credential: Credential::Token(Sha256::digest(b"s3cret").into()),
            scopes: ScopeSet::default(),
            limit: None,
            graphql_fields: None,
            anonymous_from: Vec::new(),
            mode: None,
            limit_mode: None,
        }];
        if anonymous {
            clients.push(Client {
                id: 0,
                name: "local".into(),
                credential: Credential::Anonymous,
                scopes: ScopeSet::default(),
                limit: None,
                graphql_fields: None,
                anonymous_from: vec!["172.16.0.0/12".parse().unwrap()],
                mode: None,
                limit_mode: None,
            });
        }
        ClientTable::new(clients)
    }

    fn who(table: &ClientTable, auth: &[&str]) -> Result<String, String> {
        let mut headers = HeaderMap::new();
        for a in auth {
            headers.append(AUTHORIZATION, HeaderValue::from_str(a).unwrap());
        }
        table
            .identify(&headers, Peer::Tcp(([127, 0, 0, 1], 1).into()))
            .map(|c| c.name.to_string())
            .map_err(|e| format!("{e:?}"))
    }

    #[test]
    fn bearer_tokens_identify_clients() {
        let t = table(false);
        assert_eq!(who(&t, &["Bearer s3cret"]).unwrap(), "dashboard");
        assert_eq!(who(&t, &["bearer s3cret"]).unwrap(), "dashboard");
        assert_eq!(who(&t, &["BEARER  s3cret "]).unwrap(), "dashboard");
        for bad in
            ["Bearer nope", "Basic czNjcmV0", "Bearer", "Bearer ", "Bearers3cret", "Token s3cret", "Bearer s3 cret"]
        {
            assert!(matches!(who(&t, &[bad]).unwrap_err().as_str(), "NotBearer" | "UnknownToken"), "{bad}");
        }
        assert_eq!(who(&t, &["Bearer s3cret", "Bearer s3cret"]).unwrap_err(), "SeveralHeaders");
    }

    #[test]
    fn anonymous_only_without_a_header() {
        assert_eq!(who(&table(false), &[]).unwrap_err(), "NoCredentials");
        assert_eq!(who(&table(true), &[]).unwrap(), "local");
        // A wrong token never falls back to the anonymous client.
        assert_eq!(who(&table(true), &["Bearer wrong"]).unwrap_err(), "UnknownToken");
    }

    #[test]
    fn anonymous_only_from_loopback_unix_or_listed_networks() {
        let t = table(true);
        let who = |peer: Peer| t.identify(&HeaderMap::new(), peer).map(|c| c.name.to_string()).ok();
        assert_eq!(who(Peer::Tcp(([127, 0, 0, 1], 9).into())).as_deref(), Some("local"));
        assert_eq!(who(Peer::Tcp("[::1]:9".parse().unwrap())).as_deref(), Some("local"));
        assert_eq!(who(Peer::Tcp("[::ffff:127.0.0.1]:9".parse().unwrap())).as_deref(), Some("local"));
        assert_eq!(who(Peer::Unix { uid: Some(1000) }).as_deref(), Some("local"));
        assert_eq!(who(Peer::Tcp(([172, 17, 0, 1], 9).into())).as_deref(), Some("local"));
        assert_eq!(who(Peer::Tcp(([10, 0, 0, 5], 9).into())), None);
        assert_eq!(who(Peer::Tcp(([192, 168, 1, 5], 9).into())), None);
    }

    #[test]
    fn hex_of_a_token() {
        assert_eq!(token_sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
