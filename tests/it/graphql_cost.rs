//! GraphQL analysis has a CPU budget (DESIGN step 3: 50 ms for any document
//! up to `max_body`), for the worst shapes we can build
//! (`benches/support/graphql_shapes.rs`). `cargo bench --bench hot_path --
//! graphql_worst` measured the worst of them at about 6.5 ms in a release
//! build; this debug build is about 15 times slower, so the budget here is
//! 50 ms × 15. The regression it guards against cost 24 s (quadratic
//! fragment expansion). CPU time of this thread, not wall time: other tests
//! run beside it.

use std::time::Duration;

use mmgate::graphql::{analyse, Limits};
use rustix::time::{clock_gettime, ClockId};

#[path = "../../benches/support/graphql_shapes.rs"]
mod graphql_shapes;

fn thread_cpu() -> Duration {
    let t = clock_gettime(ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

#[test]
fn every_worst_shape_is_analysed_within_the_cpu_budget() {
    let budget = if cfg!(debug_assertions) { Duration::from_millis(50 * 15) } else { Duration::from_millis(50) };
    let limits = Limits::default();
    for (name, doc) in graphql_shapes::worst_shapes() {
        let operation = (name == "many_operations").then_some(graphql_shapes::MANY_OPERATIONS_SELECTED);
        let before = thread_cpu();
        let outcome = analyse(&doc, operation, &limits);
        let spent = thread_cpu() - before;
        eprintln!(
            "{name}: {} bytes, {spent:?}, {:?}",
            doc.len(),
            outcome.as_ref().map(Vec::len).map_err(ToString::to_string)
        );
        assert!(spent < budget, "{name} took {spent:?} of CPU (budget {budget:?})");
    }
}

#[test]
fn cost_grows_with_size_not_with_how_often_fragments_are_spread() {
    // The same fields, once selected directly and once spread 1,000 times.
    let fields: String = (0..5000).map(|i| format!(" f{i}")).collect();
    let direct = format!("query Q {{ a {{{fields} }} }}");
    let spread = graphql_shapes::fragment_fan_out();
    let limits = Limits::default();
    let cost = |doc: &str| {
        let before = thread_cpu();
        for _ in 0..5 {
            let _ = analyse(doc, None, &limits);
        }
        thread_cpu() - before
    };
    let (direct, spread) = (cost(&direct), cost(&spread));
    assert!(spread < direct * 3, "spreading cost {spread:?} against {direct:?} for the fields alone");
}
