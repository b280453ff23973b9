//! The `mmgate` binary: exit codes, `check`, `token`, environment overrides,
//! and logs that never contain a secret, at any level.

use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use crate::support::*;

pub fn mmgate() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mmgate"));
    // A clean environment: no MMGATE_* override or key leaks in from the runner.
    cmd.env_clear().env("PATH", std::env::var_os("PATH").unwrap_or_default());
    cmd
}

pub fn run(cmd: &mut Command) -> (i32, String, String) {
    let Output { status, stdout, stderr } = cmd.output().unwrap();
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

#[test]
fn missing_key_is_one_line_naming_the_variable_and_exit_2() {
    let (code, stdout, stderr) = run(&mut mmgate());
    assert_eq!(code, 2, "{stderr}");
    assert!(stdout.is_empty());
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("MM_API_KEY"), "{stderr}");
}

#[test]
fn check_shows_fingerprints_never_keys() {
    let (code, stdout, stderr) = run(mmgate().arg("check").env("MM_API_KEY", REPORTING_KEY));
    assert_eq!(code, 0, "{stderr}");
    let fingerprint = &mmgate::Fingerprint::of(REPORTING_KEY).to_string();
    assert!(stdout.contains(fingerprint), "{stdout}");
    assert!(stdout.contains("/graphql") && stdout.contains("/reports/*") && stdout.contains("MM_API_KEY"), "{stdout}");
    assert!(!stdout.contains(REPORTING_KEY) && !stderr.contains(REPORTING_KEY));

    let (code, stdout, _) = run(mmgate().arg("check"));
    assert_ne!(code, 0);
    assert!(stdout.contains("MM_API_KEY is not set"), "{stdout}");

    let (code, stdout, stderr) = run(mmgate().args(["check", "--skip-keys"]));
    assert_eq!(code, 0, "{stdout}{stderr}");
}

#[test]
fn config_errors_name_the_file_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[[routes]]\npath = \"/x\"\nkey = \"missing\"\nscope = \"reporting\"\n").unwrap();
    let (code, _, stderr) = run(mmgate().args(["check", "--config"]).arg(&path));
    assert_ne!(code, 0);
    assert!(stderr.contains(&path.display().to_string()) && stderr.contains("routes[0].key"), "{stderr}");

    // Serving refuses the same config with exit 2.
    let (code, _, stderr) = run(mmgate().arg("--config").arg(&path));
    assert_eq!(code, 2, "{stderr}");

    // A missing file is an error, not the defaults.
    let (code, _, stderr) = run(mmgate().args(["check", "--config", "/nonexistent/mmgate.toml"]));
    assert_ne!(code, 0);
    assert!(stderr.contains("/nonexistent/mmgate.toml"), "{stderr}");
    let (code, _, stderr) = run(mmgate().arg("check").env("MMGATE_CONFIG", "/nonexistent/other.toml"));
    assert_ne!(code, 0);
    assert!(stderr.contains("/nonexistent/other.toml"), "{stderr}");
}

#[test]
fn environment_overrides_config_values() {
    let (code, stdout, stderr) =
        run(mmgate().args(["check", "--skip-keys"]).env("MMGATE_SERVER__LISTEN", "127.0.0.1:18080"));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("listen        127.0.0.1:18080"), "{stdout}");
    let (code, _, stderr) = run(mmgate().args(["check", "--skip-keys"]).env("MMGATE_SERVER__LISTEN", "nowhere"));
    assert_ne!(code, 0);
    assert!(stderr.contains("server.listen"), "{stderr}");
    let (code, _, stderr) = run(mmgate().args(["check", "--skip-keys"]).env("MMGATE_SERVER__NO_SUCH", "1"));
    assert_ne!(code, 0);
    assert!(stderr.contains("MMGATE_SERVER__NO_SUCH: unknown key `no_such`"), "{stderr}");
}

#[test]
fn only_table_key_variables_are_overrides_and_bad_ones_are_named() {
    // What Kubernetes puts in every pod once a Service is called `mmgate`.
    let mut cmd = mmgate();
    cmd.args(["check", "--skip-keys"]);
    for (name, value) in [
        ("MMGATE_PORT", "tcp://10.96.0.12:8080"),
        ("MMGATE_PORT_8080_TCP", "tcp://10.96.0.12:8080"),
        ("MMGATE_PORT_8080_TCP_ADDR", "10.96.0.12"),
        ("MMGATE_SERVICE_HOST", "10.96.0.12"),
        ("MMGATE_SERVICE_PORT", "8080"),
        ("MMGATE_BIN", "/usr/bin/x"),
    ] {
        cmd.env(name, value);
    }
    let (code, stdout, stderr) = run(&mut cmd);
    assert_eq!(code, 0, "{stdout}{stderr}");

    for (name, value, expected) in [
        ("MMGATE_SERVER__MAX_BODY", "lots", "MMGATE_SERVER__MAX_BODY: "),
        ("MMGATE_NOPE__X", "1", "MMGATE_NOPE__X: unknown key `nope`"),
        ("MMGATE_ROUTES__0__PATH", "/x", "MMGATE_ROUTES__0__PATH: [[routes]] is an array"),
        ("MMGATE_KEYS__REPORTING__SCOPEZ", "x", "MMGATE_KEYS__REPORTING__SCOPEZ: unknown key `scopez`"),
    ] {
        let (code, _, stderr) = run(mmgate().args(["check", "--skip-keys"]).env(name, value));
        assert_ne!(code, 0, "{name}");
        assert!(stderr.contains(expected), "{name}: {stderr}");
    }
}

#[test]
fn a_key_file_set_from_the_environment_replaces_the_env_source() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("reporting");
    std::fs::write(&key, REPORTING_KEY).unwrap();
    // The embedded default reads MM_API_KEY, which is not set here.
    let (code, stdout, stderr) = run(mmgate().arg("check").env("MMGATE_KEYS__REPORTING__FILE", &key));
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains(&mmgate::Fingerprint::of(REPORTING_KEY).to_string()), "{stdout}");
    assert!(stdout.contains(&key.display().to_string()), "{stdout}");
}

#[test]
fn the_example_config_passes_check() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/mmgate.toml");
    let (code, stdout, stderr) = run(mmgate().args(["check", "--skip-keys", "--config", example]));
    assert_eq!(code, 0, "{stdout}{stderr}");
    let (code, stdout, _) =
        run(mmgate().args(["check", "--config", example]).env("MM_REPORTING_KEY", "k1").env("MM_ERP_KEY", "k2"));
    assert_eq!(code, 0, "{stdout}");
}

#[test]
fn token_prints_a_token_and_its_hash() {
    let (code, stdout, stderr) = run(mmgate().args(["token", "dashboard"]));
    assert_eq!(code, 0, "{stderr}");
    let token = stdout.split_whitespace().find(|w| w.starts_with("mmg_")).unwrap();
    assert!(token.len() >= 40);
    assert!(stdout.contains("[clients.dashboard]"), "{stdout}");
    assert!(stdout.contains(&format!("token_sha256 = \"{}\"", sha(token))), "{stdout}");
    let (_, again, _) = run(mmgate().args(["token", "dashboard"]));
    assert!(!again.contains(token), "tokens must be random");
    let (code, _, _) = run(mmgate().args(["token", "bad name"]));
    assert_ne!(code, 0);
}

/// A running mmgate binary whose stdout and stderr go to a file (a pipe
/// nobody reads would fill up and block it at trace level).
pub struct Running {
    pub child: Child,
    log: tempfile::NamedTempFile,
}

impl Running {
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap()
    }

    /// Waits for the process to exit (after a signal); returns its code and output.
    pub fn wait(mut self) -> (i32, String) {
        let started = Instant::now();
        let code = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status.code().unwrap_or(-1);
            }
            assert!(started.elapsed() < Duration::from_secs(15), "mmgate did not exit");
            std::thread::sleep(Duration::from_millis(20));
        };
        (code, self.logs())
    }
}

/// Starts the binary on `config`, waits until the admin port accepts.
pub fn spawn(config: &std::path::Path, env: &[(&str, &str)], admin: u16) -> Running {
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut cmd = mmgate();
    cmd.arg("--config").arg(config).stdout(log.reopen().unwrap()).stderr(log.reopen().unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut running = Running { child: cmd.spawn().unwrap(), log };
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", admin)).is_err() {
        if let Ok(Some(status)) = running.child.try_wait() {
            panic!("mmgate exited early ({status}): {}", running.logs());
        }
        assert!(started.elapsed() < Duration::from_secs(10), "mmgate did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    running
}

/// The binary on the standard test config, with `env`, in front of a fresh
/// fake upstream; the key directory holds the config and keys while it runs.
pub struct StandardBinary {
    pub child: Running,
    pub upstream: Upstream,
    pub keys: KeyDir,
    /// Proxy and admin ports.
    pub port: u16,
    pub admin: u16,
}

pub async fn spawn_standard(env: &[(&str, &str)]) -> StandardBinary {
    let upstream = Upstream::start().await;
    let keys = KeyDir::new();
    let (port, admin, toml) = on_free_ports(&config(&upstream.url(), &keys, ""));
    let path = keys.path("mmgate.toml");
    std::fs::write(&path, toml).unwrap();
    let child = spawn(&path, env, admin);
    StandardBinary { child, upstream, keys, port, admin }
}

/// Sends SIGTERM and waits for the exit.
pub fn terminate(running: Running) -> (i32, String) {
    let status = Command::new("kill").args(["-TERM", &running.id().to_string()]).status().unwrap();
    assert!(status.success());
    running.wait()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_logs_never_contain_a_key_or_token() {
    let StandardBinary { child, upstream, keys: _keys, port, admin } = spawn_standard(&[("RUST_LOG", "trace")]).await;

    let base = format!("http://127.0.0.1:{port}");
    assert_eq!(get(&format!("{base}/reports/production"), &[AS_DASHBOARD]).await.status, 200);
    assert_eq!(post(&format!("{base}/erp/jobdispatch/start"), &[AS_ERP], "{}").await.status, 200);
    assert_eq!(get(&format!("{base}/reports/status/401"), &[AS_ERP]).await.status, 401);
    get(&format!("{base}/erp/x"), &[AS_DASHBOARD]).await.assert_error(403, "scope_denied");
    get(&format!("{base}/reports/x"), &[("authorization", "Bearer erp-token-2x")])
        .await
        .assert_error(401, "unauthenticated");
    assert_eq!(get(&format!("http://127.0.0.1:{admin}/readyz"), &[]).await.status, 200);
    assert_eq!(upstream.requests().len(), 3);

    let (code, logs) = terminate(child);
    assert_eq!(code, 0, "{logs}");
    assert!(logs.contains("TRACE"), "trace logging was not on:\n{logs}");
    assert!(logs.contains("mmgate::access"), "no access log lines");
    for secret in [REPORTING_KEY, ERP_KEY, DASH_TOKEN, ERP_TOKEN, "erp-token-2x"] {
        assert!(!logs.contains(secret), "secret {secret:?} found in logs");
    }
}

/// Every `.toml` under `dir`, recursively.
fn toml_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            toml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "toml") {
            out.push(path);
        }
    }
}

#[test]
fn every_shipped_config_passes_check() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    toml_files(&root.join("config"), &mut files);
    toml_files(&root.join("deploy"), &mut files);
    assert!(files.len() >= 4, "{files:?}");
    for file in &files {
        let (code, stdout, stderr) = run(mmgate().args(["check", "--skip-keys", "--config"]).arg(file));
        assert_eq!(code, 0, "{}:\n{stdout}{stderr}", file.display());
        assert!(stdout.contains("0 error(s)"), "{stdout}");
    }
}

#[test]
fn the_kubernetes_configmap_holds_the_checked_config() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes");
    let manifest = std::fs::read_to_string(root.join("sidecar.yaml")).unwrap();
    let toml = std::fs::read_to_string(root.join("mmgate.toml")).unwrap();
    // The block scalar under `mmgate.toml: |`, indented four spaces.
    let block: Vec<&str> = manifest
        .lines()
        .skip_while(|l| l.trim() != "mmgate.toml: |")
        .skip(1)
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect();
    assert_eq!(block.join("\n").trim_end(), toml.trim_end(), "sidecar.yaml's ConfigMap differs from mmgate.toml");
}

#[test]
fn config_schema_describes_the_config() {
    let (code, stdout, _) = run(mmgate().arg("config-schema"));
    assert_eq!(code, 0);
    let schema: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    for section in ["server", "upstream", "keys", "budgets", "routes", "clients", "limits"] {
        assert!(schema["properties"][section].is_object(), "{section}");
    }
    assert_eq!(schema["$defs"]["RawServer"]["additionalProperties"], false);
    assert!(schema["$defs"]["RawRoute"]["properties"]["mutation_scope"]["description"].is_string());
}

#[test]
fn check_never_shows_a_redis_password() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("redis.toml");
    std::fs::write(
        &path,
        "[keys.r]\nenv = \"MM_R\"\nscopes = [\"reporting\"]\n[[routes]]\npath = \"/r/*\"\nkey = \"r\"\nscope = \"reporting\"\n[limits]\nredis = \"redis://:hunter2-secret@127.0.0.1:6379\"\n",
    )
    .unwrap();
    let (code, stdout, stderr) = run(mmgate().args(["check", "--skip-keys", "--config"]).arg(&path));
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("shared limits redis://127.0.0.1:6379"), "{stdout}");
    assert!(!stdout.contains("hunter2") && !stderr.contains("hunter2"));
}

#[test]
fn check_prints_what_each_route_shares_and_caches_and_each_limits_wait() {
    let (code, stdout, stderr) = run(mmgate().args(["check", "--skip-keys", "--config", "config/mmgate.toml"]));
    assert_eq!(code, 0, "{stderr}");
    let line = |start: &str| stdout.lines().find(|l| l.trim_start().starts_with(start)).unwrap_or_default().to_owned();
    let graphql = line("/graphql");
    assert!(graphql.contains("max_depth 5, max_nodes 5") && graphql.contains("shares identical queries"), "{graphql}");
    assert!(graphql.contains("cache ttl 10s"), "{graphql}");
    let reports = line("/reports/*");
    assert!(reports.contains("shares identical GET, HEAD, POST") && reports.contains("no cache"), "{reports}");
    assert!(stdout.contains("max_bytes 64.0 MiB, max_entry_bytes 1.0 MiB"), "{stdout}");
    assert!(line("acme").contains("900/min burst 50 (over it: wait up to 2s)"), "{stdout}");
}
