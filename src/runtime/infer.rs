//! Load-time shape inference.
//!
//! Every value of the graph gets a shape where the graph allows: each dim is
//! either a known size or a symbol. The model's declared input dims start as
//! known sizes or symbols (a named dim, such as `batch`, is one symbol
//! wherever it appears), and the operators' rules propagate them forward.
//! Where an operator needs two dims to be equal (the inner dims of a MatMul,
//! a Conv's input channels and its weights), the two are unified: a symbol
//! unified with a size becomes that size, and two sizes that differ make the
//! model fail to load, naming the node. Small integer tensors computed from
//! shapes (`Shape -> Gather -> Concat -> Reshape`, as exporters write them)
//! are followed element by element, so reshapes to computed shapes resolve.
//!
//! What the graph fixes about the inputs becomes [`InputRule`]s: the plan
//! checks every request against them before any kernel runs, so a request
//! whose dim 1 is 783 where a MatMul needs 784 is refused with a message
//! that names the input, the dim and the node, instead of failing midway.
//!
//! The rules never refuse a model they do not understand: an operator
//! without a rule (or with inputs of unknown shape) gives outputs of unknown
//! shape, and inference goes on from there.

use std::collections::HashMap;

use crate::graph::{Attribute, Dim, Graph, Node, ValueId};
use crate::kernels::{AutoPad, Window};
use crate::tensor::{DataType, Tensor, TensorData, format_dims};

/// One dim of an inferred shape, or one element of an integer tensor whose
/// contents inference follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sym {
    /// A fixed value.
    Known(i64),
    /// A value fixed only at run time; equal symbols are equal values.
    Var(usize),
}

/// A model that can never run: two dims an operator needs equal differ, or
/// a window cannot fit.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("node '{node}' ({op}): {message}")]
pub struct ShapeError {
    pub node: String,
    pub op: String,
    pub message: String,
}

/// What a request must satisfy in one dim of one input.
#[derive(Debug, Clone, PartialEq)]
pub enum DimRule {
    /// Anything.
    Any,
    /// Exactly this size, for the reason given (a node that needs it).
    Fixed { size: usize, reason: String },
    /// The same size as every other dim with this symbol.
    Same(usize),
}

/// What the graph fixes about one input.
#[derive(Debug, Clone, PartialEq)]
pub struct InputRule {
    pub value: ValueId,
    pub name: String,
    pub dims: Vec<DimRule>,
}

/// The result of inference: a shape per value where known, and the input
/// rules.
#[derive(Debug, Clone, Default)]
pub struct Inferred {
    /// Per value: dims as known sizes (`Some`) or run-time sizes (`None`);
    /// `None` for a value of unknown rank.
    pub shapes: Vec<Option<Vec<Option<usize>>>>,
    pub inputs: Vec<InputRule>,
}

/// Symbols and what unification has learnt about them (a union-find).
#[derive(Debug, Default)]
struct Symbols {
    parent: Vec<usize>,
    size: Vec<Option<i64>>,
    /// Why a symbol got its size: the node that fixed it.
    reason: Vec<Option<String>>,
}

impl Symbols {
    fn fresh(&mut self) -> Sym {
        self.parent.push(self.parent.len());
        self.size.push(None);
        self.reason.push(None);
        Sym::Var(self.parent.len() - 1)
    }

    fn root(&mut self, mut v: usize) -> usize {
        while self.parent[v] != v {
            self.parent[v] = self.parent[self.parent[v]];
            v = self.parent[v];
        }
        v
    }

    fn resolve(&mut self, d: Sym) -> Sym {
        match d {
            Sym::Known(_) => d,
            Sym::Var(v) => {
                let r = self.root(v);
                self.size[r].map_or(Sym::Var(r), Sym::Known)
            }
        }
    }

    /// Makes `a` and `b` the same value; `why` names the node that needs it.
    fn unify(&mut self, a: Sym, b: Sym, why: &str) -> Result<(), String> {
        match (self.resolve(a), self.resolve(b)) {
            (Sym::Known(x), Sym::Known(y)) if x == y => Ok(()),
            (Sym::Known(x), Sym::Known(y)) => Err(format!("needs {x} and {y} to be equal")),
            (Sym::Var(v), Sym::Known(n)) | (Sym::Known(n), Sym::Var(v)) => {
                self.size[v] = Some(n);
                self.reason[v] = Some(why.to_string());
                Ok(())
            }
            (Sym::Var(v), Sym::Var(w)) => {
                if v != w {
                    self.parent[v] = w;
                }
                Ok(())
            }
        }
    }
}

/// What inference knows about one value.
#[derive(Debug, Clone, Default)]
struct Info {
    shape: Option<Vec<Sym>>,
    dtype: Option<DataType>,
    /// The elements of a small integer tensor (rank 0 or 1).
    ints: Option<Vec<Sym>>,
}

impl Info {
    fn shaped(shape: Vec<Sym>, dtype: Option<DataType>) -> Info {
        Info { shape: Some(shape), dtype, ints: None }
    }
}

/// The longest integer tensor whose elements inference follows.
const MAX_TRACKED_INTS: usize = 64;

fn tensor_ints(t: &Tensor) -> Option<Vec<Sym>> {
    if t.shape().len() > 1 || t.len() > MAX_TRACKED_INTS {
        return None;
    }
    match t.data() {
        TensorData::Int64(v) => Some(v.iter().map(|&x| Sym::Known(x)).collect()),
        TensorData::Int32(v) => Some(v.iter().map(|&x| Sym::Known(i64::from(x))).collect()),
        _ => None,
    }
}

/// Infers the shapes of `graph` at `opset`.
///
/// # Errors
/// When the graph can never run: an operator needs two different fixed
/// sizes to be equal, or a window does not fit its input.
pub fn infer(graph: &Graph, opset: i64) -> Result<Inferred, ShapeError> {
    let mut syms = Symbols::default();
    let mut named: HashMap<String, Sym> = HashMap::new();
    let mut infos: Vec<Info> = vec![Info::default(); graph.values.len()];
    for (&id, t) in &graph.constants {
        infos[id] = Info {
            shape: Some(t.shape().iter().map(|&d| Sym::Known(d as i64)).collect()),
            dtype: Some(t.dtype()),
            ints: tensor_ints(t),
        };
    }
    for &id in &graph.inputs {
        let v = &graph.values[id];
        let shape = v.shape.as_ref().map(|dims| {
            dims.iter()
                .map(|d| match d {
                    Dim::Known(n) => Sym::Known(*n as i64),
                    Dim::Unknown(Some(name)) => *named.entry(name.clone()).or_insert_with(|| syms.fresh()),
                    Dim::Unknown(None) => syms.fresh(),
                })
                .collect()
        });
        infos[id] = Info { shape, dtype: v.dtype, ints: None };
    }
    for node in &graph.nodes {
        let inputs: Vec<Info> = node.inputs.iter().map(|i| i.map(|i| infos[i].clone()).unwrap_or_default()).collect();
        let consts: Vec<Option<&Tensor>> =
            node.inputs.iter().map(|i| i.and_then(|i| graph.constants.get(&i))).collect();
        let mut ctx = Ctx { node, opset, inputs, consts, syms: &mut syms };
        let outputs =
            ctx.infer().map_err(|message| ShapeError { node: node.name.clone(), op: node.op.clone(), message })?;
        for (&id, mut info) in node.outputs.iter().zip(outputs) {
            // A declared output type or shape fills what the rules left open.
            let declared = &graph.values[id];
            if info.dtype.is_none() {
                info.dtype = declared.dtype;
            }
            if info.shape.is_none()
                && let Some(dims) = &declared.shape
                && dims.iter().all(|d| matches!(d, Dim::Known(_)))
            {
                info.shape = Some(dims.iter().map(|d| Sym::Known(d.as_tf_dim())).collect());
            }
            infos[id] = info;
        }
    }
    let shapes = infos
        .iter()
        .map(|info| {
            info.shape.as_ref().map(|dims| {
                dims.iter()
                    .map(|&d| match syms.resolve(d) {
                        Sym::Known(n) => usize::try_from(n).ok(),
                        Sym::Var(_) => None,
                    })
                    .collect()
            })
        })
        .collect();
    let inputs = graph
        .inputs
        .iter()
        .filter_map(|&id| {
            let dims = infos[id].shape.as_ref()?;
            let declared = graph.values[id].shape.as_ref()?;
            let dims = dims
                .iter()
                .zip(declared)
                .map(|(&d, decl)| match (syms.resolve(d), d) {
                    (Sym::Known(n), Sym::Var(v)) => {
                        let r = syms.root(v);
                        let reason = syms.reason[r].clone().unwrap_or_else(|| "the model".into());
                        DimRule::Fixed { size: n as usize, reason }
                    }
                    (Sym::Known(n), _) => {
                        debug_assert!(matches!(decl, Dim::Known(_)));
                        DimRule::Fixed { size: n as usize, reason: "the model's declared shape".into() }
                    }
                    (Sym::Var(r), _) => DimRule::Same(r),
                })
                .collect::<Vec<_>>();
            Some(InputRule { value: id, name: graph.values[id].name.clone(), dims })
        })
        .collect::<Vec<_>>();
    // A symbol that appears once across all inputs constrains nothing.
    let mut uses: HashMap<usize, usize> = HashMap::new();
    for rule in &inputs {
        for d in &rule.dims {
            if let DimRule::Same(r) = d {
                *uses.entry(*r).or_default() += 1;
            }
        }
    }
    let inputs = inputs
        .into_iter()
        .map(|mut rule| {
            for d in &mut rule.dims {
                if let DimRule::Same(r) = d
                    && uses[r] < 2
                {
                    *d = DimRule::Any;
                }
            }
            rule
        })
        .collect();
    Ok(Inferred { shapes, inputs })
}

/// Checks fed tensors' shapes against the input rules.
///
/// # Errors
/// A message naming the input, its shape, the dim and what it must be.
pub fn check_feeds(rules: &[InputRule], feeds: &[(ValueId, &[usize])]) -> Result<(), String> {
    let mut seen: HashMap<usize, (usize, &str, usize)> = HashMap::new();
    for rule in rules {
        let Some((_, shape)) = feeds.iter().find(|(id, _)| *id == rule.value) else {
            continue;
        };
        if shape.len() != rule.dims.len() {
            return Err(format!(
                "input '{}' has shape {}, but the model needs rank {}",
                rule.name,
                format_dims(shape),
                rule.dims.len()
            ));
        }
        for (i, (d, &n)) in rule.dims.iter().zip(shape.iter()).enumerate() {
            match d {
                DimRule::Any => {}
                DimRule::Fixed { size, reason } if *size != n => {
                    return Err(format!(
                        "input '{}' has shape {}, but dim {i} must be {size} ({reason} needs it)",
                        rule.name,
                        format_dims(shape)
                    ));
                }
                DimRule::Fixed { .. } => {}
                DimRule::Same(sym) => match seen.get(sym) {
                    Some(&(size, other, j)) if size != n => {
                        return Err(format!(
                            "input '{}' has shape {}, but its dim {i} must equal dim {j} of input '{other}', which is {size}",
                            rule.name,
                            format_dims(shape)
                        ));
                    }
                    Some(_) => {}
                    None => {
                        seen.insert(*sym, (n, &rule.name, i));
                    }
                },
            }
        }
    }
    Ok(())
}

/// One node's inference: its inputs as inference knows them.
struct Ctx<'a> {
    node: &'a Node,
    opset: i64,
    inputs: Vec<Info>,
    consts: Vec<Option<&'a Tensor>>,
    syms: &'a mut Symbols,
}

type Outcome = Result<Vec<Info>, String>;

/// A convolution's X and W shapes, spatial rank and group count.
type ConvOperands = (Vec<Sym>, Vec<Sym>, usize, i64);

/// Shorthand for "nothing known about the outputs".
fn unknown() -> Outcome {
    Ok(Vec::new())
}

fn known(n: usize) -> Sym {
    Sym::Known(n as i64)
}

impl Ctx<'_> {
    fn shape(&mut self, i: usize) -> Option<Vec<Sym>> {
        let dims = self.inputs.get(i)?.shape.clone()?;
        Some(dims.into_iter().map(|d| self.syms.resolve(d)).collect())
    }

    fn dtype(&self, i: usize) -> Option<DataType> {
        self.inputs.get(i).and_then(|info| info.dtype)
    }

    fn present(&self, i: usize) -> bool {
        self.node.inputs.get(i).is_some_and(Option::is_some)
    }

    fn ints(&mut self, i: usize) -> Option<Vec<Sym>> {
        let v = self.inputs.get(i)?.ints.clone()?;
        Some(v.into_iter().map(|d| self.syms.resolve(d)).collect())
    }

    /// The elements of input `i` when all are known.
    fn known_ints(&mut self, i: usize) -> Option<Vec<i64>> {
        self.ints(i)?.into_iter().map(|d| if let Sym::Known(n) = d { Some(n) } else { None }).collect()
    }

    fn konst(&self, i: usize) -> Option<&Tensor> {
        self.consts.get(i).copied().flatten()
    }

    fn int_attr(&self, name: &str, default: i64) -> i64 {
        self.node.int_attr(name, default).unwrap_or(default)
    }

    fn ints_attr(&self, name: &str) -> Option<Vec<i64>> {
        self.node.ints_attr(name).ok().flatten().map(<[i64]>::to_vec)
    }

    fn why(&self) -> String {
        format!("node '{}' ({})", self.node.name, self.node.op)
    }

    fn unify(&mut self, a: Sym, b: Sym, what: &str) -> Result<(), String> {
        let why = self.why();
        self.syms.unify(a, b, &why).map_err(|e| format!("{what} {e}"))
    }

    /// The product of dims, known only when all are.
    fn product(&mut self, dims: &[Sym]) -> Sym {
        let mut p: i64 = 1;
        for d in dims {
            match d {
                Sym::Known(n) => p = p.saturating_mul(*n),
                Sym::Var(_) if dims.len() == 1 => return *d,
                Sym::Var(_) => return self.syms.fresh(),
            }
        }
        Sym::Known(p)
    }

    /// Two dims under numpy broadcasting.
    fn broadcast_dim(&mut self, a: Sym, b: Sym) -> Result<Sym, String> {
        Ok(match (a, b) {
            (Sym::Known(1), d) | (d, Sym::Known(1)) => d,
            (Sym::Known(x), Sym::Known(y)) if x == y => a,
            (Sym::Known(x), Sym::Known(y)) => return Err(format!("cannot broadcast dims {x} and {y}")),
            (Sym::Known(_), Sym::Var(_)) => a,
            (Sym::Var(_), Sym::Known(_)) => b,
            (Sym::Var(x), Sym::Var(y)) if x == y => a,
            (Sym::Var(_), Sym::Var(_)) => self.syms.fresh(),
        })
    }

    fn broadcast(&mut self, shapes: &[Vec<Sym>]) -> Result<Vec<Sym>, String> {
        let rank = shapes.iter().map(Vec::len).max().unwrap_or(0);
        let mut out = vec![Sym::Known(1); rank];
        for s in shapes {
            let offset = rank - s.len();
            for (i, &d) in s.iter().enumerate() {
                out[offset + i] = self.broadcast_dim(out[offset + i], d)?;
            }
        }
        Ok(out)
    }

    /// Axes from an attribute (before `input_from`) or an optional input.
    fn axes(&mut self, input_from: i64, input: usize) -> Option<Option<Vec<i64>>> {
        if self.opset < input_from {
            Some(self.ints_attr("axes"))
        } else if self.present(input) {
            self.known_ints(input).map(Some)
        } else {
            Some(None)
        }
    }

    fn infer(&mut self) -> Outcome {
        let op = self.node.op.clone();
        match op.as_str() {
            "Relu"
            | "LeakyRelu"
            | "PRelu"
            | "Elu"
            | "Selu"
            | "Celu"
            | "Sigmoid"
            | "HardSigmoid"
            | "HardSwish"
            | "Tanh"
            | "Softplus"
            | "Softsign"
            | "Gelu"
            | "Mish"
            | "Swish"
            | "ThresholdedRelu"
            | "Clip"
            | "Softmax"
            | "LogSoftmax"
            | "Hardmax"
            | "Abs"
            | "Neg"
            | "Sqrt"
            | "Exp"
            | "Log"
            | "Reciprocal"
            | "Floor"
            | "Ceil"
            | "Round"
            | "Sign"
            | "Erf"
            | "Sin"
            | "Cos"
            | "Tan"
            | "Asin"
            | "Acos"
            | "Atan"
            | "Sinh"
            | "Cosh"
            | "Asinh"
            | "Acosh"
            | "Atanh"
            | "LRN"
            | "Identity"
            | "Shrink"
            | "LpNormalization"
            | "MeanVarianceNormalization"
            | "GroupNormalization"
            | "RMSNormalization"
            | "CumSum"
            | "Trilu"
            | "ReverseSequence" => self.same_shape(None),
            "EyeLike" => {
                let to = self.node.int_attr("dtype", -1).ok().and_then(crate::kernels::onnx_dtype);
                self.same_shape(to)
            }
            "DepthToSpace" | "SpaceToDepth" => {
                let dtype = self.dtype(0);
                let b = self.int_attr("blocksize", 0);
                match self.shape(0) {
                    Some(x) if x.len() == 4 && b > 0 => {
                        let scale = |s: &mut Self, d: Sym, up: bool| match d {
                            Sym::Known(n) if up => Sym::Known(n * b),
                            Sym::Known(n) => Sym::Known(n / b),
                            Sym::Var(_) => s.syms.fresh(),
                        };
                        let to_space = self.node.op == "DepthToSpace";
                        let c = match x[1] {
                            Sym::Known(c) if to_space => Sym::Known(c / (b * b)),
                            Sym::Known(c) => Sym::Known(c * b * b),
                            Sym::Var(_) => self.syms.fresh(),
                        };
                        let (h, w) = (scale(self, x[2], to_space), scale(self, x[3], to_space));
                        Ok(vec![Info::shaped(vec![x[0], c, h, w], dtype)])
                    }
                    _ => unknown(),
                }
            }
            "Not" | "IsNaN" | "IsInf" => self.same_shape(Some(DataType::Bool)),
            "Dropout" => {
                let mut out = self.same_shape(None)?;
                if let Some(shape) = out.first().and_then(|i| i.shape.clone()) {
                    out.push(Info::shaped(shape, Some(DataType::Bool)));
                }
                Ok(out)
            }
            "Cast" => {
                let to = crate::kernels::onnx_dtype(self.int_attr("to", 0));
                let mut out = self.same_shape(to)?;
                if let Some(o) = out.first_mut()
                    && matches!(to, Some(DataType::Int64 | DataType::Int32))
                {
                    o.ints = self.ints(0);
                }
                Ok(out)
            }
            "CastLike" => {
                let to = self.dtype(1);
                self.same_shape(to)
            }
            "BatchNormalization" | "InstanceNormalization" => {
                if let Some(x) = self.shape(0)
                    && x.len() >= 2
                {
                    for i in 1..self.node.inputs.len().min(5) {
                        if let Some(p) = self.shape(i)
                            && p.len() == 1
                        {
                            self.unify(x[1], p[0], "the channel count of X and the length of a parameter")?;
                        }
                    }
                }
                Ok(self.same_shape(None)?.into_iter().take(1).collect())
            }
            "LayerNormalization" => Ok(self.same_shape(None)?.into_iter().take(1).collect()),
            "Add" | "Sub" | "Mul" | "Div" | "Pow" | "Mod" | "Max" | "Min" | "Sum" | "Mean" => self.elementwise(None),
            "Equal" | "Less" | "Greater" | "LessOrEqual" | "GreaterOrEqual" | "And" | "Or" | "Xor" => {
                self.elementwise(Some(DataType::Bool))
            }
            "Where" => {
                let dtype = self.dtype(1);
                let shapes: Option<Vec<_>> = (0..3).map(|i| self.shape(i)).collect();
                match shapes {
                    Some(s) => Ok(vec![Info::shaped(self.broadcast(&s)?, dtype)]),
                    None => unknown(),
                }
            }
            "MatMul" => self.matmul(),
            "Gemm" | "FusedGemm" => self.gemm(),
            "Conv" | "FusedConv" => self.conv(),
            "FusedConvPool" => self.conv_pool(),
            "ConvTranspose" => self.conv_transpose(),
            "MaxPool" | "AveragePool" | "LpPool" => self.pool(),
            "GlobalAveragePool" | "GlobalMaxPool" | "GlobalLpPool" => {
                let dtype = self.dtype(0);
                match self.shape(0) {
                    Some(x) if x.len() >= 2 => {
                        let mut y = x[..2].to_vec();
                        y.resize(x.len(), Sym::Known(1));
                        Ok(vec![Info::shaped(y, dtype)])
                    }
                    _ => unknown(),
                }
            }
            "Flatten" => self.flatten(),
            "Reshape" => self.reshape(),
            "Transpose" => self.transpose(),
            "Concat" => self.concat(),
            "Split" => self.split(),
            "Squeeze" => self.squeeze(),
            "Unsqueeze" => self.unsqueeze(),
            "Gather" => self.gather(),
            "Shape" => self.shape_op(),
            "Size" => Ok(vec![Info { shape: Some(vec![]), dtype: Some(DataType::Int64), ints: None }]),
            "Slice" => self.slice(),
            "Expand" => {
                let dtype = self.dtype(0);
                match (self.shape(0), self.ints(1)) {
                    (Some(x), Some(s)) => Ok(vec![Info::shaped(self.broadcast(&[x, s])?, dtype)]),
                    _ => unknown(),
                }
            }
            "Tile" => {
                let dtype = self.dtype(0);
                match (self.shape(0), self.known_ints(1)) {
                    (Some(x), Some(r)) if r.len() == x.len() => {
                        let y = x
                            .iter()
                            .zip(&r)
                            .map(|(&d, &k)| match d {
                                Sym::Known(n) => Sym::Known(n * k),
                                Sym::Var(_) if k == 1 => d,
                                Sym::Var(_) => self.syms.fresh(),
                            })
                            .collect();
                        Ok(vec![Info::shaped(y, dtype)])
                    }
                    _ => unknown(),
                }
            }
            "Pad" => self.pad(),
            "ConstantOfShape" => {
                let dtype = self
                    .node
                    .attributes
                    .get("value")
                    .and_then(|a| if let Attribute::Tensor(t) = a { Some(t.dtype()) } else { None })
                    .or(Some(DataType::Float));
                match self.ints(0) {
                    Some(s) => Ok(vec![Info::shaped(s, dtype)]),
                    None => unknown(),
                }
            }
            "Range" => {
                let dtype = self.dtype(0);
                let n = self.syms.fresh();
                Ok(vec![Info::shaped(vec![n], dtype)])
            }
            "ReduceSum" | "ReduceMean" | "ReduceMax" | "ReduceMin" | "ReduceProd" | "ReduceL1" | "ReduceL2"
            | "ReduceLogSum" | "ReduceLogSumExp" | "ReduceSumSquare" => self.reduce(),
            "ArgMax" | "ArgMin" => {
                let Some(x) = self.shape(0) else { return unknown() };
                let Ok(axis) = crate::kernels::normalize_axis(self.int_attr("axis", 0), x.len()) else {
                    return Err(format!("axis is out of range for rank {}", x.len()));
                };
                let keep = self.int_attr("keepdims", 1) != 0;
                let y = reduced(&x, &[axis], keep);
                Ok(vec![Info::shaped(y, Some(DataType::Int64))])
            }
            "Resize" | "Upsample" => self.resize(),
            "RNN" | "GRU" | "LSTM" => self.recurrent(),
            _ => unknown(),
        }
    }

    fn same_shape(&mut self, dtype: Option<DataType>) -> Outcome {
        let dtype = dtype.or(self.dtype(0));
        match self.shape(0) {
            Some(x) => Ok(vec![Info::shaped(x, dtype)]),
            None => Ok(vec![Info { dtype, ..Info::default() }]),
        }
    }

    fn elementwise(&mut self, dtype: Option<DataType>) -> Outcome {
        let dtype = dtype.or(self.dtype(0));
        let n = self.node.inputs.len();
        let shapes: Option<Vec<_>> = (0..n).map(|i| self.shape(i)).collect();
        let Some(shapes) = shapes else { return Ok(vec![Info { dtype, ..Info::default() }]) };
        let shape = self.broadcast(&shapes)?;
        // Arithmetic on known shape values (sizes computed from Shape).
        let ints = if n == 2 && shape.len() <= 1 {
            match (self.known_ints(0), self.known_ints(1)) {
                (Some(a), Some(b)) if a.len() == b.len() || a.len() == 1 || b.len() == 1 => {
                    let len = a.len().max(b.len());
                    let at = |v: &[i64], i: usize| v[if v.len() == 1 { 0 } else { i }];
                    (0..len)
                        .map(|i| {
                            let (x, y) = (at(&a, i), at(&b, i));
                            match self.node.op.as_str() {
                                "Add" => x.checked_add(y),
                                "Sub" => x.checked_sub(y),
                                "Mul" => x.checked_mul(y),
                                "Div" if y != 0 => x.checked_div(y),
                                _ => None,
                            }
                            .map(Sym::Known)
                        })
                        .collect()
                }
                _ => None,
            }
        } else {
            None
        };
        Ok(vec![Info { shape: Some(shape), dtype, ints }])
    }

    fn matmul(&mut self) -> Outcome {
        let dtype = self.dtype(0);
        let (Some(a), Some(b)) = (self.shape(0), self.shape(1)) else { return unknown() };
        if a.is_empty() || b.is_empty() {
            return Err("MatMul operands must have rank at least 1".into());
        }
        let (a2, a_vec) = if a.len() == 1 { (vec![Sym::Known(1), a[0]], true) } else { (a.clone(), false) };
        let (b2, b_vec) = if b.len() == 1 { (vec![b[0], Sym::Known(1)], true) } else { (b.clone(), false) };
        let (ra, rb) = (a2.len(), b2.len());
        self.unify(a2[ra - 1], b2[rb - 2], "the inner dims of A and B:")?;
        let mut y = self.broadcast(&[a2[..ra - 2].to_vec(), b2[..rb - 2].to_vec()])?;
        if !a_vec {
            y.push(a2[ra - 2]);
        }
        if !b_vec {
            y.push(b2[rb - 1]);
        }
        Ok(vec![Info::shaped(y, dtype)])
    }

    fn gemm(&mut self) -> Outcome {
        let dtype = self.dtype(0);
        let (Some(a), Some(b)) = (self.shape(0), self.shape(1)) else { return unknown() };
        if a.len() != 2 || b.len() != 2 {
            return Err(format!("A and B must be matrices, got ranks {} and {}", a.len(), b.len()));
        }
        let (m, ka) = if self.int_attr("transA", 0) != 0 { (a[1], a[0]) } else { (a[0], a[1]) };
        let (kb, n) = if self.int_attr("transB", 0) != 0 { (b[1], b[0]) } else { (b[0], b[1]) };
        self.unify(ka, kb, "the inner dims of A and B:")?;
        if let Some(c) = self.shape(2) {
            self.broadcast(&[vec![m, n], c])?;
        }
        Ok(vec![Info::shaped(vec![m, n], dtype)])
    }

    /// Spatial output dims of a sliding window over `x`'s dims 2.., with
    /// kernel extents `kernel` (`None` where unknown).
    fn window_dims(&mut self, window: &Window, x: &[Sym], kernel: &[Option<usize>]) -> Result<Vec<Sym>, String> {
        let mut out = Vec::with_capacity(window.rank);
        for d in 0..window.rank {
            out.push(match (x[2 + d], kernel[d]) {
                (Sym::Known(i), Some(k)) => known(window.axis(d, i as usize, k).map_err(|e| e.0)?.output),
                // SAME padding at stride 1 keeps the size, whatever it is.
                (i, _)
                    if matches!(window.auto_pad, AutoPad::SameUpper | AutoPad::SameLower) && window.strides[d] == 1 =>
                {
                    i
                }
                _ => self.syms.fresh(),
            });
        }
        Ok(out)
    }

    /// X's and W's shapes, the spatial rank and the group count of a
    /// convolution, when both shapes are known.
    fn conv_operands(&mut self) -> Result<Option<ConvOperands>, String> {
        let (Some(x), Some(w)) = (self.shape(0), self.shape(1)) else { return Ok(None) };
        if x.len() < 3 || w.len() != x.len() {
            return Err(format!("X and W must have the same rank, at least 3; got {} and {}", x.len(), w.len()));
        }
        let rank = x.len() - 2;
        Ok(Some((x, w, rank, self.int_attr("group", 1).max(1))))
    }

    fn conv(&mut self) -> Outcome {
        let dtype = self.dtype(0);
        let Some((x, w, rank, group)) = self.conv_operands()? else { return unknown() };
        if let Sym::Known(wc) = w[1] {
            self.unify(x[1], Sym::Known(wc * group), "the input channels of X and W (times group):")?;
        }
        if let Some(b) = self.shape(2)
            && b.len() == 1
        {
            self.unify(w[0], b[0], "the output channels of W and the length of B:")?;
        }
        let window = Window::parse(self.node, rank, false).map_err(|e| e.to_string())?;
        let kernel: Vec<Option<usize>> = match &window.kernel {
            Some(k) => k.iter().map(|&k| Some(k)).collect(),
            None => w[2..].iter().map(|&d| if let Sym::Known(k) = d { Some(k as usize) } else { None }).collect(),
        };
        let mut y = vec![x[0], w[0]];
        y.extend(self.window_dims(&window, &x, &kernel)?);
        Ok(vec![Info::shaped(y, dtype)])
    }

    /// A convolution followed by a max pool whose windows (`pool_shape`)
    /// tile its 2-D output: each spatial size divided by the window, rounded
    /// down.
    fn conv_pool(&mut self) -> Outcome {
        let mut outcome = self.conv()?;
        let pool = self.ints_attr("pool_shape").unwrap_or_default();
        if let Some(y) = outcome.first_mut().and_then(|info| info.shape.as_mut())
            && y.len() == 2 + pool.len()
        {
            for (d, &k) in y[2..].iter_mut().zip(&pool) {
                *d = match *d {
                    Sym::Known(v) if k > 0 && v >= k => Sym::Known(v / k),
                    Sym::Known(v) => {
                        return Err(format!(
                            "the pool window {pool:?} does not fit in the convolution's output of {v}"
                        ));
                    }
                    Sym::Var(_) => self.syms.fresh(),
                };
            }
        }
        Ok(outcome)
    }

    fn conv_transpose(&mut self) -> Outcome {
        let dtype = self.dtype(0);
        let Some((x, w, rank, group)) = self.conv_operands()? else { return unknown() };
        self.unify(x[1], w[0], "the input channels of X and W:")?;
        let channels = match w[1] {
            Sym::Known(m) => Sym::Known(m * group),
            Sym::Var(_) => self.syms.fresh(),
        };
        let mut y = vec![x[0], channels];
        if let Some(out) = self.ints_attr("output_shape") {
            let out = &out[out.len().saturating_sub(rank)..];
            y.extend(out.iter().map(|&d| Sym::Known(d)));
        } else {
            for _ in 0..rank {
                // Left to the kernel: the formula depends on auto_pad and
                // output_padding, and nothing downstream needs it at load.
                y.push(self.syms.fresh());
            }
        }
        Ok(vec![Info::shaped(y, dtype)])
    }

    fn pool(&mut self) -> Outcome {
        let dtype = self.dtype(0);
        let Some(x) = self.shape(0) else { return unknown() };
        let Some(kernel) = self.ints_attr("kernel_shape") else { return unknown() };
        if x.len() != kernel.len() + 2 {
            return Err(format!("X has rank {}, but kernel_shape has {} dims", x.len(), kernel.len()));
        }
        let window = Window::parse(self.node, kernel.len(), true).map_err(|e| e.to_string())?;
        let kernel: Vec<Option<usize>> = kernel.iter().map(|&k| Some(k as usize)).collect();
        let mut y = x[..2].to_vec();
        y.extend(self.window_dims(&window, &x, &kernel)?);
        let indices = Info::shaped(y.clone(), Some(DataType::Int64));
        Ok(vec![Info::shaped(y, dtype), indices])
    }

    fn flatten(&mut self) -> Outcome {
        let dtype = self.dtype(0);
        let Some(x) = self.shape(0) else { return unknown() };
        let axis = self.int_attr("axis", 1);
        let r = x.len() as i64;
        if axis < -r || axis > r {
            return Err(format!("axis {axis} is out of range for rank {r}"));
        }
        let axis = if axis < 0 { axis + r } else { axis } as usize;
        let (outer, inner) = (self.product(&x[..axis]), self.product(&x[axis..]));
        Ok(vec![Info::shaped(vec![outer, inner], dtype)])
    }

    fn reshape(&mut self) -> Outcome {
        let dtype = self.dtype(0);
        let Some(target) = (if self.opset < 5 {
            self.ints_attr("shape").map(|v| v.into_iter().map(Sym::Known).collect())
        } else {
            self.ints(1)
        }) else {
            return unknown();
        };
        let x = self.shape(0);
        let allowzero = self.int_attr("allowzero", 0) != 0;
        let mut y = Vec::with_capacity(target.len());
        let mut infer_at = None;
        for (i, &t) in target.iter().enumerate() {
            y.push(match t {
                Sym::Known(0) if !allowzero => match x.as_ref().and_then(|x| x.get(i)) {
                    Some(&d) => d,
                    None if x.is_some() => {
                        return Err(format!("shape entry {i} is 0 (copy) but the input has no dim {i}"));
                    }
                    None => self.syms.fresh(),
                },
                Sym::Known(-1) => {
                    if infer_at.replace(i).is_some() {
                        return Err("the shape has more than one -1".into());
                    }
                    Sym::Known(-1)
                }
                Sym::Known(n) if n < 0 => return Err(format!("shape entry {i} is {n}")),
                d => d,
            });
        }
        let Some(x) = x else {
            if let Some(i) = infer_at {
                y[i] = self.syms.fresh();
            }
            return Ok(vec![Info::shaped(y, dtype)]);
        };
        // Compare the known product and the symbols on both sides.
        let split = |dims: &[Sym], skip: Option<usize>| {
            let mut known: i64 = 1;
            let mut vars = Vec::new();
            for (i, d) in dims.iter().enumerate() {
                if Some(i) == skip {
                    continue;
                }
                match d {
                    Sym::Known(n) => known = known.saturating_mul(*n),
                    Sym::Var(v) => vars.push(*v),
                }
            }
            vars.sort_unstable();
            (known, vars)
        };
        let (kx, mut vx) = split(&x, None);
        let (ky, vy) = split(&y, infer_at);
        // Cancel the symbols both sides share.
        let mut rest_y = Vec::new();
        for v in vy {
            if let Some(p) = vx.iter().position(|&w| w == v) {
                vx.remove(p);
            } else {
                rest_y.push(v);
            }
        }
        match infer_at {
            Some(i) => {
                y[i] = if rest_y.is_empty() && vx.is_empty() {
                    if ky == 0 || kx % ky != 0 {
                        return Err(format!("cannot reshape {} elements into shape {}", kx, format_syms(&target)));
                    }
                    Sym::Known(kx / ky)
                } else if rest_y.is_empty() && vx.len() == 1 && kx == ky {
                    Sym::Var(vx[0])
                } else {
                    self.syms.fresh()
                };
            }
            None if rest_y.is_empty() && vx.is_empty() && kx != ky => {
                return Err(format!(
                    "cannot reshape shape {} ({kx} elements) into shape {} ({ky} elements)",
                    format_syms(&x),
                    format_syms(&target)
                ));
            }
            None => {}
        }
        Ok(vec![Info::shaped(y, dtype)])
    }

    fn transpose(&mut self) -> Outcome {
        let dtype = self.dtype(0);
        let Some(x) = self.shape(0) else { return unknown() };
        let perm = self.ints_attr("perm").unwrap_or_else(|| (0..x.len() as i64).rev().collect());
        if perm.len() != x.len() || perm.iter().any(|&p| p < 0 || p as usize >= x.len()) {
            return Err(format!("perm {perm:?} is not a permutation of the {} axes", x.len()));
        }
        Ok(vec![Info::shaped(perm.iter().map(|&p| x[p as usize]).collect(), dtype)])
    }

    fn concat(&mut self) -> Outcome {
        let dtype = self.dtype(0);
        let n = self.node.inputs.len();
        let shapes: Option<Vec<_>> = (0..n).map(|i| self.shape(i)).collect();
        let Some(shapes) = shapes else { return unknown() };
        let Some(first) = shapes.first().cloned() else { return unknown() };
        let rank = first.len();
        let axis = crate::kernels::normalize_axis(self.int_attr("axis", 0), rank).map_err(|e| e.0)?;
        let mut y = first.clone();
        let mut total = Some(0i64);
        for s in &shapes {
            if s.len() != rank {
                return Err(format!("inputs have ranks {rank} and {}", s.len()));
            }
            for d in 0..rank {
                if d != axis {
                    self.unify(y[d], s[d], &format!("dim {d} of the inputs:"))?;
                }
            }
            total = match (total, s[axis]) {
                (Some(t), Sym::Known(k)) => Some(t + k),
                _ => None,
            };
        }
        y[axis] = match total {
            Some(t) => Sym::Known(t),
            None if shapes.len() == 1 => first[axis],
            None => self.syms.fresh(),
        };
        let ints =
            if rank == 1 { (0..n).map(|i| self.ints(i)).collect::<Option<Vec<_>>>().map(|v| v.concat()) } else { None };
        Ok(vec![Info { shape: Some(y), dtype, ints }])
    }

    fn split(&mut self) -> Outcome {
        let dtype = self.dtype(0);
        let Some(x) = self.shape(0) else { return unknown() };
        let axis = crate::kernels::normalize_axis(self.int_attr("axis", 0), x.len()).map_err(|e| e.0)?;
        let outputs = self.node.outputs.len();
        let sizes = if self.opset < 13 {
            self.ints_attr("split")
        } else if self.present(1) {
            match self.known_ints(1) {
                Some(s) => Some(s),
                None => return unknown(),
            }
        } else {
            None
        };
        let dims: Vec<Sym> = match (sizes, x[axis]) {
            (Some(s), _) => s.into_iter().map(Sym::Known).collect(),
            (None, Sym::Known(n)) if outputs > 0 => {
                let chunk = (n as usize).div_ceil(outputs);
                (0..outputs).map(|i| known(chunk.min((n as usize).saturating_sub(i * chunk)))).collect()
            }
            _ => (0..outputs).map(|_| self.syms.fresh()).collect(),
        };
        Ok(dims
            .into_iter()
            .map(|d| {
                let mut y = x.clone();
                y[axis] = d;
                Info::shaped(y, dtype)
            })
            .collect())
    }

    fn squeeze(&mut self) -> Outcome {
        let dtype = self.dtype(0);
        let ints = self.ints(0).filter(|v| v.len() == 1);
        let Some(x) = self.shape(0) else { return unknown() };
        let Some(axes) = self.axes(13, 1) else { return unknown() };
        let y: Vec<Sym> = match axes {
            Some(axes) => {
                let axes = axes
                    .iter()
                    .map(|&a| crate::kernels::normalize_axis(a, x.len()).map_err(|e| e.0))
                    .collect::<Result<Vec<_>, _>>()?;
                for &a in &axes {
                    self.unify(x[a], Sym::Known(1), &format!("squeezed axis {a}:"))?;
                }
                x.iter().enumerate().filter(|(i, _)| !axes.contains(i)).map(|(_, &d)| d).collect()
            }
            None if x.iter().all(|d| matches!(d, Sym::Known(_))) => {
                x.iter().copied().filter(|&d| d != Sym::Known(1)).collect()
            }
            None => return unknown(),
        };
        Ok(vec![Info { shape: Some(y), dtype, ints }])
    }

    fn unsqueeze(&mut self) -> Outcome {
        let dtype = self.dtype(0);
        let ints = self.ints(0).filter(|v| v.len() == 1);
        let Some(x) = self.shape(0) else { return unknown() };
        let Some(Some(axes)) = self.axes(13, 1) else { return unknown() };
        let rank = x.len() + axes.len();
        let mut axes = axes
            .iter()
            .map(|&a| crate::kernels::normalize_axis(a, rank).map_err(|e| e.0))
            .collect::<Result<Vec<_>, _>>()?;
        axes.sort_unstable();
        let mut rest = x.into_iter();
        let y = (0..rank).map(|i| if axes.contains(&i) { Sym::Known(1) } else { rest.next().unwrap_or(Sym::Known(1)) });
        Ok(vec![Info { shape: Some(y.collect()), dtype, ints }])
    }

    fn gather(&mut self) -> Outcome {
        let dtype = self.dtype(0);
        let (Some(data), Some(indices)) = (self.shape(0), self.shape(1)) else { return unknown() };
        let axis = crate::kernels::normalize_axis(self.int_attr("axis", 0), data.len()).map_err(|e| e.0)?;
        let mut y = data[..axis].to_vec();
        y.extend(&indices);
        y.extend(&data[axis + 1..]);
        let ints = match (self.ints(0), self.known_ints(1)) {
            (Some(v), Some(idx)) if data.len() == 1 => idx
                .iter()
                .map(|&i| {
                    let i = if i < 0 { i + v.len() as i64 } else { i };
                    usize::try_from(i).ok().and_then(|i| v.get(i).copied())
                })
                .collect(),
            _ => None,
        };
        Ok(vec![Info { shape: Some(y), dtype, ints }])
    }

    fn shape_op(&mut self) -> Outcome {
        let Some(x) = self.shape(0) else {
            let n = self.syms.fresh();
            return Ok(vec![Info::shaped(vec![n], Some(DataType::Int64))]);
        };
        let r = x.len() as i64;
        let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
        let start = clamp(self.int_attr("start", 0));
        let end = if self.opset >= 15 { clamp(self.int_attr("end", r)) } else { x.len() };
        let dims = x[start..end.max(start)].to_vec();
        Ok(vec![Info { shape: Some(vec![known(dims.len())]), dtype: Some(DataType::Int64), ints: Some(dims) }])
    }

    fn slice(&mut self) -> Outcome {
        let dtype = self.dtype(0);
        let Some(x) = self.shape(0) else { return unknown() };
        let (starts, ends, axes, steps) = if self.opset < 10 {
            (self.ints_attr("starts"), self.ints_attr("ends"), self.ints_attr("axes"), None)
        } else {
            let opt = |s: &mut Self, i: usize| if s.present(i) { s.known_ints(i).map(Some) } else { Some(None) };
            let (Some(axes), Some(steps)) = (opt(self, 3), opt(self, 4)) else { return unknown() };
            (self.known_ints(1), self.known_ints(2), axes, steps)
        };
        let (Some(starts), Some(ends)) = (starts, ends) else {
            // Unknown bounds: the rank stays, every sliced size is unknown.
            let y = x.iter().map(|_| self.syms.fresh()).collect();
            return Ok(vec![Info::shaped(y, dtype)]);
        };
        let axes = axes.unwrap_or_else(|| (0..starts.len() as i64).collect());
        let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
        if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
            return Err("starts, ends, axes and steps must have the same length".into());
        }
        let mut y = x.clone();
        let mut range_of_ints = None;
        for k in 0..starts.len() {
            let a = crate::kernels::normalize_axis(axes[k], x.len()).map_err(|e| e.0)?;
            let step = steps[k];
            if step == 0 {
                return Err("a step is 0".into());
            }
            y[a] = match x[a] {
                Sym::Known(n) => {
                    let (lo, hi) = slice_range(starts[k], ends[k], step, n);
                    if a == 0 && x.len() == 1 {
                        range_of_ints = Some((lo, hi, step));
                    }
                    let count = if step > 0 {
                        (hi - lo).max(0).div_euclid(step) + i64::from((hi - lo).max(0) % step != 0)
                    } else {
                        (lo - hi).max(0).div_euclid(-step) + i64::from((lo - hi).max(0) % -step != 0)
                    };
                    Sym::Known(count)
                }
                d if starts[k] == 0 && ends[k] >= i64::from(i32::MAX) && step == 1 => d,
                _ => self.syms.fresh(),
            };
        }
        let ints = match (self.ints(0), range_of_ints) {
            (Some(v), Some((lo, hi, step))) if step > 0 => {
                Some((lo..hi).step_by(step as usize).filter_map(|i| v.get(i as usize).copied()).collect())
            }
            _ => None,
        };
        Ok(vec![Info { shape: Some(y), dtype, ints }])
    }

    fn pad(&mut self) -> Outcome {
        let dtype = self.dtype(0);
        let Some(x) = self.shape(0) else { return unknown() };
        let pads = if self.opset < 11 { self.ints_attr("pads") } else { self.known_ints(1) };
        let Some(pads) = pads else {
            let y = x.iter().map(|_| self.syms.fresh()).collect();
            return Ok(vec![Info::shaped(y, dtype)]);
        };
        let axes: Vec<usize> = match (self.opset >= 18 && self.present(3)).then(|| self.known_ints(3)) {
            Some(None) => return unknown(),
            Some(Some(a)) => a
                .iter()
                .map(|&a| crate::kernels::normalize_axis(a, x.len()).map_err(|e| e.0))
                .collect::<Result<_, _>>()?,
            None => (0..x.len()).collect(),
        };
        if pads.len() != 2 * axes.len() {
            return Err(format!("pads has {} values for {} axes", pads.len(), axes.len()));
        }
        let mut y = x.clone();
        for (k, &a) in axes.iter().enumerate() {
            y[a] = match x[a] {
                Sym::Known(n) => Sym::Known(n + pads[k] + pads[k + axes.len()]),
                d if pads[k] == 0 && pads[k + axes.len()] == 0 => d,
                _ => self.syms.fresh(),
            };
        }
        Ok(vec![Info::shaped(y, dtype)])
    }

    fn reduce(&mut self) -> Outcome {
        let dtype = self.dtype(0);
        let Some(x) = self.shape(0) else { return unknown() };
        let from = if self.node.op == "ReduceSum" { 13 } else { 18 };
        let Some(axes) = self.axes(from, 1) else { return unknown() };
        let keep = self.int_attr("keepdims", 1) != 0;
        let axes = match axes {
            Some(a) if !a.is_empty() => a
                .iter()
                .map(|&a| crate::kernels::normalize_axis(a, x.len()).map_err(|e| e.0))
                .collect::<Result<Vec<_>, _>>()?,
            _ if self.int_attr("noop_with_empty_axes", 0) != 0 => return Ok(vec![Info::shaped(x, dtype)]),
            _ => (0..x.len()).collect(),
        };
        Ok(vec![Info::shaped(reduced(&x, &axes, keep), dtype)])
    }

    fn resize(&mut self) -> Outcome {
        let dtype = self.dtype(0);
        let Some(x) = self.shape(0) else { return unknown() };
        let fresh = |s: &mut Self| -> Outcome {
            let y = x.iter().map(|_| s.syms.fresh()).collect();
            Ok(vec![Info::shaped(y, dtype)])
        };
        if self.node.op == "Resize" && self.opset >= 11 && self.present(3) {
            let Some(sizes) = self.ints(3) else { return fresh(self) };
            let axes = self.ints_attr("axes");
            return match axes {
                None if sizes.len() == x.len() => Ok(vec![Info::shaped(sizes, dtype)]),
                _ => fresh(self),
            };
        }
        // Scales: floor(dim * scale), when the policy and axes leave them as they are.
        let scales = match (self.node.op.as_str(), self.opset) {
            ("Upsample", o) if o < 9 => self
                .node
                .attributes
                .get("scales")
                .and_then(|a| if let Attribute::Floats(v) = a { Some(v.clone()) } else { None }),
            ("Upsample", _) => self.konst(1).and_then(|t| t.as_f32().map(<[f32]>::to_vec)),
            (_, o) if o < 11 => self.konst(1).and_then(|t| t.as_f32().map(<[f32]>::to_vec)),
            _ => self.konst(2).and_then(|t| t.as_f32().map(<[f32]>::to_vec)),
        };
        match scales {
            Some(s) if s.len() == x.len() && self.ints_attr("axes").is_none() => {
                let y = x
                    .iter()
                    .zip(&s)
                    .map(|(&d, &f)| match d {
                        Sym::Known(n) => Sym::Known((n as f64 * f64::from(f)).floor() as i64),
                        Sym::Var(_) if f == 1.0 => d,
                        Sym::Var(_) => self.syms.fresh(),
                    })
                    .collect();
                Ok(vec![Info::shaped(y, dtype)])
            }
            _ => fresh(self),
        }
    }

    fn recurrent(&mut self) -> Outcome {
        let dtype = self.dtype(0);
        let (Some(x), Some(w)) = (self.shape(0), self.shape(1)) else { return unknown() };
        if x.len() != 3 || w.len() != 3 {
            return Err(format!("X and W must have rank 3, got {} and {}", x.len(), w.len()));
        }
        self.unify(x[2], w[2], "the input size of X and W:")?;
        let batch_major = self.int_attr("layout", 0) != 0;
        let (t, b) = if batch_major { (x[1], x[0]) } else { (x[0], x[1]) };
        let dirs = w[0];
        let hidden = match self.node.int_attr("hidden_size", 0) {
            Ok(h) if h > 0 => Sym::Known(h),
            _ => self.syms.fresh(),
        };
        let y = if batch_major { vec![b, t, dirs, hidden] } else { vec![t, dirs, b, hidden] };
        let state = if batch_major { vec![b, dirs, hidden] } else { vec![dirs, b, hidden] };
        Ok(vec![Info::shaped(y, dtype), Info::shaped(state.clone(), dtype), Info::shaped(state, dtype)])
    }
}

/// `x` with `axes` removed (or set to 1 when `keep`).
fn reduced(x: &[Sym], axes: &[usize], keep: bool) -> Vec<Sym> {
    x.iter()
        .enumerate()
        .filter_map(|(i, &d)| match (axes.contains(&i), keep) {
            (false, _) => Some(d),
            (true, true) => Some(Sym::Known(1)),
            (true, false) => None,
        })
        .collect()
}

/// The clamped [start, end) of a slice of a dim of size `n`.
fn slice_range(start: i64, end: i64, step: i64, n: i64) -> (i64, i64) {
    let norm = |v: i64| if v < 0 { v.saturating_add(n) } else { v };
    if step > 0 {
        (norm(start).clamp(0, n), norm(end).clamp(0, n))
    } else {
        (norm(start).clamp(-1, n - 1), norm(end).clamp(-1, n - 1))
    }
}

fn format_syms(dims: &[Sym]) -> String {
    let parts: Vec<String> = dims
        .iter()
        .map(|d| match d {
            Sym::Known(n) => n.to_string(),
            Sym::Var(_) => "-1".into(),
        })
        .collect();
    format!("[{}]", parts.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::ValueInfo;

    /// A graph builder for inference tests.
    #[derive(Default)]
    struct Builder {
        g: Graph,
    }

    impl Builder {
        fn value(&mut self, name: &str, dtype: DataType, shape: Option<Vec<Dim>>) -> ValueId {
            self.g.values.push(ValueInfo { name: name.into(), dtype: Some(dtype), shape });
            self.g.values.len() - 1
        }

        fn input(&mut self, name: &str, dims: &[Dim]) -> ValueId {
            let id = self.value(name, DataType::Float, Some(dims.to_vec()));
            self.g.inputs.push(id);
            id
        }

        fn constant(&mut self, name: &str, t: Tensor) -> ValueId {
            let id = self.value(name, t.dtype(), None);
            self.g.constants.insert(id, t);
            id
        }

        fn node(&mut self, op: &str, inputs: &[ValueId], attributes: Vec<(&str, Attribute)>) -> ValueId {
            let out = self.value(&format!("{op}_out{}", self.g.nodes.len()), DataType::Float, None);
            self.g.nodes.push(Node {
                name: format!("{}_{}", op.to_lowercase(), self.g.nodes.len()),
                op: op.into(),
                inputs: inputs.iter().map(|&i| Some(i)).collect(),
                outputs: vec![out],
                attributes: attributes.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            });
            out
        }

        fn infer(&self) -> Result<Inferred, ShapeError> {
            infer(&self.g, 13)
        }
    }

    fn batch() -> Dim {
        Dim::Unknown(Some("batch".into()))
    }

    fn any() -> Dim {
        Dim::Unknown(None)
    }

    fn weights(rows: usize, cols: usize) -> Tensor {
        Tensor::from_f32(vec![rows, cols], vec![0.5; rows * cols]).unwrap()
    }

    #[test]
    fn a_matmul_fixes_an_open_input_dim_and_requests_are_checked_against_it() {
        let mut b = Builder::default();
        let x = b.input("x", &[batch(), any()]);
        let w = b.constant("w", weights(784, 10));
        let y = b.node("MatMul", &[x, w], vec![]);
        let inferred = b.infer().unwrap();
        assert_eq!(inferred.shapes[y], Some(vec![None, Some(10)]));
        let rule = &inferred.inputs[0];
        assert_eq!(rule.dims[0], DimRule::Any, "a batch dim used once constrains nothing");
        assert_eq!(rule.dims[1], DimRule::Fixed { size: 784, reason: "node 'matmul_0' (MatMul)".into() });
        assert_eq!(check_feeds(&inferred.inputs, &[(x, &[3, 784])]), Ok(()));
        assert_eq!(
            check_feeds(&inferred.inputs, &[(x, &[3, 783])]).unwrap_err(),
            "input 'x' has shape [3,783], but dim 1 must be 784 (node 'matmul_0' (MatMul) needs it)"
        );
        assert_eq!(
            check_feeds(&inferred.inputs, &[(x, &[784])]).unwrap_err(),
            "input 'x' has shape [784], but the model needs rank 2"
        );
    }

    #[test]
    fn fixed_dims_that_contradict_fail_the_load_naming_the_node() {
        let mut b = Builder::default();
        let x = b.input("x", &[batch(), Dim::Known(3)]);
        let w = b.constant("w", weights(4, 2));
        b.node("MatMul", &[x, w], vec![]);
        let err = b.infer().unwrap_err();
        assert_eq!(err.to_string(), "node 'matmul_0' (MatMul): the inner dims of A and B: needs 3 and 4 to be equal");

        let mut b = Builder::default();
        let x = b.input("x", &[batch(), Dim::Known(2), Dim::Known(3)]);
        let shape = b.constant("shape", Tensor::from_i64(vec![2], vec![-1, 4]).unwrap());
        b.node("Reshape", &[x, shape], vec![]);
        assert!(b.infer().is_ok(), "a -1 next to a symbolic batch stays open");
        let mut b = Builder::default();
        let x = b.input("x", &[Dim::Known(2), Dim::Known(3)]);
        let shape = b.constant("shape", Tensor::from_i64(vec![2], vec![4, -1]).unwrap());
        b.node("Reshape", &[x, shape], vec![]);
        assert!(b.infer().unwrap_err().to_string().contains("cannot reshape 6 elements into shape [4,-1]"));
    }

    #[test]
    fn dims_that_must_be_equal_across_inputs_are_checked_together() {
        let mut b = Builder::default();
        let a = b.input("a", &[any(), Dim::Known(2)]);
        let c = b.input("c", &[any(), Dim::Known(3)]);
        let y = b.node("Concat", &[a, c], vec![("axis", Attribute::Int(1))]);
        let inferred = b.infer().unwrap();
        assert_eq!(inferred.shapes[y], Some(vec![None, Some(5)]));
        assert!(matches!(inferred.inputs[0].dims[0], DimRule::Same(_)));
        assert_eq!(check_feeds(&inferred.inputs, &[(a, &[4, 2]), (c, &[4, 3])]), Ok(()));
        assert_eq!(
            check_feeds(&inferred.inputs, &[(a, &[4, 2]), (c, &[5, 3])]).unwrap_err(),
            "input 'c' has shape [5,3], but its dim 0 must equal dim 0 of input 'a', which is 4"
        );
    }

    #[test]
    fn shapes_computed_from_shape_resolve_reshapes_and_conv_geometry() {
        // x [batch, 8, 6, 6] -> Conv 3x3 stride 2 pads 1 with 4 filters ->
        // [batch, 4, 3, 3] -> Shape -> Gather(0) -> Unsqueeze -> Concat with
        // [36] -> Reshape -> [batch, 36] -> MatMul [36, 5].
        let mut b = Builder::default();
        let x = b.input("x", &[batch(), any(), Dim::Known(6), Dim::Known(6)]);
        let w = b.constant("w", Tensor::from_f32(vec![4, 8, 3, 3], vec![0.1; 288]).unwrap());
        let conv = b.node(
            "Conv",
            &[x, w],
            vec![("strides", Attribute::Ints(vec![2, 2])), ("pads", Attribute::Ints(vec![1, 1, 1, 1]))],
        );
        let shape = b.node("Shape", &[conv], vec![]);
        let zero = b.constant("zero", Tensor::from_i64(vec![], vec![0]).unwrap());
        let n = b.node("Gather", &[shape, zero], vec![]);
        let axes = b.constant("axes", Tensor::from_i64(vec![1], vec![0]).unwrap());
        let n1 = b.node("Unsqueeze", &[n, axes], vec![]);
        let rest = b.constant("rest", Tensor::from_i64(vec![1], vec![36]).unwrap());
        let target = b.node("Concat", &[n1, rest], vec![("axis", Attribute::Int(0))]);
        let flat = b.node("Reshape", &[conv, target], vec![]);
        let fc = b.constant("fc", weights(36, 5));
        let y = b.node("MatMul", &[flat, fc], vec![]);
        let inferred = b.infer().unwrap();
        assert_eq!(inferred.shapes[conv], Some(vec![None, Some(4), Some(3), Some(3)]));
        assert_eq!(inferred.shapes[flat], Some(vec![None, Some(36)]));
        assert_eq!(inferred.shapes[y], Some(vec![None, Some(5)]));
        let rule = &inferred.inputs[0];
        assert!(matches!(&rule.dims[1], DimRule::Fixed { size: 8, reason } if reason.contains("(Conv)")), "{rule:?}");

        b.g.constants.insert(fc, weights(35, 5));
        let err = b.infer().unwrap_err().to_string();
        assert!(err.contains("needs 36 and 35 to be equal"), "{err}");
    }

    #[test]
    fn unknown_operators_leave_shapes_open() {
        let mut b = Builder::default();
        let x = b.input("x", &[batch(), Dim::Known(3)]);
        let y = b.node("Mystery", &[x], vec![]);
        let z = b.node("Relu", &[y], vec![]);
        let inferred = b.infer().unwrap();
        assert_eq!(inferred.shapes[z], None);
        assert_eq!(inferred.inputs[0].dims[1], DimRule::Fixed { size: 3, reason: "the model's declared shape".into() });
    }
}
