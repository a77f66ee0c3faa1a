//! Throughput of ferroserve's kernels on ONNX models or TensorFlow
//! SavedModels, measured the way onnxruntime's peer script measures it
//! (warm-up, then timed single runs; median latency): one `key=value` line
//! per model and (threads, batch).
//!
//! ```text
//! cargo run --release --example bench_model -- MODEL.onnx --threads 1,2 --batches 1,8,64 --secs 3
//! cargo run --release --example bench_model -- examples/models/mnist/1/model.onnx examples/models/mnist_savedmodel/1
//! ```
//!
//! A model is an `.onnx` file or a SavedModel version directory (its
//! `serving_default` signature). With several models, their timed runs are
//! interleaved in short rounds, so drift of a shared machine hits them alike,
//! and a `ratio_to_first=` line compares each median with the first model's.
//!
//! The model's first input gets pseudo-random floats in [0, 1); its first
//! dim is the batch, and any other dynamic dim is an error.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;

use ferroserve::graph::{Dim, ValueId};
use ferroserve::kernels::KernelRegistry;
use ferroserve::runtime::Plan;
use ferroserve::tensor::Tensor;

#[derive(Debug, Parser)]
struct Args {
    /// `.onnx` files or SavedModel directories.
    #[arg(required = true)]
    models: Vec<PathBuf>,
    /// Comma-separated thread counts.
    #[arg(long, default_value = "1,2")]
    threads: String,
    /// Comma-separated batch sizes.
    #[arg(long, default_value = "1,8,64")]
    batches: String,
    /// Seconds of timed runs per model and configuration.
    #[arg(long, default_value_t = 3.0)]
    secs: f64,
}

fn list(s: &str) -> Result<Vec<usize>> {
    s.split(',').map(|x| x.trim().parse().with_context(|| format!("bad number {x:?}"))).collect()
}

/// A loaded model: its plan, the input it feeds and the output it fetches.
struct Model {
    path: PathBuf,
    plan: Plan,
    input: ValueId,
    output: ValueId,
    dims: Vec<Dim>,
}

fn load(path: &Path, registry: &KernelRegistry) -> Result<Model> {
    let (mut graph, input, output) = if path.is_dir() {
        let imported = ferroserve::savedmodel::import::import(path, &["serve".to_string()])?;
        let signature = imported.signatures.get("serving_default").context("no serving_default signature")?;
        let input = signature.inputs.values().find_map(|t| t.value).context("serving_default has no input")?;
        let output = signature.outputs.values().find_map(|t| t.value).context("serving_default has no output")?;
        (imported.graph, input, output)
    } else {
        let graph = ferroserve::onnx::load_file(path)?;
        let input = *graph.inputs.first().context("the model has no input")?;
        let output = *graph.outputs.first().context("the model has no output")?;
        (graph, input, output)
    };
    ferroserve::runtime::fold_constants(&mut graph, registry);
    let dims = graph.values[input].shape.clone().context("the input has no declared shape")?;
    Ok(Model { path: path.to_path_buf(), plan: Plan::new(graph, registry)?, input, output, dims })
}

fn input_for(model: &Model, batch: usize) -> Result<Tensor> {
    let mut shape = Vec::with_capacity(model.dims.len());
    for (i, d) in model.dims.iter().enumerate() {
        shape.push(match d {
            Dim::Known(n) if i > 0 => *n,
            _ if i == 0 => batch,
            _ => bail!("input dim {i} of {} is dynamic; only the batch dim may be", model.path.display()),
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
    Ok(Tensor::from_f32(shape, data)?)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let registry = KernelRegistry::with_all_ops();
    let models: Vec<Model> = args.models.iter().map(|p| load(p, &registry)).collect::<Result<_>>()?;
    const ROUND: Duration = Duration::from_millis(250);
    for threads in list(&args.threads)? {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build()?;
        for batch in list(&args.batches)? {
            let inputs: Vec<Tensor> = models.iter().map(|m| input_for(m, batch)).collect::<Result<_>>()?;
            let run = |k: usize| {
                let m = &models[k];
                pool.install(|| m.plan.run(vec![(m.input, inputs[k].clone())], &[m.output]))
            };
            for k in 0..models.len() {
                let warm = Instant::now();
                let mut runs = 0;
                while runs < 3 || warm.elapsed() < Duration::from_millis(500) {
                    run(k)?;
                    runs += 1;
                }
            }
            let mut times: Vec<Vec<f64>> = vec![Vec::new(); models.len()];
            let mut spent = vec![0.0f64; models.len()];
            while spent.iter().any(|&s| s < args.secs) || times.iter().any(|t| t.len() < 10) {
                for k in 0..models.len() {
                    let round = Instant::now();
                    while round.elapsed() < ROUND || times[k].len() < 10 {
                        let t = Instant::now();
                        run(k)?;
                        times[k].push(t.elapsed().as_secs_f64());
                        if round.elapsed() >= ROUND {
                            break;
                        }
                    }
                    spent[k] += round.elapsed().as_secs_f64();
                }
            }
            let mut medians = Vec::new();
            for (model, t) in models.iter().zip(&mut times) {
                t.sort_by(f64::total_cmp);
                let median = t[t.len() / 2];
                medians.push(median);
                println!(
                    "model={} threads={threads} batch={batch} runs={} median_ms={:.3} p10_ms={:.3} p90_ms={:.3} images_per_s={:.1}",
                    model.path.display(),
                    t.len(),
                    median * 1e3,
                    t[t.len() / 10] * 1e3,
                    t[t.len() * 9 / 10] * 1e3,
                    batch as f64 / median
                );
            }
            for (model, median) in models.iter().zip(&medians).skip(1) {
                println!(
                    "model={} threads={threads} batch={batch} ratio_to_first={:.3}",
                    model.path.display(),
                    median / medians[0]
                );
            }
        }
    }
    Ok(())
}
