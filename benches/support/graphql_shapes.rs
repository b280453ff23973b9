//! The most expensive GraphQL documents we know how to build for mmgate's
//! analysis, each within the default `max_body` (1 MiB) and `max_tokens`
//! (15,000; apollo-parser counts whitespace as tokens too): shared by `benches/hot_path.rs` (what they cost) and
//! `tests/it/graphql_cost.rs` (a CPU budget derived from it).

/// The operation `many_operations` selects.
pub const MANY_OPERATIONS_SELECTED: &str = "Q1299";

/// `(name, document)` for every worst shape.
pub fn worst_shapes() -> Vec<(&'static str, String)> {
    vec![
        ("fragment_fan_out", fragment_fan_out()),
        ("exponential_fragments", exponential_fragments()),
        ("fragment_chain", fragment_chain()),
        ("aliases", aliases()),
        ("deep_nesting", deep_nesting()),
        ("many_operations", many_operations()),
        ("wide_selection", wide_selection()),
        ("token_limit", token_limit()),
    ]
}

/// One fragment of 5,000 fields spread 1,000 times (34 KB).
pub fn fragment_fan_out() -> String {
    let mut doc = String::from("query Q {");
    doc.push_str(&" ...F".repeat(1000));
    doc.push_str(" } fragment F on Query {");
    for i in 0..5000 {
        doc.push_str(&format!(" f{i}"));
    }
    doc.push_str(" }");
    doc
}

/// Each fragment spreads the next twice: 2^40 fields once expanded.
pub fn exponential_fragments() -> String {
    let mut doc = String::from("{ a { ...F0 } }");
    for i in 0..40 {
        doc.push_str(&format!(" fragment F{i} on Q {{ ...F{} ...F{} a {{ b }} }}", i + 1, i + 1));
    }
    doc.push_str(" fragment F40 on Q { x { y } }");
    doc
}

/// As many fragments as tokens allow, each spreading the next.
pub fn fragment_chain() -> String {
    let n = 900;
    let mut doc = String::from("{ a { ...F0 } }");
    for i in 0..n {
        doc.push_str(&format!(" fragment F{i} on Q {{ ...F{} }}", i + 1));
    }
    doc.push_str(&format!(" fragment F{n} on Q {{ x }}"));
    doc
}

/// 2,900 aliases (refused by count, but counted first).
pub fn aliases() -> String {
    let mut doc = String::from("{");
    for i in 0..2900 {
        doc.push_str(&format!(" a{i}: x"));
    }
    doc.push_str(" }");
    doc
}

/// Nesting as deep as the parser's recursion limit lets through.
pub fn deep_nesting() -> String {
    let depth = 120;
    format!("{}x{}", "{ a ".repeat(depth), " }".repeat(depth))
}

/// 1,300 named operations spreading one fragment; operationName picks the last.
pub fn many_operations() -> String {
    let mut doc = String::new();
    for i in 0..1300 {
        doc.push_str(&format!("query Q{i} {{ ...F }} "));
    }
    doc.push_str("fragment F on Query { machines { name } }");
    doc
}

/// One selection set with 7,000 fields.
pub fn wide_selection() -> String {
    let mut doc = String::from("{ machines {");
    for i in 0..7_000 {
        doc.push_str(&format!(" f{i}"));
    }
    doc.push_str(" } }");
    doc
}

/// A document of 1 MiB that the token limit cuts short.
pub fn token_limit() -> String {
    let mut doc = String::from("{ machines {");
    while doc.len() < 1024 * 1024 - 10 {
        doc.push_str(" f");
    }
    doc.push_str(" } }");
    doc
}
