//! Config validation: every mistake reported at once, naming the key and the fix.

use mmgate::config::{ConfigError, Settings};

use crate::support::sha;

fn problems(toml: &str) -> Vec<String> {
    match Settings::from_toml(toml) {
        Ok(_) => panic!("config should be invalid:\n{toml}"),
        Err(ConfigError::Invalid { problems, .. }) => problems.iter().map(ToString::to_string).collect(),
        Err(other) => vec![other.to_string()],
    }
}

fn warnings(toml: &str) -> Vec<String> {
    Settings::from_toml(toml).unwrap_or_else(|e| panic!("{e}")).warnings().to_vec()
}

const KEY: &str = "[keys.reporting]\nenv = \"MM_TEST_KEY\"\nscopes = [\"reporting\"]\n";
const ROUTE: &str = "[[routes]]\npath = \"/reports/*\"\nkey = \"reporting\"\nscope = \"reporting\"\n";

#[test]
fn every_problem_is_reported_together() {
    let toml = format!(
        r#"
[keys.reporting]
env = "MM_TEST_KEY"
file = "/tmp/also"
scopes = ["reporting"]

[keys.erp]
env = "MMGATE_SNEAKY"
scopes = ["erp"]

[[routes]]
path = "/graphql"
key = "nope"
scope = "reporting"

[[routes]]
path = "/erp/*"
key = "erp"
scope = "reporting"

[[routes]]
path = "reports/*"
key = "erp"
scope = "erp"

[[routes]]
path = "/erp/*"
key = "erp"
scope = "erp"

[clients.a]
token_sha256 = "{h}"
scopes = ["reporting"]

[clients.b]
token_sha256 = "{h}"
scopes = ["reporting"]

[clients.c]
token_sha256 = "not-hex"

[clients.d]
anonymous = true
token_sha256 = "{h}"
"#,
        h = sha("t")
    );
    let found = problems(&toml);
    let expect = [
        "keys.reporting: set exactly one of `env`",
        "keys.erp.env: must not start with MMGATE_",
        "routes[0].key: no key named `nope`",
        "routes[1].scope: key `erp` is not granted scope `reporting`",
        "routes[2].path: `reports/*` is not a path pattern",
        "routes[3].path: `/erp/*` is already routes[1]",
        "clients.b.token_sha256: the same hash as clients.a",
        "clients.c.token_sha256: must be 64 hex digits",
        "clients.d: set exactly one of",
    ];
    for e in expect {
        assert!(found.iter().any(|p| p.starts_with(e)), "missing {e:?} in {found:#?}");
    }
    assert_eq!(found.len(), expect.len(), "{found:#?}");
}

#[test]
fn unknown_keys_are_errors_naming_the_key() {
    let err = Settings::from_toml(&format!("{KEY}{ROUTE}[server]\nlisten_port = 1\n")).unwrap_err().to_string();
    assert!(err.contains("server") && err.contains("listen_port"), "{err}");
    let err = Settings::from_toml(&format!("{KEY}{ROUTE}[clients.x]\nanonymous = true\nscope = [\"reporting\"]\n"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("scope") && err.contains("clients.x"), "{err}");
}

#[test]
fn values_are_checked() {
    let found = problems(&format!(
        "{KEY}{ROUTE}[server]\nlisten = \"localhost\"\nmax_body = 0\n[upstream]\nurl = \"ftp://x\"\ntimeout = \"0s\"\n[clients.x]\nanonymous = true\nscopes = [\"reporting\"]\nlimit = {{ per_second = 1, per_minute = 2 }}\n"
    ));
    for e in
        ["server.listen:", "server.max_body:", "upstream.url:", "upstream.timeout:", "clients.x.limit: set exactly one"]
    {
        assert!(found.iter().any(|p| p.starts_with(e)), "missing {e:?} in {found:#?}");
    }
    let err =
        Settings::from_toml(&format!("{KEY}{ROUTE}[server]\nshutdown_grace = \"soon\"\n")).unwrap_err().to_string();
    assert!(err.contains("shutdown_grace") && err.contains("not a duration"), "{err}");
    let err = Settings::from_toml(&format!("{KEY}{ROUTE}[server]\nmax_body = \"lots\"\n")).unwrap_err().to_string();
    assert!(err.contains("max_body"), "{err}");
}

#[test]
fn no_routes_is_an_error() {
    let found = problems(KEY);
    assert!(found.iter().any(|p| p.starts_with("routes: no routes")), "{found:?}");
}

#[test]
fn least_privilege_and_unknown_scopes_are_warnings() {
    let w = warnings(&format!(
        "[keys.reporting]\nenv = \"MM_TEST_KEY\"\nscopes = [\"reporting\", \"erp\"]\n{ROUTE}[clients.x]\nanonymous = true\nscopes = [\"reporting\", \"reportng\", \"manager\"]\n"
    ));
    let joined = w.join("\n");
    assert!(joined.contains("keys.reporting: granted [erp]"), "{joined}");
    assert!(joined.contains("clients.x: scope `reportng` is unknown"), "{joined}");
    assert!(joined.contains("clients.x: holds [manager]"), "{joined}");
}

#[test]
fn custom_mutation_scopes_are_known() {
    let w = warnings(&format!(
        "{KEY}[[routes]]\npath = \"/graphql\"\nkey = \"reporting\"\nscope = \"reporting\"\nkind = \"graphql\"\nmutation_scope = \"write\"\n[clients.x]\nanonymous = true\nscopes = [\"reporting\", \"write\"]\n"
    ));
    assert!(w.is_empty(), "{w:?}");
}

#[test]
fn plain_http_upstream_off_loopback_is_a_warning() {
    let w = warnings(&format!("{KEY}{ROUTE}[upstream]\nurl = \"http://mm.internal\"\n"));
    assert!(w.iter().any(|x| x.starts_with("upstream.url:")), "{w:?}");
    let w = warnings(&format!("{KEY}{ROUTE}[upstream]\nurl = \"http://127.0.0.1:8000\"\n"));
    assert!(w.is_empty(), "{w:?}");
}

#[test]
fn the_embedded_default_and_the_example_are_valid() {
    let s = Settings::from_toml(mmgate::config::EMBEDDED_DEFAULT).unwrap();
    assert_eq!(s.server().listen.to_string(), "127.0.0.1:8080");
    assert_eq!(s.server().admin_listen.to_string(), "127.0.0.1:9090");
    assert_eq!(s.upstream().url, "https://api.machinemetrics.com");
    assert!(s.warnings().is_empty(), "{:?}", s.warnings());
    let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/mmgate.toml")).unwrap();
    Settings::from_toml(&example).unwrap();
}

#[test]
fn a_keys_mutation_scope_is_needed_and_must_be_granted() {
    let graphql = |key_scopes: &str, mutation_scope: &str| {
        format!(
            "[keys.reporting]\nenv = \"MM_TEST_KEY\"\nscopes = {key_scopes}\n[[routes]]\npath = \"/graphql\"\nkey = \"reporting\"\nscope = \"reporting\"\nkind = \"graphql\"\nmutation_scope = \"{mutation_scope}\"\n[clients.w]\ntoken_sha256 = \"{}\"\nscopes = [\"reporting\", \"{mutation_scope}\"]\n",
            sha("w")
        )
    };
    // The key holds `erp` because mutations on its route need it: no advice to remove it.
    let joined = warnings(&graphql(r#"["reporting", "erp"]"#, "erp")).join("\n");
    assert!(!joined.contains("keys.reporting"), "{joined}");
    // A published mutation scope the key lacks: MachineMetrics would refuse every mutation.
    let problems = problems(&graphql(r#"["reporting"]"#, "erp"));
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with("routes[0].mutation_scope: key `reporting` is not granted scope `erp`"),
        "{problems:?}"
    );
    // A scope of the config's own gates callers only: the key needs nothing more.
    assert!(Settings::from_toml(&graphql(r#"["reporting"]"#, "write")).is_ok());
}

/// Every property of every table, from the JSON Schema.
fn schema_keys(schema: &serde_json::Value) -> std::collections::BTreeSet<String> {
    let mut keys = std::collections::BTreeSet::new();
    let mut tables = vec![schema];
    tables.extend(schema["$defs"].as_object().unwrap().values());
    for table in tables {
        if let Some(properties) = table["properties"].as_object() {
            keys.extend(properties.keys().cloned());
        }
    }
    keys
}

#[test]
fn the_example_config_shows_every_key_of_the_schema() {
    let example = include_str!("../../config/mmgate.toml");
    let schema = serde_json::to_value(mmgate::config::schema()).unwrap();
    let shown = |key: &str| {
        example.lines().any(|line| {
            let line = line.trim_start_matches(['#', ' ']);
            line.starts_with(&format!("{key} ="))
                || line.starts_with(&format!("[{key}."))
                || line.starts_with(&format!("[{key}]"))
                || line.starts_with(&format!("[[{key}]]"))
                || line.contains(&format!("{{ {key} ="))
                || line.contains(&format!(", {key} ="))
        })
    };
    let missing: Vec<String> = schema_keys(&schema).into_iter().filter(|k| !shown(k)).collect();
    assert!(missing.is_empty(), "config/mmgate.toml does not show: {missing:?}");
}

#[test]
fn the_schema_lists_the_allowed_values_of_string_choices() {
    let schema = serde_json::to_value(mmgate::config::schema()).unwrap();
    let text = schema.to_string();
    for value in ["\"const\":\"graphql\"", "\"const\":\"rest\"", "\"const\":\"json\"", "\"const\":\"text\""] {
        assert!(text.contains(value), "{value} missing from the schema");
    }
}

#[test]
fn the_container_default_is_the_embedded_default_on_every_interface() {
    let container = include_str!("../../config/container.toml");
    let differs = |line: &str| {
        line.starts_with("listen") || line.starts_with("admin_listen") || line.starts_with("anonymous_from")
    };
    let settings =
        |text: &str| text.lines().filter(|l| !l.starts_with('#') && !differs(l)).collect::<Vec<_>>().join("\n");
    assert_eq!(settings(container), settings(mmgate::config::EMBEDDED_DEFAULT).replace("\n\n\n", "\n\n"));
    assert!(container.contains("listen = \"0.0.0.0:8080\"") && container.contains("admin_listen = \"0.0.0.0:9090\""));
    assert!(container.contains("anonymous_from = [\"172.16.0.0/12\"]"));
    assert!(Settings::from_toml(container).is_ok());
}

#[test]
fn an_open_anonymous_client_on_a_non_loopback_listener_is_an_error() {
    let base = format!("[server]\nlisten = \"0.0.0.0:8080\"\n{KEY}{ROUTE}[clients.local]\nanonymous = true\nscopes = [\"reporting\"]\n");
    let open = problems(&base);
    assert!(
        open[0].starts_with("clients.local.anonymous_from: server.listen 0.0.0.0:8080 is not a loopback address"),
        "{open:?}"
    );
    assert!(Settings::from_toml(&format!("{base}anonymous_from = [\"10.0.0.0/8\"]\n")).is_ok());
    let bad = problems(&format!("{base}anonymous_from = [\"10.0.0.0/33\"]\n"));
    assert!(bad[0].starts_with("clients.local.anonymous_from[0]: `10.0.0.0/33` is not a network"), "{bad:?}");
}

#[test]
fn parse_errors_speak_an_operators_language_with_validations_key_paths() {
    let cases = [
        (format!("{KEY}{ROUTE}bogus = 1\n"), "routes[0].bogus: unknown key `bogus`"),
        (
            format!("[server]\nmax_headers = \"many\"\n{KEY}{ROUTE}"),
            "server.max_headers: expected a whole number, found string \"many\"",
        ),
        (format!("{KEY}[[routes]]\npath = 5\n"), "routes[0].path: expected a string, found number `5`"),
        (
            "[keys.k]\nenv = \"X\"\nscopes = \"reporting\"\n".to_owned(),
            "keys.k.scopes: expected a list, e.g. [\"reporting\"], found string \"reporting\"",
        ),
        (
            format!("[upstream]\nca_file = \"/nonexistent/ca.pem\"\n{KEY}{ROUTE}"),
            "upstream.ca_file: cannot read /nonexistent/ca.pem: no such file",
        ),
    ];
    for (toml, expected) in cases {
        let all = problems(&toml).join("\n");
        assert!(all.contains(expected), "{expected}\nnot in\n{all}");
        for rust in ["u32", "os error", "entity not found", "invalid type", "a sequence"] {
            assert!(!all.contains(rust), "`{rust}` in {all}");
        }
    }
}
