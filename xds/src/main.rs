//! `outrigger-xds`: the control plane.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryServiceServer;
use outrigger_xds::generate::check_all;
use outrigger_xds::istio::{load_dir, DirLoader};
use outrigger_xds::server::{ads::Ads, monitor, watch, Control};

#[derive(Parser)]
#[command(name = "outrigger-xds", version, about = "Control plane: Istio's API in, xDS out")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve xDS for the configuration in DIR, reloading it on change.
    Serve {
        #[arg(long)]
        config_dir: PathBuf,
        #[arg(long, default_value_t = 15010)]
        xds_port: u16,
        /// TLS xDS and the CA (not implemented yet: refused when asked for).
        #[arg(long)]
        secure_port: Option<u16>,
        #[arg(long, default_value_t = 15014)]
        monitor_port: u16,
        /// Address to listen on.
        #[arg(long, default_value = "0.0.0.0")]
        bind: std::net::IpAddr,
    },
    /// Report every error in DIR (file, document, field); exit 1 if there is any.
    Validate { dir: PathBuf },
    /// Sidecar injection (not implemented yet).
    Inject {
        #[arg(short = 'f')]
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    match Cli::parse().command {
        Cmd::Validate { dir } => validate(&dir),
        Cmd::Inject { .. } => {
            eprintln!("outrigger-xds inject: not implemented yet");
            ExitCode::from(2)
        }
        Cmd::Serve { secure_port: Some(_), .. } => {
            eprintln!("outrigger-xds: --secure-port (TLS xDS and the CA) is not implemented yet");
            ExitCode::from(2)
        }
        Cmd::Serve { config_dir, xds_port, monitor_port, bind, .. } => {
            match serve(config_dir, bind, xds_port, monitor_port) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

fn validate(dir: &std::path::Path) -> ExitCode {
    match load_dir(dir) {
        Ok(reg) => {
            let errors = check_all(&reg);
            if errors.is_empty() {
                println!("{}: OK", dir.display());
                return ExitCode::SUCCESS;
            }
            for e in errors {
                eprintln!("{}: {e}", dir.display());
            }
            ExitCode::from(1)
        }
        Err(errors) => {
            for e in errors {
                eprintln!("{e}");
            }
            ExitCode::from(1)
        }
    }
}

fn serve(dir: PathBuf, bind: std::net::IpAddr, xds_port: u16, monitor_port: u16) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async move {
        // Bound before the directory is read: proxies that start alongside the control plane
        // connect at once and wait in the backlog instead of being refused into their backoff.
        let monitor = tokio::net::TcpListener::bind(SocketAddr::new(bind, monitor_port))
            .await
            .with_context(|| format!("monitor port {monitor_port}"))?;
        let xds = tokio::net::TcpListener::bind(SocketAddr::new(bind, xds_port))
            .await
            .with_context(|| format!("xDS port {xds_port}"))?;
        let started = std::time::Instant::now();
        let mut loader = DirLoader::default();
        let reg = loader
            .load(&dir)
            .map_err(|errs| anyhow::anyhow!("{}", errs.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n")))?;
        tracing::info!(
            ms = started.elapsed().as_millis() as u64,
            services = reg.service_entries.len(),
            "configuration loaded"
        );
        let control = Control::new(reg);
        tracing::info!(xds = %xds.local_addr()?, monitor = %monitor.local_addr()?, dir = %dir.display(), "serving");
        tokio::spawn(monitor::serve(monitor, control.clone()));
        tokio::spawn(watch::run(dir, control.clone(), loader));
        let incoming = futures_incoming(xds);
        tonic::transport::Server::builder()
            .add_service(
                AggregatedDiscoveryServiceServer::new(Ads { hub: Arc::clone(&control.hub) })
                    .max_decoding_message_size(64 << 20),
            )
            .serve_with_incoming_shutdown(incoming, async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await?;
        Ok(())
    })
}

fn futures_incoming(
    l: tokio::net::TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    tokio_stream::wrappers::TcpListenerStream::new(l)
}
