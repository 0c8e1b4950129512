//! `outrigger`: the data plane binary.
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tracing_subscriber::{layer::SubscriberExt, reload, util::SubscriberInitExt, EnvFilter};

#[derive(Parser)]
#[command(name = "outrigger", version, about = "Service-mesh data plane speaking Envoy's v3 API")]
struct Cli {
    /// Envoy v3 bootstrap (YAML or JSON). Without it, the embedded front-proxy example runs.
    #[arg(short = 'c', long = "config-path")]
    config: Option<PathBuf>,
    /// Worker threads (Envoy's flag); default: the number of cores.
    #[arg(long)]
    concurrency: Option<usize>,
    /// How long SIGTERM waits for in-flight requests before exiting.
    #[arg(long = "drain-time-s", default_value_t = 5)]
    drain_time_s: u64,
    /// Write the admin server's bound address here once it listens (Envoy's flag).
    #[arg(long)]
    admin_address_path: Option<PathBuf>,
    /// Log level: trace, debug, info, warn, error (also RUST_LOG).
    #[arg(short = 'l', long = "log-level", default_value = "info")]
    log_level: String,
    /// `validate`: check the configuration and exit (0 valid, 1 invalid).
    #[arg(long, default_value = "serve", value_parser = ["serve", "validate"])]
    mode: String,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Sidecar mode, configured over xDS (not implemented yet).
    Sidecar,
    /// Gateway mode, configured over xDS (not implemented yet).
    Router,
    /// Wait until the local proxy is ready (not implemented yet).
    Wait,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(cmd) = cli.command {
        let name = match cmd {
            Command::Sidecar => "sidecar",
            Command::Router => "router",
            Command::Wait => "wait",
        };
        eprintln!("outrigger {name}: not implemented yet (xDS modes arrive with dynamic configuration)");
        return ExitCode::from(2);
    }
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cli.log_level));
    let (filter, handle) = reload::Layer::new(filter);
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .init();

    let bootstrap = match outrigger_proxy::app::load(cli.config.as_deref()) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: bad configuration: {e}");
            return ExitCode::from(1);
        }
    };
    if cli.mode == "validate" {
        println!("configuration OK");
        return ExitCode::SUCCESS;
    }
    let concurrency =
        cli.concurrency.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    let opts = outrigger_proxy::app::Options {
        config: cli.config,
        concurrency,
        drain_time: Duration::from_secs(cli.drain_time_s),
        admin_address_path: cli.admin_address_path,
        log: Box::new(move |level: &str| {
            let f = EnvFilter::try_new(level).map_err(|e| format!("bad level: {e}"))?;
            handle.reload(f).map_err(|e| e.to_string())
        }),
    };
    match outrigger_proxy::app::run(opts, bootstrap) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
