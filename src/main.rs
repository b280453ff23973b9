//! The `mmgate` binary: parses the command line, sets up logging, loads the
//! configuration and keys, and wires signals to the server. Everything else
//! lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mmgate::config::{ConfigOrigin, LogFormat, Settings};
use mmgate::keys::KeyStore;
use mmgate::logging::{BufferedStderr, FlushOnDrop, PlainFields, SwitchableFormat};
use mmgate::server::Server;
use mmgate::{check, Gate, Runtime};
use tokio::signal::unix::{signal, SignalKind};
use tracing_subscriber::EnvFilter;

/// Exit code for a configuration or key error at start.
const EXIT_CONFIG: u8 = 2;

#[derive(Parser)]
#[command(name = "mmgate", version, about = "Local authenticating reverse proxy for the MachineMetrics API")]
struct Cli {
    /// Configuration file (default: $MMGATE_CONFIG, else the embedded default).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the configuration and print a summary (no secrets).
    Check {
        /// Validate everything except reading the keys (for CI without secrets).
        #[arg(long)]
        skip_keys: bool,
    },
    /// Mint a new client token and print the config lines to paste.
    Token {
        /// The client's name, as in [clients.NAME].
        name: String,
    },
    /// Print the JSON Schema of the configuration file (for editors).
    ConfigSchema,
    /// Ask the running mmgate's admin listener for /healthz: exit 0 on 200, 1 otherwise.
    Healthcheck,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Token { name }) => token(&name),
        Some(Command::ConfigSchema) => {
            match serde_json::to_string_pretty(&mmgate::config::schema()) {
                Ok(text) => println!("{text}"),
                Err(e) => {
                    eprintln!("mmgate: {e}");
                    return ExitCode::FAILURE;
                }
            }
            ExitCode::SUCCESS
        }
        Some(Command::Check { skip_keys }) => run_check(ConfigOrigin::resolve(cli.config), skip_keys),
        Some(Command::Healthcheck) => match mmgate::healthcheck::run(ConfigOrigin::resolve(cli.config)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("mmgate healthcheck: {e}");
                ExitCode::FAILURE
            }
        },
        None => serve(ConfigOrigin::resolve(cli.config)),
    }
}

fn token(name: &str) -> ExitCode {
    if !mmgate::config::valid_name(name) {
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

fn run_check(origin: ConfigOrigin, skip_keys: bool) -> ExitCode {
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

/// Logs to stderr (buffered: see `mmgate::logging`), `RUST_LOG` filtering
/// (default `info`), as text or JSON lines. Dropping the guard flushes.
fn init_logging(format: LogFormat) -> FlushOnDrop {
    let (writer, guard) = BufferedStderr::new();
    writer.spawn_flusher(std::time::Duration::from_millis(100));
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    if !ansi {
        // Coloured lines (a terminal) keep going through tracing-subscriber.
        mmgate::access::write_lines_to(writer.clone());
    }
    mmgate::logging::set_json(format == LogFormat::Json);
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .fmt_fields(PlainFields)
        .event_format(SwitchableFormat::new(ansi))
        .init();
    guard
}

fn serve(origin: ConfigOrigin) -> ExitCode {
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
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("mmgate: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async_serve(origin))
}

async fn async_serve(origin: ConfigOrigin) -> ExitCode {
    // SIGHUP's default action kills the process: take it over before anything
    // (a config-management tool, say) has a chance to send it.
    let (Ok(mut hangup), Ok(mut terminate), Ok(mut interrupt)) =
        (signal(SignalKind::hangup()), signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        eprintln!("mmgate: cannot install signal handlers");
        return ExitCode::FAILURE;
    };
    let settings = match Settings::load(origin.clone()) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("mmgate: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let _log_guard = init_logging(settings.server.log_format);
    for warning in &settings.warnings {
        tracing::warn!("{warning}");
    }
    let keys = match KeyStore::load(&settings.keys, None) {
        Ok(keys) => keys,
        Err(errors) => {
            for e in errors {
                eprintln!("mmgate: {e}");
            }
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    for slot in keys.iter() {
        if let Some(key) = slot.current() {
            tracing::info!(key = slot.name(), fingerprint = %key.fingerprint(), "key loaded");
        }
    }
    let gate = Gate::new(Runtime::new(settings, keys, None));
    let server = match Server::bind(gate.clone()).await {
        Ok(server) => server,
        Err(e) => {
            eprintln!("mmgate: {e}");
            return ExitCode::FAILURE;
        }
    };
    {
        let runtime = gate.runtime();
        tracing::info!(
            listen = %runtime.settings.server.listen,
            admin = %runtime.settings.server.admin_listen,
            upstream = %runtime.settings.upstream.url,
            config = %runtime.settings.origin,
            "mmgate starting"
        );
    }

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
    ExitCode::SUCCESS
}
