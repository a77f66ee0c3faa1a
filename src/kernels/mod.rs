//! The kernel registry and the operators.
//!
//! Each operator family lives in its own module and registers itself with
//! [`KernelRegistry`] through a `register` function, as a builder that turns
//! a graph [`Node`] into a ready-to-run [`Kernel`]. Builders check attributes
//! once, at load time, so a bad model fails to load with a message naming the
//! node instead of failing on its first request.
//!
//! The kernels here are the plain reference implementations: simple loops,
//! parallel only over independent output chunks, so results never depend on
//! the thread count. Faster kernels may later replace an entry in the
//! registry; these stay as the oracle they are tested against.
//!
//! Nothing here knows about wire formats, async runtimes or model files.

/// Declares `$name`, which runs `$imp` (an `#[inline(always)]` function of
/// plain loops) compiled for AVX-512 or AVX2 when the CPU has them, so the
/// compiler vectorizes the loops for the widest registers there are, or for
/// the baseline otherwise: the same operations in the same order on each
/// path, so the same result.
macro_rules! dispatched {
    ($name:ident => $imp:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)?) => {
        #[allow(clippy::too_many_arguments)]
        fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[allow(clippy::too_many_arguments)]
                #[target_feature(enable = "avx512f")]
                unsafe fn avx512($($arg: $ty),*) $(-> $ret)? {
                    $imp($($arg),*)
                }
                #[allow(clippy::too_many_arguments)]
                #[target_feature(enable = "avx2")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    $imp($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has AVX-512F.
                    return unsafe { avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU has AVX2.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $imp($($arg),*)
        }
    };
}

mod activation;
mod attention;
mod broadcast;
mod cast;
mod compare;
mod conv;
mod conv2d;
mod conv_small;
mod conv_transpose;
mod detect;
mod einsum;
mod elementwise;
pub mod epilogue;
mod gemm;
mod grid;
mod indexing;
mod loss;
mod movement;
mod nhwc;
mod norm;
mod pool;
mod quant;
mod recurrent;
mod reduce;
mod resize;
pub mod sgemm;
mod shape;
mod tf;
mod unary;
mod winograd;

use std::collections::HashMap;
use std::fmt;

use crate::graph::{AttributeError, Node, ValueId};
use crate::tensor::{DataType, Tensor, TensorError};

pub(crate) use cast::onnx_dtype;
pub use conv::{AutoPad, Axis, Window};
pub use gemm::matmul_f32;

/// A ready-to-run operator instance with its attributes already checked.
pub trait Kernel: Send + Sync + fmt::Debug {
    /// Runs the operator. `inputs` follow the operator's input order; `None`
    /// is an omitted optional input.
    ///
    /// # Errors
    /// When the inputs' types or shapes do not fit the operator.
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError>;

    /// The multiply-adds a run on these inputs does, for kernels whose work
    /// their results' shapes do not show (a convolution with its pooling
    /// fused in); `None` for the others.
    fn multiply_adds(&self, _inputs: &[Option<&Tensor>]) -> Option<u64> {
        None
    }

    /// For kernels whose one output is their first input's data under
    /// another shape (Flatten, Reshape, Identity): that shape, which is what
    /// `run` would give. The runtime then moves the input into the output
    /// instead of copying it when no later step reads it.
    ///
    /// # Errors
    /// As `run`'s.
    fn view_shape(&self, _inputs: &[Option<&Tensor>]) -> Option<Result<Vec<usize>, KernelError>> {
        None
    }
}

/// A failure while running a kernel; the runtime adds the node's name.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct KernelError(pub String);

impl From<TensorError> for KernelError {
    fn from(e: TensorError) -> Self {
        KernelError(e.to_string())
    }
}

/// Why a node could not be turned into a kernel.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BuildError {
    #[error("operator '{op}' (node '{node}') is not supported at opset {opset}; supported operators: {supported}")]
    UnsupportedOp { op: String, node: String, opset: i64, supported: String },
    #[error("operator '{op}' (node '{node}') is supported from opset {min} to {max}, but the model uses opset {opset}")]
    UnsupportedOpset { op: String, node: String, opset: i64, min: i64, max: i64 },
    #[error(transparent)]
    Attribute(#[from] AttributeError),
    #[error("node '{node}' ({op}): {message}")]
    Invalid { node: String, op: String, message: String },
}

impl BuildError {
    /// An invalid-node error for `node`.
    pub fn invalid(node: &Node, message: impl Into<String>) -> BuildError {
        BuildError::Invalid { node: node.name.clone(), op: node.op.clone(), message: message.into() }
    }
}

/// What a builder sees: the node, the opset its semantics follow, the
/// registry (control flow builds its subgraphs with it), and the graph's
/// constants, so a kernel can prepare its weights once, at load time.
pub struct BuildContext<'a> {
    pub node: &'a Node,
    pub opset: i64,
    pub registry: &'a KernelRegistry,
    pub constants: Option<&'a HashMap<ValueId, Tensor>>,
}

impl<'a> BuildContext<'a> {
    /// Input `index` of the node when it is a constant of the graph: the
    /// same tensor on every run.
    pub fn constant_input(&self, index: usize) -> Option<&'a Tensor> {
        let id = self.node.inputs.get(index).copied().flatten()?;
        self.constants?.get(&id)
    }
}

/// Turns a node into a kernel.
pub type KernelBuilder = fn(&BuildContext<'_>) -> Result<Box<dyn Kernel>, BuildError>;

/// One registered operator: the opsets it covers and its builder.
#[derive(Clone, Copy)]
struct OpEntry {
    min_opset: i64,
    max_opset: i64,
    build: KernelBuilder,
}

/// The highest ONNX opset the registry claims to understand: the newest the
/// pinned `onnx` package (1.23.2) defines. Newer models are refused with a
/// clear message rather than run with guessed semantics. Raising it means
/// checking every registered operator for versions above the old bound.
pub const MAX_OPSET: i64 = 28;

/// Maps operator names to kernel builders.
pub struct KernelRegistry {
    ops: HashMap<&'static str, OpEntry>,
}

impl KernelRegistry {
    /// An empty registry.
    pub fn empty() -> KernelRegistry {
        KernelRegistry { ops: HashMap::new() }
    }

    /// The registry with every operator ferroserve implements.
    pub fn with_all_ops() -> KernelRegistry {
        let mut reg = KernelRegistry::empty();
        activation::register(&mut reg);
        attention::register(&mut reg);
        elementwise::register(&mut reg);
        compare::register(&mut reg);
        conv::register(&mut reg);
        conv_transpose::register(&mut reg);
        detect::register(&mut reg);
        pool::register(&mut reg);
        quant::register(&mut reg);
        reduce::register(&mut reg);
        norm::register(&mut reg);
        recurrent::register(&mut reg);
        resize::register(&mut reg);
        gemm::register(&mut reg);
        grid::register(&mut reg);
        einsum::register(&mut reg);
        shape::register(&mut reg);
        movement::register(&mut reg);
        nhwc::register(&mut reg);
        tf::register(&mut reg);
        indexing::register(&mut reg);
        loss::register(&mut reg);
        cast::register(&mut reg);
        unary::register(&mut reg);
        crate::runtime::register_control_flow(&mut reg);
        reg
    }

    /// Registers (or replaces) the builder for `op` over opsets
    /// `min_opset..=max_opset`.
    pub fn register(&mut self, op: &'static str, min_opset: i64, max_opset: i64, build: KernelBuilder) {
        self.ops.insert(op, OpEntry { min_opset, max_opset, build });
    }

    /// True when `op` is registered (at some opset).
    pub fn has_op(&self, op: &str) -> bool {
        self.ops.contains_key(op)
    }

    /// The names of all registered operators, sorted.
    pub fn op_names(&self) -> Vec<&'static str> {
        let mut names: Vec<_> = self.ops.keys().copied().collect();
        names.sort_unstable();
        names
    }

    /// Builds the kernel for `node` at `opset`.
    ///
    /// # Errors
    /// When the operator or the opset is not supported, or the node's
    /// attributes are invalid.
    pub fn build(&self, node: &Node, opset: i64) -> Result<Box<dyn Kernel>, BuildError> {
        self.build_with_constants(node, opset, None)
    }

    /// [`KernelRegistry::build`] for a node of a graph with these
    /// constants, which the kernel may prepare at load time.
    ///
    /// # Errors
    /// As [`KernelRegistry::build`].
    pub fn build_with_constants(
        &self,
        node: &Node,
        opset: i64,
        constants: Option<&HashMap<ValueId, Tensor>>,
    ) -> Result<Box<dyn Kernel>, BuildError> {
        let entry = self.ops.get(node.op.as_str()).ok_or_else(|| BuildError::UnsupportedOp {
            op: node.op.clone(),
            node: node.name.clone(),
            opset,
            supported: self.op_names().join(", "),
        })?;
        if opset < entry.min_opset || opset > entry.max_opset {
            return Err(BuildError::UnsupportedOpset {
                op: node.op.clone(),
                node: node.name.clone(),
                opset,
                min: entry.min_opset,
                max: entry.max_opset,
            });
        }
        (entry.build)(&BuildContext { node, opset, registry: self, constants })
    }
}

impl fmt::Debug for KernelRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KernelRegistry").field("ops", &self.op_names()).finish()
    }
}

/// The input at `index`, which the operator requires.
///
/// # Errors
/// When it is absent.
pub(crate) fn required<'a>(inputs: &[Option<&'a Tensor>], index: usize, what: &str) -> Result<&'a Tensor, KernelError> {
    inputs.get(index).copied().flatten().ok_or_else(|| KernelError(format!("missing required input {index} ({what})")))
}

/// The float elements of `t`.
///
/// # Errors
/// When `t` is not a float tensor.
pub(crate) fn floats<'a>(t: &'a Tensor, what: &str) -> Result<&'a [f32], KernelError> {
    t.as_f32().ok_or_else(|| KernelError(format!("{what} must be {} but is {}", DataType::Float, t.dtype())))
}

/// The elements of a float or double tensor as f64, for kernels that
/// compute statistics or recurrences in double precision.
///
/// # Errors
/// When `t` is of another type.
pub(crate) fn float_values(t: &Tensor, what: &str) -> Result<Vec<f64>, KernelError> {
    match t.data() {
        crate::tensor::TensorData::Float(v) => Ok(v.iter().map(|&a| f64::from(a)).collect()),
        crate::tensor::TensorData::Double(v) => Ok(v.clone()),
        other => Err(KernelError(format!("{what} must be DT_FLOAT or DT_DOUBLE but is {}", other.dtype()))),
    }
}

/// f64 results as a tensor of `like`'s type: double stays double, anything
/// else becomes float.
///
/// # Errors
/// When `values` does not hold `shape`'s element count.
pub(crate) fn float_tensor_like(like: &Tensor, shape: Vec<usize>, values: Vec<f64>) -> Result<Tensor, KernelError> {
    let data = match like.data() {
        crate::tensor::TensorData::Double(_) => crate::tensor::TensorData::Double(values),
        _ => crate::tensor::TensorData::Float(values.into_iter().map(|a| a as f32).collect()),
    };
    Ok(Tensor::new(shape, data)?)
}

/// Resolves a possibly negative axis against `rank` (`-1` is the last axis).
///
/// # Errors
/// When the axis is outside `-rank..rank`.
pub(crate) fn normalize_axis(axis: i64, rank: usize) -> Result<usize, KernelError> {
    let r = rank as i64;
    if axis < -r || axis >= r.max(1) {
        return Err(KernelError(format!("axis {axis} is out of range for rank {rank}")));
    }
    Ok(if axis < 0 { (axis + r) as usize } else { axis as usize })
}

#[cfg(test)]
pub(crate) mod testing {
    //! Helpers for kernel tests: deterministic inputs and a tolerance check.
    use super::*;
    use crate::graph::Attribute;

    /// Deterministic pseudo-random floats in [-1, 1) (a 64-bit LCG).
    pub fn random_floats(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// A node of `op` with the given attributes, for building kernels.
    pub fn node(op: &str, n_inputs: usize, attributes: Vec<(&str, Attribute)>) -> Node {
        Node {
            name: format!("{op}_0"),
            op: op.to_string(),
            inputs: (0..n_inputs).map(Some).collect(),
            outputs: vec![n_inputs],
            attributes: attributes.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        }
    }

    /// Builds `node` at `opset` from the full registry and runs it once.
    pub fn run(node: &Node, opset: i64, inputs: &[&Tensor]) -> Result<Vec<Tensor>, KernelError> {
        let kernel = KernelRegistry::with_all_ops().build(node, opset).map_err(|e| KernelError(e.to_string()))?;
        let inputs: Vec<Option<&Tensor>> = inputs.iter().map(|t| Some(*t)).collect();
        kernel.run(&inputs)
    }

    /// Asserts `actual` equals `expected` within rtol 1e-4 / atol 1e-5, the
    /// project's kernel tolerance.
    pub fn assert_close(actual: &[f32], expected: &[f32]) {
        assert_eq!(actual.len(), expected.len(), "element counts differ");
        for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
            assert!((a - e).abs() <= 1e-5 + 1e-4 * e.abs(), "element {i}: got {a}, expected {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::node;
    use super::*;

    #[test]
    fn unknown_ops_and_opsets_are_named() {
        let reg = KernelRegistry::with_all_ops();
        let err = reg.build(&node("FancyOp", 1, vec![]), 13).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("'FancyOp'") && text.contains("FancyOp_0") && text.contains("opset 13"), "{text}");
        assert!(text.contains("Conv") && text.contains("Softmax"), "{text}");
        let err = reg.build(&node("Relu", 1, vec![]), MAX_OPSET + 1).unwrap_err();
        assert!(matches!(err, BuildError::UnsupportedOpset { .. }), "{err}");
    }

    #[test]
    fn axes_normalize() {
        assert_eq!(normalize_axis(-1, 4), Ok(3));
        assert_eq!(normalize_axis(1, 4), Ok(1));
        assert!(normalize_axis(4, 4).is_err());
        assert!(normalize_axis(-5, 4).is_err());
    }
}
