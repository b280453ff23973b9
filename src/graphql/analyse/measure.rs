//! Fragments measured once each, in dependency order, and selection sets
//! measured with their spreads expanded by lookup: what keeps analysis
//! linear in the document's size.

use std::collections::HashMap;

use apollo_parser::cst;

use super::{malformed, AnalysisError, Limits};

/// A selection set's measures, fragments expanded.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Shape {
    /// Nesting of fields that have a selection set below this one (0: leaves only).
    pub(super) depth: u32,
    /// Fields selected at this level, fragments expanded (saturating).
    pub(super) roots: u64,
    /// Fields with a selection set at any level below, fragments expanded
    /// (saturating): MachineMetrics' "nodes".
    pub(super) nodes: u64,
}

/// The document's fragments, by index.
#[derive(Default)]
pub(super) struct Fragments {
    names: Vec<String>,
    sets: Vec<cst::SelectionSet>,
    index: HashMap<String, usize>,
}

impl Fragments {
    pub(super) fn add(&mut self, fragment: &cst::FragmentDefinition) -> Result<(), AnalysisError> {
        let name = fragment.fragment_name().and_then(|n| n.name()).map(|n| n.text().to_string());
        let (Some(name), Some(set)) = (name, fragment.selection_set()) else {
            return malformed("a fragment needs a name and a selection set");
        };
        if self.index.insert(name.clone(), self.names.len()).is_some() {
            return malformed(format!("fragment `{name}` is defined twice"));
        }
        self.names.push(name);
        self.sets.push(set);
        Ok(())
    }

    fn lookup(&self, spread: &cst::FragmentSpread) -> Result<usize, AnalysisError> {
        let Some(name) = spread.fragment_name().and_then(|n| n.name()) else {
            return malformed("a fragment spread needs a name");
        };
        let name = name.text();
        match self.index.get(name.as_str()) {
            Some(&i) => Ok(i),
            None => malformed(format!("fragment `{name}` is not defined")),
        }
    }

    /// The fragments `set` spreads, at any depth (without following them).
    fn spreads(&self, set: &cst::SelectionSet, out: &mut Vec<usize>) -> Result<(), AnalysisError> {
        for selection in set.selections() {
            match selection {
                cst::Selection::Field(field) => {
                    if let Some(sub) = field.selection_set() {
                        self.spreads(&sub, out)?;
                    }
                }
                cst::Selection::InlineFragment(inline) => {
                    if let Some(sub) = inline.selection_set() {
                        self.spreads(&sub, out)?;
                    }
                }
                cst::Selection::FragmentSpread(spread) => out.push(self.lookup(&spread)?),
            }
        }
        Ok(())
    }

    /// Fragments in an order where each comes after every fragment it
    /// spreads; a cycle is refused. Depth-first with an explicit stack.
    fn order(&self) -> Result<Vec<usize>, AnalysisError> {
        let mut deps = Vec::with_capacity(self.sets.len());
        for set in &self.sets {
            let mut out = Vec::new();
            self.spreads(set, &mut out)?;
            deps.push(out);
        }
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            Open,
            Done,
        }
        let mut mark = vec![Mark::New; deps.len()];
        let mut order = Vec::with_capacity(deps.len());
        for start in 0..deps.len() {
            if mark[start] != Mark::New {
                continue;
            }
            mark[start] = Mark::Open;
            let mut stack = vec![(start, 0usize)];
            while let Some((node, next)) = stack.last_mut() {
                let node = *node;
                if let Some(&dep) = deps[node].get(*next) {
                    *next += 1;
                    match mark[dep] {
                        Mark::New => {
                            mark[dep] = Mark::Open;
                            stack.push((dep, 0));
                        }
                        Mark::Open => {
                            return malformed(format!(
                                "fragment `{}` spreads itself (a fragment cycle)",
                                self.names[dep]
                            ))
                        }
                        Mark::Done => {}
                    }
                } else {
                    mark[node] = Mark::Done;
                    order.push(node);
                    stack.pop();
                }
            }
        }
        Ok(order)
    }

    /// Measures every fragment once, in dependency order; root names are
    /// kept only for fragments within `max_root_fields` (an operation
    /// spreading any other at its root is refused by count first).
    pub(super) fn measure(&self, limits: &Limits) -> Result<Measured<'_>, AnalysisError> {
        let mut measured = Measured {
            fragments: self,
            shapes: vec![Shape::default(); self.sets.len()],
            names: vec![None; self.sets.len()],
        };
        for i in self.order()? {
            let set = &self.sets[i];
            let shape = measured.shape(set)?;
            measured.shapes[i] = shape;
            if shape.roots <= u64::from(limits.max_root_fields) {
                let mut names = Vec::new();
                measured.root_names(set, &mut names)?;
                measured.names[i] = Some(names);
            }
        }
        Ok(measured)
    }
}

/// Fragments with their measures, ready to measure operations.
pub(super) struct Measured<'a> {
    fragments: &'a Fragments,
    shapes: Vec<Shape>,
    names: Vec<Option<Vec<String>>>,
}

impl Measured<'_> {
    /// `set`'s shape; every fragment it spreads was measured before.
    pub(super) fn shape(&self, set: &cst::SelectionSet) -> Result<Shape, AnalysisError> {
        let mut shape = Shape::default();
        for selection in set.selections() {
            let (depth, roots, nodes) = match selection {
                cst::Selection::Field(field) => match field.selection_set() {
                    Some(sub) => {
                        let inner = self.shape(&sub)?;
                        (inner.depth.saturating_add(1), 1, inner.nodes.saturating_add(1))
                    }
                    None => (0, 1, 0),
                },
                cst::Selection::InlineFragment(inline) => match inline.selection_set() {
                    Some(sub) => {
                        let inner = self.shape(&sub)?;
                        (inner.depth, inner.roots, inner.nodes)
                    }
                    None => (0, 0, 0),
                },
                cst::Selection::FragmentSpread(spread) => {
                    let inner = self.shapes[self.fragments.lookup(&spread)?];
                    (inner.depth, inner.roots, inner.nodes)
                }
            };
            shape.depth = shape.depth.max(depth);
            shape.roots = shape.roots.saturating_add(roots);
            shape.nodes = shape.nodes.saturating_add(nodes);
        }
        Ok(shape)
    }

    /// Adds the distinct names of `set`'s root fields to `out`. Only called
    /// where the root count is within `max_root_fields`, so `out` stays short.
    pub(super) fn root_names(&self, set: &cst::SelectionSet, out: &mut Vec<String>) -> Result<(), AnalysisError> {
        for selection in set.selections() {
            match selection {
                cst::Selection::Field(field) => {
                    if let Some(name) = field.name() {
                        let name = name.text();
                        if !out.iter().any(|n| *n == name.as_str()) {
                            out.push(name.to_string());
                        }
                    }
                }
                cst::Selection::InlineFragment(inline) => {
                    if let Some(sub) = inline.selection_set() {
                        self.root_names(&sub, out)?;
                    }
                }
                cst::Selection::FragmentSpread(spread) => {
                    for name in self.names[self.fragments.lookup(&spread)?].iter().flatten() {
                        if !out.contains(name) {
                            out.push(name.clone());
                        }
                    }
                }
            }
        }
        Ok(())
    }
}
