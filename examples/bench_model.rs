//! Throughput of ferroserve's kernels on an ONNX model, measured the way
//! onnxruntime's peer script measures it (warm-up, then timed single runs;
//! median latency): one `key=value` line per (threads, batch).
//!
//! ```text
//! cargo run --release --example bench_model -- MODEL.onnx --threads 1,2 --batches 1,8,64 --secs 3
//! ```
//!
//! The model's first input gets pseudo-random floats in [0, 1); its first
//! dim is the batch, and any other dynamic dim is an error.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;

use ferroserve::graph::Dim;
use ferroserve::kernels::KernelRegistry;
use ferroserve::runtime::Plan;
use ferroserve::tensor::Tensor;

#[derive(Debug, Parser)]
struct Args {
    model: PathBuf,
    /// Comma-separated thread counts.
    #[arg(long, default_value = "1,2")]
    threads: String,
    /// Comma-separated batch sizes.
    #[arg(long, default_value = "1,8,64")]
    batches: String,
    /// Seconds of timed runs per configuration.
    #[arg(long, default_value_t = 3.0)]
    secs: f64,
}

fn list(s: &str) -> Result<Vec<usize>> {
    s.split(',').map(|x| x.trim().parse().with_context(|| format!("bad number {x:?}"))).collect()
}

fn main() -> Result<()> {
    let args = Args::parse();
    let graph = ferroserve::onnx::load_file(&args.model)?;
    let input = *graph.inputs.first().context("the model has no input")?;
    let output = *graph.outputs.first().context("the model has no output")?;
    let dims = graph.values[input].shape.clone().context("the input has no declared shape")?;
    let plan = Plan::new(graph, &KernelRegistry::with_all_ops())?;
    for threads in list(&args.threads)? {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build()?;
        for batch in list(&args.batches)? {
            let mut shape = Vec::with_capacity(dims.len());
            for (i, d) in dims.iter().enumerate() {
                shape.push(match d {
                    Dim::Known(n) if i > 0 => *n,
                    _ if i == 0 => batch,
                    _ => bail!("input dim {i} is dynamic; only the batch dim may be"),
                });
            }
            let n: usize = shape.iter().product();
            let mut seed = 0x9e3779b97f4a7c15u64;
            let data: Vec<f32> = (0..n)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    (seed >> 40) as f32 / (1u64 << 24) as f32
                })
                .collect();
            let x = Tensor::from_f32(shape, data)?;
            let run = || pool.install(|| plan.run(vec![(input, x.clone())], &[output]));
            let warm = Instant::now();
            let mut k = 0;
            while k < 3 || warm.elapsed() < Duration::from_millis(500) {
                run()?;
                k += 1;
            }
            let mut times = Vec::new();
            let start = Instant::now();
            while times.len() < 10 || start.elapsed().as_secs_f64() < args.secs {
                let t = Instant::now();
                run()?;
                times.push(t.elapsed().as_secs_f64());
            }
            times.sort_by(f64::total_cmp);
            let median = times[times.len() / 2];
            println!(
                "model={} threads={threads} batch={batch} runs={} median_ms={:.3} p10_ms={:.3} p90_ms={:.3} images_per_s={:.1}",
                args.model.display(),
                times.len(),
                median * 1e3,
                times[times.len() / 10] * 1e3,
                times[times.len() * 9 / 10] * 1e3,
                batch as f64 / median
            );
        }
    }
    Ok(())
}
