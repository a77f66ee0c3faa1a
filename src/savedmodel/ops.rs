//! TensorFlow ops as IR nodes: each op a SavedModel's serving path uses
//! becomes the ONNX operator with the same meaning, or a `tf.` operator
//! where ONNX has none (channels-last convolution and pooling, StridedSlice,
//! Pack, ...). Operands TensorFlow passes as tensors but ONNX wants fixed
//! (Concat's axis, Transpose's permutation) must be constants.
//!
//! SavedModels are written with `stripped_default_attrs`: an attribute equal
//! to its OpDef default is left out. [`DEFAULTS`] holds those defaults for
//! every op imported here, so that an absent attribute means what it means
//! to TensorFlow, never 0 or "".

use super::import::{Importer, NodeError, Val};
use crate::graph::{Attribute, ValueId};
use crate::proto::tensorflow::{NodeDef, attr_value};
use crate::tensor::proto::{dtype_from_wire, wire_dtype_name};
use crate::tensor::{DataType, Tensor, TensorData};

/// An attribute default of an OpDef.
#[derive(Debug, Clone, Copy)]
enum Default {
    Int(i64),
    Bool(bool),
    Float(f32),
    Str(&'static str),
    Ints(&'static [i64]),
    /// A `DataType` wire number.
    Type(i32),
}

const DT_FLOAT: i32 = 1;
const DT_INT32: i32 = 3;
const DT_INT64: i32 = 9;

/// The OpDef defaults of the attributes the importer reads, as TensorFlow
/// 2.21's op registry declares them (`tf.raw_ops` documents each).
const DEFAULTS: &[(&str, &str, Default)] = &[
    ("Conv2D", "data_format", Default::Str("NHWC")),
    ("Conv2D", "dilations", Default::Ints(&[1, 1, 1, 1])),
    ("Conv2D", "explicit_paddings", Default::Ints(&[])),
    ("Conv2DBackpropInput", "data_format", Default::Str("NHWC")),
    ("Conv2DBackpropInput", "dilations", Default::Ints(&[1, 1, 1, 1])),
    ("Conv2DBackpropInput", "explicit_paddings", Default::Ints(&[])),
    ("DepthwiseConv2dNative", "data_format", Default::Str("NHWC")),
    ("DepthwiseConv2dNative", "dilations", Default::Ints(&[1, 1, 1, 1])),
    ("DepthwiseConv2dNative", "explicit_paddings", Default::Ints(&[])),
    ("MaxPool", "data_format", Default::Str("NHWC")),
    ("MaxPool", "explicit_paddings", Default::Ints(&[])),
    ("AvgPool", "data_format", Default::Str("NHWC")),
    ("Conv3D", "data_format", Default::Str("NDHWC")),
    ("Conv3D", "dilations", Default::Ints(&[1, 1, 1, 1, 1])),
    ("MaxPool3D", "data_format", Default::Str("NDHWC")),
    ("AvgPool3D", "data_format", Default::Str("NDHWC")),
    ("BiasAdd", "data_format", Default::Str("NHWC")),
    ("FusedBatchNorm", "epsilon", Default::Float(1e-4)),
    ("FusedBatchNorm", "data_format", Default::Str("NHWC")),
    ("FusedBatchNorm", "is_training", Default::Bool(true)),
    ("FusedBatchNormV2", "epsilon", Default::Float(1e-4)),
    ("FusedBatchNormV2", "data_format", Default::Str("NHWC")),
    ("FusedBatchNormV2", "is_training", Default::Bool(true)),
    ("FusedBatchNormV3", "epsilon", Default::Float(1e-4)),
    ("FusedBatchNormV3", "data_format", Default::Str("NHWC")),
    ("FusedBatchNormV3", "is_training", Default::Bool(true)),
    ("MatMul", "transpose_a", Default::Bool(false)),
    ("MatMul", "transpose_b", Default::Bool(false)),
    ("BatchMatMul", "adj_x", Default::Bool(false)),
    ("BatchMatMul", "adj_y", Default::Bool(false)),
    ("BatchMatMulV2", "adj_x", Default::Bool(false)),
    ("BatchMatMulV2", "adj_y", Default::Bool(false)),
    ("BatchMatMulV3", "adj_x", Default::Bool(false)),
    ("BatchMatMulV3", "adj_y", Default::Bool(false)),
    ("Mean", "keep_dims", Default::Bool(false)),
    ("Sum", "keep_dims", Default::Bool(false)),
    ("Max", "keep_dims", Default::Bool(false)),
    ("Min", "keep_dims", Default::Bool(false)),
    ("Prod", "keep_dims", Default::Bool(false)),
    ("ArgMax", "output_type", Default::Type(DT_INT64)),
    ("ArgMin", "output_type", Default::Type(DT_INT64)),
    ("Squeeze", "squeeze_dims", Default::Ints(&[])),
    ("Shape", "out_type", Default::Type(DT_INT32)),
    ("Size", "out_type", Default::Type(DT_INT32)),
    ("StridedSlice", "begin_mask", Default::Int(0)),
    ("StridedSlice", "end_mask", Default::Int(0)),
    ("StridedSlice", "ellipsis_mask", Default::Int(0)),
    ("StridedSlice", "new_axis_mask", Default::Int(0)),
    ("StridedSlice", "shrink_axis_mask", Default::Int(0)),
    ("Pack", "axis", Default::Int(0)),
    ("Unpack", "axis", Default::Int(0)),
    ("GatherV2", "batch_dims", Default::Int(0)),
    ("LeakyRelu", "alpha", Default::Float(0.2)),
    ("Cast", "Truncate", Default::Bool(false)),
    ("Cumsum", "exclusive", Default::Bool(false)),
    ("Cumsum", "reverse", Default::Bool(false)),
    ("MaxPool", "T", Default::Type(DT_FLOAT)),
    ("TensorListSetItem", "resize_if_index_out_of_bounds", Default::Bool(false)),
    ("ResizeBilinear", "align_corners", Default::Bool(false)),
    ("ResizeBilinear", "half_pixel_centers", Default::Bool(false)),
    ("ResizeNearestNeighbor", "align_corners", Default::Bool(false)),
    ("ResizeNearestNeighbor", "half_pixel_centers", Default::Bool(false)),
];

/// The flat index of output arg `arg`'s first element, for ops with more
/// than one output arg (FusedBatchNorm's `y, batch_mean, ...`). Ops with a
/// single output arg (list or not) start it at 0.
pub(super) fn output_offset(op: &str, arg: &str) -> usize {
    const MULTI: &[(&str, &[&str])] = &[
        (
            "FusedBatchNorm",
            &["y", "batch_mean", "batch_variance", "reserve_space_1", "reserve_space_2", "reserve_space_3"],
        ),
        ("TopKV2", &["values", "indices"]),
        ("Unique", &["y", "idx"]),
    ];
    let base = op.trim_end_matches("V2").trim_end_matches("V3");
    MULTI
        .iter()
        .find(|(o, _)| *o == base || *o == op)
        .and_then(|(_, args)| args.iter().position(|a| *a == arg))
        .unwrap_or(0)
}

/// Typed access to a node's attributes, falling back to [`DEFAULTS`].
struct Attrs<'n> {
    node: &'n NodeDef,
}

impl Attrs<'_> {
    /// The OpDef default of attribute `name` of this node's op.
    fn default(&self, name: &str) -> Option<Default> {
        DEFAULTS.iter().find(|(op, a, _)| *op == self.node.op && *a == name).map(|(_, _, d)| *d)
    }

    /// A scalar attribute (int, bool, float or type), present or defaulted;
    /// strings and lists are read by `string` and `ints`.
    fn value(&self, name: &str) -> Result<Option<Default>, NodeError> {
        let Some(v) = self.node.attr.get(name).and_then(|a| a.value.as_ref()) else {
            return Ok(self.default(name));
        };
        Ok(Some(match v {
            attr_value::Value::I(i) => Default::Int(*i),
            attr_value::Value::B(b) => Default::Bool(*b),
            attr_value::Value::F(f) => Default::Float(*f),
            attr_value::Value::Type(t) => Default::Type(*t),
            _ => return Err(NodeError(format!("attribute '{name}' is not an integer, bool, float or type"))),
        }))
    }

    fn missing(&self, name: &str) -> NodeError {
        NodeError(format!("attribute '{name}' is missing and has no default"))
    }

    fn int(&self, name: &str) -> Result<i64, NodeError> {
        match self.value(name)? {
            Some(Default::Int(i)) => Ok(i),
            Some(_) => Err(NodeError(format!("attribute '{name}' is not an integer"))),
            None => Err(self.missing(name)),
        }
    }

    fn bool(&self, name: &str) -> Result<bool, NodeError> {
        match self.value(name)? {
            Some(Default::Bool(b)) => Ok(b),
            Some(_) => Err(NodeError(format!("attribute '{name}' is not a bool"))),
            None => Err(self.missing(name)),
        }
    }

    fn float(&self, name: &str) -> Result<f32, NodeError> {
        match self.value(name)? {
            Some(Default::Float(f)) => Ok(f),
            Some(_) => Err(NodeError(format!("attribute '{name}' is not a float"))),
            None => Err(self.missing(name)),
        }
    }

    fn dtype_code(&self, name: &str) -> Result<i32, NodeError> {
        match self.value(name)? {
            Some(Default::Type(t)) => Ok(t),
            Some(_) => Err(NodeError(format!("attribute '{name}' is not a type"))),
            None => Err(self.missing(name)),
        }
    }

    fn dtype(&self, name: &str) -> Result<DataType, NodeError> {
        let t = self.dtype_code(name)?;
        dtype_from_wire(t).map_err(|_| NodeError(format!("element type {} is not supported", wire_dtype_name(t))))
    }

    fn string(&self, name: &str) -> Result<String, NodeError> {
        match self.node.attr.get(name).and_then(|a| a.value.as_ref()) {
            Some(attr_value::Value::S(s)) => Ok(String::from_utf8_lossy(s).into_owned()),
            Some(_) => Err(NodeError(format!("attribute '{name}' is not a string"))),
            None => match self.default(name) {
                Some(Default::Str(s)) => Ok(s.to_string()),
                _ => Err(self.missing(name)),
            },
        }
    }

    fn ints(&self, name: &str) -> Result<Vec<i64>, NodeError> {
        match self.node.attr.get(name).and_then(|a| a.value.as_ref()) {
            Some(attr_value::Value::List(l)) => Ok(l.i.clone()),
            Some(_) => Err(NodeError(format!("attribute '{name}' is not a list of integers"))),
            None => match self.default(name) {
                Some(Default::Ints(v)) => Ok(v.to_vec()),
                _ => Err(self.missing(name)),
            },
        }
    }
}

/// The ONNX element-type code of a dtype (Cast's `to`).
fn onnx_code(dtype: DataType) -> i64 {
    match dtype {
        DataType::Float => 1,
        DataType::UInt8 => 2,
        DataType::Int8 => 3,
        DataType::Int32 => 6,
        DataType::Int64 => 7,
        DataType::String => 8,
        DataType::Bool => 9,
        DataType::Double => 11,
    }
}

/// A one-to-one mapping onto an ONNX operator that takes the same inputs.
fn same_inputs(op: &str) -> Option<&'static str> {
    Some(match op {
        "AddV2" | "Add" => "Add",
        "Sub" => "Sub",
        "Mul" => "Mul",
        "RealDiv" | "Div" => "Div",
        "Maximum" => "Max",
        "Minimum" => "Min",
        "Pow" => "Pow",
        "FloorMod" => "Mod",
        "Less" => "Less",
        "LessEqual" => "LessOrEqual",
        "Greater" => "Greater",
        "GreaterEqual" => "GreaterOrEqual",
        "Equal" => "Equal",
        "LogicalAnd" => "And",
        "LogicalOr" => "Or",
        "LogicalNot" => "Not",
        "SelectV2" => "Where",
        "Relu" => "Relu",
        "Sigmoid" => "Sigmoid",
        "Tanh" => "Tanh",
        "Neg" => "Neg",
        "Abs" => "Abs",
        "Exp" => "Exp",
        "Log" => "Log",
        "Sqrt" => "Sqrt",
        "Floor" => "Floor",
        "Ceil" => "Ceil",
        "Round" => "Round",
        "Sign" => "Sign",
        "Erf" => "Erf",
        "Sin" => "Sin",
        "Cos" => "Cos",
        "Tan" => "Tan",
        "Softplus" => "Softplus",
        "Softsign" => "Softsign",
        "Reciprocal" | "Inv" => "Reciprocal",
        "Selu" => "Selu",
        "Elu" => "Elu",
        "Erfc" => "tf.Erfc",
        "Rsqrt" => "tf.Rsqrt",
        "Log1p" => "tf.Log1p",
        "Expm1" => "tf.Expm1",
        "AddN" => "Sum",
        "ClipByValue" => "Clip",
        "Range" => "Range",
        "StridedSlice" => "tf.StridedSlice",
        "Slice" => "tf.Slice",
        "ReverseV2" => "tf.ReverseV2",
        "ZerosLike" => "tf.ZerosLike",
        "OnesLike" => "tf.OnesLike",
        "Conv2D" => "tf.Conv2D",
        "DepthwiseConv2dNative" => "tf.DepthwiseConv2dNative",
        "MaxPool" => "tf.MaxPool",
        "AvgPool" => "tf.AvgPool",
        "Conv3D" => "tf.Conv3D",
        "MaxPool3D" => "tf.MaxPool3D",
        "AvgPool3D" => "tf.AvgPool3D",
        "BiasAddV1" => "Add",
        "SpaceToBatchND" => "tf.SpaceToBatchND",
        "BatchToSpaceND" => "tf.BatchToSpaceND",
        "Conv2DBackpropInput" => "tf.Conv2DBackpropInput",
        _ => return None,
    })
}

/// The TensorFlow attributes a `tf.` kernel reads, copied as they are (with
/// their defaults filled in).
fn tf_attributes(a: &Attrs<'_>, op: &str) -> Result<Vec<(&'static str, Attribute)>, NodeError> {
    let mut out = Vec::new();
    match op {
        "tf.Conv2D"
        | "tf.Conv3D"
        | "tf.DepthwiseConv2dNative"
        | "tf.Conv2DBackpropInput"
        | "tf.MaxPool"
        | "tf.AvgPool"
        | "tf.MaxPool3D"
        | "tf.AvgPool3D" => {
            out.push(("strides", Attribute::Ints(a.ints("strides")?)));
            out.push(("padding", Attribute::String(a.string("padding")?)));
            out.push(("data_format", Attribute::String(a.string("data_format")?)));
            if op.contains("Pool") {
                out.push(("ksize", Attribute::Ints(a.ints("ksize")?)));
            } else {
                out.push(("dilations", Attribute::Ints(a.ints("dilations")?)));
            }
            if matches!(op, "tf.Conv2D" | "tf.DepthwiseConv2dNative" | "tf.Conv2DBackpropInput" | "tf.MaxPool") {
                out.push(("explicit_paddings", Attribute::Ints(a.ints("explicit_paddings")?)));
            }
        }
        "tf.StridedSlice" => {
            for m in ["begin_mask", "end_mask", "ellipsis_mask", "new_axis_mask", "shrink_axis_mask"] {
                out.push((m, Attribute::Int(a.int(m)?)));
            }
        }
        _ => {}
    }
    Ok(out)
}

/// The IR for TensorFlow node `node` named `name`, whose inputs are the
/// tensors `t` (`vals` as the graph gave them, handles included).
pub(super) fn import_op(
    im: &mut Importer<'_>,
    node: &NodeDef,
    name: &str,
    t: Vec<ValueId>,
    vals: &[Val],
) -> Result<Vec<Val>, NodeError> {
    let a = Attrs { node };
    let op = node.op.as_str();
    let tensors = |ids: Vec<ValueId>| ids.into_iter().map(Val::Tensor).collect::<Vec<_>>();
    let want = |n: usize| -> Result<(), NodeError> {
        if t.len() < n {
            return Err(NodeError(format!("needs {n} inputs, got {}", t.len())));
        }
        Ok(())
    };
    let one = |im: &mut Importer<'_>, onnx: &str, inputs: Vec<Option<ValueId>>, attrs: Vec<(&str, Attribute)>| {
        vec![Val::Tensor(im.emit(name, onnx, inputs, 1, attrs)[0])]
    };
    if let Some(onnx) = same_inputs(op) {
        let attrs = tf_attributes(&a, onnx)?;
        match onnx {
            "tf.Conv2D" | "tf.DepthwiseConv2dNative" => want(2)?,
            "tf.Conv2DBackpropInput" | "tf.SpaceToBatchND" | "tf.BatchToSpaceND" => want(3)?,
            _ => {}
        }
        return Ok(one(im, onnx, t.into_iter().map(Some).collect(), attrs));
    }
    match op {
        "Identity" | "StopGradient" | "PreventGradient" | "Snapshot" | "EnsureShape" | "CheckNumerics"
        | "PlaceholderWithDefault" => {
            want(1)?;
            Ok(vec![vals[0].clone()])
        }
        "IdentityN" => Ok(vals.to_vec()),
        "NoOp" => Ok(Vec::new()),
        "Const" => {
            let tensor = im.const_tensor(node)?;
            Ok(vec![Val::Tensor(im.constant(name, tensor))])
        }
        "Relu6" => {
            want(1)?;
            let lo = im.constant(&format!("{name}/min"), Tensor::from_f32(vec![], vec![0.0]).expect("scalar"));
            let hi = im.constant(&format!("{name}/max"), Tensor::from_f32(vec![], vec![6.0]).expect("scalar"));
            Ok(one(im, "Clip", vec![Some(t[0]), Some(lo), Some(hi)], vec![]))
        }
        "LeakyRelu" => {
            want(1)?;
            Ok(one(im, "LeakyRelu", vec![Some(t[0])], vec![("alpha", Attribute::Float(a.float("alpha")?))]))
        }
        "Square" => {
            want(1)?;
            Ok(one(im, "Mul", vec![Some(t[0]), Some(t[0])], vec![]))
        }
        "SquaredDifference" => {
            want(2)?;
            let d = im.emit(&format!("{name}/difference"), "Sub", vec![Some(t[0]), Some(t[1])], 1, vec![])[0];
            Ok(one(im, "Mul", vec![Some(d), Some(d)], vec![]))
        }
        "NotEqual" => {
            want(2)?;
            let e = im.emit(&format!("{name}/equal"), "Equal", vec![Some(t[0]), Some(t[1])], 1, vec![])[0];
            Ok(one(im, "Not", vec![Some(e)], vec![]))
        }
        "FloorDiv" => {
            want(2)?;
            if !matches!(a.dtype("T")?, DataType::Float | DataType::Double) {
                return Err(NodeError("only floating-point FloorDiv is supported".into()));
            }
            let q = im.emit(&format!("{name}/quotient"), "Div", vec![Some(t[0]), Some(t[1])], 1, vec![])[0];
            Ok(one(im, "Floor", vec![Some(q)], vec![]))
        }
        "Softmax" | "LogSoftmax" => {
            want(1)?;
            Ok(one(im, op, vec![Some(t[0])], vec![("axis", Attribute::Int(-1))]))
        }
        "StringToHashBucketFast" => {
            want(1)?;
            let attrs = vec![("num_buckets", Attribute::Int(a.int("num_buckets")?))];
            Ok(one(im, "tf.StringToHashBucketFast", vec![Some(t[0])], attrs))
        }
        "Bitcast" => {
            want(1)?;
            let to = a.dtype("type")?;
            Ok(one(im, "tf.Bitcast", vec![Some(t[0])], vec![("to", Attribute::Int(onnx_code(to)))]))
        }
        "BitwiseAnd" | "BitwiseOr" | "BitwiseXor" => {
            want(2)?;
            Ok(one(im, op, vec![Some(t[0]), Some(t[1])], vec![]))
        }
        "Cast" => {
            want(1)?;
            let to = a.dtype("DstT")?;
            Ok(one(im, "Cast", vec![Some(t[0])], vec![("to", Attribute::Int(onnx_code(to)))]))
        }
        "MatMul" => {
            want(2)?;
            let (ta, tb) = (a.bool("transpose_a")?, a.bool("transpose_b")?);
            if ta || tb {
                let attrs = vec![("transA", Attribute::Int(i64::from(ta))), ("transB", Attribute::Int(i64::from(tb)))];
                Ok(one(im, "Gemm", vec![Some(t[0]), Some(t[1])], attrs))
            } else {
                Ok(one(im, "MatMul", vec![Some(t[0]), Some(t[1])], vec![]))
            }
        }
        "BatchMatMul" | "BatchMatMulV2" | "BatchMatMulV3" => {
            want(2)?;
            if a.bool("adj_x")? || a.bool("adj_y")? {
                return Err(NodeError("adj_x and adj_y are not supported yet".into()));
            }
            Ok(one(im, "MatMul", vec![Some(t[0]), Some(t[1])], vec![]))
        }
        "Einsum" => {
            let eq = a.string("equation")?;
            Ok(one(im, "Einsum", t.into_iter().map(Some).collect(), vec![("equation", Attribute::String(eq))]))
        }
        "Mean" | "Sum" | "Max" | "Min" | "Prod" => {
            want(2)?;
            let onnx = match op {
                "Mean" => "ReduceMean",
                "Sum" => "ReduceSum",
                "Max" => "ReduceMax",
                "Min" => "ReduceMin",
                _ => "ReduceProd",
            };
            let axes = im.int64(name, t[1]);
            let axes = flatten(im, name, axes);
            let attrs = vec![
                ("keepdims", Attribute::Int(i64::from(a.bool("keep_dims")?))),
                ("noop_with_empty_axes", Attribute::Int(1)),
            ];
            Ok(one(im, onnx, vec![Some(t[0]), Some(axes)], attrs))
        }
        "ArgMax" | "ArgMin" => {
            want(2)?;
            let axis = scalar_const(im, t[1], "the axis")?;
            let attrs = vec![("axis", Attribute::Int(axis)), ("keepdims", Attribute::Int(0))];
            let out_type = a.dtype("output_type")?;
            if out_type == DataType::Int64 {
                return Ok(one(im, op, vec![Some(t[0])], attrs));
            }
            let i = im.emit(&format!("{name}/int64"), op, vec![Some(t[0])], 1, attrs)[0];
            Ok(one(im, "Cast", vec![Some(i)], vec![("to", Attribute::Int(onnx_code(out_type)))]))
        }
        "ConcatV2" | "Concat" => {
            want(2)?;
            let (axis, values) = if op == "ConcatV2" {
                (t[t.len() - 1], &t[..t.len() - 1])
            } else {
                (t[0], &t[1..])
            };
            let axis = scalar_const(im, axis, "the axis")?;
            Ok(one(im, "Concat", values.iter().map(|&v| Some(v)).collect(), vec![("axis", Attribute::Int(axis))]))
        }
        "Reshape" => {
            want(2)?;
            let shape = im.int64(name, t[1]);
            Ok(one(im, "Reshape", vec![Some(t[0]), Some(shape)], vec![("allowzero", Attribute::Int(1))]))
        }
        "Transpose" => {
            want(2)?;
            match const_ints(im, t[1], "the permutation") {
                Ok(perm) => Ok(one(im, "Transpose", vec![Some(t[0])], vec![("perm", Attribute::Ints(perm))])),
                // Tensordot computes its permutation from the input's rank.
                Err(_) => Ok(one(im, "tf.Transpose", vec![Some(t[0]), Some(t[1])], vec![])),
            }
        }
        "Squeeze" => {
            want(1)?;
            let dims = a.ints("squeeze_dims")?;
            let axes = (!dims.is_empty())
                .then(|| im.constant(&format!("{name}/axes"), Tensor::from_i64(vec![dims.len()], dims).expect("1-D")));
            Ok(one(im, "Squeeze", vec![Some(t[0]), axes], vec![]))
        }
        "ExpandDims" => {
            want(2)?;
            let dim = im.int64(name, t[1]);
            let dim = flatten(im, name, dim);
            Ok(one(im, "Unsqueeze", vec![Some(t[0]), Some(dim)], vec![]))
        }
        "Shape" | "Size" => {
            want(1)?;
            let out_type = a.dtype("out_type")?;
            if out_type == DataType::Int64 {
                return Ok(one(im, op, vec![Some(t[0])], vec![]));
            }
            let s = im.emit(&format!("{name}/int64"), op, vec![Some(t[0])], 1, vec![])[0];
            Ok(one(im, "Cast", vec![Some(s)], vec![("to", Attribute::Int(onnx_code(out_type)))]))
        }
        "BiasAdd" => {
            want(2)?;
            // Channels last, the bias broadcasts as Add broadcasts (any
            // float type); channels first needs the channel axis found.
            if a.string("data_format")? == "NHWC" {
                Ok(one(im, "Add", vec![Some(t[0]), Some(t[1])], vec![]))
            } else {
                let attrs = vec![("data_format", Attribute::String(a.string("data_format")?))];
                Ok(one(im, "tf.BiasAdd", vec![Some(t[0]), Some(t[1])], attrs))
            }
        }
        "ResizeBilinear" | "ResizeNearestNeighbor" => {
            want(2)?;
            let nearest = op == "ResizeNearestNeighbor";
            let (align, half) = (a.bool("align_corners")?, a.bool("half_pixel_centers")?);
            let transform = match (align, half) {
                (true, _) => "align_corners",
                (false, true) => "half_pixel",
                (false, false) => "asymmetric",
            };
            let mut attrs = vec![
                ("axes", Attribute::Ints(vec![1, 2])),
                ("mode", Attribute::String(if nearest { "nearest" } else { "linear" }.into())),
                ("coordinate_transformation_mode", Attribute::String(transform.into())),
            ];
            if nearest {
                // TensorFlow picks floor((x + 0.5)·in/out) with half-pixel
                // centers (round half up on ONNX's half-pixel coordinate),
                // rounds half away from zero with align_corners, and floors
                // otherwise.
                let rounding = if align || half { "round_prefer_ceil" } else { "floor" };
                attrs.push(("nearest_mode", Attribute::String(rounding.into())));
            }
            let sizes = im.int64(name, t[1]);
            Ok(one(im, "Resize", vec![Some(t[0]), None, None, Some(sizes)], attrs))
        }
        "Pack" => Ok(one(im, "tf.Pack", t.into_iter().map(Some).collect(), vec![("axis", Attribute::Int(a.int("axis")?))])),
        "Unpack" => {
            want(1)?;
            let num = a.int("num")?;
            let count = usize::try_from(num).map_err(|_| NodeError(format!("num must be a count, got {num}")))?;
            let attrs = vec![("axis", Attribute::Int(a.int("axis")?)), ("num", Attribute::Int(num))];
            Ok(tensors(im.emit(name, "tf.Unpack", vec![Some(t[0])], count, attrs)))
        }
        "Fill" | "BroadcastTo" => {
            want(2)?;
            let (value, dims) = if op == "Fill" { (t[1], t[0]) } else { (t[0], t[1]) };
            let dims = im.int64(name, dims);
            Ok(one(im, "Expand", vec![Some(value), Some(dims)], vec![]))
        }
        "Tile" => {
            want(2)?;
            let reps = im.int64(name, t[1]);
            Ok(one(im, "Tile", vec![Some(t[0]), Some(reps)], vec![]))
        }
        "Pad" | "PadV2" | "MirrorPad" => {
            want(2)?;
            let pads = const_ints(im, t[1], "the paddings")?;
            // TensorFlow's [rank, 2] (begin, end) pairs as ONNX's begins then ends.
            let pads: Vec<i64> = pads.iter().step_by(2).chain(pads.iter().skip(1).step_by(2)).copied().collect();
            let pads = im.constant(&format!("{name}/pads"), Tensor::from_i64(vec![pads.len()], pads).expect("1-D"));
            let mut inputs = vec![Some(t[0]), Some(pads)];
            let mut attrs = vec![];
            if op == "PadV2" {
                want(3)?;
                inputs.push(Some(t[2]));
            }
            if op == "MirrorPad" {
                match a.string("mode")?.as_str() {
                    "REFLECT" => attrs.push(("mode", Attribute::String("reflect".into()))),
                    other => return Err(NodeError(format!("MirrorPad mode {other} is not supported (only REFLECT)"))),
                }
            }
            Ok(one(im, "Pad", inputs, attrs))
        }
        "GatherV2" => {
            want(3)?;
            if a.int("batch_dims")? != 0 {
                return Err(NodeError("batch_dims other than 0 is not supported".into()));
            }
            let axis = scalar_const(im, t[2], "the axis")?;
            Ok(one(im, "Gather", vec![Some(t[0]), Some(t[1])], vec![("axis", Attribute::Int(axis))]))
        }
        "Split" => {
            want(2)?;
            let axis = scalar_const(im, t[0], "the axis")?;
            let n = a.int("num_split")?;
            let count = usize::try_from(n).map_err(|_| NodeError(format!("num_split must be a count, got {n}")))?;
            let attrs = vec![("axis", Attribute::Int(axis)), ("num_outputs", Attribute::Int(n))];
            Ok(tensors(im.emit(name, "Split", vec![Some(t[1])], count, attrs)))
        }
        "SplitV" => {
            want(3)?;
            let sizes = const_ints(im, t[1], "the sizes")?;
            if sizes.contains(&-1) {
                return Err(NodeError("a size of -1 is not supported".into()));
            }
            let axis = scalar_const(im, t[2], "the axis")?;
            let count = sizes.len();
            let sizes = im.constant(&format!("{name}/sizes"), Tensor::from_i64(vec![count], sizes).expect("1-D"));
            Ok(tensors(im.emit(name, "Split", vec![Some(t[0]), Some(sizes)], count, vec![("axis", Attribute::Int(axis))])))
        }
        "FusedBatchNorm" | "FusedBatchNormV2" | "FusedBatchNormV3" => {
            want(5)?;
            let attrs = vec![
                ("epsilon", Attribute::Float(a.float("epsilon")?)),
                ("data_format", Attribute::String(a.string("data_format")?)),
                ("is_training", Attribute::Int(i64::from(a.bool("is_training")?))),
            ];
            Ok(one(im, "tf.FusedBatchNorm", t[..5].iter().map(|&v| Some(v)).collect(), attrs))
        }
        "Cumsum" => {
            want(2)?;
            let attrs = vec![
                ("exclusive", Attribute::Int(i64::from(a.bool("exclusive")?))),
                ("reverse", Attribute::Int(i64::from(a.bool("reverse")?))),
            ];
            Ok(one(im, "CumSum", vec![Some(t[0]), Some(t[1])], attrs))
        }
        // A TensorList is held as one tensor of its stacked items.
        "TensorListFromTensor" => {
            want(1)?;
            Ok(vec![vals[0].clone()])
        }
        "TensorListReserve" => {
            want(2)?;
            let dtype = a.dtype("element_dtype")?;
            let attrs = vec![("dtype", Attribute::Int(onnx_code(dtype)))];
            Ok(one(im, "tf.TensorListReserve", vec![Some(t[0]), Some(t[1])], attrs))
        }
        "TensorListGetItem" | "TensorListSetItem" | "TensorListStack" | "TensorListLength" => {
            if op == "TensorListSetItem" && a.bool("resize_if_index_out_of_bounds")? {
                return Err(NodeError("resize_if_index_out_of_bounds is not supported".into()));
            }
            let onnx = match op {
                "TensorListGetItem" => "tf.TensorListGetItem",
                "TensorListSetItem" => "tf.TensorListSetItem",
                "TensorListStack" => "tf.TensorListStack",
                _ => "tf.TensorListLength",
            };
            Ok(one(im, onnx, t.into_iter().map(Some).collect(), vec![]))
        }
        op if op.starts_with("CudnnRNN") => Err(NodeError(
            "this model was exported on a machine with a GPU, so its recurrent layers use cuDNN kernels, which run on no CPU (not even TensorFlow's); export it again on a CPU-only machine (CUDA_VISIBLE_DEVICES=\"\") or with use_cudnn=False".into(),
        )),
        "VarHandleOp" | "AssignVariableOp" | "AssignAddVariableOp" | "AssignSubVariableOp" => Err(NodeError(
            "variables are only read inside functions in a servable SavedModel; this op changes state".into(),
        )),
        _ => Err(NodeError("this TensorFlow op is not supported".into())),
    }
}

/// A value as a 1-D tensor (a scalar axis becomes `[axis]`).
fn flatten(im: &mut Importer<'_>, name: &str, id: ValueId) -> ValueId {
    if let Some(c) = im.constant_value(id) {
        if c.shape().len() == 1 {
            return id;
        }
        let t = c.clone().reshape(vec![c.len()]).expect("same element count");
        return im.constant(&format!("{name}/flat"), t);
    }
    let shape = im.constant(&format!("{name}/flat_shape"), Tensor::from_i64(vec![1], vec![-1]).expect("1-D"));
    im.emit(&format!("{name}/flat"), "Reshape", vec![Some(id), Some(shape)], 1, vec![])[0]
}

/// The integers of a constant operand ONNX needs fixed.
fn const_ints(im: &Importer<'_>, id: ValueId, what: &str) -> Result<Vec<i64>, NodeError> {
    match im.constant_value(id).map(Tensor::data) {
        Some(TensorData::Int32(v)) => Ok(v.iter().map(|&x| i64::from(x)).collect()),
        Some(TensorData::Int64(v)) => Ok(v.clone()),
        Some(_) => Err(NodeError(format!("{what} must be integers"))),
        None => Err(NodeError(format!("{what} must be a constant, but it is computed at run time"))),
    }
}

fn scalar_const(im: &Importer<'_>, id: ValueId, what: &str) -> Result<i64, NodeError> {
    match const_ints(im, id, what)?[..] {
        [v] => Ok(v),
        ref v => Err(NodeError(format!("{what} must be one integer, got {v:?}"))),
    }
}
