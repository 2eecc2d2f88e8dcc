//! `infra`: prints the CloudFormation template (or, for tests, the agent config or user data).

use clap::{CommandFactory, Parser, error::ErrorKind};
use infra::cli::Cli;
use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match cli.settings() {
        Ok(s) => s,
        // Reported like clap's own errors: "error: --developers: must be 1..=64 (got 0)", exit 2.
        Err(e) => Cli::command()
            .error(ErrorKind::ValueValidation, e.to_string())
            .exit(),
    };
    let text = if cli.print_agent_config {
        infra::sample_agent_config(&settings)
    } else if cli.print_user_data {
        infra::sample_user_data(&settings)
    } else {
        let template = infra::build_template(&settings);
        match infra::render(&template, cli.format, cli.compact) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    };
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        // A closed pipe (`infra ... | head`) is not worth a panic.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: writing the output: {e}");
            ExitCode::FAILURE
        }
    }
}
