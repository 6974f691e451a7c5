//! `lutlab`: the command-line face of lutlab, for models and runs too big for a browser tab.

mod eval;
mod paths;
mod progress;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "lutlab", version, about = "Quantization lab for language models: Fisher, k-means LUTs, packed eval")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Perplexity of a model on a text file (HF strided protocol), on the GPU.
    Eval(eval::EvalArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Eval(args) => eval::run(args),
    };
    if let Err(error) = result {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}
