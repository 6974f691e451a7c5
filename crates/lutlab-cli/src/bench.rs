//! `lutlab bench`: measurements on the GPU, printed as a table or one JSON object.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use lutlab_gpu::bench::{bench_gemm, bench_kernels, timing_method, KernelTiming};
use lutlab_gpu::requantize_bench::{bench_requantize, RequantizeTiming};
use lutlab_model::open_gpu;

#[derive(Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    what: BenchKind,
}

#[derive(Subcommand)]
enum BenchKind {
    /// Linear layers: one token (LUT GEMV at each bit width beside dense f32 and f16 GEMV), many
    /// tokens (LUT GEMM beside burn's dense matmul), and a copy as the memory-bandwidth ceiling.
    Kernels(KernelArgs),
    /// The page's bit slider: Fisher-weighted k-means of one layer on the GPU (quantize_layer_gpu)
    /// at each bit width, beside one CPU reference run.
    Requantize(RequantizeArgs),
    /// The whole path in one process: Fisher → Fisher-weighted k-means → pack → packed
    /// perplexity through the LUT kernels, each phase timed, beside the dense model's perplexity.
    Pipeline(crate::bench_pipeline::PipelineArgs),
    /// burn's own kernels at GPT-2's evaluation shapes: each cubek matmul routine that needs no
    /// cooperative-matrix hardware beside burn's default, and flash attention beside the separate
    /// kernels the model runs.
    ModelOps {
        #[arg(long, default_value_t = 20)]
        iters: usize,
        #[arg(long)]
        json: bool,
    },
    /// A streamed model's block reads: each block read from the checkpoint and uploaded (widened
    /// to f32 on the GPU) as Fisher, evaluation and quantization do for a model larger than the
    /// GPU, `--rounds` times over the blocks (the first round reads from disk or the page cache
    /// as it finds them). `LUTLAB_PROFILE=1` adds the host's share.
    Stream(StreamArgs),
    /// A text file through a model's tokenizer: in one call on one thread, and in the pieces
    /// `encode` cuts it into on every core (the ids checked equal), best of `--rounds` each.
    Tokenize(TokenizeArgs),
}

#[derive(Args)]
struct TokenizeArgs {
    /// A model folder (tokenizer.json, or vocab.json + merges.txt).
    #[arg(long)]
    model: std::path::PathBuf,
    /// The text file.
    #[arg(long)]
    data: std::path::PathBuf,
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct StreamArgs {
    /// A model folder (config.json, safetensors).
    #[arg(long)]
    model: std::path::PathBuf,
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct RequantizeArgs {
    /// The layer's shape IN x OUT (Conv1D layout).
    #[arg(long, default_value = "768x3072")]
    shape: String,
    #[arg(long, default_value = "2,3,4")]
    bits: String,
    /// tensor, channel or group:G.
    #[arg(long, default_value = "channel")]
    granularity: String,
    /// Timed runs per bit width (after one untimed warm-up).
    #[arg(long, default_value_t = 5)]
    iters: usize,
    /// Skip the CPU reference run.
    #[arg(long)]
    no_cpu: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct KernelArgs {
    /// Weight shapes IN x OUT (Conv1D layout), comma-separated.
    #[arg(long, default_value = "768x2304,768x3072,3072x768,4096x4096,4096x11008,11008x4096")]
    shapes: String,
    /// Bit widths of the LUT GEMV.
    #[arg(long, default_value = "2,3,4")]
    bits: String,
    /// Dispatches per timed submit.
    #[arg(long, default_value_t = 200)]
    iters: usize,
    /// Size of the buffer copied for the bandwidth ceiling, in MiB.
    #[arg(long, default_value_t = 256)]
    copy_mib: u64,
    /// Workgroups the GEMV aims for when it splits the input rows (default: the model's choice).
    #[arg(long)]
    gemv_workgroups: Option<usize>,
    /// Columns each lane of the LUT GEMV multiplies: 1, 2 or 4 (default: the model's choice).
    #[arg(long)]
    gemv_cols_per_lane: Option<usize>,
    /// Tokens of the GEMM (prefill, evaluation); 0 skips it.
    #[arg(long, default_value_t = 512)]
    gemm_tokens: usize,
    /// A smoke run for CI: one small shape, 4-bit, few iterations.
    #[arg(long)]
    quick: bool,
    #[arg(long)]
    json: bool,
}

pub fn run(args: BenchArgs) -> Result<()> {
    match args.what {
        BenchKind::Kernels(args) => kernels(args),
        BenchKind::Requantize(args) => requantize(args),
        BenchKind::Pipeline(args) => crate::bench_pipeline::run(args),
        BenchKind::ModelOps { iters, json } => model_ops(iters.max(1), json),
        BenchKind::Stream(args) => stream(args),
        BenchKind::Tokenize(args) => tokenize(args),
    }
}

fn tokenize(args: TokenizeArgs) -> Result<()> {
    use lutlab_core::{ModelFiles, TextTokenizer};
    let tokenizer = TextTokenizer::from_files(&ModelFiles::read_tokenizer(&args.model)?)?;
    let text = lutlab_core::files::read_text(&args.data)?;
    let best = |encode: &dyn Fn() -> lutlab_core::Result<Vec<u32>>| -> Result<(f64, Vec<u32>)> {
        let mut runs = Vec::new();
        for _ in 0..args.rounds.max(1) {
            let start = std::time::Instant::now();
            let ids = encode()?;
            runs.push((start.elapsed().as_secs_f64(), ids));
        }
        runs.into_iter().min_by(|a, b| a.0.total_cmp(&b.0)).context("no rounds")
    };
    let (whole_seconds, whole) = best(&|| tokenizer.encode_in_one_piece(&text))?;
    let (pieces_seconds, pieces) = best(&|| tokenizer.encode(&text))?;
    if whole != pieces {
        bail!("{}: the pieces gave other ids than the whole text (a bug in lutlab: please report it with the file)", args.data.display());
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "bytes": text.len(), "tokens": whole.len(), "cut": tokenizer.cuts_keep_tokens(), "threads": threads, "one_piece_seconds": whole_seconds, "pieces_seconds": pieces_seconds })
        );
    } else {
        println!(
            "{} bytes, {} tokens: one piece {whole_seconds:.3} s, in pieces on {threads} threads {pieces_seconds:.3} s ({:.2}x){}",
            text.len(),
            whole.len(),
            whole_seconds / pieces_seconds,
            if tokenizer.cuts_keep_tokens() { "" } else { " (this tokenizer is never cut)" }
        );
    }
    Ok(())
}

fn stream(args: StreamArgs) -> Result<()> {
    let gpu = pollster::block_on(open_gpu())?;
    let options = crate::model::StreamOptions { stream: true, no_stream: false };
    let (model, _) = crate::model::open_decoder(&args.model, &options, &gpu)?;
    let device = model.device();
    let block_bytes = model.config.block_linears().iter().map(|l| l.n_in * l.n_out).sum::<usize>();
    let mut rounds = Vec::new();
    for round in 0..args.rounds.max(1) {
        let (mut queued, mut total) = (0.0, 0.0);
        for i in 0..model.n_blocks() {
            let start = std::time::Instant::now();
            let block = model.block(i)?;
            queued += start.elapsed().as_secs_f64();
            device.sync().map_err(|e| anyhow::anyhow!("waiting for the GPU: {e:?}"))?;
            total += start.elapsed().as_secs_f64();
            drop(block);
        }
        let n = model.n_blocks() as f64;
        let row = serde_json::json!({ "round": round, "blocks": model.n_blocks(), "seconds_per_block": total / n, "host_seconds_per_block": queued / n,
            "f32_gb_per_s": (block_bytes * 4) as f64 * n / total / 1e9 });
        if !args.json {
            println!("round {round}: {:.3} s a block ({:.3} s until queued), {:.2} GB/s of f32 weights on the GPU", total / n, queued / n, row["f32_gb_per_s"].as_f64().unwrap_or(0.0));
        }
        rounds.push(row);
        lutlab_core::profile::report(&format!("round {round}"));
    }
    if args.json {
        println!("{}", serde_json::json!({ "device": gpu.describe(), "model": args.model, "block_weights": block_bytes, "rounds": rounds }));
    }
    Ok(())
}

fn requantize(args: RequantizeArgs) -> Result<()> {
    let (rows, cols) = parse_shape(&args.shape)?;
    let bits = parse_bits(&args.bits)?;
    let granularity = args.granularity.parse().map_err(|e| anyhow::anyhow!("--granularity: {e}"))?;
    if args.iters == 0 {
        bail!("--iters must be at least 1");
    }
    let gpu = pollster::block_on(open_gpu())?;
    let timings = pollster::block_on(bench_requantize(&gpu, rows, cols, &bits, granularity, args.iters, !args.no_cpu))?;
    if args.json {
        println!("{}", serde_json::json!({ "device": gpu.describe(), "iters": args.iters, "requantize": timings }));
    } else {
        print_requantize(&gpu.describe(), &timings);
    }
    Ok(())
}

fn print_requantize(device: &str, timings: &[RequantizeTiming]) {
    println!("{device} · one layer's Fisher-weighted k-means, wall clock per call (target: 200 ms)");
    println!("{:>12} {:>5} {:>12} {:>14} {:>12} {:>11}", "shape", "bits", "tables", "GPU median ms", "GPU min ms", "CPU ms");
    for t in timings {
        let min = t.gpu_ms.iter().copied().fold(f64::INFINITY, f64::min);
        let cpu = t.cpu_ms.map_or("-".to_string(), |ms| format!("{ms:.1}"));
        println!("{:>12} {:>5} {:>12} {:>14.1} {:>12.1} {:>11}", format!("{}x{}", t.rows, t.cols), t.bits, t.granularity, t.gpu_median_ms, min, cpu);
    }
}

fn model_ops(iters: usize, json: bool) -> Result<()> {
    let gpu = pollster::block_on(open_gpu())?;
    let timings = pollster::block_on(lutlab_gpu::bench::model_ops::bench_model_ops(&gpu, iters))?;
    if json {
        println!("{}", serde_json::json!({ "device": gpu.describe(), "iters": iters, "ops": timings }));
        return Ok(());
    }
    println!("{} · wall clock per call, {iters} calls", gpu.describe());
    for t in &timings {
        println!("{:<60} {:>16} {:>10.1} µs {:>7.2} TFLOP/s", t.op, t.shape, t.micros, t.tflops);
    }
    Ok(())
}

fn parse_bits(text: &str) -> Result<Vec<u32>> {
    let bits = text.split(',').map(|b| b.trim().parse::<u32>().with_context(|| format!("--bits: `{b}`"))).collect::<Result<Vec<_>>>()?;
    if let Some(b) = bits.iter().find(|b| !(1..=8).contains(*b)) {
        bail!("--bits: {b} is outside 1..8");
    }
    Ok(bits)
}

fn kernels(mut args: KernelArgs) -> Result<()> {
    if args.quick {
        (args.shapes, args.bits, args.iters, args.copy_mib, args.gemm_tokens) = ("256x512".into(), "4".into(), 3, 16, 64);
    }
    let shapes = args.shapes.split(',').map(parse_shape).collect::<Result<Vec<_>>>()?;
    let bits = args.bits.split(',').map(|b| b.trim().parse::<u32>().with_context(|| format!("--bits: `{b}`"))).collect::<Result<Vec<_>>>()?;
    if let Some(b) = bits.iter().find(|b| !(1..=8).contains(*b)) {
        bail!("--bits: {b} is outside 1..8");
    }
    if args.iters == 0 {
        bail!("--iters must be at least 1");
    }
    if let Some(n) = args.gemv_workgroups {
        lutlab_model::lut_linear::GEMV_TARGET_OVERRIDE.store(n.max(1), std::sync::atomic::Ordering::Relaxed);
    }
    if let Some(n) = args.gemv_cols_per_lane {
        if ![1, 2, 4].contains(&n) {
            bail!("--gemv-cols-per-lane: {n} is not 1, 2 or 4");
        }
        lutlab_model::lut_linear::GEMV_COLUMNS_PER_LANE_OVERRIDE.store(n, std::sync::atomic::Ordering::Relaxed);
    }
    let gpu = pollster::block_on(open_gpu())?;
    let mut timings = pollster::block_on(bench_kernels(&gpu, &shapes, &bits, args.copy_mib << 20, args.iters))?;
    if args.gemm_tokens > 0 {
        // A GEMM is thousands of times the work of a GEMV: fewer repetitions time it as well.
        let iters = args.iters.div_ceil(10).max(3);
        timings.extend(pollster::block_on(bench_gemm(&gpu, &shapes, &bits, args.gemm_tokens, iters))?);
    }
    if args.json {
        println!("{}", serde_json::json!({ "device": gpu.describe(), "timing": timing_method(&gpu), "iters": args.iters, "kernels": timings }));
    } else {
        print_table(&format!("{} · timed by {}", gpu.describe(), timing_method(&gpu)), &timings);
    }
    Ok(())
}

fn parse_shape(text: &str) -> Result<(usize, usize)> {
    let parse = |s: &str| s.trim().parse::<usize>().with_context(|| format!("--shapes: `{text}` is not IN x OUT"));
    match text.split_once('x') {
        Some((a, b)) if parse(a)? > 0 && parse(b)? > 0 => Ok((parse(a)?, parse(b)?)),
        _ => bail!("--shapes: `{text}` is not IN x OUT (positive numbers)"),
    }
}

/// Times and bandwidths, and each kernel's share of the copy ceiling.
fn print_table(device: &str, timings: &[KernelTiming]) {
    let ceiling = timings.iter().find(|t| t.kernel == "copy").map_or(0.0, |t| t.gb_per_s);
    println!("{device}");
    println!("{:<22} {:>18} {:>10} {:>10} {:>9} {:>9} {:>7}", "kernel", "tokens x shape", "µs", "GB/s", "of copy", "TFLOP/s", "layers");
    for t in timings {
        // The copies' rows (no tokens) name their buffer's size: each byte is read and written.
        let shape = match (t.tokens, t.bytes / 2) {
            (0, size) if size >= 1_000_000 => format!("{} MB", size / 1_000_000),
            (0, size) => format!("{} kB", size / 1_000),
            _ => format!("{} x {}x{}", t.tokens, t.rows, t.cols),
        };
        println!(
            "{:<22} {:>18} {:>10.2} {:>10.0} {:>8.0}% {:>9.2} {:>7}",
            t.kernel,
            shape,
            t.micros,
            t.gb_per_s,
            100.0 * t.gb_per_s / ceiling.max(1e-9),
            t.tflops,
            t.rotated_layers
        );
    }
}
