//! `[keys.*]`: where each key is read from, what it may do, its limits.

use std::num::NonZeroU32;
use std::path::PathBuf;

use super::Checker;
use crate::config::raw::RawKey;
use crate::config::{BudgetSpec, KeySpec, Overrides};
use crate::keys::KeySource;
use crate::policy::PUBLISHED_SCOPES;

pub(super) fn key_spec(
    c: &mut Checker,
    name: &str,
    raw: &RawKey,
    budgets: &[BudgetSpec],
    overrides: &Overrides,
) -> Option<KeySpec> {
    let at = format!("keys.{name}");
    c.name(&at, name);
    // A key's `env` or `file` set from the environment replaces the other source.
    let (env, file) = match (overrides.sets(&["keys", name, "env"]), overrides.sets(&["keys", name, "file"])) {
        (true, false) => (&raw.env, &None),
        (false, true) => (&None, &raw.file),
        _ => (&raw.env, &raw.file),
    };
    let source = match (env, file) {
        (Some(var), None) => {
            let valid = !var.is_empty() && var.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !valid {
                c.problem(format!("{at}.env"), "must be an environment variable name, e.g. \"MM_REPORTING_KEY\"");
            } else if var.to_ascii_uppercase().starts_with("MMGATE_") {
                c.problem(
                    format!("{at}.env"),
                    "must not start with MMGATE_ (those variables override config values); use e.g. \"MM_REPORTING_KEY\"",
                );
            }
            KeySource::Env(var.clone())
        }
        (None, Some(file)) if !file.trim().is_empty() => KeySource::File(PathBuf::from(file)),
        (None, Some(_)) => {
            c.problem(format!("{at}.file"), "must be a path, e.g. \"/run/secrets/mm-reporting\"");
            return None;
        }
        _ => {
            c.problem(&at, "set exactly one of `env` (a variable name) or `file` (a path)");
            return None;
        }
    };
    if raw.scopes.is_empty() {
        c.problem(format!("{at}.scopes"), "list the scopes granted to this key upstream, e.g. [\"reporting\"]");
    }
    for (i, scope) in raw.scopes.iter().enumerate() {
        if !PUBLISHED_SCOPES.contains(&scope.as_str()) {
            c.warnings.push(format!(
                "{at}.scopes[{i}]: `{scope}` is not a MachineMetrics scope (published: {})",
                PUBLISHED_SCOPES.join(", ")
            ));
        }
    }
    let scopes = c.scope_set(&format!("{at}.scopes"), &raw.scopes);
    let limit = raw.limit.as_ref().and_then(|l| c.limit(&format!("{at}.limit"), l));
    let max_wait = raw.limit.as_ref().and_then(|l| c.max_wait(&format!("{at}.limit"), l, true));
    let budget = match &raw.budget {
        None => None,
        Some(b) => match budgets.iter().position(|x| &x.name == b) {
            Some(i) => Some(i),
            None => {
                c.problem(format!("{at}.budget"), format!("no budget named `{b}`; add [budgets.{b}] with a `limit`"));
                None
            }
        },
    };
    let max_in_flight = match raw.max_in_flight {
        None => None,
        Some(n) => {
            let n = NonZeroU32::new(n);
            if n.is_none() {
                c.problem(format!("{at}.max_in_flight"), "must be at least 1 (omit it for no cap)");
            }
            n
        }
    };
    let limit_mode = raw.limit.as_ref().and_then(|l| l.mode).map(Into::into);
    Some(KeySpec { name: name.to_owned(), source, scopes, limit, budget, max_in_flight, max_wait, limit_mode })
}
