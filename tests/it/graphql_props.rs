//! Property tests for the GraphQL analyser: it never panics, and it never
//! lets a document that holds a mutation pass as mutation-free.
//!
//! Two oracles: documents generated with known operation types, and
//! graphql-parser (an independent parser) on randomly damaged documents.
//! `PROPTEST_CASES=100000 cargo test --release --test it graphql_props`
//! runs it for longer.

use mmgate::graphql::{analyse, Limits, OperationKind};
use proptest::prelude::*;

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("machines".to_owned()),
        Just("activities".to_owned()),
        Just("mutation".to_owned()),
        Just("query".to_owned()),
        Just("subscription".to_owned()),
        Just("fragment".to_owned()),
        Just("on".to_owned()),
        "[a-z_][a-zA-Z0-9_]{0,6}",
    ]
}

fn ignored() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(" ".to_owned()),
        Just("\n".to_owned()),
        Just(",".to_owned()),
        Just("\t".to_owned()),
        Just("\u{feff}".to_owned()),
        Just(" # mutation { x }\n".to_owned()),
    ]
}

fn argument() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("(id: 1)".to_owned()),
        Just("(where: {name: {_eq: \"mutation { drop }\"}})".to_owned()),
        Just("(s: \"\"\"block mutation\"\"\")".to_owned()),
        Just("(v: $var)".to_owned()),
    ]
}

/// A selection set that may spread fragments `F{min_fragment}..F{fragments-1}`.
fn selection_set(fragments: usize, min_fragment: usize) -> impl Strategy<Value = String> {
    let leaf = (name(), argument(), ignored()).prop_map(|(n, a, w)| format!("{n}{a}{w}"));
    let spread = (min_fragment..fragments.max(min_fragment + 1)).prop_map(move |i| {
        if i < fragments {
            format!("...F{i} ")
        } else {
            "x ".to_owned()
        }
    });
    let base = prop_oneof![3 => leaf, 1 => spread];
    base.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            (name(), prop::collection::vec(inner.clone(), 1..4), proptest::option::of(name())).prop_map(
                |(n, subs, alias)| {
                    let alias = alias.map(|a| format!("{a}: ")).unwrap_or_default();
                    format!("{alias}{n} {{ {} }} ", subs.join(" "))
                }
            ),
            prop::collection::vec(inner, 1..3).prop_map(|subs| format!("... on T {{ {} }} ", subs.join(" "))),
        ]
    })
    .prop_map(|s| format!("{{ {s} }}"))
}

fn kind() -> impl Strategy<Value = OperationKind> {
    prop_oneof![Just(OperationKind::Query), Just(OperationKind::Mutation), Just(OperationKind::Subscription)]
}

/// A document with known operation kinds, and those kinds in order.
fn document() -> impl Strategy<Value = (String, Vec<OperationKind>)> {
    (0usize..4, prop::collection::vec((kind(), any::<bool>()), 1..4)).prop_flat_map(|(fragments, ops)| {
        let fragment_defs: Vec<_> = (0..fragments)
            .map(|i| selection_set(fragments, i + 1).prop_map(move |set| format!("fragment F{i} on T {set}\n")))
            .collect();
        let single = ops.len() == 1;
        let op_defs: Vec<_> = ops
            .iter()
            .enumerate()
            .map(|(i, (kind, shorthand))| {
                let kind = *kind;
                let shorthand = *shorthand && single && kind == OperationKind::Query;
                selection_set(fragments, 0).prop_map(move |set| {
                    if shorthand {
                        set
                    } else {
                        format!("{} Op{i}($var: Int) {set}\n", kind.as_str())
                    }
                })
            })
            .collect();
        let kinds: Vec<OperationKind> = ops.iter().map(|(k, _)| *k).collect();
        (op_defs, fragment_defs, Just(kinds)).prop_map(|(ops, frags, kinds)| {
            let mut doc = String::new();
            for (i, op) in ops.iter().enumerate() {
                doc.push_str(op);
                if let Some(f) = frags.get(i) {
                    doc.push_str(f);
                }
            }
            for f in frags.iter().skip(ops.len()) {
                doc.push_str(f);
            }
            (doc, kinds)
        })
    })
}

fn limits() -> Limits {
    Limits {
        max_depth: 64,
        max_nodes: 1_000_000,
        max_aliases: 10_000,
        max_root_fields: 10_000,
        max_tokens: 100_000,
        introspection: true,
    }
}

/// Whether graphql-parser reads `doc` as holding a mutation.
fn reference_sees_mutation(doc: &str) -> Option<bool> {
    use graphql_parser::query::{Definition, OperationDefinition};
    let parsed = graphql_parser::parse_query::<String>(doc).ok()?;
    Some(parsed.definitions.iter().any(|d| matches!(d, Definition::Operation(OperationDefinition::Mutation(_)))))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn generated_documents_report_their_true_operation_types((doc, kinds) in document()) {
        let name = if kinds.len() > 1 { Some("Op0") } else { None };
        let ops = analyse(&doc, name, &limits()).map_err(|e| TestCaseError::fail(format!("{e}\n{doc}")))?;
        let found: Vec<OperationKind> = ops.iter().map(|o| o.kind).collect();
        prop_assert_eq!(found, kinds, "{}", doc);
    }

    #[test]
    fn damaged_documents_never_hide_a_mutation(
        (doc, _kinds) in document(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), prop_oneof![
            Just(""), Just("{"), Just("}"), Just("mutation "), Just("\""), Just("#"), Just("\n"),
            Just("..."), Just("("), Just(")"), Just("$"), Just("\\"), Just("\"\"\""), Just("m"),
        ]), 1..4),
    ) {
        let mut doc = doc.into_bytes();
        for (at, text) in edits {
            let i = at.index(doc.len() + 1);
            if text.is_empty() && i < doc.len() {
                doc.remove(i);
            } else {
                doc.splice(i..i, text.bytes());
            }
        }
        let Ok(doc) = String::from_utf8(doc) else { return Ok(()) };
        if let Ok(ops) = analyse(&doc, None, &limits()) {
            let mine = ops.iter().any(|o| o.kind == OperationKind::Mutation);
            if let Some(reference) = reference_sees_mutation(&doc) {
                prop_assert!(mine || !reference, "mmgate missed a mutation in:\n{}", doc);
            }
        }
    }

    #[test]
    fn arbitrary_text_never_panics(doc in "\\PC{0,200}", name in proptest::option::of("[A-Za-z]{1,4}")) {
        let _ = analyse(&doc, name.as_deref(), &Limits::default());
    }
}
