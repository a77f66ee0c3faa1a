//! Control flow: Loop and If, whose subgraphs run as plans of their own.
//!
//! A subgraph's inputs are the operator's formal ones followed by the
//! enclosing graph's values it reads (the importer passes those as the
//! node's extra inputs, in the same order); they are lent to the subgraph
//! on every run, not copied.

use super::Plan;
use crate::graph::{Graph, ValueId};
use crate::kernels::{BuildContext, BuildError, Kernel, KernelError, KernelRegistry, MAX_OPSET};
use crate::tensor::{Tensor, TensorData};

pub fn register(reg: &mut KernelRegistry) {
    reg.register("Loop", 1, MAX_OPSET, build_loop);
    reg.register("If", 1, MAX_OPSET, build_if);
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

/// The largest number of iterations a Loop without a condition may run, so
/// a model cannot spin forever on one request.
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
        let mut cond = match inputs.get(1).copied().flatten() {
            Some(t) => truth(t, "cond")?,
            None => true,
        };
        if trip.is_none() && inputs.get(1).copied().flatten().is_none() {
            return Err(KernelError("a Loop without M and cond would never end".into()));
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
            cond = truth(
                &outputs.next().ok_or_else(|| KernelError("the body returned nothing".into()))?,
                "the body's condition",
            )?;
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
