use super::*;

fn ops(doc: &str) -> Vec<(OperationKind, Option<String>, Vec<String>)> {
    analyse(doc, None, &Limits::default())
        .unwrap_or_else(|e| panic!("{doc}: {e}"))
        .into_iter()
        .map(|o| (o.kind, o.name, o.root_fields))
        .collect()
}

fn refused(doc: &str, name: Option<&str>, limits: &Limits) -> String {
    analyse(doc, name, limits).expect_err(doc).to_string()
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
    let limits = Limits { max_depth: 2, ..Limits::default() };
    assert!(analyse("{ a { b { c } } }", None, &limits).is_ok());
    assert!(refused("{ a { b { c { d } } } }", None, &limits).contains("depth 3"));
    let via_fragment = "{ a { ...F } } fragment F on T { b { c { d } } }";
    assert!(refused(via_fragment, None, &limits).contains("depth 3"));
    let via_inline = "{ a { ... on T { b { ... { c { d } } } } } }";
    assert!(refused(via_inline, None, &limits).contains("depth 3"));
    // A fragment spread twice at different depths counts where it is deepest.
    let twice = "{ ...F a { b { ...F } } } fragment F on T { x { y } }";
    assert!(refused(twice, None, &limits).contains("depth 3"));
}

/// MachineMetrics' own examples ("GraphQL > Usage Limits").
#[test]
fn depth_and_nodes_are_counted_as_machinemetrics_counts_them() {
    let measure = |doc: &str| {
        let op = analyse(doc, None, &Limits::default()).unwrap_or_else(|e| panic!("{doc}: {e}")).remove(0);
        (op.depth, op.nodes)
    };
    assert_eq!(measure("{ machines { name } }"), (1, 1));
    assert_eq!(measure("{ machines { name annotations { startAt } } }"), (2, 2));
    assert_eq!(measure("{ machines { name annotations { startAt } currentStates { label } } }"), (2, 3));
    assert_eq!(measure("{ machines { annotations { annotationType { name } } } }"), (3, 3));
    // Fragments add no depth themselves; their fields count where spread,
    // every occurrence, aliases and repeats too; __typename is a scalar.
    assert_eq!(measure("{ machines { ...M } } fragment M on Machine { annotations { startAt } __typename }"), (2, 2));
    assert_eq!(
        measure("{ a: machines { name } b: machines { name } machines { ... on Machine { x { y } } } }"),
        (2, 4)
    );
    assert_eq!(measure("{ machines { ...M ...M } } fragment M on Machine { annotations { startAt } }"), (2, 3));
}

#[test]
fn fragment_cycles_and_unknown_fragments_are_refused() {
    let cycle = "{ ...A } fragment A on Q { ...B } fragment B on Q { ...A }";
    assert!(refused(cycle, None, &Limits::default()).contains("cycle"));
    let unused_cycle = "{ a } fragment A on Q { ...A }";
    assert!(refused(unused_cycle, None, &Limits::default()).contains("cycle"));
    let nested_cycle = "{ a } fragment A on Q { x { ... on Q { y { ...B } } } } fragment B on Q { ...A }";
    assert!(refused(nested_cycle, None, &Limits::default()).contains("cycle"));
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
    assert!(refused(&doc, None, &Limits::default()).contains("1099511627776 root fields"));
}

#[test]
fn long_fragment_chains_neither_overflow_nor_slow_down() {
    // Far deeper than any recursion could go on a worker thread's stack.
    let n = 20_000;
    let mut doc = String::from("{ a { ...F0 } }");
    for i in 0..n {
        doc.push_str(&format!(" fragment F{i} on Q {{ ...F{} }}", i + 1));
    }
    doc.push_str(&format!(" fragment F{n} on Q {{ x }}"));
    let limits = Limits { max_tokens: 1_000_000, ..Limits::default() };
    assert_eq!(ops_with(&doc, &limits)[0].2, ["a"]);
    let cycle = doc.replace(&format!("fragment F{n} on Q {{ x }}"), &format!("fragment F{n} on Q {{ ...F0 }}"));
    assert!(refused(&cycle, None, &limits).contains("cycle"));
}

fn ops_with(doc: &str, limits: &Limits) -> Vec<(OperationKind, Option<String>, Vec<String>)> {
    analyse(doc, None, limits).unwrap().into_iter().map(|o| (o.kind, o.name, o.root_fields)).collect()
}

#[test]
fn aliases_root_fields_tokens_and_introspection_are_limited() {
    let limits =
        Limits { max_aliases: 2, max_root_fields: 2, max_tokens: 50, introspection: false, ..Limits::default() };
    assert_eq!(refused("{ a: x b: x c: x }", None, &limits), "max_aliases exceeded: 3 aliases, at most 2");
    assert_eq!(refused("{ x y z }", None, &limits), "max_root_fields exceeded: 3 root fields, at most 2");
    let long = format!("{{ {} }}", "x ".repeat(60));
    assert_eq!(refused(&long, None, &limits), "max_tokens exceeded: more than 50 tokens, at most 50");
    let e = analyse("{ __schema { types { name } } }", None, &limits).unwrap_err();
    assert_eq!(e, AnalysisError::Introspection);
    assert!(analyse("{ __typename }", None, &limits).is_ok());
    let e = analyse("{ x { ...F } } fragment F on T { __type(name: \"A\") { name } }", None, &limits).unwrap_err();
    assert_eq!(e, AnalysisError::Introspection, "found inside fragments too");
}

#[test]
fn syntax_errors_have_a_position() {
    let e = refused("{ a \n  b( }", None, &Limits::default());
    assert!(e.contains("line 2"), "{e}");
    let empty = refused("", None, &Limits::default());
    assert!(empty.contains("no operation") || empty.contains("syntax"), "{empty}");
    assert!(refused("type Query { a: Int }", None, &Limits::default()).contains("only hold operations"));
}

#[test]
fn keywords_inside_strings_and_comments_do_not_confuse() {
    let doc = "# mutation { drop }\nquery { machines(where: {name: {_eq: \"mutation { x }\"}}) { name } }";
    assert_eq!(ops(doc)[0].0, OperationKind::Query);
}
