//! `outrigger`: the data plane binary.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use outrigger_proxy::modes::{self, Identity, Mode};
use tracing_subscriber::{layer::SubscriberExt, reload, util::SubscriberInitExt, EnvFilter};

#[derive(Parser)]
#[command(name = "outrigger", version, about = "Service-mesh data plane speaking Envoy's v3 API")]
struct Cli {
    /// Envoy v3 bootstrap (YAML or JSON). Without it, the embedded front-proxy example runs.
    #[arg(short = 'c', long = "config-path")]
    config: Option<PathBuf>,
    /// Worker threads (Envoy's flag); default: the number of cores.
    #[arg(long, global = true)]
    concurrency: Option<usize>,
    /// How long SIGTERM waits for in-flight requests before exiting.
    #[arg(long = "drain-time-s", default_value_t = 5, global = true)]
    drain_time_s: u64,
    /// Write the admin server's bound address here once it listens (Envoy's flag).
    #[arg(long, global = true)]
    admin_address_path: Option<PathBuf>,
    /// Log level: trace, debug, info, warn, error (also RUST_LOG).
    #[arg(short = 'l', long = "log-level", default_value = "info", global = true)]
    log_level: String,
    /// `validate`: check the configuration and exit (0 valid, 1 invalid).
    #[arg(long, default_value = "serve", value_parser = ["serve", "validate"])]
    mode: String,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Sidecar beside a workload, configured over xDS by the control plane.
    Sidecar(MeshArgs),
    /// Ingress/egress gateway, configured over xDS by the control plane.
    Router(MeshArgs),
    /// Exit 0 once the local proxy is ready (start-up ordering), 1 on timeout.
    Wait {
        /// How long to wait, e.g. 60s or 500ms.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        timeout: Duration,
        /// The readiness address to poll.
        #[arg(long, default_value = "127.0.0.1:15021")]
        health_address: SocketAddr,
    },
}

#[derive(Args)]
struct MeshArgs {
    /// The control plane's xDS address.
    #[arg(long, default_value = "http://127.0.0.1:15010")]
    xds_address: String,
    /// Incremental xDS (DELTA_GRPC) instead of state of the world.
    #[arg(long)]
    delta: bool,
    /// The CA's address (mTLS certificates). Not implemented yet: refused.
    #[arg(long)]
    ca_address: Option<String>,
    #[arg(long, env = "POD_NAME", default_value = "")]
    workload_name: String,
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    namespace: String,
    #[arg(long, env = "SERVICE_ACCOUNT", default_value = "default")]
    service_account: String,
    #[arg(long, env = "INSTANCE_IP", default_value = "127.0.0.1")]
    instance_ip: String,
    /// Workload labels, k=v,...
    #[arg(long, env = "WORKLOAD_LABELS", default_value = "")]
    labels: String,
    #[arg(long, default_value = "cluster.local")]
    trust_domain: String,
    /// The credential the CA checks. Not implemented yet (there is no CA client): refused.
    #[arg(long)]
    token_file: Option<PathBuf>,
    #[arg(long, default_value_t = 15000)]
    admin_port: u16,
    /// Readiness (`GET /healthz/ready`).
    #[arg(long, default_value = "0.0.0.0:15021")]
    health_address: SocketAddr,
    /// Prometheus (`GET /stats/prometheus`).
    #[arg(long, default_value = "0.0.0.0:15090")]
    prometheus_address: SocketAddr,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cli.log_level));
    let (filter, handle) = reload::Layer::new(filter);
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .init();

    let mut node_metadata = Default::default();
    let mut probes = (None, None);
    let bootstrap = match &cli.command {
        Some(Command::Wait { timeout, health_address }) => return wait_ready(*health_address, *timeout),
        Some(Command::Sidecar(m)) | Some(Command::Router(m)) => {
            let mode = if matches!(cli.command, Some(Command::Sidecar(_))) { Mode::Sidecar } else { Mode::Router };
            if m.ca_address.is_some() {
                eprintln!(
                    "error: --ca-address: mTLS certificates are not implemented yet; refusing to run without them"
                );
                return ExitCode::from(2);
            }
            // Accepting a credential that nothing reads would look like authentication is set up.
            if m.token_file.is_some() {
                eprintln!("error: --token-file: there is no CA client yet to present the token to; refusing it");
                return ExitCode::from(2);
            }
            let labels = match modes::parse_labels(&m.labels) {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("error: --labels: {e}");
                    return ExitCode::from(2);
                }
            };
            let id = Identity {
                workload_name: m.workload_name.clone(),
                namespace: m.namespace.clone(),
                service_account: m.service_account.clone(),
                instance_ip: m.instance_ip.clone(),
                labels,
                trust_domain: m.trust_domain.clone(),
            };
            let yaml = match modes::bootstrap_yaml(mode, &id, &m.xds_address, m.admin_port, m.delta) {
                Ok(y) => y,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            node_metadata = modes::node_metadata(&id);
            probes = (Some(m.health_address), Some(m.prometheus_address));
            outrigger_proxy::translate::parse_bootstrap(&yaml, false)
                .and_then(|b| outrigger_proxy::translate::translate_bootstrap(&b))
        }
        None => outrigger_proxy::app::load(cli.config.as_deref()),
    };
    let bootstrap = match bootstrap {
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
        node_metadata,
        health_addr: probes.0,
        prometheus_addr: probes.1,
    };
    match outrigger_proxy::app::run(opts, bootstrap) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Polls the readiness endpoint with a plain HTTP/1.1 GET until 200 or the timeout.
fn wait_ready(addr: SocketAddr, timeout: Duration) -> ExitCode {
    use std::io::{Read, Write};
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let ok = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok().and_then(|mut s| {
            let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
            s.write_all(b"GET /healthz/ready HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").ok()?;
            let mut buf = [0u8; 64];
            let n = s.read(&mut buf).ok()?;
            Some(buf[..n].starts_with(b"HTTP/1.1 200"))
        });
        if ok == Some(true) {
            return ExitCode::SUCCESS;
        }
        if std::time::Instant::now() >= deadline {
            eprintln!("outrigger wait: {addr} not ready after {timeout:?}");
            return ExitCode::from(1);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
