//! `outrigger-init`: traffic capture rules. Not implemented yet.
use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!("outrigger-init: not implemented yet (traffic capture arrives with sidecar mode)");
    ExitCode::from(2)
}
