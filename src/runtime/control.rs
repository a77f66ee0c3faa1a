//! Control flow: Loop, Scan and If, whose subgraphs run as plans of their
//! own.
//!
//! A subgraph's inputs are the operator's formal ones followed by the
//! enclosing graph's values it reads (the importer passes those as the
//! node's extra inputs, in the same order); they are lent to the subgraph
//! on every run, not copied.

use super::Plan;
use crate::graph::{Graph, ValueId};
use crate::kernels::{BuildContext, BuildError, Kernel, KernelError, KernelRegistry, MAX_OPSET};
use crate::tensor::{Tensor, TensorData, strides};

pub fn register(reg: &mut KernelRegistry) {
    reg.register("Loop", 1, MAX_OPSET, build_loop);
    reg.register("If", 1, MAX_OPSET, build_if);
    reg.register("Scan", 8, MAX_OPSET, build_scan);
}

/// A built subgraph: its plan, inputs and outputs.
#[derive(Debug)]
struct Body {
    plan: Plan,
    inputs: Vec<ValueId>,
    outputs: Vec<ValueId>,
}

impl Body {
    fn build(ctx: &BuildContext<'_>, attr: &str) -> Result<Body, BuildError> {
        let node = ctx.node;
        let graph: &Graph = node
            .graph_attr(attr)?
            .ok_or_else(|| BuildError::invalid(node, format!("attribute '{attr}' is required")))?;
        let (inputs, outputs) = (graph.inputs.clone(), graph.outputs.clone());
        let plan = Plan::new_subgraph(graph.clone(), ctx.registry)
            .map_err(|e| BuildError::invalid(node, format!("subgraph '{attr}': {e}")))?;
        Ok(Body { plan, inputs, outputs })
    }

    /// Runs the subgraph with `own` fed to its first inputs and `lent` to
    /// the rest (the enclosing values it reads).
    fn run(&self, own: Vec<Tensor>, lent: &[&Tensor]) -> Result<Vec<Tensor>, KernelError> {
        if own.len() + lent.len() != self.inputs.len() {
            return Err(KernelError(format!(
                "the subgraph takes {} inputs, but {} were given",
                self.inputs.len(),
                own.len() + lent.len()
            )));
        }
        let feeds = self.inputs.iter().copied().zip(own).collect();
        let lent: Vec<(ValueId, &Tensor)> =
            self.inputs[self.inputs.len() - lent.len()..].iter().copied().zip(lent.iter().copied()).collect();
        self.plan.run_borrowing(feeds, &lent, &self.outputs).map_err(|e| KernelError(format!("in its subgraph, {e}")))
    }
}

/// The one boolean of a condition tensor.
fn truth(t: &Tensor, what: &str) -> Result<bool, KernelError> {
    match t.data() {
        TensorData::Bool(v) if v.len() == 1 => Ok(v[0]),
        _ => Err(KernelError(format!("{what} must be one bool, got {} {:?}", t.dtype(), t.shape()))),
    }
}

/// Stacks tensors of one shape along a new first axis.
fn stack(parts: Vec<Tensor>) -> Result<Tensor, KernelError> {
    let Some(first) = parts.first() else {
        return Ok(Tensor::from_f32(vec![0], vec![])?);
    };
    let elem = first.shape().to_vec();
    let mut data = TensorData::zeros(first.dtype(), 0);
    for p in &parts {
        if p.shape() != elem.as_slice() {
            return Err(KernelError(format!(
                "scan outputs change shape across iterations: {elem:?} and {:?}",
                p.shape()
            )));
        }
        if !data.extend_from(p.data(), 0..p.len()) {
            return Err(KernelError("scan outputs change type across iterations".into()));
        }
    }
    let mut shape = vec![parts.len()];
    shape.extend(elem);
    Ok(Tensor::new(shape, data)?)
}

/// Loop: runs the body while the trip count lasts and the condition holds,
/// carrying its loop values and stacking its scan outputs.
#[derive(Debug)]
struct Loop {
    body: Body,
    /// How many loop-carried values there are (the node's inputs after M
    /// and cond, before the captured ones).
    carried: usize,
}

fn build_loop(ctx: &BuildContext<'_>) -> Result<Box<dyn Kernel>, BuildError> {
    let body = Body::build(ctx, "body")?;
    // Body inputs: iteration number, condition, carried..., captured...
    let captured = ctx.node.graph_attr("body")?.map_or(0, |g| g.captured);
    if body.inputs.len() < 2 + captured || ctx.node.inputs.len() != body.inputs.len() {
        return Err(BuildError::invalid(
            ctx.node,
            format!(
                "the body takes {} inputs and the node has {}; they must match (M, cond, then the loop values)",
                body.inputs.len(),
                ctx.node.inputs.len()
            ),
        ));
    }
    let carried = body.inputs.len() - 2 - captured;
    if body.outputs.len() < 1 + carried {
        return Err(BuildError::invalid(ctx.node, "the body must return the condition and every loop-carried value"));
    }
    Ok(Box::new(Loop { body, carried }))
}

/// The largest number of iterations a Loop may run, so a model cannot spin
/// (nearly) forever on one request.
const MAX_ITERATIONS: i64 = 1 << 24;

impl Kernel for Loop {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let trip = match inputs.first().copied().flatten() {
            Some(t) => Some(match t.data() {
                TensorData::Int64(v) if v.len() == 1 => v[0],
                _ => return Err(KernelError(format!("M must be one int64, got {} {:?}", t.dtype(), t.shape()))),
            }),
            None => None,
        };
        // Without a cond input the body's condition output is ignored (a
        // for loop over M), as the specification says.
        let cond_input = inputs.get(1).copied().flatten();
        let mut cond = match cond_input {
            Some(t) => truth(t, "cond")?,
            None => true,
        };
        if trip.is_none() && cond_input.is_none() {
            return Err(KernelError(
                "the Loop has neither a trip count M nor a condition, so it would never end".into(),
            ));
        }
        let mut carried: Vec<Tensor> = (0..self.carried)
            .map(|k| {
                inputs
                    .get(2 + k)
                    .copied()
                    .flatten()
                    .cloned()
                    .ok_or_else(|| KernelError(format!("missing loop value {k}")))
            })
            .collect::<Result<_, _>>()?;
        let lent: Vec<&Tensor> = inputs[(2 + self.carried).min(inputs.len())..]
            .iter()
            .map(|t| t.ok_or_else(|| KernelError("a captured value is missing".into())))
            .collect::<Result<_, _>>()?;
        let scans = self.body.outputs.len() - 1 - self.carried;
        let mut scanned: Vec<Vec<Tensor>> = (0..scans).map(|_| Vec::new()).collect();
        let mut i: i64 = 0;
        while cond && trip.is_none_or(|m| i < m) {
            if i >= MAX_ITERATIONS {
                return Err(KernelError(format!("the loop ran {MAX_ITERATIONS} iterations without ending")));
            }
            let mut own = vec![Tensor::from_i64(vec![], vec![i])?, Tensor::new(vec![], TensorData::Bool(vec![cond]))?];
            own.extend(carried);
            let mut outputs = self.body.run(own, &lent)?.into_iter();
            let body_cond = truth(
                &outputs.next().ok_or_else(|| KernelError("the body returned nothing".into()))?,
                "the body's condition",
            )?;
            if cond_input.is_some() {
                cond = body_cond;
            }
            carried = outputs.by_ref().take(self.carried).collect();
            for (k, t) in outputs.enumerate() {
                scanned[k].push(t);
            }
            i += 1;
        }
        let mut out = carried;
        for parts in scanned {
            out.push(stack(parts)?);
        }
        Ok(out)
    }
}

/// If: runs one branch and returns its outputs.
#[derive(Debug)]
struct If {
    then_branch: Body,
    else_branch: Body,
}

fn build_if(ctx: &BuildContext<'_>) -> Result<Box<dyn Kernel>, BuildError> {
    Ok(Box::new(If { then_branch: Body::build(ctx, "then_branch")?, else_branch: Body::build(ctx, "else_branch")? }))
}

impl Kernel for If {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let cond = truth(inputs.first().copied().flatten().ok_or_else(|| KernelError("missing cond".into()))?, "cond")?;
        let lent: Vec<&Tensor> = inputs[1..]
            .iter()
            .map(|t| t.ok_or_else(|| KernelError("a captured value is missing".into())))
            .collect::<Result<_, _>>()?;
        if cond { self.then_branch.run(vec![], &lent) } else { self.else_branch.run(vec![], &lent) }
    }
}

/// Element `i` of `t` along `axis`, that axis removed.
fn take(t: &Tensor, axis: usize, i: usize) -> Result<Tensor, KernelError> {
    let shape = t.shape();
    let step = strides(shape)[axis];
    let (n, outer) = (shape[axis], shape[..axis].iter().product::<usize>());
    let inner: usize = shape[axis + 1..].iter().product();
    let idx: Vec<usize> = (0..outer).flat_map(|o| (0..inner).map(move |j| (o * n + i) * step + j)).collect();
    let mut rest = shape.to_vec();
    rest.remove(axis);
    Ok(Tensor::new(rest, t.data().select(&idx))?)
}

/// Stacks `parts` (one shape) along a new `axis`.
fn stack_at(parts: Vec<Tensor>, axis: usize) -> Result<Tensor, KernelError> {
    let n = parts.len();
    let stacked = stack(parts)?; // [n, ...elem]
    if axis == 0 || n == 0 {
        return Ok(stacked);
    }
    let elem = stacked.shape()[1..].to_vec();
    if axis > elem.len() {
        return Err(KernelError(format!("scan output axis {axis} is out of range for rank {}", elem.len() + 1)));
    }
    let outer: usize = elem[..axis].iter().product();
    let inner: usize = elem[axis..].iter().product();
    let plane = outer * inner;
    let idx: Vec<usize> =
        (0..outer).flat_map(|o| (0..n).flat_map(move |k| (0..inner).map(move |j| k * plane + o * inner + j))).collect();
    let mut shape = elem[..axis].to_vec();
    shape.push(n);
    shape.extend_from_slice(&elem[axis..]);
    Ok(Tensor::new(shape, stacked.data().select(&idx))?)
}

/// Scan: runs the body once per element of the scan inputs along their
/// axes, carrying the state values and stacking the scan outputs. Opset 8's
/// form has a leading (optional) `sequence_lens` input and a batch axis 0
/// on every state and scan value, over which it runs one scan per entry.
#[derive(Debug)]
struct Scan {
    body: Body,
    batched: bool,
    states: usize,
    scan_inputs: usize,
    input_axes: Vec<i64>,
    input_reverse: Vec<bool>,
    output_axes: Vec<i64>,
    output_reverse: Vec<bool>,
}

fn build_scan(ctx: &BuildContext<'_>) -> Result<Box<dyn Kernel>, BuildError> {
    let node = ctx.node;
    let body = Body::build(ctx, "body")?;
    let captured = node.graph_attr("body")?.map_or(0, |g| g.captured);
    let m = node.int_attr("num_scan_inputs", -1)?;
    let formal = body.inputs.len().saturating_sub(captured);
    let batched = ctx.opset < 9;
    if m < 1 || m as usize > formal || node.inputs.len() != body.inputs.len() + usize::from(batched) {
        return Err(BuildError::invalid(
            node,
            format!("num_scan_inputs {m} does not fit a body of {formal} inputs and a node of {}", node.inputs.len()),
        ));
    }
    let (m, states) = (m as usize, formal - m as usize);
    let k = body.outputs.len().saturating_sub(states);
    let list = |name: &str, n: usize| -> Result<Vec<i64>, BuildError> {
        Ok(node.ints_attr(name)?.map_or_else(|| vec![0; n], <[i64]>::to_vec))
    };
    let (input_axes, output_axes) = (list("scan_input_axes", m)?, list("scan_output_axes", k)?);
    let directions = if batched { "directions" } else { "scan_input_directions" };
    let input_reverse: Vec<bool> = list(directions, m)?.iter().map(|&d| d != 0).collect();
    let output_reverse: Vec<bool> = list("scan_output_directions", k)?.iter().map(|&d| d != 0).collect();
    if input_axes.len() != m || input_reverse.len() != m || output_axes.len() != k || output_reverse.len() != k {
        return Err(BuildError::invalid(
            node,
            "the scan axis and direction lists must match the scan inputs and outputs",
        ));
    }
    Ok(Box::new(Scan { body, batched, states, scan_inputs: m, input_axes, input_reverse, output_axes, output_reverse }))
}

impl Kernel for Scan {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        if !self.batched {
            let given: Vec<Tensor> = (0..self.states + self.scan_inputs)
                .map(|i| {
                    inputs.get(i).copied().flatten().cloned().ok_or_else(|| KernelError(format!("missing input {i}")))
                })
                .collect::<Result<_, _>>()?;
            return self.scan(given, &inputs[(self.states + self.scan_inputs).min(inputs.len())..]);
        }
        // Opset 8: one scan per batch entry, stacked back along axis 0.
        let values: Vec<&Tensor> = (1..1 + self.states + self.scan_inputs)
            .map(|i| inputs.get(i).copied().flatten().ok_or_else(|| KernelError(format!("missing input {i}"))))
            .collect::<Result<_, _>>()?;
        let batch = values.first().map_or(0, |t| t.shape().first().copied().unwrap_or(0));
        if let Some(lens) = inputs.first().copied().flatten() {
            let full = values.get(self.states).and_then(|t| t.shape().get(1).copied()).unwrap_or(0) as i64;
            if lens.as_i64().is_none_or(|l| l.iter().any(|&v| v != full)) {
                return Err(KernelError("sequence_lens shorter than the scan inputs is not supported".into()));
            }
        }
        let mut per_batch: Vec<Vec<Tensor>> = Vec::with_capacity(batch);
        for b in 0..batch {
            let given = values.iter().map(|t| take(t, 0, b)).collect::<Result<_, _>>()?;
            per_batch.push(self.scan(given, &inputs[(1 + self.states + self.scan_inputs).min(inputs.len())..])?);
        }
        let outputs = self.body.outputs.len();
        (0..outputs).map(|o| stack_at(per_batch.iter().map(|r| r[o].clone()).collect(), 0)).collect()
    }
}

impl Scan {
    fn scan(&self, given: Vec<Tensor>, captured: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let mut given = given.into_iter();
        let mut states: Vec<Tensor> = given.by_ref().take(self.states).collect();
        let scan_values: Vec<Tensor> = given.collect();
        let mut scans = Vec::with_capacity(self.scan_inputs);
        let mut length = None;
        for (j, t) in scan_values.iter().enumerate() {
            let axis =
                crate::kernels::normalize_axis(self.input_axes[j], t.shape().len()).map_err(|e| KernelError(e.0))?;
            let n = t.shape()[axis];
            if length.is_some_and(|l| l != n) {
                return Err(KernelError(format!("scan inputs have lengths {} and {n}", length.unwrap_or(0))));
            }
            length = Some(n);
            scans.push((t, axis));
        }
        let length = length.unwrap_or(0);
        let lent: Vec<&Tensor> = captured
            .iter()
            .map(|t| t.ok_or_else(|| KernelError("a captured value is missing".into())))
            .collect::<Result<_, _>>()?;
        let k = self.body.outputs.len() - self.states;
        let mut outputs: Vec<Vec<Tensor>> = (0..k).map(|_| Vec::with_capacity(length)).collect();
        for step in 0..length {
            let mut own = states;
            for (j, (t, axis)) in scans.iter().enumerate() {
                let i = if self.input_reverse[j] { length - 1 - step } else { step };
                own.push(take(t, *axis, i)?);
            }
            let mut out = self.body.run(own, &lent)?.into_iter();
            states = out.by_ref().take(self.states).collect();
            for (o, t) in out.enumerate() {
                outputs[o].push(t);
            }
        }
        let mut result = states;
        for (o, mut parts) in outputs.into_iter().enumerate() {
            if self.output_reverse[o] {
                parts.reverse();
            }
            let rank = parts.first().map_or(1, |p| p.shape().len() + 1);
            let axis = crate::kernels::normalize_axis(self.output_axes[o], rank).map_err(|e| KernelError(e.0))?;
            result.push(stack_at(parts, axis)?);
        }
        Ok(result)
    }
}
