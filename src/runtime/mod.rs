//! A loaded model as an execution plan: the graph's nodes turned into
//! kernels once, at load time, and run in order for each request.
//!
//! A [`Plan`] is immutable and shared by all requests; each run keeps its
//! intermediate values in its own slots and frees each one after its last
//! use. Runs are synchronous: the caller decides on which thread pool they
//! happen (the server uses the compute pool, never an async worker).

mod control;
mod infer;
mod optimize;

use std::collections::HashMap;

pub use control::register as register_control_flow;
pub use infer::{DimRule, InputRule, ShapeError};
pub use optimize::optimize;

use crate::graph::{Graph, ValueId, ValueInfo};
use crate::kernels::{BuildError, Kernel, KernelError, KernelRegistry};
use crate::tensor::Tensor;

/// One node of the plan: its kernel and where its operands live.
#[derive(Debug)]
struct Step {
    name: String,
    op: String,
    kernel: Box<dyn Kernel>,
    inputs: Vec<Option<ValueId>>,
    outputs: Vec<ValueId>,
    /// Values no later step reads, freed right after this one.
    frees: Vec<ValueId>,
}

/// Receives each step of a profiled run as it finishes.
pub type StepReport<'a> = dyn FnMut(&StepRun<'_>) + 'a;

/// One step of a profiled run: the node, the time its kernel took, and its
/// operands and results.
#[derive(Debug, Clone, Copy)]
pub struct StepRun<'a> {
    pub op: &'a str,
    pub name: &'a str,
    pub took: std::time::Duration,
    pub inputs: &'a [Option<&'a Tensor>],
    pub outputs: &'a [Tensor],
    /// The kernel's own count of its multiply-adds, where it keeps one
    /// ([`Kernel::multiply_adds`](crate::kernels::Kernel::multiply_adds)).
    pub multiply_adds: Option<u64>,
}

/// Why a graph could not become a plan.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error("node '{node}' reads value '{value}' before any node produces it (the graph must be topologically sorted)")]
    NotSorted { node: String, value: String },
    #[error("graph output '{0}' is produced by no node, input or constant")]
    DanglingOutput(String),
    #[error(transparent)]
    Shape(#[from] ShapeError),
}

/// A failure while running a plan.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RunError {
    #[error("node '{node}' ({op}) failed: {source}")]
    Kernel { node: String, op: String, source: KernelError },
    #[error("node '{node}' ({op}) returned {actual} outputs, expected {expected}")]
    OutputCount { node: String, op: String, expected: usize, actual: usize },
    #[error("graph input '{0}' was not fed")]
    NotFed(String),
    /// A fed tensor does not fit what the graph needs of that input.
    #[error("{0}")]
    Input(String),
}

/// An executable model.
#[derive(Debug)]
pub struct Plan {
    values: Vec<ValueInfo>,
    constants: HashMap<ValueId, Tensor>,
    steps: Vec<Step>,
    inputs: Vec<ValueId>,
    outputs: Vec<ValueId>,
    /// Load-time shape inference: a shape per value where known.
    shapes: Vec<Option<Vec<Option<usize>>>>,
    /// What the graph fixes about the inputs, checked before every run.
    input_rules: Vec<InputRule>,
}

impl Plan {
    /// Builds a kernel for every node and checks the graph's wiring.
    ///
    /// # Errors
    /// When a node's operator is unsupported or misconfigured, a node reads
    /// a value that no earlier node, input or constant provides, or shape
    /// inference finds that the graph can never run.
    pub fn new(graph: Graph, registry: &KernelRegistry) -> Result<Plan, PlanError> {
        Plan::build(graph, registry, false)
    }

    /// A plan for a control-flow subgraph: its feeds are not checked
    /// against its declared input shapes (a loop-carried value may change
    /// shape from one iteration to the next).
    ///
    /// # Errors
    /// As [`Plan::new`].
    pub fn new_subgraph(graph: Graph, registry: &KernelRegistry) -> Result<Plan, PlanError> {
        Plan::build(graph, registry, true)
    }

    fn build(graph: Graph, registry: &KernelRegistry, subgraph: bool) -> Result<Plan, PlanError> {
        let mut available = vec![false; graph.values.len()];
        for &id in graph.inputs.iter().chain(graph.constants.keys()) {
            available[id] = true;
        }
        let mut steps = Vec::with_capacity(graph.nodes.len());
        for node in &graph.nodes {
            for &id in node.inputs.iter().flatten() {
                if !available[id] {
                    return Err(PlanError::NotSorted { node: node.name.clone(), value: graph.values[id].name.clone() });
                }
            }
            let kernel = registry.build_with_constants(node, graph.opset, Some(&graph.constants))?;
            for &id in &node.outputs {
                available[id] = true;
            }
            steps.push(Step {
                name: node.name.clone(),
                op: node.op.clone(),
                kernel,
                inputs: node.inputs.clone(),
                outputs: node.outputs.clone(),
                frees: Vec::new(),
            });
        }
        for &id in &graph.outputs {
            if !available[id] {
                return Err(PlanError::DanglingOutput(graph.values[id].name.clone()));
            }
        }
        // Free each computed value after the last step that reads it; graph
        // outputs and constants are never freed.
        let mut last_use: HashMap<ValueId, usize> = HashMap::new();
        for (i, step) in steps.iter().enumerate() {
            for &id in step.inputs.iter().flatten() {
                last_use.insert(id, i);
            }
        }
        for (id, i) in last_use {
            if !graph.constants.contains_key(&id) && !graph.outputs.contains(&id) {
                steps[i].frees.push(id);
            }
        }
        let inferred = infer::infer(&graph, graph.opset)?;
        Ok(Plan {
            shapes: inferred.shapes,
            input_rules: if subgraph { Vec::new() } else { inferred.inputs },
            values: graph.values,
            constants: graph.constants,
            steps,
            inputs: graph.inputs,
            outputs: graph.outputs,
        })
    }

    /// What is declared about each value.
    pub fn value_info(&self, id: ValueId) -> &ValueInfo {
        &self.values[id]
    }

    /// The shape load-time inference gave a value: `None` for an unknown
    /// rank, and `None` for each dim known only at run time.
    pub fn inferred_shape(&self, id: ValueId) -> Option<&[Option<usize>]> {
        self.shapes.get(id)?.as_deref()
    }

    /// What the graph fixes about its inputs' dims.
    pub fn input_rules(&self) -> &[InputRule] {
        &self.input_rules
    }

    /// The values callers feed.
    pub fn inputs(&self) -> &[ValueId] {
        &self.inputs
    }

    /// The values callers may fetch.
    pub fn outputs(&self) -> &[ValueId] {
        &self.outputs
    }

    /// Runs the steps `fetches` depend on, with `feeds` (a tensor for each
    /// graph input those steps read), and returns the values of `fetches`,
    /// in that order.
    ///
    /// # Errors
    /// When a needed input is not fed, a fed shape does not fit what the graph
    /// needs (checked before any kernel runs), or a kernel fails.
    pub fn run(&self, feeds: Vec<(ValueId, Tensor)>, fetches: &[ValueId]) -> Result<Vec<Tensor>, RunError> {
        self.run_borrowing(feeds, &[], fetches)
    }

    /// [`Plan::run`] with some inputs lent rather than given (a loop body
    /// reads the enclosing graph's values on every iteration without
    /// copying them).
    ///
    /// # Errors
    /// As [`Plan::run`].
    pub fn run_borrowing(
        &self,
        feeds: Vec<(ValueId, Tensor)>,
        lent: &[(ValueId, &Tensor)],
        fetches: &[ValueId],
    ) -> Result<Vec<Tensor>, RunError> {
        self.run_inner(feeds, lent, fetches, None)
    }

    /// [`Plan::run`] that reports each step, with the time its kernel took
    /// and its operands and results (`model_bench`).
    ///
    /// # Errors
    /// As [`Plan::run`].
    pub fn run_profiled(
        &self,
        feeds: Vec<(ValueId, Tensor)>,
        fetches: &[ValueId],
        report: &mut StepReport<'_>,
    ) -> Result<Vec<Tensor>, RunError> {
        self.run_inner(feeds, &[], fetches, Some(report))
    }

    fn run_inner(
        &self,
        feeds: Vec<(ValueId, Tensor)>,
        lent: &[(ValueId, &Tensor)],
        fetches: &[ValueId],
        mut report: Option<&mut StepReport<'_>>,
    ) -> Result<Vec<Tensor>, RunError> {
        let shapes: Vec<(ValueId, &[usize])> =
            feeds.iter().map(|(id, t)| (*id, t.shape())).chain(lent.iter().map(|(id, t)| (*id, t.shape()))).collect();
        infer::check_feeds(&self.input_rules, &shapes).map_err(RunError::Input)?;
        // Only the steps the fetches depend on run, and only the inputs
        // they read must be fed (a graph serving several signatures runs
        // one signature's part).
        let mut needed = vec![false; self.values.len()];
        for &id in fetches {
            needed[id] = true;
        }
        let mut runs = vec![false; self.steps.len()];
        for (i, step) in self.steps.iter().enumerate().rev() {
            if step.outputs.iter().any(|&id| needed[id]) {
                runs[i] = true;
                for &id in step.inputs.iter().flatten() {
                    needed[id] = true;
                }
            }
        }
        let mut slots: Vec<Option<Tensor>> = Vec::new();
        slots.resize_with(self.values.len(), || None);
        for (id, t) in feeds {
            slots[id] = Some(t);
        }
        let lent_value = |id: ValueId| lent.iter().find(|(l, _)| *l == id).map(|(_, t)| *t);
        for &id in &self.inputs {
            if needed[id] && slots[id].is_none() && lent_value(id).is_none() {
                return Err(RunError::NotFed(self.values[id].name.clone()));
            }
        }
        for (step, _) in self.steps.iter().zip(&runs).filter(|(_, runs)| **runs) {
            let started = report.as_ref().map(|_| std::time::Instant::now());
            let failed = |source| RunError::Kernel { node: step.name.clone(), op: step.op.clone(), source };
            // A step that only reshapes its first input takes it, instead
            // of a copy, when the run owns it and no later step reads it.
            let movable = step.inputs.first().copied().flatten().filter(|&id| {
                step.outputs.len() == 1
                    && slots[id].is_some()
                    && step.frees.contains(&id)
                    && step.inputs[1..].iter().all(|&other| other != Some(id))
            });
            let mut view = None;
            let outputs = {
                let operands: Vec<Option<&Tensor>> = step
                    .inputs
                    .iter()
                    .map(|id| {
                        id.and_then(|id| self.constants.get(&id).or(slots[id].as_ref()).or_else(|| lent_value(id)))
                    })
                    .collect();
                if movable.is_some() {
                    view = step.kernel.view_shape(&operands);
                }
                let outputs = match view {
                    Some(_) => Vec::new(),
                    None => step.kernel.run(&operands).map_err(failed)?,
                };
                if let (Some(report), Some(started), None) = (report.as_mut(), started, &view) {
                    report(&StepRun {
                        op: &step.op,
                        name: &step.name,
                        took: started.elapsed(),
                        inputs: &operands,
                        outputs: &outputs,
                        multiply_adds: step.kernel.multiply_adds(&operands),
                    });
                }
                outputs
            };
            let outputs = match (view, movable) {
                (Some(shape), Some(id)) => {
                    let taken = slots[id].take().expect("checked above");
                    let moved = [taken.reshape(shape.map_err(failed)?).map_err(|e| failed(e.into()))?];
                    if let (Some(report), Some(started)) = (report.as_mut(), started) {
                        // The input moved into the output: there is no
                        // operand left to report.
                        let took = started.elapsed();
                        report(&StepRun {
                            op: &step.op,
                            name: &step.name,
                            took,
                            inputs: &[],
                            outputs: &moved,
                            multiply_adds: None,
                        });
                    }
                    Vec::from(moved)
                }
                _ => outputs,
            };
            if outputs.len() < step.outputs.len() {
                return Err(RunError::OutputCount {
                    node: step.name.clone(),
                    op: step.op.clone(),
                    expected: step.outputs.len(),
                    actual: outputs.len(),
                });
            }
            for (&id, t) in step.outputs.iter().zip(outputs) {
                slots[id] = Some(t);
            }
            for &id in &step.frees {
                slots[id] = None;
            }
        }
        // Outputs move out of their slots; only a value fetched twice (or a
        // constant, which the plan keeps) is copied.
        fetches
            .iter()
            .enumerate()
            .map(|(i, &id)| {
                let value = if let Some(c) = self.constants.get(&id).or_else(|| lent_value(id)) {
                    Some(c.clone())
                } else if fetches[i + 1..].contains(&id) {
                    slots[id].clone()
                } else {
                    slots[id].take()
                };
                value.ok_or_else(|| RunError::NotFed(self.values[id].name.clone()))
            })
            .collect()
    }
}

/// Bytes up to which glibc's malloc serves a block from its heap instead
/// of a fresh mapping (its own default moves between 128 KiB and 32 MiB).
const HEAP_BLOCK_BYTES: i32 = 32 << 20;

/// Free bytes glibc's malloc keeps at the top of its heap before it returns
/// them to the system.
const KEPT_FREE_BYTES: i32 = 64 << 20;

/// Sets glibc's malloc to keep a run's activation buffers between runs.
/// With its defaults, a plan's buffers of a few MB are trimmed from the heap
/// or unmapped when freed and faulted in afresh by the next run, which can
/// cost as much as the arithmetic (a batch of 64 MNIST images runs twice as
/// fast with this). The price is up to 64 MiB of freed memory kept; the
/// `MALLOC_TRIM_THRESHOLD_` and `MALLOC_MMAP_THRESHOLD_` environment
/// variables, when set, are left to decide instead. Call it once, before
/// the threads start.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let chosen = ["MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_"].iter().any(|v| std::env::var_os(v).is_some());
        if !chosen {
            // SAFETY: mallopt only sets the allocator's parameters.
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, HEAP_BLOCK_BYTES);
                libc::mallopt(libc::M_TRIM_THRESHOLD, KEPT_FREE_BYTES);
            }
        }
    }
}

/// The most elements a folded constant may have: folding must not turn a
/// small graph into a large one.
const MAX_FOLDED_ELEMENTS: usize = 1 << 22;

/// Computes at load time every node whose inputs are all constants (a
/// weight reshaped, a shape vector built from constants), replacing it
/// with its outputs, then drops the constants nothing reads any more.
/// Nodes that fail, or whose outputs would be large, stay in the graph;
/// control flow is never folded.
pub fn fold_constants(graph: &mut Graph, registry: &KernelRegistry) {
    let nodes = std::mem::take(&mut graph.nodes);
    for node in nodes {
        // Omitted optional inputs (Squeeze without axes) do not hold a
        // node back.
        let foldable = node.inputs.iter().any(Option::is_some)
            && node.inputs.iter().all(|i| i.is_none_or(|id| graph.constants.contains_key(&id)))
            && !node.attributes.values().any(|a| matches!(a, crate::graph::Attribute::Graph(_)));
        let folded = foldable
            .then(|| {
                let kernel = registry.build(&node, graph.opset).ok()?;
                let operands: Vec<Option<&Tensor>> =
                    node.inputs.iter().map(|i| i.and_then(|id| graph.constants.get(&id))).collect();
                let outputs = kernel.run(&operands).ok()?;
                (outputs.len() >= node.outputs.len() && outputs.iter().all(|t| t.len() <= MAX_FOLDED_ELEMENTS))
                    .then_some(outputs)
            })
            .flatten();
        match folded {
            Some(outputs) => {
                for (&id, t) in node.outputs.iter().zip(outputs) {
                    graph.values[id].dtype = Some(t.dtype());
                    graph.values[id].shape = Some(t.shape().iter().map(|&d| crate::graph::Dim::Known(d)).collect());
                    graph.constants.insert(id, t);
                }
            }
            None => graph.nodes.push(node),
        }
    }
    let mut read: std::collections::HashSet<ValueId> = graph.outputs.iter().copied().collect();
    read.extend(graph.nodes.iter().flat_map(|n| n.inputs.iter().flatten().copied()));
    graph.constants.retain(|id, _| read.contains(id));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{Dim, Node};
    use crate::tensor::DataType;

    fn value(name: &str) -> ValueInfo {
        ValueInfo {
            name: name.into(),
            dtype: Some(DataType::Float),
            shape: Some(vec![Dim::Unknown(None), Dim::Known(2)]),
        }
    }

    /// y = relu(x + b)
    fn tiny_graph() -> Graph {
        let mut g =
            Graph { values: vec![value("x"), value("b"), value("s"), value("y")], opset: 13, ..Graph::default() };
        g.constants.insert(1, Tensor::from_f32(vec![2], vec![1.0, -5.0]).unwrap());
        g.nodes.push(Node {
            name: "add".into(),
            op: "Add".into(),
            inputs: vec![Some(0), Some(1)],
            outputs: vec![2],
            attributes: HashMap::new(),
        });
        g.nodes.push(Node {
            name: "relu".into(),
            op: "Relu".into(),
            inputs: vec![Some(2)],
            outputs: vec![3],
            attributes: HashMap::new(),
        });
        g.inputs = vec![0];
        g.outputs = vec![3];
        g
    }

    #[test]
    fn runs_a_graph_and_frees_intermediates() {
        let plan = Plan::new(tiny_graph(), &KernelRegistry::with_all_ops()).unwrap();
        assert_eq!(plan.steps[1].frees, vec![2]);
        let x = Tensor::from_f32(vec![2, 2], vec![1.0, 2.0, 3.0, 4.0]).unwrap();
        let out = plan.run(vec![(0, x.clone())], &[3]).unwrap();
        assert_eq!(out[0].as_f32().unwrap(), &[2.0, 0.0, 4.0, 0.0]);
        let twice = plan.run(vec![(0, x)], &[3, 3, 1]).unwrap();
        assert_eq!(twice[0], twice[1], "a value fetched twice comes back twice");
        assert_eq!(twice[2].as_f32().unwrap(), &[1.0, -5.0], "constants can be fetched");
    }

    #[test]
    fn a_reshape_takes_its_input_when_nothing_else_reads_it() {
        // y = reshape(relu(x + b), spec), with the sum also fetched in the
        // second graph.
        let reshaped = |spec: Vec<i64>, sum_is_output: bool| {
            let mut g = tiny_graph();
            g.values.push(value("spec"));
            g.values.push(ValueInfo { name: "flat".into(), dtype: Some(DataType::Float), shape: None });
            g.constants.insert(4, Tensor::from_i64(vec![spec.len()], spec).unwrap());
            g.nodes.push(Node {
                name: "reshape".into(),
                op: "Reshape".into(),
                inputs: vec![Some(3), Some(4)],
                outputs: vec![5],
                attributes: HashMap::new(),
            });
            g.outputs = if sum_is_output { vec![5, 3] } else { vec![5] };
            Plan::new(g, &KernelRegistry::with_all_ops()).unwrap()
        };
        let x = Tensor::from_f32(vec![2, 2], vec![1.0, 2.0, 3.0, 4.0]).unwrap();
        let reported = |plan: &Plan, fetches: &[ValueId]| {
            let mut operands = None;
            let out = plan
                .run_profiled(vec![(0, x.clone())], fetches, &mut |step| {
                    if step.op == "Reshape" {
                        operands = Some(step.inputs.len());
                    }
                })
                .unwrap();
            (out, operands.unwrap())
        };
        // Moved: the step reports no operands (they became its output).
        let (out, operands) = reported(&reshaped(vec![4], false), &[5]);
        assert_eq!((out[0].shape(), out[0].as_f32().unwrap()), (&[4][..], &[2.0, 0.0, 4.0, 0.0][..]));
        assert_eq!(operands, 0);
        // Copied: the relu's output is also a graph output.
        let (out, operands) = reported(&reshaped(vec![1, 4], true), &[5, 3]);
        assert_eq!(out[0].shape(), [1, 4]);
        assert_eq!(out[1].as_f32().unwrap(), &[2.0, 0.0, 4.0, 0.0]);
        assert_eq!(operands, 2);
        // A bad shape fails the same way on either path.
        let err = reshaped(vec![3], false).run(vec![(0, x.clone())], &[5]).unwrap_err().to_string();
        assert!(err.contains("node 'reshape' (Reshape) failed: cannot reshape [2, 2] (4 elements) to [3]"), "{err}");
        let err = reshaped(vec![3], true).run(vec![(0, x.clone())], &[5, 3]).unwrap_err().to_string();
        assert!(err.contains("node 'reshape' (Reshape) failed: cannot reshape [2, 2] (4 elements) to [3]"), "{err}");
    }

    #[test]
    fn kernel_failures_name_the_node() {
        let plan = Plan::new(tiny_graph(), &KernelRegistry::with_all_ops()).unwrap();
        let x = Tensor::from_f32(vec![3], vec![1.0, 2.0, 3.0]).unwrap();
        let err = plan.run(vec![(0, x.clone())], &[3]).unwrap_err();
        assert_eq!(err, RunError::Input("input 'x' has shape [3], but the model needs rank 2".into()));
        // Without a declared shape, nothing is checked before the kernels.
        let mut g = tiny_graph();
        g.values[0].shape = None;
        let plan = Plan::new(g, &KernelRegistry::with_all_ops()).unwrap();
        let err = plan.run(vec![(0, x)], &[3]).unwrap_err();
        assert!(err.to_string().starts_with("node 'add' (Add) failed:"), "{err}");
        assert_eq!(plan.run(vec![], &[3]).unwrap_err(), RunError::NotFed("x".into()));
    }

    #[test]
    fn only_the_steps_a_fetch_needs_run() {
        // Two independent branches: y = relu(x + b) and z = relu(w).
        let mut g = tiny_graph();
        g.values.push(value("w"));
        g.values.push(value("z"));
        g.nodes.push(Node {
            name: "other".into(),
            op: "Relu".into(),
            inputs: vec![Some(4)],
            outputs: vec![5],
            attributes: HashMap::new(),
        });
        g.inputs.push(4);
        g.outputs.push(5);
        let plan = Plan::new(g, &KernelRegistry::with_all_ops()).unwrap();
        let w = Tensor::from_f32(vec![1, 2], vec![-1.0, 3.0]).unwrap();
        let out = plan.run(vec![(4, w.clone())], &[5]).unwrap();
        assert_eq!(out[0].as_f32().unwrap(), &[0.0, 3.0], "x is not needed for z");
        assert_eq!(plan.run(vec![(4, w)], &[3]).unwrap_err(), RunError::NotFed("x".into()));
    }

    #[test]
    fn unsorted_graphs_and_unknown_ops_fail_to_plan() {
        let mut g = tiny_graph();
        g.nodes.swap(0, 1);
        assert!(matches!(Plan::new(g, &KernelRegistry::with_all_ops()), Err(PlanError::NotSorted { .. })));
        let mut g = tiny_graph();
        g.nodes[1].op = "Mystery".into();
        let err = Plan::new(g, &KernelRegistry::with_all_ops()).unwrap_err();
        assert!(err.to_string().contains("'Mystery'"), "{err}");
    }
}
