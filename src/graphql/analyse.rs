//! What a GraphQL document would do: its operations, their types and root
//! fields, and the shape measures the route limits (depth with fragments
//! expanded, aliases, root fields, introspection).
//!
//! Pure functions over apollo-parser's syntax tree. Every operation of the
//! document is analysed, not only the one `operationName` selects, so mmgate
//! never has to guess which one the upstream will run.
//!
//! Cost is linear in the document's size however often fragments are
//! spread: fragments are ordered so that each is measured once, after the
//! fragments it spreads (an explicit stack, so a long chain of fragments
//! cannot overflow the thread's stack), and a spread then costs one lookup
//! of a memoised `Shape`. Expanded counts saturate instead of growing.

mod measure;

use std::collections::HashMap;

use apollo_parser::cst::{self, CstNode};
use apollo_parser::Parser;
use measure::Fragments;

/// Per-route limits on a document's shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// The operation that will run: deepest nesting of fields with a
    /// selection set, fragments expanded, as MachineMetrics counts it.
    pub max_depth: u32,
    /// The operation that will run: fields with a selection set, every
    /// occurrence, fragments expanded, as MachineMetrics counts them.
    pub max_nodes: u32,
    /// Most aliases in the whole document.
    pub max_aliases: u32,
    /// Most root fields in one operation, fragments expanded.
    pub max_root_fields: u32,
    /// Most lexical tokens in the document.
    pub max_tokens: u32,
    /// Whether `__schema` and `__type` may be selected.
    pub introspection: bool,
}

impl Default for Limits {
    fn default() -> Self {
        // MachineMetrics' published limits (depth 5, 5 nodes), then mmgate's own.
        Self {
            max_depth: 5,
            max_nodes: 5,
            max_aliases: 30,
            max_root_fields: 20,
            max_tokens: 15_000,
            introspection: true,
        }
    }
}

/// The three GraphQL operation types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperationKind {
    /// `query` or the `{ ... }` shorthand.
    Query,
    /// `mutation`.
    Mutation,
    /// `subscription`.
    Subscription,
}

impl OperationKind {
    /// The keyword.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Query => "query",
            Self::Mutation => "mutation",
            Self::Subscription => "subscription",
        }
    }
}

/// One operation of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    /// Its type.
    pub kind: OperationKind,
    /// Its name, if it has one.
    pub name: Option<String>,
    /// The distinct names (not aliases) of its root fields, fragments expanded.
    pub root_fields: Vec<String>,
    /// Nesting of fields that have a selection set, fragments expanded, as
    /// MachineMetrics counts depth (`{ machines { name } }` is 1).
    pub depth: u32,
    /// Fields that have a selection set, every occurrence counted, fragments
    /// expanded (saturating): MachineMetrics' nodes.
    pub nodes: u64,
}

/// A limit on a document's shape, as named in messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShapeLimit {
    /// `max_depth`.
    Depth,
    /// `max_nodes`.
    Nodes,
    /// `max_aliases`.
    Aliases,
    /// `max_root_fields`.
    RootFields,
    /// `max_tokens`.
    Tokens,
}

impl ShapeLimit {
    /// The setting's name.
    pub fn setting(self) -> &'static str {
        match self {
            Self::Depth => "max_depth",
            Self::Nodes => "max_nodes",
            Self::Aliases => "max_aliases",
            Self::RootFields => "max_root_fields",
            Self::Tokens => "max_tokens",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Self::Depth => "depth",
            Self::Nodes => "nodes",
            Self::Aliases => "aliases",
            Self::RootFields => "root fields",
            Self::Tokens => "tokens",
        }
    }
}

/// Why a document was refused before any policy was applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnalysisError {
    /// Not a valid, executable request document.
    #[error("{0}")]
    Malformed(String),
    /// `__schema` or `__type` on a route without introspection (a policy denial).
    #[error("introspection (`__schema`, `__type`) is disabled on this route")]
    Introspection,
    /// A shape limit was passed (400 `graphql_limit`).
    #[error("{}", describe_limit(*.limit, *.found, *.allowed))]
    Limit {
        /// Which limit.
        limit: ShapeLimit,
        /// What the document has (saturated for huge expansions); `None`
        /// when counting stopped at the limit ("more than").
        found: Option<u64>,
        /// What the route allows.
        allowed: u32,
    },
}

/// `max_depth exceeded: depth 6, at most 5`: the limit, what was found and what is allowed.
fn describe_limit(limit: ShapeLimit, found: Option<u64>, allowed: u32) -> String {
    let (setting, what) = (limit.setting(), limit.what());
    match (limit, found) {
        (_, None) => format!("{setting} exceeded: more than {allowed} {what}, at most {allowed}"),
        (ShapeLimit::Depth, Some(found)) => format!("{setting} exceeded: {what} {found}, at most {allowed}"),
        (_, Some(found)) => format!("{setting} exceeded: {found} {what}, at most {allowed}"),
    }
}

fn malformed<T>(message: impl Into<String>) -> Result<T, AnalysisError> {
    Err(AnalysisError::Malformed(message.into()))
}

/// Line and column (1-based) of byte `index` in `text`.
fn position(text: &str, index: usize) -> (usize, usize) {
    let before = text.get(..index.min(text.len())).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Parses `document` and returns every operation, or why it is refused.
///
/// `operation_name`, when given, must name an operation of the document; a
/// document with several operations needs one. MachineMetrics' depth and
/// node limits apply to the operation that will run (it refuses no other);
/// an operation made only of introspection fields is exempt from them where
/// introspection is allowed (standard introspection queries are deeper than
/// 5). mmgate's own limits (aliases, root fields, tokens) apply to all.
pub fn analyse(document: &str, operation_name: Option<&str>, limits: &Limits) -> Result<Vec<Operation>, AnalysisError> {
    let tree = Parser::new(document)
        .token_limit(usize::try_from(limits.max_tokens).unwrap_or(usize::MAX))
        .recursion_limit(256)
        .parse();
    if let Some(e) = tree.errors().next() {
        let (line, column) = position(document, e.index());
        let tokens = tree.token_limit();
        if e.is_limit() && tokens.high >= tokens.limit {
            return Err(AnalysisError::Limit { limit: ShapeLimit::Tokens, found: None, allowed: limits.max_tokens });
        }
        if e.is_limit() {
            return malformed(format!(
                "document too large or too deeply nested ({}) at line {line}, column {column}",
                e.message()
            ));
        }
        return malformed(format!("syntax error at line {line}, column {column}: {}", e.message()));
    }

    let mut operations = Vec::new();
    let mut fragments = Fragments::default();
    for definition in tree.document().definitions() {
        match definition {
            cst::Definition::OperationDefinition(op) => operations.push(op),
            cst::Definition::FragmentDefinition(fragment) => fragments.add(&fragment)?,
            other => {
                return malformed(format!(
                    "a request document may only hold operations and fragments, not a {}",
                    other.kind()
                ))
            }
        }
    }
    let names = operation_names(&operations, operation_name)?;

    // Every fragment is measured, used or not, so that every cycle is found.
    let measured = fragments.measure(limits)?;
    let (aliases, introspects) = count_aliases_and_introspection(tree.document().syntax());
    if aliases > limits.max_aliases {
        return Err(AnalysisError::Limit {
            limit: ShapeLimit::Aliases,
            found: Some(aliases.into()),
            allowed: limits.max_aliases,
        });
    }
    if introspects && !limits.introspection {
        return Err(AnalysisError::Introspection);
    }

    let mut out = Vec::with_capacity(operations.len());
    let selected = |name: &Option<String>| operation_name.is_none() || name.as_deref() == operation_name;
    for (op, name) in operations.iter().zip(names) {
        let kind = match op.operation_type() {
            Some(t) if t.mutation_token().is_some() => OperationKind::Mutation,
            Some(t) if t.subscription_token().is_some() => OperationKind::Subscription,
            _ => OperationKind::Query,
        };
        let Some(set) = op.selection_set() else {
            return malformed("an operation needs a selection set");
        };
        let shape = measured.shape(&set)?;
        if shape.roots > u64::from(limits.max_root_fields) {
            return Err(AnalysisError::Limit {
                limit: ShapeLimit::RootFields,
                found: Some(shape.roots),
                allowed: limits.max_root_fields,
            });
        }
        let mut root_fields = Vec::new();
        measured.root_names(&set, &mut root_fields)?;
        let introspection_only = root_fields.iter().all(|f| matches!(f.as_str(), "__schema" | "__type" | "__typename"));
        if selected(&name) && !(introspection_only && limits.introspection) {
            for (limit, found, allowed) in [
                (ShapeLimit::Depth, u64::from(shape.depth), limits.max_depth),
                (ShapeLimit::Nodes, shape.nodes, limits.max_nodes),
            ] {
                if found > u64::from(allowed) {
                    return Err(AnalysisError::Limit { limit, found: Some(found), allowed });
                }
            }
        }
        out.push(Operation { kind, name, root_fields, depth: shape.depth, nodes: shape.nodes });
    }
    Ok(out)
}

/// The operations' names, once the document's naming rules and
/// `operation_name` have been checked.
fn operation_names(
    operations: &[cst::OperationDefinition],
    operation_name: Option<&str>,
) -> Result<Vec<Option<String>>, AnalysisError> {
    if operations.is_empty() {
        return malformed("the document has no operation");
    }
    if operations.len() > 1 && operations.iter().any(|op| op.name().is_none()) {
        return malformed("an anonymous operation must be the only operation in the document");
    }
    let names: Vec<Option<String>> = operations.iter().map(|op| op.name().map(|n| n.text().to_string())).collect();
    let mut seen: HashMap<&str, ()> = HashMap::with_capacity(names.len());
    for name in names.iter().flatten() {
        if seen.insert(name, ()).is_some() {
            return malformed(format!("operation `{name}` is defined twice"));
        }
    }
    match operation_name {
        Some(wanted) if !seen.contains_key(wanted) => {
            malformed(format!("operationName `{wanted}` names no operation in the document"))
        }
        None if operations.len() > 1 => malformed("the document has several operations: operationName must choose one"),
        _ => Ok(names),
    }
}

/// Aliases in the whole document, and whether any field is `__schema` or `__type`.
fn count_aliases_and_introspection(root: &apollo_parser::SyntaxNode) -> (u32, bool) {
    let mut aliases = 0u32;
    let mut introspects = false;
    for node in root.descendants() {
        if let Some(field) = cst::Field::cast(node) {
            if field.alias().is_some() {
                aliases = aliases.saturating_add(1);
            }
            if let Some(name) = field.name() {
                let text = name.text();
                introspects |= text == "__schema" || text == "__type";
            }
        }
    }
    (aliases, introspects)
}

#[cfg(test)]
mod tests;
