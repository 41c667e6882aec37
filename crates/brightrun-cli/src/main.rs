//! `brightrun`: the BrightRun client for terminals and scripts.

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "brightrun",
    version,
    about = "BrightRun LoRA training from the terminal"
)]
struct Cli {}

fn main() {
    let _ = Cli::parse();
}
