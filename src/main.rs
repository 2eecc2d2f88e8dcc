use clap::Parser;

fn main() {
    let cli = csagent::cli::Cli::parse();
    std::process::exit(csagent::commands::dispatch(cli));
}
