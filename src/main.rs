//! The `mmgate` binary: parses the command line and calls the library
//! (`mmgate::commands`), which does the rest.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mmgate::commands;
use mmgate::config::ConfigOrigin;

/// Every request allocates a few dozen small objects (heads, futures,
/// buffers): mimalloc serves them from per-thread free lists at a fraction
/// of glibc malloc's instructions (bench/README.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Print the least-privilege configuration that JSON access logs show was needed
    /// (with --config: that file edited, and what to remove).
    Suggest {
        /// JSON access log files (plain or gzip); `-` reads standard input.
        #[arg(long = "log", value_name = "FILE", required = true, num_args = 1..)]
        logs: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cli_config = cli.config.clone();
    let origin = ConfigOrigin::resolve(cli.config);
    match cli.command {
        None => commands::serve(origin),
        Some(Command::Check { skip_keys }) => commands::check(origin, skip_keys),
        Some(Command::Token { name }) => commands::token(&name),
        Some(Command::ConfigSchema) => commands::config_schema(),
        Some(Command::Healthcheck) => commands::healthcheck(origin),
        // Only a config named on the command line: suggest edits that file.
        Some(Command::Suggest { logs }) => commands::suggest(&logs, cli_config.as_deref()),
    }
}
