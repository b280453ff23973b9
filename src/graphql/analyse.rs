//! What a GraphQL document would do: its operations, their types and root
//! fields, and the shape measures the route limits (depth with fragments
//! expanded, aliases, root fields, introspection).
//!
//! Pure functions over apollo-parser's syntax tree. Every operation of the
//! document is analysed, not only the one `operationName` selects, so mmgate
//! never has to guess which one the upstream will run.

use std::collections::HashMap;

use apollo_parser::cst::{self, CstNode};
use apollo_parser::Parser;

/// Per-route limits on a document's shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Deepest nesting of selection sets, fragments expanded.
    pub max_depth: u32,
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
        Self { max_depth: 15, max_aliases: 30, max_root_fields: 20, max_tokens: 15_000, introspection: true }
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
}

/// Why a document was refused before any policy was applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AnalysisError(pub String);

fn err<T>(message: impl Into<String>) -> Result<T, AnalysisError> {
    Err(AnalysisError(message.into()))
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
/// document with several operations needs one.
pub fn analyse(document: &str, operation_name: Option<&str>, limits: &Limits) -> Result<Vec<Operation>, AnalysisError> {
    let tree = Parser::new(document)
        .token_limit(usize::try_from(limits.max_tokens).unwrap_or(usize::MAX))
        .recursion_limit(256)
        .parse();
    if let Some(e) = tree.errors().next() {
        let (line, column) = position(document, e.index());
        if e.is_limit() {
            return err(format!(
                "document too large or too deeply nested ({}) at line {line}, column {column}",
                e.message()
            ));
        }
        return err(format!("syntax error at line {line}, column {column}: {}", e.message()));
    }

    let mut operations = Vec::new();
    let mut fragments: HashMap<String, cst::SelectionSet> = HashMap::new();
    for definition in tree.document().definitions() {
        match definition {
            cst::Definition::OperationDefinition(op) => operations.push(op),
            cst::Definition::FragmentDefinition(fragment) => {
                let name = fragment.fragment_name().and_then(|n| n.name()).map(|n| n.text().to_string());
                let (Some(name), Some(set)) = (name, fragment.selection_set()) else {
                    return err("a fragment needs a name and a selection set");
                };
                if fragments.insert(name.clone(), set).is_some() {
                    return err(format!("fragment `{name}` is defined twice"));
                }
            }
            other => {
                return err(format!(
                    "a request document may only hold operations and fragments, not a {}",
                    other.kind()
                ))
            }
        }
    }
    if operations.is_empty() {
        return err("the document has no operation");
    }
    if operations.len() > 1 && operations.iter().any(|op| op.name().is_none()) {
        return err("an anonymous operation must be the only operation in the document");
    }
    let names: Vec<Option<String>> = operations.iter().map(|op| op.name().map(|n| n.text().to_string())).collect();
    for (i, name) in names.iter().enumerate() {
        if let Some(name) = name {
            if names[..i].iter().flatten().any(|n| n == name) {
                return err(format!("operation `{name}` is defined twice"));
            }
        }
    }
    match operation_name {
        Some(wanted) if !names.iter().flatten().any(|n| n == wanted) => {
            return err(format!("operationName `{wanted}` names no operation in the document"));
        }
        None if operations.len() > 1 => {
            return err("the document has several operations: operationName must choose one")
        }
        _ => {}
    }

    let mut walk = Walk { fragments: &fragments, inner: HashMap::new(), roots: HashMap::new(), visiting: Vec::new() };
    // Every fragment is measured, used or not, so that every cycle is found.
    for name in fragments.keys() {
        walk.fragment_inner(name)?;
    }
    let (aliases, introspects) = count_aliases_and_introspection(tree.document().syntax());
    if aliases > limits.max_aliases {
        return err(format!("{aliases} aliases; this route allows at most {}", limits.max_aliases));
    }
    if introspects && !limits.introspection {
        return Err(AnalysisError::introspection());
    }

    let mut out = Vec::with_capacity(operations.len());
    for (op, name) in operations.iter().zip(names) {
        let kind = match op.operation_type() {
            Some(t) if t.mutation_token().is_some() => OperationKind::Mutation,
            Some(t) if t.subscription_token().is_some() => OperationKind::Subscription,
            _ => OperationKind::Query,
        };
        let Some(set) = op.selection_set() else {
            return err("an operation needs a selection set");
        };
        let depth = 1 + walk.inner(&set)?;
        if depth > limits.max_depth {
            return err(format!("selection depth {depth}; this route allows at most {}", limits.max_depth));
        }
        let roots = walk.roots(&set)?;
        if roots.count > u64::from(limits.max_root_fields) {
            return err(format!("{} root fields; this route allows at most {}", roots.count, limits.max_root_fields));
        }
        out.push(Operation { kind, name, root_fields: roots.names });
    }
    Ok(out)
}

impl AnalysisError {
    /// The refusal for `__schema` / `__type` on a route without introspection.
    fn introspection() -> Self {
        Self("introspection (`__schema`, `__type`) is disabled on this route".into())
    }

    /// Whether this is the introspection refusal (a policy denial, not a malformed document).
    pub fn is_introspection(&self) -> bool {
        *self == Self::introspection()
    }
}

/// Root fields of a selection set: distinct names and the expanded count.
#[derive(Debug, Clone, Default)]
struct Roots {
    names: Vec<String>,
    count: u64,
}

/// Fragment expansion, memoised so that fragments spread many times (or
/// "fragment bombs") cost their size once, not exponentially.
struct Walk<'a> {
    fragments: &'a HashMap<String, cst::SelectionSet>,
    inner: HashMap<String, u32>,
    roots: HashMap<String, Roots>,
    visiting: Vec<String>,
}

impl Walk<'_> {
    fn fragment_set(&self, name: &str) -> Result<cst::SelectionSet, AnalysisError> {
        match self.fragments.get(name) {
            Some(set) => Ok(set.clone()),
            None => err(format!("fragment `{name}` is not defined")),
        }
    }

    fn enter(&mut self, name: &str) -> Result<(), AnalysisError> {
        if self.visiting.iter().any(|v| v == name) {
            return err(format!("fragment `{name}` spreads itself (a fragment cycle)"));
        }
        self.visiting.push(name.to_owned());
        Ok(())
    }

    /// Depth below a selection set: 0 when it selects only leaf fields.
    fn inner(&mut self, set: &cst::SelectionSet) -> Result<u32, AnalysisError> {
        let mut deepest = 0;
        for selection in set.selections() {
            let d = match selection {
                cst::Selection::Field(field) => match field.selection_set() {
                    Some(sub) => 1 + self.inner(&sub)?,
                    None => 0,
                },
                cst::Selection::InlineFragment(inline) => match inline.selection_set() {
                    Some(sub) => self.inner(&sub)?,
                    None => 0,
                },
                cst::Selection::FragmentSpread(spread) => self.fragment_inner(&spread_name(&spread)?)?,
            };
            deepest = deepest.max(d);
        }
        Ok(deepest)
    }

    fn fragment_inner(&mut self, name: &str) -> Result<u32, AnalysisError> {
        if let Some(d) = self.inner.get(name) {
            return Ok(*d);
        }
        self.enter(name)?;
        let set = self.fragment_set(name)?;
        let d = self.inner(&set)?;
        self.visiting.pop();
        self.inner.insert(name.to_owned(), d);
        Ok(d)
    }

    fn roots(&mut self, set: &cst::SelectionSet) -> Result<Roots, AnalysisError> {
        let mut roots = Roots::default();
        for selection in set.selections() {
            let more = match selection {
                cst::Selection::Field(field) => {
                    let Some(name) = field.name() else { continue };
                    Roots { names: vec![name.text().to_string()], count: 1 }
                }
                cst::Selection::InlineFragment(inline) => match inline.selection_set() {
                    Some(sub) => self.roots(&sub)?,
                    None => continue,
                },
                cst::Selection::FragmentSpread(spread) => self.fragment_roots(&spread_name(&spread)?)?,
            };
            roots.count = roots.count.saturating_add(more.count);
            for name in more.names {
                if !roots.names.contains(&name) {
                    roots.names.push(name);
                }
            }
        }
        Ok(roots)
    }

    fn fragment_roots(&mut self, name: &str) -> Result<Roots, AnalysisError> {
        if let Some(r) = self.roots.get(name) {
            return Ok(r.clone());
        }
        self.enter(name)?;
        let set = self.fragment_set(name)?;
        let r = self.roots(&set)?;
        self.visiting.pop();
        self.roots.insert(name.to_owned(), r.clone());
        Ok(r)
    }
}

fn spread_name(spread: &cst::FragmentSpread) -> Result<String, AnalysisError> {
    match spread.fragment_name().and_then(|n| n.name()) {
        Some(name) => Ok(name.text().to_string()),
        None => err("a fragment spread needs a name"),
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
mod tests {
    use super::*;

    fn ops(doc: &str) -> Vec<(OperationKind, Option<String>, Vec<String>)> {
        analyse(doc, None, &Limits::default())
            .unwrap_or_else(|e| panic!("{doc}: {e}"))
            .into_iter()
            .map(|o| (o.kind, o.name, o.root_fields))
            .collect()
    }

    fn refused(doc: &str, name: Option<&str>, limits: &Limits) -> String {
        analyse(doc, name, limits).expect_err(doc).0
    }

    #[test]
    fn operation_types_and_root_fields() {
        assert_eq!(ops("{ machines { name } }"), [(OperationKind::Query, None, vec!["machines".to_owned()])]);
        assert_eq!(
            ops("mutation M { a: createThing { id } other }"),
            [(OperationKind::Mutation, Some("M".into()), vec!["createThing".to_owned(), "other".to_owned()])]
        );
        assert_eq!(ops("subscription { tick }")[0].0, OperationKind::Subscription);
        let doc = "query Q { ...F ... on Query { activities { id } } } fragment F on Query { machines { name } m2: machines { id } }";
        assert_eq!(ops(doc)[0].2, ["machines", "activities"]);
    }

    #[test]
    fn every_operation_is_reported_and_names_are_checked() {
        let doc = "query A { a } mutation B { b }";
        let all = analyse(doc, Some("A"), &Limits::default()).unwrap();
        assert_eq!(all.iter().map(|o| o.kind).collect::<Vec<_>>(), [OperationKind::Query, OperationKind::Mutation]);
        assert!(refused(doc, None, &Limits::default()).contains("operationName must choose"));
        assert!(refused(doc, Some("C"), &Limits::default()).contains("names no operation"));
        assert!(refused("{ a } mutation B { b }", Some("B"), &Limits::default()).contains("anonymous"));
        assert!(refused("query A { a } query A { b }", Some("A"), &Limits::default()).contains("twice"));
    }

    #[test]
    fn depth_counts_selection_sets_with_fragments_expanded() {
        let limits = Limits { max_depth: 3, ..Limits::default() };
        assert!(analyse("{ a { b { c } } }", None, &limits).is_ok());
        assert!(refused("{ a { b { c { d } } } }", None, &limits).contains("depth 4"));
        let via_fragment = "{ a { ...F } } fragment F on T { b { c { d } } }";
        assert!(refused(via_fragment, None, &limits).contains("depth 4"));
        let via_inline = "{ a { ... on T { b { ... { c { d } } } } } }";
        assert!(refused(via_inline, None, &limits).contains("depth 4"));
    }

    #[test]
    fn fragment_cycles_and_unknown_fragments_are_refused() {
        let cycle = "{ ...A } fragment A on Q { ...B } fragment B on Q { ...A }";
        assert!(refused(cycle, None, &Limits::default()).contains("cycle"));
        let unused_cycle = "{ a } fragment A on Q { ...A }";
        assert!(refused(unused_cycle, None, &Limits::default()).contains("cycle"));
        assert!(refused("{ ...Nope }", None, &Limits::default()).contains("`Nope` is not defined"));
    }

    #[test]
    fn fragment_bombs_are_cheap() {
        let mut doc = String::from("{ ...F0 }");
        for i in 0..40 {
            doc.push_str(&format!(" fragment F{i} on Q {{ ...F{} ...F{} }}", i + 1, i + 1));
        }
        doc.push_str(" fragment F40 on Q { x }");
        // 2^40 root fields once expanded: refused by count, computed by memo.
        assert!(refused(&doc, None, &Limits::default()).contains("root fields"));
    }

    #[test]
    fn aliases_root_fields_tokens_and_introspection_are_limited() {
        let limits =
            Limits { max_aliases: 2, max_root_fields: 2, max_tokens: 50, introspection: false, ..Limits::default() };
        assert!(refused("{ a: x b: x c: x }", None, &limits).contains("3 aliases"));
        assert!(refused("{ x y z }", None, &limits).contains("3 root fields"));
        let long = format!("{{ {} }}", "x ".repeat(60));
        assert!(refused(&long, None, &limits).contains("too large"));
        let e = analyse("{ __schema { types { name } } }", None, &limits).unwrap_err();
        assert!(e.is_introspection());
        assert!(analyse("{ __typename }", None, &limits).is_ok());
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let e = refused("{ a \n  b( }", None, &Limits::default());
        assert!(e.contains("line 2"), "{e}");
        assert!(
            refused("", None, &Limits::default()).contains("no operation")
                || refused("", None, &Limits::default()).contains("syntax")
        );
        assert!(refused("type Query { a: Int }", None, &Limits::default()).contains("only hold operations"));
    }

    #[test]
    fn keywords_inside_strings_and_comments_do_not_confuse() {
        let doc = "# mutation { drop }\nquery { machines(where: {name: {_eq: \"mutation { x }\"}}) { name } }";
        assert_eq!(ops(doc)[0].0, OperationKind::Query);
    }
}
