//! What each subcommand of the `mmgate` binary does, so that `main.rs` only
//! parses the command line: serving (runtime, signals, logging, start-up
//! errors with their exit codes), `check`, `token`, `config-schema` and
//! `healthcheck`.

use std::process::ExitCode;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tracing_subscriber::EnvFilter;

use crate::config::{ConfigOrigin, LogFormat, Settings, TelemetrySettings};
use crate::gate::Gate;
use crate::logging::{BufferedStderr, FlushOnDrop, PlainFields, SwitchableFormat};
use crate::runtime::Runtime;
use crate::server::Server;
use crate::{access, check, healthcheck, logging};

/// Exit code for a configuration or key error at start.
const EXIT_CONFIG: u8 = 2;

/// `mmgate token NAME`: mints a client token and prints the config lines to paste.
pub fn token(name: &str) -> ExitCode {
    if !crate::config::valid_name(name) {
        eprintln!("mmgate: `{name}` is not a client name; use 1 to 64 of A-Z a-z 0-9 _ - .");
        return ExitCode::from(EXIT_CONFIG);
    }
    match check::mint_token(name) {
        Ok((token, snippet)) => {
            println!("Token for client `{name}` (shown once: store it where that tool keeps secrets):\n\n  {token}\n");
            println!("Paste into mmgate.toml (mmgate keeps only the hash), then adjust scopes:\n\n{snippet}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mmgate: cannot read random bytes: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `mmgate check`: validates and prints the summary; fails on any error.
pub fn check(origin: ConfigOrigin, skip_keys: bool) -> ExitCode {
    let settings = match Settings::load(origin) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("mmgate check: {e}");
            return ExitCode::FAILURE;
        }
    };
    let report = check::check(&settings, skip_keys);
    print!("{}", report.text);
    if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `mmgate suggest`: least privilege from access logs; exit 1 when the logs hold nothing to learn from.
pub fn suggest(logs: &[std::path::PathBuf], config: Option<&std::path::Path>) -> ExitCode {
    match crate::suggest::run(logs, config) {
        Ok((text, read)) => {
            if read.malformed > 0 {
                eprintln!(
                    "mmgate suggest: skipped {} unreadable lines (the first at {})",
                    read.malformed,
                    read.first_malformed.as_deref().unwrap_or("?")
                );
            }
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(why) => {
            eprintln!("mmgate suggest: {why}");
            ExitCode::FAILURE
        }
    }
}

/// `mmgate config-schema`: the JSON Schema of the configuration file.
pub fn config_schema() -> ExitCode {
    match serde_json::to_string_pretty(&crate::config::schema()) {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mmgate: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `mmgate healthcheck`: 0 when the admin listener's `/healthz` answers 200.
pub fn healthcheck(origin: ConfigOrigin) -> ExitCode {
    match healthcheck::run(origin) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mmgate healthcheck: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `mmgate`: serves until SIGTERM or SIGINT, reloading on SIGHUP.
pub fn serve(origin: ConfigOrigin) -> ExitCode {
    // Keys live in this process's memory: no core dumps, and no reading of
    // it by other processes of the same user (ptrace, /proc/PID/mem).
    if let Err(e) = rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable) {
        eprintln!("mmgate: warning: cannot disable core dumps: {e}");
    }
    // TOKIO_WORKER_THREADS is honoured by the multi-threaded builder; with 1,
    // the single-threaded scheduler does the same job without work-stealing
    // machinery (measurably cheaper per request).
    let one_thread = std::env::var("TOKIO_WORKER_THREADS").is_ok_and(|n| n.trim() == "1");
    let mut builder = if one_thread {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    match builder.enable_all().build() {
        Ok(runtime) => runtime.block_on(serve_on_runtime(origin)),
        Err(e) => {
            eprintln!("mmgate: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve_on_runtime(origin: ConfigOrigin) -> ExitCode {
    // SIGHUP's default action kills the process: take it over before anything
    // (a config-management tool, say) has a chance to send it.
    let (Ok(mut hangup), Ok(mut terminate), Ok(mut interrupt)) =
        (signal(SignalKind::hangup()), signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        eprintln!("mmgate: cannot install signal handlers");
        return ExitCode::FAILURE;
    };
    let filter = match log_filter() {
        Ok(filter) => filter,
        Err(e) => {
            eprintln!("mmgate: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let settings = match Settings::load(origin.clone()) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("mmgate: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let _log_guard = match init_logging(settings.server().log_format, filter, settings.telemetry()) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("mmgate: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    for warning in settings.warnings() {
        tracing::warn!("{warning}");
    }
    let runtime = match Runtime::load(settings) {
        Ok(runtime) => runtime,
        Err(errors) => {
            for e in errors {
                eprintln!("mmgate: {e}");
            }
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    for slot in runtime.keys().iter() {
        if let Some(key) = slot.current() {
            tracing::info!(key = slot.name(), fingerprint = %key.fingerprint(), "key loaded");
        }
    }
    let gate = Gate::new(runtime);
    let server = match Server::bind(gate.clone()).await {
        Ok(server) => server,
        Err(e) => {
            eprintln!("mmgate: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = gate.runtime();
    let settings = runtime.settings();
    tracing::info!(
        listen = %settings.server().listen,
        admin = %settings.server().admin_listen,
        upstream = %settings.upstream().url,
        config = %settings.origin(),
        "mmgate starting"
    );
    drop(runtime);

    let reload_gate = gate.clone();
    let reloader = tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            let _ = reload_gate.reload(&origin);
        }
    });
    let shutdown = async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM received"),
            _ = interrupt.recv() => tracing::info!("SIGINT received"),
        }
    };
    server.run(shutdown).await;
    reloader.abort();
    crate::telemetry::shutdown();
    ExitCode::SUCCESS
}

/// `RUST_LOG`'s filter, `info` when unset; a filter that does not parse is
/// a start-up error (silently logging something else would hide it).
fn log_filter() -> Result<EnvFilter, String> {
    match std::env::var("RUST_LOG") {
        Err(std::env::VarError::NotPresent) => Ok(EnvFilter::new("info")),
        Err(std::env::VarError::NotUnicode(_)) => Err("RUST_LOG is not valid UTF-8".into()),
        Ok(directives) => EnvFilter::try_new(&directives).map_err(|e| {
            format!("RUST_LOG=`{directives}` is not a log filter ({e}); write e.g. `info` or `info,mmgate::access=off`")
        }),
    }
}

/// Logs to stderr (buffered: see `logging`), filtered by `filter`, as text
/// or JSON lines; with `telemetry`, also exports the request spans. Dropping
/// the guard flushes.
fn init_logging(
    format: LogFormat,
    filter: EnvFilter,
    telemetry: Option<&TelemetrySettings>,
) -> Result<FlushOnDrop, String> {
    use tracing_subscriber::filter::{filter_fn, FilterExt};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;

    let (writer, guard) = BufferedStderr::new();
    writer.spawn_flusher(Duration::from_millis(100));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    if !ansi {
        // Coloured lines (a terminal) keep going through tracing-subscriber.
        access::write_lines_to(writer.clone());
    }
    logging::set_json(format == LogFormat::Json);
    // Log lines never carry the trace spans (they would cost on every request).
    let lines = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .fmt_fields(PlainFields)
        .event_format(SwitchableFormat::new(ansi))
        .with_filter(filter.and(filter_fn(|m| !crate::telemetry::is_trace(m))));
    // Two shapes rather than an optional layer: an absent layer would claim
    // interest in everything, and `RUST_LOG` would no longer silence the
    // access line (it asks the subscriber whether its target is enabled).
    match telemetry {
        None => tracing_subscriber::registry().with(lines).init(),
        Some(settings) => {
            // The spans, and the warnings logged while one is open, as span events.
            let traces = crate::telemetry::layer(settings)?.with_filter(filter_fn(|m| {
                crate::telemetry::is_trace(m) || (m.is_event() && *m.level() <= tracing::Level::WARN)
            }));
            tracing_subscriber::registry().with(lines).with(traces).init();
        }
    }
    Ok(guard)
}
