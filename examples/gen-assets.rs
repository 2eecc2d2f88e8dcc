//! Generates the .deb's man page and shell completions from the CLI definition, so they can
//! never disagree with `csagent --help`.
//!
//! ```sh
//! cargo run --example gen-assets -- OUTDIR
//! ```
//!
//! writes `OUTDIR/man/csagent.1` plus one page per subcommand (`csagent-run.1`, ...;
//! uncompressed, scripts/build-deb.sh gzips them), `OUTDIR/completions/csagent.bash`,
//! `OUTDIR/completions/_csagent` (zsh) and `OUTDIR/completions/csagent.fish`.
//! `[package.metadata.deb]` in Cargo.toml installs them.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::CommandFactory;
use clap_complete::Shell;
use clap_mangen::Man;
use clap_mangen::roff::{Roff, bold, italic, roman};

use csagent::cli::Cli;

const BIN: &str = "csagent";

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(out), None) = (args.next(), args.next()) else {
        eprintln!("usage: cargo run --example gen-assets -- OUTDIR");
        return ExitCode::from(2);
    };
    match generate(Path::new(&out)) {
        Ok(written) => {
            for path in written {
                println!("{}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gen-assets: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The CLI as the man pages and completions describe it: a one-line `about` for the NAME
/// line (the doc comment of `Cli` becomes the DESCRIPTION), and no `help` subcommand page
/// (as `clap_mangen::generate_to` does).
fn command() -> clap::Command {
    let cmd = Cli::command();
    let long = cmd
        .get_long_about()
        .or(cmd.get_about())
        .map(|s| s.to_string())
        .unwrap_or_default();
    let mut cmd = cmd
        .about("host agent that runs one code-server container per developer")
        .long_about(long)
        .disable_help_subcommand(true);
    cmd.build();
    cmd
}

/// Writes every asset under `out` and returns the paths written.
fn generate(out: &Path) -> Result<Vec<PathBuf>, String> {
    let man_dir = out.join("man");
    let completions = out.join("completions");
    for dir in [&man_dir, &completions] {
        // Start from empty directories so a renamed subcommand leaves no stale page behind.
        if dir.exists() {
            fs::remove_dir_all(dir).map_err(|e| format!("removing {}: {e}", dir.display()))?;
        }
        fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }

    let mut written = Vec::new();

    let cmd = command();
    let man_path = man_dir.join(format!("{BIN}.1"));
    let mut page = Vec::new();
    render_man(&cmd, &mut page).map_err(|e| format!("rendering {}: {e}", man_path.display()))?;
    write(&man_path, &page)?;
    written.push(man_path);
    // One page per subcommand: the main page's SUBCOMMANDS section refers to csagent-run(1), ...
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let man = Man::new(sub.clone())
            .manual("csagent manual")
            .source(source());
        let path = man_dir.join(man.get_filename());
        let mut page = Vec::new();
        man.render(&mut page)
            .map_err(|e| format!("rendering {}: {e}", path.display()))?;
        write(&path, &page)?;
        written.push(path);
    }

    for (shell, name) in [
        (Shell::Bash, format!("{BIN}.bash")),
        (Shell::Zsh, format!("_{BIN}")),
        (Shell::Fish, format!("{BIN}.fish")),
    ] {
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), BIN, &mut script);
        let path = completions.join(name);
        write(&path, &script)?;
        written.push(path);
    }
    Ok(written)
}

/// The footer's source field: name and version.
fn source() -> String {
    format!("{BIN} {}", env!("CARGO_PKG_VERSION"))
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    fs::write(path, bytes).map_err(|e| format!("writing {}: {e}", path.display()))
}

/// The page clap_mangen renders from the CLI (name, synopsis, description, options,
/// subcommands, version), then the sections an admin looks for that clap does not know:
/// exit status, files, systemd integration.
fn render_man(cmd: &clap::Command, w: &mut dyn Write) -> io::Result<()> {
    let man = Man::new(cmd.clone())
        .manual("csagent manual")
        .source(source());
    man.render_title(w)?;
    man.render_name_section(w)?;
    man.render_synopsis_section(w)?;
    man.render_description_section(w)?;
    man.render_options_section(w)?;
    man.render_subcommands_section(w)?;

    let mut roff = Roff::default();
    roff.control("SH", ["EXIT STATUS"]);
    for (code, meaning) in [
        ("0", "Success: converged, healthy, or the config is valid."),
        (
            "1",
            "Failure: a run failed (systemd restarts the agent), or status found something degraded.",
        ),
        (
            "2",
            "Invalid config: restarting does not help, an administrator must edit it (the unit's RestartPreventExitStatus). For status: the agent cannot be reached.",
        ),
    ] {
        roff.control("TP", [] as [&str; 0]);
        roff.text([bold(code)]);
        roff.text([roman(meaning)]);
    }

    roff.control("SH", ["FILES"]);
    for (path, meaning) in [
        (
            "/etc/csagent/config.toml",
            "The configuration (a conffile: edits survive upgrades). Every key is documented in the shipped file; unknown keys are rejected.",
        ),
        (
            "/var/lib/csagent",
            "Checkpoints and observed state; never secrets.",
        ),
        (
            "/run/csagent",
            "tmpfs: the control socket csagent.sock (group csagent, mode 0660) and the per-developer credential files.",
        ),
        (
            "/lib/systemd/system/csagent.service",
            "The systemd unit that runs csagent run.",
        ),
    ] {
        roff.control("TP", [] as [&str; 0]);
        roff.text([italic(path)]);
        roff.text([roman(meaning)]);
    }

    roff.control("SH", ["ENVIRONMENT"]);
    for (var, meaning) in [
        (
            "CSAGENT_CONFIG",
            "Config file to read when --config is not given.",
        ),
        ("RUST_LOG", "Log filter; overrides agent.log_level."),
        (
            "AWS_ENDPOINT_URL",
            "Send AWS calls to this endpoint (as aws.endpoint_url).",
        ),
    ] {
        roff.control("TP", [] as [&str; 0]);
        roff.text([bold(var)]);
        roff.text([roman(meaning)]);
    }

    roff.control("SH", ["NOTES"]);
    roff.text([roman(
        "systemd starts the agent as csagent.service. Apply config edits with csagent reload or systemctl reload csagent; check them first with csagent check-config. Stopping or removing the package never stops the developers' containers, unmounts the data volume or removes its fstab line.",
    )]);

    roff.control("SH", ["SEE ALSO"]);
    roff.text([
        bold("systemctl"),
        roman("(1), "),
        bold("journalctl"),
        roman("(1), "),
        bold("docker"),
        roman("(1)"),
    ]);
    roff.control("PP", [] as [&str; 0]);
    roff.text([
        roman("The configuration reference: "),
        italic("/usr/share/doc/csagent/README.md"),
        roman(" and the comments in the shipped config file."),
    ]);
    roff.to_writer(w)?;

    man.render_version_section(w)
}
