//! The ONNX backend node tests against ferroserve's kernels.
//!
//! Reads the cases `scripts/gen_onnx_node_tests.py` writes (one directory per
//! case: `model.onnx` and `test_data_set_<i>/{input,output}_<j>.pb`), runs
//! every case whose operators are all registered, and compares each output
//! with the recorded one: rtol 1e-3 / atol 1e-7 for floats, exact for
//! integers, booleans and strings; every case runs on one thread and on two,
//! which must agree bit for bit. A case is skipped only when it needs an
//! element type the server does not have (float16, bfloat16, float8, int4,
//! ...), and every skip is printed with that reason. Cases of operators not
//! registered yet are counted as not run, by operator.
//!
//! `tests/conformance/known_failures.txt` lists the cases expected to fail,
//! each with its reason; the run fails on any other failure, and on a listed
//! case that now passes (so the list only shrinks).
//!
//! ```text
//! cargo run --release --example conformance -- target/onnx-node-tests [--filter SUBSTRING] [--verbose]
//! ```
//!
//! The last line reads `conformance: N passed, M failed, K skipped, U not run`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use prost::Message;

use ferroserve::kernels::KernelRegistry;
use ferroserve::proto::onnx::{ModelProto, TensorProto, tensor_proto};
use ferroserve::runtime::Plan;
use ferroserve::tensor::{Tensor, TensorData};

const RTOL: f64 = 1e-3;
const ATOL: f64 = 1e-7;

/// What became of one case.
enum Outcome {
    Passed,
    Failed(String),
    Skipped(String),
    NotRun(BTreeSet<String>),
}

/// The element types the server has; the ONNX numbers of the others name
/// the skip reason.
fn supported_elem_type(t: i32) -> Result<(), String> {
    use tensor_proto::DataType as T;
    match T::try_from(t) {
        Ok(T::Float | T::Double | T::Int32 | T::Int64 | T::Uint8 | T::Int8 | T::Bool | T::String) => Ok(()),
        Ok(other) => Err(format!("needs element type {}", other.as_str_name())),
        Err(_) => Err(format!("needs element type number {t}")),
    }
}

fn read_tensor(path: &Path) -> Result<TensorProto> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    TensorProto::decode(bytes.as_slice()).with_context(|| format!("decoding {}", path.display()))
}

/// Compares one output; `None` when it matches.
fn mismatch(got: &Tensor, want: &Tensor) -> Option<String> {
    if got.shape() != want.shape() {
        return Some(format!("shape {:?}, expected {:?}", got.shape(), want.shape()));
    }
    if got.dtype() != want.dtype() {
        return Some(format!("dtype {}, expected {}", got.dtype(), want.dtype()));
    }
    fn close(a: f64, e: f64) -> bool {
        (a.is_nan() && e.is_nan()) || a == e || (a - e).abs() <= ATOL + RTOL * e.abs()
    }
    fn first_bad<T: PartialEq + std::fmt::Debug>(a: &[T], e: &[T], ok: impl Fn(&T, &T) -> bool) -> Option<String> {
        let i = a.iter().zip(e).position(|(x, y)| !ok(x, y))?;
        Some(format!("element {i} is {:?}, expected {:?}", a[i], e[i]))
    }
    match (got.data(), want.data()) {
        (TensorData::Float(a), TensorData::Float(e)) => first_bad(a, e, |x, y| close(f64::from(*x), f64::from(*y))),
        (TensorData::Double(a), TensorData::Double(e)) => first_bad(a, e, |x, y| close(*x, *y)),
        (TensorData::Int32(a), TensorData::Int32(e)) => first_bad(a, e, |x, y| x == y),
        (TensorData::Int64(a), TensorData::Int64(e)) => first_bad(a, e, |x, y| x == y),
        (TensorData::UInt8(a), TensorData::UInt8(e)) => first_bad(a, e, |x, y| x == y),
        (TensorData::Int8(a), TensorData::Int8(e)) => first_bad(a, e, |x, y| x == y),
        (TensorData::Bool(a), TensorData::Bool(e)) => first_bad(a, e, |x, y| x == y),
        (TensorData::String(a), TensorData::String(e)) => first_bad(a, e, |x, y| x == y),
        _ => Some("element types differ".into()),
    }
}

/// Bit-for-bit equality of two runs' outputs (NaN equals NaN).
fn identical(a: &[Tensor], b: &[Tensor]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.shape() == y.shape()
                && match (x.data(), y.data()) {
                    (TensorData::Float(p), TensorData::Float(q)) => {
                        p.len() == q.len() && p.iter().zip(q).all(|(u, v)| u.to_bits() == v.to_bits())
                    }
                    (TensorData::Double(p), TensorData::Double(q)) => {
                        p.len() == q.len() && p.iter().zip(q).all(|(u, v)| u.to_bits() == v.to_bits())
                    }
                    (p, q) => p == q,
                }
        })
}

fn run_case(dir: &Path, registry: &KernelRegistry, pools: &[rayon::ThreadPool]) -> Result<Outcome> {
    let bytes = std::fs::read(dir.join("model.onnx"))?;
    let model = ModelProto::decode(bytes.as_slice()).context("decoding model.onnx")?;
    let graph = model.graph.as_ref().context("model.onnx has no graph")?;
    // Every node, subgraphs' included.
    fn all_nodes<'a>(
        g: &'a ferroserve::proto::onnx::GraphProto,
        out: &mut Vec<&'a ferroserve::proto::onnx::NodeProto>,
    ) {
        for n in &g.node {
            out.push(n);
            for a in &n.attribute {
                a.g.iter().chain(&a.graphs).for_each(|sub| all_nodes(sub, out));
            }
        }
    }
    let mut nodes = Vec::new();
    all_nodes(graph, &mut nodes);
    let missing: BTreeSet<String> = nodes
        .into_iter()
        .filter(|n| {
            !n.domain().is_empty()
                || !(registry.has_op(n.op_type()) || ferroserve::onnx::FOLDED_OPS.contains(&n.op_type()))
        })
        .map(
            |n| if n.domain().is_empty() { n.op_type().to_string() } else { format!("{}:{}", n.domain(), n.op_type()) },
        )
        .collect();
    if !missing.is_empty() {
        return Ok(Outcome::NotRun(missing));
    }
    for info in graph.input.iter().chain(&graph.output) {
        let elem = match info.r#type.as_ref().and_then(|t| t.value.as_ref()) {
            Some(ferroserve::proto::onnx::type_proto::Value::TensorType(t)) => t.elem_type(),
            _ => continue,
        };
        if let Err(reason) = supported_elem_type(elem) {
            return Ok(Outcome::Skipped(reason));
        }
    }
    let loaded = match ferroserve::onnx::load(&bytes) {
        Ok(g) => g,
        Err(e) => return Ok(Outcome::Failed(format!("load: {e}"))),
    };
    let input_ids: Vec<_> = graph.input.iter().map(|i| loaded.value_id(i.name())).collect();
    let output_ids: Vec<_> = graph.output.iter().map(|o| loaded.value_id(o.name())).collect();
    let plan = match Plan::new(loaded, registry) {
        Ok(p) => p,
        Err(e) => return Ok(Outcome::Failed(format!("plan: {e}"))),
    };
    let mut sets: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir() && p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("test_data_set_")))
        .collect();
    sets.sort();
    for set in sets {
        let mut feeds = Vec::new();
        for (j, id) in input_ids.iter().enumerate() {
            let path = set.join(format!("input_{j}.pb"));
            if !path.exists() {
                continue;
            }
            let Some(id) = id else {
                // An initializer given as an input: the graph holds it.
                continue;
            };
            match ferroserve::onnx::tensor_from_onnx(&read_tensor(&path)?) {
                Ok(t) => feeds.push((*id, t)),
                Err(e) => return Ok(Outcome::Skipped(format!("input {j}: {e}"))),
            }
        }
        let fetches: Vec<_> = match output_ids.iter().copied().collect::<Option<Vec<_>>>() {
            Some(f) => f,
            None => return Ok(Outcome::Failed("an output is not a value of the loaded graph".into())),
        };
        // The same run on one thread and on two must agree bit for bit:
        // kernels parallelise over independent outputs only.
        let mut runs = Vec::with_capacity(pools.len());
        for pool in pools {
            let feeds = feeds.clone();
            let run =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pool.install(|| plan.run(feeds, &fetches))));
            runs.push(match run {
                Ok(Ok(outputs)) => outputs,
                Ok(Err(e)) => return Ok(Outcome::Failed(format!("{}: run: {e}", set.display()))),
                Err(_) => return Ok(Outcome::Failed(format!("{}: a kernel panicked", set.display()))),
            });
        }
        let outputs = runs.swap_remove(0);
        if runs.iter().any(|other| !identical(other, &outputs)) {
            return Ok(Outcome::Failed(format!("{}: outputs differ between 1 and 2 threads", set.display())));
        }
        for (j, got) in outputs.iter().enumerate() {
            let want = ferroserve::onnx::tensor_from_onnx(&read_tensor(&set.join(format!("output_{j}.pb")))?)
                .map_err(|e| anyhow::anyhow!("output {j}: {e}"))?;
            let name = set.file_name().unwrap_or_default().to_string_lossy().into_owned();
            if let Some(why) = mismatch(got, &want) {
                return Ok(Outcome::Failed(format!("{name}: output {j}: {why}")));
            }
            // Load-time shape inference must agree with what the run made.
            if let Some(dims) = plan.inferred_shape(fetches[j])
                && (dims.len() != got.shape().len()
                    || dims.iter().zip(got.shape()).any(|(d, &n)| d.is_some_and(|d| d != n)))
            {
                return Ok(Outcome::Failed(format!(
                    "{name}: output {j}: shape inference said {dims:?} at load, the run made {:?}",
                    got.shape()
                )));
            }
        }
    }
    Ok(Outcome::Passed)
}

/// `case  # reason` lines; blank lines and whole-line comments are ignored.
fn known_failures(path: &Path) -> Result<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| match l.split_once('#') {
            Some((case, reason)) => (case.trim().to_string(), reason.trim().to_string()),
            None => (l.to_string(), String::new()),
        })
        .collect())
}

fn main() -> Result<ExitCode> {
    let mut args = std::env::args().skip(1);
    let mut dir = None;
    let mut filter = None;
    let mut verbose = false;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--filter" => filter = Some(args.next().context("--filter needs a value")?),
            "--verbose" => verbose = true,
            other if !other.starts_with('-') && dir.is_none() => dir = Some(PathBuf::from(other)),
            other => bail!("unexpected argument {other}; usage: conformance DIR [--filter SUBSTRING] [--verbose]"),
        }
    }
    let dir = dir.context("usage: conformance DIR [--filter SUBSTRING] [--verbose]")?;
    if !dir.join("ONNX_VERSION").is_file() {
        bail!(
            "{} holds no node tests; write them with `python scripts/gen_onnx_node_tests.py {}`",
            dir.display(),
            dir.display()
        );
    }
    let known_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/known_failures.txt");
    let known = known_failures(&known_path)?;
    let registry = KernelRegistry::with_all_ops();
    let pools = [1, 2]
        .map(|n| rayon::ThreadPoolBuilder::new().num_threads(n).build().context("building a thread pool"))
        .into_iter()
        .collect::<Result<Vec<_>>>()?;
    let mut cases: Vec<PathBuf> =
        std::fs::read_dir(&dir)?.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_dir()).collect();
    cases.sort();

    let (mut passed, mut failed, mut skipped, mut not_run) = (0, 0, 0, 0);
    let mut unexpected = Vec::new();
    let mut now_passing = Vec::new();
    let mut missing_ops: BTreeMap<String, usize> = BTreeMap::new();
    for case in &cases {
        let name = case.file_name().unwrap_or_default().to_string_lossy().into_owned();
        if filter.as_ref().is_some_and(|f| !name.contains(f.as_str())) {
            continue;
        }
        let outcome = run_case(case, &registry, &pools).unwrap_or_else(|e| Outcome::Failed(format!("{e:#}")));
        match outcome {
            Outcome::Passed => {
                passed += 1;
                if known.contains_key(&name) {
                    now_passing.push(name.clone());
                }
                if verbose {
                    println!("pass  {name}");
                }
            }
            Outcome::Failed(why) => {
                failed += 1;
                match known.get(&name) {
                    Some(reason) => println!("FAIL  {name}: {why} (known: {reason})"),
                    None => {
                        println!("FAIL  {name}: {why}");
                        unexpected.push(name.clone());
                    }
                }
            }
            Outcome::Skipped(reason) => {
                skipped += 1;
                println!("skip  {name}: {reason}");
            }
            Outcome::NotRun(ops) => {
                not_run += 1;
                for op in ops {
                    *missing_ops.entry(op).or_default() += 1;
                }
            }
        }
    }
    if !missing_ops.is_empty() {
        let list: Vec<String> = missing_ops.iter().map(|(op, n)| format!("{op} ({n})")).collect();
        println!("not run, operators not registered (cases): {}", list.join(", "));
    }
    for name in &now_passing {
        println!("STALE {name} passes but is listed in {}", known_path.display());
    }
    println!("conformance: {passed} passed, {failed} failed, {skipped} skipped, {not_run} not run");
    if unexpected.is_empty() && now_passing.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "conformance: {} unexpected failures, {} listed failures now passing",
            unexpected.len(),
            now_passing.len()
        );
        Ok(ExitCode::FAILURE)
    }
}
