//! `outrigger-xds`: the control plane. Not implemented yet; it arrives with dynamic configuration.
use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!("outrigger-xds: not implemented yet (the control plane arrives with dynamic configuration)");
    ExitCode::from(2)
}
