//! `infra`: prints the CloudFormation template (or, for tests, the agent config or user data),
//! or writes the parent and child templates into `--out-dir`.

use clap::{CommandFactory, Parser, error::ErrorKind};
use infra::cli::Cli;
use infra::{Format, Templates};
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match cli.settings() {
        Ok(s) => s,
        // Reported like clap's own errors: "error: --developers: must be 1..=100 (got 0)", exit 2.
        Err(e) => Cli::command()
            .error(ErrorKind::ValueValidation, e.to_string())
            .exit(),
    };
    let text = if cli.print_agent_config {
        infra::sample_agent_config(&settings)
    } else if cli.print_user_data {
        infra::sample_user_data(&settings)
    } else {
        let templates = infra::build(&settings);
        let parent = match infra::render(&templates.parent, cli.format, cli.compact) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        if let Err(e) = infra::limits::check(&templates, parent.len()) {
            Cli::command()
                .error(ErrorKind::ValueValidation, e.to_string())
                .exit();
        }
        match &cli.out_dir {
            Some(dir) => match write_templates(dir, &templates, &parent, cli.format) {
                Ok(summary) => summary,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            },
            None if !templates.children.is_empty() => Cli::command()
                .error(
                    ErrorKind::MissingRequiredArgument,
                    format!(
                        "--out-dir is required: {} hosts are a parent template and {} child templates",
                        templates.children.len() + 1,
                        templates.children.len()
                    ),
                )
                .exit(),
            None => parent,
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

/// Writes `template.json|yaml` and the children into `dir`; returns what it wrote, one file a
/// line (`path bytes resources`), for the caller to upload the children.
fn write_templates(
    dir: &Path,
    templates: &Templates,
    parent: &str,
    format: Format,
) -> Result<String, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let resources = |t: &serde_json::Value| t["Resources"].as_object().map_or(0, |m| m.len());
    let mut summary = String::new();
    let name = match format {
        Format::Json => "template.json",
        Format::Yaml => "template.yaml",
    };
    let mut files = vec![(
        name.to_string(),
        parent.to_string(),
        resources(&templates.parent),
    )];
    for c in &templates.children {
        let text = infra::render(&c.template, Format::Json, false).map_err(|e| e.to_string())?;
        files.push((c.file_name.clone(), text, resources(&c.template)));
    }
    for (name, text, count) in files {
        let path = dir.join(&name);
        std::fs::write(&path, &text).map_err(|e| format!("writing {}: {e}", path.display()))?;
        summary.push_str(&format!(
            "{} {} bytes {count} resources\n",
            path.display(),
            text.len()
        ));
    }
    Ok(summary)
}
