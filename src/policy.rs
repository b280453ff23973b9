//! Scope allowlists: may this caller do this?
//!
//! Runs after the caller is identified (`client`) and before rate limits
//! (`limit`). Scope names are interned into bits when the config is loaded,
//! so a decision on the request path is a mask test, never a string compare.
//! Pure decisions over what the caller holds and what the request needs.
//!
//! A policy (a client's scopes, a route's, a limit) may run in shadow mode:
//! what it would refuse is recorded and forwarded anyway (`Mode`).

use std::fmt;

use crate::graphql::{Limits, Operation, OperationKind};

/// Scope names MachineMetrics publishes; a config may add its own.
/// Whether a policy refuses or, rolled out first, only records what it would refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Refuse (the default).
    #[default]
    Enforce,
    /// Forward, and record what would have been refused.
    Shadow,
}

pub const PUBLISHED_SCOPES: &[&str] = &[
    "reporting",
    "erp",
    "manager",
    "manager.read",
    "operator.jobs",
    "operator.parts",
    "operator.downtime",
    "system.gateway",
    "gateway",
];

/// Upper bound on distinct scope names in one config (one bit each).
pub const MAX_SCOPES: usize = 64;

/// One interned scope name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Scope(u8);

/// A set of scopes, one bit per interned name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScopeSet(u64);

impl ScopeSet {
    /// Whether `scope` is in the set.
    pub fn contains(self, scope: Scope) -> bool {
        self.0 & (1 << scope.0) != 0
    }

    /// Adds `scope` to the set.
    pub fn insert(&mut self, scope: Scope) {
        self.0 |= 1 << scope.0;
    }

    /// The scopes in either set.
    pub fn union(self, other: ScopeSet) -> ScopeSet {
        ScopeSet(self.0 | other.0)
    }

    /// The scopes of `self` that are not in `other`.
    pub fn difference(self, other: ScopeSet) -> ScopeSet {
        ScopeSet(self.0 & !other.0)
    }

    /// Whether the set holds no scope.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The scopes in the set, in interning order.
    pub fn iter(self) -> impl Iterator<Item = Scope> {
        (0..MAX_SCOPES as u8).filter(move |i| self.0 & (1 << i) != 0).map(Scope)
    }
}

/// The names behind interned scopes, in order of first appearance.
#[derive(Debug, Default, Clone)]
pub struct ScopeNames(Vec<String>);

impl ScopeNames {
    /// Interns `name`, or returns `None` once `MAX_SCOPES` names exist.
    pub fn intern(&mut self, name: &str) -> Option<Scope> {
        if let Some(i) = self.0.iter().position(|n| n == name) {
            return u8::try_from(i).ok().map(Scope);
        }
        if self.0.len() >= MAX_SCOPES {
            return None;
        }
        self.0.push(name.to_owned());
        u8::try_from(self.0.len() - 1).ok().map(Scope)
    }

    /// The name of an interned scope.
    pub fn name(&self, scope: Scope) -> &str {
        self.0.get(usize::from(scope.0)).map_or("?", String::as_str)
    }

    /// A printable list of the names in `set`.
    pub fn list(&self, set: ScopeSet) -> ScopeList<'_> {
        ScopeList { names: self, set }
    }
}

/// Displays a `ScopeSet` as `[a, b]`.
pub struct ScopeList<'a> {
    names: &'a ScopeNames,
    set: ScopeSet,
}

impl fmt::Display for ScopeList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, scope) in self.set.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(self.names.name(scope))?;
        }
        f.write_str("]")
    }
}

/// Why a request is not allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// The caller lacks a scope (403 `scope_denied`).
    #[error("{0}")]
    Scope(String),
    /// A mutation sent with GET, which must be safe (405 `method_not_allowed`).
    #[error("a mutation cannot be sent with GET; use POST")]
    MutationOverGet,
}

/// What a GraphQL route allows, beyond its scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphqlRule {
    /// Scope a mutation needs; `None` denies every mutation.
    pub mutation_scope: Option<Scope>,
    /// Limits on each document's shape.
    pub limits: Limits,
}

/// What a caller may do on GraphQL routes.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    /// Its scopes.
    pub scopes: ScopeSet,
    /// The root fields it may select; `None` allows all.
    pub graphql_fields: Option<&'a [String]>,
}

/// Allows the request when `held` has `needed`; names what was missing otherwise.
pub fn require(held: ScopeSet, needed: Scope, names: &ScopeNames, what: &dyn fmt::Display) -> Result<(), Denied> {
    if held.contains(needed) {
        Ok(())
    } else {
        Err(Denied::Scope(format!("{what} needs scope `{}`, which this client does not hold", names.name(needed))))
    }
}

/// Allows a GraphQL request only if every one of its operations is allowed.
///
/// A mutation over GET is refused outright (405: GET must be safe), before
/// any scope is considered; then each operation needs its scope, and each
/// root field must be on the caller's `graphql_fields` list when it has one.
pub fn graphql<'a>(
    operations: impl Iterator<Item = &'a Operation> + Clone,
    is_get: bool,
    caller: Caller<'_>,
    rule: &GraphqlRule,
    names: &ScopeNames,
) -> Result<(), Denied> {
    if is_get && operations.clone().any(|op| op.kind == OperationKind::Mutation) {
        return Err(Denied::MutationOverGet);
    }
    for op in operations {
        // Formatted only into a refusal: allowed requests build no message.
        let label = OperationLabel(op.name.as_deref());
        match op.kind {
            OperationKind::Query => {}
            OperationKind::Subscription => {
                return Err(Denied::Scope(format!("subscription{label}: subscriptions are not supported")));
            }
            OperationKind::Mutation => match rule.mutation_scope {
                None => return Err(Denied::Scope(format!("mutation{label}: mutations are denied on this route"))),
                Some(scope) => require(caller.scopes, scope, names, &format_args!("mutation{label}"))?,
            },
        }
        if let Some(allowed) = caller.graphql_fields {
            if let Some(field) = op.root_fields.iter().find(|f| *f != "__typename" && !allowed.contains(f)) {
                return Err(Denied::Scope(format!(
                    "{}{label}: field `{field}` is not in this client's graphql_fields",
                    op.kind.as_str()
                )));
            }
        }
    }
    Ok(())
}

/// `` `Name` `` after an operation's kind in a message; nothing when anonymous.
struct OperationLabel<'a>(Option<&'a str>);

impl std::fmt::Display for OperationLabel<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(name) => write!(f, " `{name}`"),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interning_is_stable_and_bounded() {
        let mut names = ScopeNames::default();
        let a = names.intern("reporting").unwrap();
        let b = names.intern("write").unwrap();
        assert_eq!(names.intern("reporting"), Some(a));
        assert_ne!(a, b);
        for i in 2..MAX_SCOPES {
            assert!(names.intern(&format!("s{i}")).is_some());
        }
        assert_eq!(names.intern("one-too-many"), None);
    }

    #[test]
    fn require_checks_membership() {
        let mut names = ScopeNames::default();
        let reporting = names.intern("reporting").unwrap();
        let write = names.intern("write").unwrap();
        let mut held = ScopeSet::default();
        held.insert(reporting);
        assert!(require(held, reporting, &names, &"route `/graphql`").is_ok());
        let err = require(held, write, &names, &"a mutation").unwrap_err();
        assert_eq!(err.to_string(), "a mutation needs scope `write`, which this client does not hold");
        assert_eq!(names.list(held).to_string(), "[reporting]");
    }
}
