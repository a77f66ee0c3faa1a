//! Throughput of one model on ferroserve's kernels, measured the way
//! onnxruntime's peer script measures it: a warm-up of at least 0.5 s and 3
//! runs, then single runs timed for at least `--seconds` (and 10 runs); the
//! median run gives images/s, and GFLOP/s counts 2 x the multiply-adds of
//! Conv, Gemm and MatMul (fused and TensorFlow forms included), taken from
//! the shapes of one run. Every run makes a fresh
//! output. Prints one line:
//!
//! ```text
//! images_per_sec=<x> gflops=<y> median_ms=... p10_ms=... p90_ms=... runs=... mflop_per_image=... peak_rss_kb=...
//! ```
//!
//! ```text
//! cargo run --release --example model_bench -- --model MODEL --batch 8 --threads 2 --seconds 3 [--profile]
//! ```
//!
//! The model is an `.onnx` file, a SavedModel directory, or a version
//! directory holding either; it is loaded as the server loads it (the same
//! load-time passes), and its default signature's first input gets
//! pseudo-random floats in [0, 1), with the batch as its first dim.
//! `--profile` adds one `profile op=... ms_per_run=... share_pct=...` line
//! per operator and one per node (`op=Conv node=...`), from up to 200 more
//! runs.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;

use ferroserve::kernels::KernelRegistry;
use ferroserve::runtime::StepRun;
use ferroserve::servable::Servable;
use ferroserve::tensor::Tensor;

#[derive(Debug, Parser)]
struct Args {
    /// An `.onnx` file, a SavedModel directory, or a version directory.
    #[arg(long)]
    model: PathBuf,
    /// Images per run (the input's first dim).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Compute threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Seconds of timed runs.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Also print where the time goes, per operator.
    #[arg(long)]
    profile: bool,
}

fn load(path: &Path, registry: &KernelRegistry) -> Result<Servable> {
    let onnx =
        if path.is_file() { Some(path.to_path_buf()) } else { Some(path.join("model.onnx")).filter(|p| p.is_file()) };
    Ok(match onnx {
        Some(file) => Servable::load_onnx("bench", 1, &file, registry)?,
        None => Servable::load_saved_model("bench", 1, path, &["serve".to_string()], registry)?,
    })
}

fn input_for(shape: &[i64], batch: usize) -> Result<Tensor> {
    let mut dims = Vec::with_capacity(shape.len());
    for (i, &d) in shape.iter().enumerate() {
        dims.push(match d {
            _ if i == 0 => batch,
            d if d >= 0 => d as usize,
            _ => bail!("input dim {i} is dynamic; only the batch dim may be"),
        });
    }
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let data = (0..dims.iter().product())
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 40) as f32 / (1u64 << 24) as f32
        })
        .collect();
    Ok(Tensor::from_f32(dims, data)?)
}

/// Multiply-adds of one step: the kernel's own count where it keeps one
/// (Conv, TensorFlow's Conv2D and Conv3D, and their fused forms: output
/// elements before any pooling x input channels per group x kernel taps),
/// Gemm and MatMul as output elements x the reduction; 0 for every other
/// operator.
fn macs(step: &StepRun<'_>) -> u64 {
    if let Some(macs) = step.multiply_adds {
        return macs;
    }
    let product = |s: &[usize]| s.iter().product::<usize>() as u64;
    let (Some(y), Some(Some(a))) = (step.outputs.first(), step.inputs.first()) else { return 0 };
    match step.op {
        // A [m, k] (or its transpose) times B gives [m, n]: m·k·n is A's
        // size times n, whichever way A is stored.
        "Gemm" | "FusedGemm" => product(a.shape()) * y.shape().last().map_or(1, |&n| n as u64),
        // [..., m, k] x [..., k, n]; a 1-D A is one row.
        "MatMul" => product(y.shape()) * a.shape().last().map_or(1, |&k| k as u64),
        _ => 0,
    }
}

fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(str::to_string))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

fn main() -> Result<()> {
    // The allocator as the server sets it.
    ferroserve::runtime::tune_allocator();
    let args = Args::parse();
    let registry = KernelRegistry::with_all_ops();
    let servable = load(&args.model, &registry).with_context(|| format!("loading {}", args.model.display()))?;
    let (_, signature) = servable.signature("")?;
    let (_, input_spec) = signature.inputs.iter().next().context("the signature has no input")?;
    let (_, output_spec) = signature.outputs.iter().next().context("the signature has no output")?;
    let input = input_for(input_spec.shape.as_deref().context("the input has an unknown rank")?, args.batch)?;
    let (input_id, output_id) = (input_spec.value, output_spec.value);
    let plan = servable.plan();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(args.threads).build()?;
    let mut flop = 0u64;
    pool.install(|| {
        plan.run_profiled(vec![(input_id, input.clone())], &[output_id], &mut |step| flop += 2 * macs(step))
    })?;
    // The whole loop runs on one of the pool's threads, as onnxruntime's
    // session runs on its caller's: each run is timed from the call to its
    // result, without a handoff between threads (the server's cost of
    // reaching the pool belongs to the request path, not to the kernels).
    let times = pool.install(|| -> Result<Vec<f64>> {
        let run = || plan.run_borrowing(vec![], &[(input_id, &input)], &[output_id]);
        let warm = Instant::now();
        let mut runs = 0;
        while runs < 3 || warm.elapsed() < Duration::from_millis(500) {
            run()?;
            runs += 1;
        }
        let mut times = Vec::new();
        let started = Instant::now();
        while times.len() < 10 || started.elapsed().as_secs_f64() < args.seconds {
            let t = Instant::now();
            let out = run()?;
            times.push(t.elapsed().as_secs_f64());
            drop(out);
        }
        Ok(times)
    });
    let mut times = times?;
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let pct = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    println!(
        "images_per_sec={:.1} gflops={:.1} median_ms={:.3} p10_ms={:.3} p90_ms={:.3} runs={} mflop_per_image={:.3} batch={} threads={} peak_rss_kb={}",
        args.batch as f64 / median,
        flop as f64 / median / 1e9,
        median * 1e3,
        pct(0.1) * 1e3,
        pct(0.9) * 1e3,
        times.len(),
        flop as f64 / args.batch as f64 / 1e6,
        args.batch,
        args.threads,
        peak_rss_kb(),
    );
    if args.profile {
        // Totals per operator, then per node ("Conv node=conv1").
        let mut totals: Vec<(String, Duration)> = Vec::new();
        let mut add = |key: String, took: Duration| match totals.iter_mut().find(|(k, _)| *k == key) {
            Some((_, total)) => *total += took,
            None => totals.push((key, took)),
        };
        let profiled = times.len().min(200);
        for _ in 0..profiled {
            pool.install(|| {
                plan.run_profiled(vec![(input_id, input.clone())], &[output_id], &mut |step| {
                    add(step.op.to_string(), step.took);
                    add(format!("{} node={}", step.op, step.name), step.took);
                })
            })?;
        }
        let all: Duration = totals.iter().filter(|(k, _)| !k.contains(" node=")).map(|(_, d)| *d).sum();
        totals.sort_by_key(|(key, took)| (key.contains(" node="), std::cmp::Reverse(*took)));
        for (key, total) in totals {
            println!(
                "profile op={key} ms_per_run={:.3} share_pct={:.1}",
                total.as_secs_f64() * 1e3 / profiled as f64,
                100.0 * total.as_secs_f64() / all.as_secs_f64().max(1e-12)
            );
        }
    }
    Ok(())
}
