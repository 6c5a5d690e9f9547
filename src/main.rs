//! The `shears` binary: parse arguments, call the library, map errors to exit codes
//! (0 ok, 1 a gate failed, 2 error).

use std::process::ExitCode;

use clap::Parser;

mod cli;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            match cli::flag_hint(&err) {
                Some(hint) => cli::diagnostic(format_args!("error: {err:#}; {hint}")),
                None => cli::diagnostic(format_args!("error: {err:#}")),
            }
            if err.downcast_ref::<shears::GateFailed>().is_some() {
                ExitCode::from(1)
            } else {
                ExitCode::from(2)
            }
        }
    }
}

/// A reader that closed our stdout early (`shears inspect m.onnx | head`) is not an error.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
