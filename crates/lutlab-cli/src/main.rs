//! `lutlab`: the command-line face of lutlab, for models and runs too big for a browser tab.

mod bench;
mod bench_pipeline;
mod eval;
mod export;
mod fisher;
mod generate;
mod hessian;
mod hessian_summary;
mod input_quant;
mod model;
mod model_transforms;
mod paths;
mod progress;
mod quantize;
mod quantize_budget;
mod quantize_hessian;
mod quantize_streamed;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "lutlab", version, about = "Quantization lab for language models: Fisher, k-means LUTs, packed eval")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process
enum Command {
    /// Perplexity of a model on a text file (HF strided protocol), on the GPU.
    Eval(eval::EvalArgs),
    /// Fisher information (sum of squared per-sample gradients) of the linear weights on a
    /// calibration text, on the GPU; writes safetensors with the model's tensor names.
    Fisher(fisher::FisherArgs),
    /// Hessians H = (2/N) Σ x xᵀ of every linear input on a calibration text, on the GPU;
    /// writes safetensors for `quantize --hessian`.
    Hessian(hessian::HessianArgs),
    /// Quantizes the linear weights (k-means LUTs, dense-and-sparse, uniform RTN, or GPTQ / LDLQ
    /// with Hessians); reports the
    /// error per layer, evaluates and/or writes the dequantized checkpoint.
    Quantize(quantize::QuantizeArgs),
    /// Writes a packed model (`quantize --packed`) back out as a plain Hugging Face checkpoint of
    /// its dequantized weights (loads in transformers).
    Export(export::ExportArgs),
    /// Continues a prompt with a model or a packed file (greedy or seeded sampling), on the GPU.
    Generate(generate::GenerateArgs),
    /// Benchmarks on the GPU: kernels (LUT GEMV/GEMM, dense, copy), the bit slider's re-quantization,
    /// and the whole pipeline (Fisher → k-means → pack → eval).
    Bench(bench::BenchArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Eval(args) => eval::run(args),
        Command::Fisher(args) => fisher::run(args),
        Command::Hessian(args) => hessian::run(args),
        Command::Quantize(args) => quantize::run(args),
        Command::Export(args) => export::run(args),
        Command::Generate(args) => generate::run(args),
        Command::Bench(args) => bench::run(args),
    };
    if let Err(error) = result {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}
