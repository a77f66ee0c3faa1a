//! TensorFlow array operators whose semantics no ONNX operator has:
//! StridedSlice (with its five masks), Slice (sizes, -1 = to the end),
//! Pack and Unpack, ReverseV2, ZerosLike and OnesLike, and the TensorList
//! operators of Keras's recurrent loops. The SavedModel
//! importer maps TensorFlow's ops onto these under `tf.` names; every other
//! TensorFlow op it meets becomes an ONNX operator with the same meaning.

use super::movement::{int_list, positions};
use super::{BuildContext, BuildError, Kernel, KernelError, KernelRegistry, MAX_OPSET, normalize_axis, required};
use crate::tensor::{Tensor, TensorData, strides};

pub fn register(reg: &mut KernelRegistry) {
    reg.register("tf.StridedSlice", 1, MAX_OPSET, build_strided_slice);
    reg.register("tf.Slice", 1, MAX_OPSET, |_| Ok(Box::new(Slice)));
    reg.register("tf.Pack", 1, MAX_OPSET, |ctx| Ok(Box::new(Pack { axis: ctx.node.int_attr("axis", 0)? })));
    reg.register("tf.Unpack", 1, MAX_OPSET, |ctx| {
        Ok(Box::new(Unpack { axis: ctx.node.int_attr("axis", 0)?, num: count_attr(ctx, "num")? }))
    });
    reg.register("tf.ReverseV2", 1, MAX_OPSET, |_| Ok(Box::new(Reverse)));
    reg.register("tf.ZerosLike", 1, MAX_OPSET, |_| Ok(Box::new(Like { one: false })));
    reg.register("tf.OnesLike", 1, MAX_OPSET, |_| Ok(Box::new(Like { one: true })));
    reg.register("tf.TensorListReserve", 1, MAX_OPSET, |ctx| {
        let code = ctx.node.int_attr("dtype", -1)?;
        let dtype = super::onnx_dtype(code)
            .ok_or_else(|| BuildError::invalid(ctx.node, format!("element type {code} is not supported")))?;
        Ok(Box::new(ListReserve { dtype }))
    });
    reg.register("tf.TensorListGetItem", 1, MAX_OPSET, |_| Ok(Box::new(ListGetItem)));
    reg.register("tf.TensorListSetItem", 1, MAX_OPSET, |_| Ok(Box::new(ListSetItem)));
    reg.register("tf.TensorListStack", 1, MAX_OPSET, |_| Ok(Box::new(ListStack)));
    reg.register("tf.TensorListLength", 1, MAX_OPSET, |_| Ok(Box::new(ListLength)));
    reg.register("tf.LookupTableFind", 1, MAX_OPSET, build_lookup);
    reg.register("tf.StringToHashBucketFast", 1, MAX_OPSET, |ctx| {
        let n = ctx.node.int_attr("num_buckets", 0)?;
        let buckets = u64::try_from(n)
            .ok()
            .filter(|&b| b > 0)
            .ok_or_else(|| BuildError::invalid(ctx.node, format!("num_buckets must be positive, got {n}")))?;
        Ok(Box::new(HashBucket { buckets }))
    });
    reg.register("tf.Bitcast", 1, MAX_OPSET, |ctx| {
        let code = ctx.node.int_attr("to", -1)?;
        let to = super::onnx_dtype(code)
            .ok_or_else(|| BuildError::invalid(ctx.node, format!("element type {code} is not supported")))?;
        Ok(Box::new(Bitcast { to }))
    });
    reg.register("tf.SpaceToBatchND", 1, MAX_OPSET, |_| Ok(Box::new(SpaceBatch { to_batch: true })));
    reg.register("tf.BatchToSpaceND", 1, MAX_OPSET, |_| Ok(Box::new(SpaceBatch { to_batch: false })));
}

/// A key of a lookup table.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Bytes(Vec<u8>),
    Int(i64),
}

/// The keys of a tensor, for string and integer tensors.
fn keys_of(t: &Tensor) -> Option<Vec<Key>> {
    Some(match t.data() {
        TensorData::String(v) => v.iter().map(|b| Key::Bytes(b.clone())).collect(),
        TensorData::Int64(v) => v.iter().map(|&i| Key::Int(i)).collect(),
        TensorData::Int32(v) => v.iter().map(|&i| Key::Int(i64::from(i))).collect(),
        _ => return None,
    })
}

/// LookupTableFindV2 on a table whose keys and values the model fixes
/// (Keras's StringLookup and IntegerLookup): each key's value, or the
/// default for keys the table lacks.
#[derive(Debug)]
struct Lookup {
    index: std::collections::HashMap<Key, usize>,
    values: Tensor,
    key_dtype: crate::tensor::DataType,
}

fn build_lookup(ctx: &BuildContext<'_>) -> Result<Box<dyn Kernel>, BuildError> {
    let tensor = |name: &str| match ctx.node.attributes.get(name) {
        Some(crate::graph::Attribute::Tensor(t)) => Ok(t.clone()),
        _ => Err(BuildError::invalid(ctx.node, format!("attribute '{name}' must be a tensor"))),
    };
    let (keys, values) = (tensor("keys")?, tensor("values")?);
    let list = keys_of(&keys).ok_or_else(|| {
        BuildError::invalid(ctx.node, format!("table keys of type {} are not supported", keys.dtype()))
    })?;
    if list.len() != values.len() {
        return Err(BuildError::invalid(ctx.node, "the table has a different number of keys and values"));
    }
    // TensorFlow's import keeps the last value of a repeated key.
    let index = list.into_iter().enumerate().map(|(i, k)| (k, i)).collect();
    Ok(Box::new(Lookup { index, values, key_dtype: keys.dtype() }))
}

impl Kernel for Lookup {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let keys = required(inputs, 0, "keys")?;
        let default = required(inputs, 1, "default_value")?;
        let same_kind = |a: crate::tensor::DataType| {
            a == self.key_dtype
                || matches!(
                    (a, self.key_dtype),
                    (
                        crate::tensor::DataType::Int32 | crate::tensor::DataType::Int64,
                        crate::tensor::DataType::Int32 | crate::tensor::DataType::Int64
                    )
                )
        };
        if !same_kind(keys.dtype()) {
            return Err(KernelError(format!(
                "the table's keys are {}, but the lookup gives {}",
                self.key_dtype,
                keys.dtype()
            )));
        }
        if default.dtype() != self.values.dtype() || default.len() != 1 {
            return Err(KernelError(format!(
                "the default value must be one {} (the table's value type), got {} {:?}",
                self.values.dtype(),
                default.dtype(),
                default.shape()
            )));
        }
        let missing = self.values.len();
        let idx: Vec<usize> =
            keys_of(keys).unwrap_or_default().iter().map(|k| self.index.get(k).copied().unwrap_or(missing)).collect();
        let mut data = self.values.data().clone();
        data.extend_from(default.data(), 0..1);
        Ok(vec![Tensor::new(keys.shape().to_vec(), data.select(&idx))?])
    }
}

/// StringToHashBucketFast: each string's 64-bit FarmHash fingerprint (as
/// TensorFlow's `Fingerprint64`) modulo the bucket count.
#[derive(Debug)]
struct HashBucket {
    buckets: u64,
}

impl Kernel for HashBucket {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let x = required(inputs, 0, "input")?;
        let strings = x.as_strings().ok_or_else(|| KernelError(format!("input must be strings, got {}", x.dtype())))?;
        let out = strings.iter().map(|s| (farmhash::fingerprint64(s) % self.buckets) as i64).collect();
        Ok(vec![Tensor::new(x.shape().to_vec(), TensorData::Int64(out))?])
    }
}

/// Bitcast between element types of one width (float and int32, double
/// and int64, int8 and uint8): the bits are kept, the shape too.
#[derive(Debug)]
struct Bitcast {
    to: crate::tensor::DataType,
}

impl Kernel for Bitcast {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let x = required(inputs, 0, "input")?;
        let data = match (x.data(), self.to) {
            (d, to) if d.dtype() == to => d.clone(),
            (TensorData::Float(v), crate::tensor::DataType::Int32) => {
                TensorData::Int32(v.iter().map(|f| f.to_bits() as i32).collect())
            }
            (TensorData::Int32(v), crate::tensor::DataType::Float) => {
                TensorData::Float(v.iter().map(|&i| f32::from_bits(i as u32)).collect())
            }
            (TensorData::Double(v), crate::tensor::DataType::Int64) => {
                TensorData::Int64(v.iter().map(|f| f.to_bits() as i64).collect())
            }
            (TensorData::Int64(v), crate::tensor::DataType::Double) => {
                TensorData::Double(v.iter().map(|&i| f64::from_bits(i as u64)).collect())
            }
            (TensorData::UInt8(v), crate::tensor::DataType::Int8) => {
                TensorData::Int8(v.iter().map(|&b| b as i8).collect())
            }
            (TensorData::Int8(v), crate::tensor::DataType::UInt8) => {
                TensorData::UInt8(v.iter().map(|&b| b as u8).collect())
            }
            (d, to) => {
                return Err(KernelError(format!(
                    "bitcasting {} to {to} is not supported (only between types of one width)",
                    d.dtype()
                )));
            }
        };
        Ok(vec![Tensor::new(x.shape().to_vec(), data)?])
    }
}

/// SpaceToBatchND (pad the M spatial dims after the batch, then move each
/// `block`-strided phase into the batch: output batch `phase·B + b`) and
/// its inverse BatchToSpaceND (then crop). How TensorFlow runs a dilated
/// convolution as an undilated one.
#[derive(Debug)]
struct SpaceBatch {
    to_batch: bool,
}

impl Kernel for SpaceBatch {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let x = required(inputs, 0, "input")?;
        let block = int_list(required(inputs, 1, "block_shape")?, "block_shape")?;
        let pads = int_list(required(inputs, 2, if self.to_batch { "paddings" } else { "crops" })?, "paddings")?;
        let shape = x.shape();
        let m = block.len();
        if m == 0
            || shape.len() < m + 1
            || pads.len() != 2 * m
            || block.iter().any(|&b| b < 1)
            || pads.iter().any(|&p| p < 0)
        {
            return Err(KernelError(format!(
                "block_shape {block:?} and paddings {pads:?} do not fit an input of shape {shape:?}"
            )));
        }
        let block: Vec<usize> = block.iter().map(|&b| b as usize).collect();
        let pads: Vec<usize> = pads.iter().map(|&p| p as usize).collect();
        let phases: usize = block.iter().product();
        let st = strides(shape);
        // A zero after the input's elements stands for the padding.
        let zero = x.len();
        let mut out_shape = shape.to_vec();
        let idx = if self.to_batch {
            for d in 0..m {
                let padded = shape[1 + d] + pads[2 * d] + pads[2 * d + 1];
                if !padded.is_multiple_of(block[d]) {
                    return Err(KernelError(format!(
                        "padded dim {} of size {padded} is not a multiple of the block size {}",
                        d + 1,
                        block[d]
                    )));
                }
                out_shape[1 + d] = padded / block[d];
            }
            out_shape[0] = shape[0] * phases;
            positions(&out_shape, |i| {
                let (mut phase, b) = (i[0] / shape[0], i[0] % shape[0]);
                let mut at = b * st[0];
                for d in (0..m).rev() {
                    let j = phase % block[d];
                    phase /= block[d];
                    let p = i[1 + d] * block[d] + j;
                    match p.checked_sub(pads[2 * d]).filter(|&v| v < shape[1 + d]) {
                        Some(v) => at += v * st[1 + d],
                        None => return zero,
                    }
                }
                at + (1 + m..shape.len()).map(|d| i[d] * st[d]).sum::<usize>()
            })
        } else {
            if !shape[0].is_multiple_of(phases) {
                return Err(KernelError(format!("batch {} is not a multiple of the block count {phases}", shape[0])));
            }
            let batch = shape[0] / phases;
            out_shape[0] = batch;
            for d in 0..m {
                let full = shape[1 + d] * block[d];
                out_shape[1 + d] = full.checked_sub(pads[2 * d] + pads[2 * d + 1]).ok_or_else(|| {
                    KernelError(format!("crops {:?} are larger than dim {} ({full})", &pads[2 * d..2 * d + 2], d + 1))
                })?;
            }
            positions(&out_shape, |i| {
                let mut phase = 0;
                let mut at = 0;
                for d in 0..m {
                    let p = i[1 + d] + pads[2 * d];
                    phase = phase * block[d] + p % block[d];
                    at += (p / block[d]) * st[1 + d];
                }
                at + (phase * batch + i[0]) * st[0] + (1 + m..shape.len()).map(|d| i[d] * st[d]).sum::<usize>()
            })
        };
        let mut data = x.data().clone();
        data.extend_from(&TensorData::zeros(x.dtype(), 1), 0..1);
        Ok(vec![Tensor::new(out_shape, data.select(&idx))?])
    }
}

fn count_attr(ctx: &BuildContext<'_>, name: &str) -> Result<usize, BuildError> {
    let n = ctx.node.int_attr(name, -1)?;
    usize::try_from(n)
        .map_err(|_| BuildError::invalid(ctx.node, format!("attribute '{name}' must be a count, got {n}")))
}

/// Gathers `x` at `index(coordinates)` for every position of `shape`.
fn gather(x: &Tensor, shape: Vec<usize>, index: impl FnMut(&[usize]) -> usize) -> Result<Tensor, KernelError> {
    let idx = positions(&shape, index);
    Ok(Tensor::new(shape, x.data().select(&idx))?)
}

/// StridedSlice's masks, as TensorFlow's attributes give them.
#[derive(Debug, Clone, Copy)]
struct Masks {
    begin: i64,
    end: i64,
    ellipsis: i64,
    new_axis: i64,
    shrink: i64,
}

#[derive(Debug)]
struct StridedSlice(Masks);

fn build_strided_slice(ctx: &BuildContext<'_>) -> Result<Box<dyn Kernel>, BuildError> {
    let m = |name| ctx.node.int_attr(name, 0);
    let masks = Masks {
        begin: m("begin_mask")?,
        end: m("end_mask")?,
        ellipsis: m("ellipsis_mask")?,
        new_axis: m("new_axis_mask")?,
        shrink: m("shrink_axis_mask")?,
    };
    if masks.ellipsis.count_ones() > 1 {
        return Err(BuildError::invalid(ctx.node, "at most one ellipsis is allowed in ellipsis_mask"));
    }
    Ok(Box::new(StridedSlice(masks)))
}

/// Where one entry of the output shape comes from.
#[derive(Debug, Clone, Copy)]
enum OutDim {
    /// A dim of the input (its index), sliced.
    Input(usize),
    /// A new axis of size 1.
    New,
}

impl Kernel for StridedSlice {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let x = required(inputs, 0, "input")?;
        let begin = int_list(required(inputs, 1, "begin")?, "begin")?;
        let end = int_list(required(inputs, 2, "end")?, "end")?;
        let stride = int_list(required(inputs, 3, "strides")?, "strides")?;
        if end.len() != begin.len() || stride.len() != begin.len() {
            return Err(KernelError(format!(
                "begin, end and strides must have one length, got {}, {} and {}",
                begin.len(),
                end.len(),
                stride.len()
            )));
        }
        let shape = x.shape();
        let rank = shape.len();
        let Masks { begin: begin_mask, end: end_mask, mut ellipsis, new_axis, shrink } = self.0;
        // Without an ellipsis, the spec ends with an implicit one.
        let mut entries = begin.len();
        if ellipsis == 0 {
            ellipsis = 1 << entries;
            entries += 1;
        }
        let bit = |mask: i64, i: usize| i < 63 && mask & (1 << i) != 0;
        let ellipsis_at = (0..entries).find(|&i| bit(ellipsis, i)).unwrap_or(entries);
        let new_after = (ellipsis_at + 1..begin.len()).filter(|&i| bit(new_axis, i)).count();
        // The input dims each entry covers, the begin per input dim, its
        // stride and length, and the output's layout.
        let mut first = vec![0i64; rank];
        let mut step = vec![1i64; rank];
        let mut len = shape.to_vec();
        let mut out_dims = Vec::new();
        let mut dim = 0usize;
        for i in 0..entries {
            if bit(ellipsis, i) {
                let covered = (rank + new_after + 1).saturating_sub(entries - i).min(rank);
                while dim < covered {
                    out_dims.push(OutDim::Input(dim));
                    dim += 1;
                }
                continue;
            }
            if bit(new_axis, i) {
                out_dims.push(OutDim::New);
                continue;
            }
            if dim >= rank {
                return Err(KernelError(format!("the slice has more entries than the input's rank {rank}")));
            }
            let n = shape[dim] as i64;
            let s = stride[i];
            if s == 0 {
                return Err(KernelError(format!("strides[{i}] must not be 0")));
            }
            if bit(shrink, i) {
                let b = if begin[i] < 0 { begin[i] + n } else { begin[i] };
                if !(0..n).contains(&b) {
                    return Err(KernelError(format!(
                        "slice index {} of dimension {dim} out of bounds (size {n})",
                        begin[i]
                    )));
                }
                (first[dim], step[dim], len[dim]) = (b, 1, 1);
                dim += 1;
                continue;
            }
            let canonical = |v: i64, masked: bool, is_begin: bool| -> i64 {
                if masked {
                    return match (s > 0, is_begin) {
                        (true, true) => 0,
                        (true, false) => n,
                        (false, true) => n - 1,
                        (false, false) => -1,
                    };
                }
                let v = if v < 0 { v + n } else { v };
                if s > 0 { v.clamp(0, n) } else { v.clamp(-1, n - 1) }
            };
            let b = canonical(begin[i], bit(begin_mask, i), true);
            let e = canonical(end[i], bit(end_mask, i), false);
            let count = if s > 0 { (e - b + s - 1).div_euclid(s) } else { (b - e - s - 1).div_euclid(-s) };
            (first[dim], step[dim], len[dim]) = (b, s, count.max(0) as usize);
            out_dims.push(OutDim::Input(dim));
            dim += 1;
        }
        while dim < rank {
            out_dims.push(OutDim::Input(dim));
            dim += 1;
        }
        let st = strides(shape);
        let offset: i64 = (0..rank).map(|d| first[d] * st[d] as i64).sum();
        let out_shape: Vec<usize> = out_dims
            .iter()
            .map(|o| match o {
                OutDim::Input(d) => len[*d],
                OutDim::New => 1,
            })
            .collect();
        let kept: Vec<Option<usize>> = out_dims
            .iter()
            .map(|o| match o {
                OutDim::Input(d) => Some(*d),
                OutDim::New => None,
            })
            .collect();
        let y = gather(x, out_shape, |i| {
            let at: i64 =
                kept.iter().zip(i).filter_map(|(d, &v)| d.map(|d| v as i64 * step[d] * st[d] as i64)).sum::<i64>()
                    + offset;
            at as usize
        })?;
        Ok(vec![y])
    }
}

/// TensorFlow's Slice: `begin` and `size` per dim, size -1 meaning "to the
/// end".
#[derive(Debug)]
struct Slice;

impl Kernel for Slice {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let x = required(inputs, 0, "input")?;
        let begin = int_list(required(inputs, 1, "begin")?, "begin")?;
        let size = int_list(required(inputs, 2, "size")?, "size")?;
        let shape = x.shape();
        if begin.len() != shape.len() || size.len() != shape.len() {
            return Err(KernelError(format!(
                "begin and size must have one entry per input dim ({}), got {} and {}",
                shape.len(),
                begin.len(),
                size.len()
            )));
        }
        let mut out = Vec::with_capacity(shape.len());
        for d in 0..shape.len() {
            let n = shape[d] as i64;
            let len = if size[d] == -1 { n - begin[d] } else { size[d] };
            if begin[d] < 0 || len < 0 || begin[d] + len > n {
                return Err(KernelError(format!(
                    "slice of dim {d} (size {n}) from {} with size {} is out of bounds",
                    begin[d], size[d]
                )));
            }
            out.push(len as usize);
        }
        let st = strides(shape);
        let y = gather(x, out, |i| i.iter().enumerate().map(|(d, &v)| (begin[d] as usize + v) * st[d]).sum())?;
        Ok(vec![y])
    }
}

/// Stacks N tensors of one shape along a new axis.
#[derive(Debug)]
struct Pack {
    axis: i64,
}

impl Kernel for Pack {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let values: Vec<&Tensor> = inputs
            .iter()
            .copied()
            .collect::<Option<_>>()
            .ok_or_else(|| KernelError("a value to pack is missing".into()))?;
        let first = *values.first().ok_or_else(|| KernelError("Pack needs at least one value".into()))?;
        let shape = first.shape();
        for (i, v) in values.iter().enumerate() {
            if v.shape() != shape || v.dtype() != first.dtype() {
                return Err(KernelError(format!(
                    "value {i} has dtype {} and shape {:?}, but value 0 has {} and {shape:?}",
                    v.dtype(),
                    v.shape(),
                    first.dtype()
                )));
            }
        }
        let axis = normalize_axis(self.axis, shape.len() + 1)?;
        let inner: usize = shape[axis..].iter().product();
        let outer: usize = shape[..axis].iter().product();
        let mut data = TensorData::zeros(first.dtype(), 0);
        for o in 0..outer {
            for v in &values {
                data.extend_from(v.data(), o * inner..(o + 1) * inner);
            }
        }
        let mut out_shape = shape.to_vec();
        out_shape.insert(axis, values.len());
        Ok(vec![Tensor::new(out_shape, data)?])
    }
}

/// Splits a tensor into `num` tensors along an axis it removes.
#[derive(Debug)]
struct Unpack {
    axis: i64,
    num: usize,
}

impl Kernel for Unpack {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let x = required(inputs, 0, "value")?;
        let shape = x.shape();
        let axis = normalize_axis(self.axis, shape.len())?;
        if shape[axis] != self.num {
            return Err(KernelError(format!("dim {axis} has size {}, but num is {}", shape[axis], self.num)));
        }
        let st = strides(shape);
        let mut out_shape = shape.to_vec();
        out_shape.remove(axis);
        (0..self.num)
            .map(|k| {
                gather(x, out_shape.clone(), |i| {
                    let mut at = k * st[axis];
                    for (j, &v) in i.iter().enumerate() {
                        at += v * st[if j < axis { j } else { j + 1 }];
                    }
                    at
                })
            })
            .collect()
    }
}

/// Reverses the dims the `axis` tensor lists.
#[derive(Debug)]
struct Reverse;

impl Kernel for Reverse {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let x = required(inputs, 0, "tensor")?;
        let shape = x.shape().to_vec();
        let mut flip = vec![false; shape.len()];
        for a in int_list(required(inputs, 1, "axis")?, "axis")? {
            let d = normalize_axis(a, shape.len())?;
            if std::mem::replace(&mut flip[d], true) {
                return Err(KernelError(format!("axis {a} is listed twice")));
            }
        }
        let st = strides(&shape);
        let y = gather(x, shape.clone(), |i| {
            i.iter().enumerate().map(|(d, &v)| if flip[d] { shape[d] - 1 - v } else { v } * st[d]).sum()
        })?;
        Ok(vec![y])
    }
}

/// A tensor of zeros (or ones) with the input's dtype and shape.
#[derive(Debug)]
struct Like {
    one: bool,
}

impl Kernel for Like {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let x = required(inputs, 0, "x")?;
        let n = x.len();
        let data = if !self.one {
            TensorData::zeros(x.dtype(), n)
        } else {
            match x.data() {
                TensorData::Float(_) => TensorData::Float(vec![1.0; n]),
                TensorData::Double(_) => TensorData::Double(vec![1.0; n]),
                TensorData::Int32(_) => TensorData::Int32(vec![1; n]),
                TensorData::Int64(_) => TensorData::Int64(vec![1; n]),
                TensorData::UInt8(_) => TensorData::UInt8(vec![1; n]),
                TensorData::Int8(_) => TensorData::Int8(vec![1; n]),
                TensorData::Bool(_) => TensorData::Bool(vec![true; n]),
                TensorData::String(_) => return Err(KernelError("OnesLike does not take strings".into())),
            }
        };
        Ok(vec![Tensor::new(x.shape().to_vec(), data)?])
    }
}

// TensorLists. A list of `n` tensors of one shape `e` is held as one
// tensor of shape `[n, e...]`; a reserved list whose items are not set yet
// and whose element shape is not fully known is `[n, 0]` until its first
// SetItem fixes the shape. Setting an item copies the list (TensorFlow's
// lists are values too).

/// A non-negative integer scalar operand.
fn index_operand(inputs: &[Option<&Tensor>], i: usize, what: &str) -> Result<usize, KernelError> {
    match int_list(required(inputs, i, what)?, what)?[..] {
        [v] if v >= 0 => Ok(v as usize),
        ref v => Err(KernelError(format!("{what} must be one non-negative integer, got {v:?}"))),
    }
}

/// A list's element shape operand: dims with -1 for unknown ones (a scalar
/// -1 for an unknown rank), as `Some` only when fully known.
fn known_element_shape(t: Option<&Tensor>) -> Result<Option<Vec<usize>>, KernelError> {
    let Some(t) = t else { return Ok(None) };
    let dims = int_list(t, "element_shape")?;
    if t.shape().is_empty() || dims.iter().any(|&d| d < 0) {
        return Ok(None);
    }
    Ok(Some(dims.iter().map(|&d| d as usize).collect()))
}

/// True for a reserved list none of whose items is set yet.
fn unset(list: &Tensor) -> bool {
    list.shape().len() == 2 && list.shape()[1] == 0
}

#[derive(Debug)]
struct ListReserve {
    dtype: crate::tensor::DataType,
}

impl Kernel for ListReserve {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let n = index_operand(inputs, 1, "num_elements")?;
        let shape = match known_element_shape(inputs.first().copied().flatten())? {
            Some(e) => std::iter::once(n).chain(e).collect(),
            None => vec![n, 0],
        };
        let count = crate::tensor::element_count(&shape)
            .filter(|&c| c <= 1 << 28)
            .ok_or_else(|| KernelError(format!("a list of shape {shape:?} is too large")))?;
        Ok(vec![Tensor::new(shape, TensorData::zeros(self.dtype, count))?])
    }
}

#[derive(Debug)]
struct ListGetItem;

impl Kernel for ListGetItem {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let list = required(inputs, 0, "input_handle")?;
        let i = index_operand(inputs, 1, "index")?;
        let n = list.shape().first().copied().unwrap_or(0);
        if i >= n {
            return Err(KernelError(format!("index {i} is out of range for a list of {n} items")));
        }
        if unset(list) {
            return match known_element_shape(inputs.get(2).copied().flatten())? {
                Some(e) => {
                    let count = crate::tensor::element_count(&e).unwrap_or(0);
                    Ok(vec![Tensor::new(e, TensorData::zeros(list.dtype(), count))?])
                }
                None => Err(KernelError(format!("item {i} of the list was read before any item was set"))),
            };
        }
        let k: usize = list.shape()[1..].iter().product();
        let mut data = TensorData::zeros(list.dtype(), 0);
        data.extend_from(list.data(), i * k..(i + 1) * k);
        Ok(vec![Tensor::new(list.shape()[1..].to_vec(), data)?])
    }
}

#[derive(Debug)]
struct ListSetItem;

impl Kernel for ListSetItem {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let list = required(inputs, 0, "input_handle")?;
        let i = index_operand(inputs, 1, "index")?;
        let item = required(inputs, 2, "item")?;
        let n = list.shape().first().copied().unwrap_or(0);
        if i >= n {
            return Err(KernelError(format!("index {i} is out of range for a list of {n} items")));
        }
        if item.dtype() != list.dtype() {
            return Err(KernelError(format!("the list holds {} but the item is {}", list.dtype(), item.dtype())));
        }
        let fresh;
        let list = if list.shape()[1..] == *item.shape() {
            list
        } else if unset(list) {
            let shape: Vec<usize> = std::iter::once(n).chain(item.shape().iter().copied()).collect();
            fresh = Tensor::new(shape, TensorData::zeros(list.dtype(), n * item.len()))?;
            &fresh
        } else {
            return Err(KernelError(format!(
                "the list's items have shape {:?}, but the item has {:?}",
                &list.shape()[1..],
                item.shape()
            )));
        };
        let k = item.len();
        let mut data = TensorData::zeros(list.dtype(), 0);
        data.extend_from(list.data(), 0..i * k);
        data.extend_from(item.data(), 0..k);
        data.extend_from(list.data(), (i + 1) * k..n * k);
        Ok(vec![Tensor::new(list.shape().to_vec(), data)?])
    }
}

#[derive(Debug)]
struct ListStack;

impl Kernel for ListStack {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let list = required(inputs, 0, "input_handle")?;
        if unset(list) && list.shape()[0] > 0 {
            return match known_element_shape(inputs.get(1).copied().flatten())? {
                Some(e) => {
                    let shape: Vec<usize> = std::iter::once(list.shape()[0]).chain(e).collect();
                    let count = crate::tensor::element_count(&shape).unwrap_or(0);
                    Ok(vec![Tensor::new(shape, TensorData::zeros(list.dtype(), count))?])
                }
                None => Err(KernelError("the list was stacked before any item was set".into())),
            };
        }
        Ok(vec![list.clone()])
    }
}

#[derive(Debug)]
struct ListLength;

impl Kernel for ListLength {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let list = required(inputs, 0, "input_handle")?;
        let n = list.shape().first().copied().unwrap_or(0);
        Ok(vec![Tensor::new(vec![], TensorData::Int32(vec![i32::try_from(n).unwrap_or(i32::MAX)]))?])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Attribute;
    use crate::kernels::testing::{node, run};

    fn ints(v: &[i32]) -> Tensor {
        Tensor::new(vec![v.len()], TensorData::Int32(v.to_vec())).unwrap()
    }

    fn strided(x: &Tensor, b: &[i32], e: &[i32], s: &[i32], masks: [i64; 5]) -> Result<Tensor, KernelError> {
        let names = ["begin_mask", "end_mask", "ellipsis_mask", "new_axis_mask", "shrink_axis_mask"];
        let attrs = names.iter().zip(masks).map(|(n, m)| (*n, Attribute::Int(m))).collect();
        Ok(run(&node("tf.StridedSlice", 4, attrs), 21, &[x, &ints(b), &ints(e), &ints(s)])?.remove(0))
    }

    #[test]
    fn strided_slice_masks() {
        // x[2, 3, 4] = 0..24
        let x = Tensor::from_f32(vec![2, 3, 4], (0..24).map(|v| v as f32).collect()).unwrap();
        // x[:, 1] (Keras's last-step pick: begin/end masks on 0, shrink on 1).
        let y = strided(&x, &[0, 1], &[0, 2], &[1, 1], [1, 1, 0, 0, 2]).unwrap();
        assert_eq!(y.shape(), &[2, 4]);
        assert_eq!(y.as_f32().unwrap(), &[4.0, 5.0, 6.0, 7.0, 16.0, 17.0, 18.0, 19.0]);
        // x[0] (shrink the first dim; the batch-size pick of a Shape vector).
        let y = strided(&x, &[0], &[1], &[1], [0, 0, 0, 0, 1]).unwrap();
        assert_eq!(y.shape(), &[3, 4]);
        // x[..., ::-2]
        let y = strided(&x, &[0, 0], &[0, 0], &[1, -2], [2, 2, 1, 0, 0]).unwrap();
        assert_eq!(y.shape(), &[2, 3, 2]);
        assert_eq!(&y.as_f32().unwrap()[..4], &[3.0, 1.0, 7.0, 5.0]);
        // x[:, tf.newaxis, -1]
        let y = strided(&x, &[0, 0, -1], &[0, 0, 0], &[1, 1, 1], [1, 1, 0, 2, 4]).unwrap();
        assert_eq!(y.shape(), &[2, 1, 4]);
        assert_eq!(y.as_f32().unwrap(), &[8.0, 9.0, 10.0, 11.0, 20.0, 21.0, 22.0, 23.0]);
        // Clamped ends, an empty result, and errors.
        assert_eq!(strided(&x, &[1], &[99], &[1], [0; 5]).unwrap().shape(), &[1, 3, 4]);
        assert_eq!(strided(&x, &[1], &[0], &[1], [0; 5]).unwrap().shape(), &[0, 3, 4]);
        assert!(strided(&x, &[5], &[6], &[1], [0, 0, 0, 0, 1]).unwrap_err().0.contains("out of bounds"));
        assert!(strided(&x, &[0], &[1], &[0], [0; 5]).unwrap_err().0.contains("must not be 0"));
    }

    #[test]
    fn slice_pack_unpack_reverse() {
        let x = Tensor::from_f32(vec![2, 3], (0..6).map(|v| v as f32).collect()).unwrap();
        let y = run(&node("tf.Slice", 3, vec![]), 21, &[&x, &ints(&[0, 1]), &ints(&[-1, 2])]).unwrap();
        assert_eq!(y[0].as_f32().unwrap(), &[1.0, 2.0, 4.0, 5.0]);
        assert!(run(&node("tf.Slice", 3, vec![]), 21, &[&x, &ints(&[0, 2]), &ints(&[1, 2])]).is_err());

        let a = ints(&[1, 2]);
        let b = ints(&[3, 4]);
        let packed = run(&node("tf.Pack", 2, vec![("axis", Attribute::Int(1))]), 21, &[&a, &b]).unwrap().remove(0);
        assert_eq!(packed.shape(), &[2, 2]);
        assert_eq!(packed.data(), &TensorData::Int32(vec![1, 3, 2, 4]));
        let parts =
            run(&node("tf.Unpack", 1, vec![("num", Attribute::Int(2)), ("axis", Attribute::Int(1))]), 21, &[&packed])
                .unwrap();
        assert_eq!(parts, vec![a, b]);

        let r = run(&node("tf.ReverseV2", 2, vec![]), 21, &[&x, &ints(&[-1])]).unwrap();
        assert_eq!(r[0].as_f32().unwrap(), &[2.0, 1.0, 0.0, 5.0, 4.0, 3.0]);
        let ones = run(&node("tf.OnesLike", 1, vec![]), 21, &[&x]).unwrap();
        assert_eq!(ones[0].as_f32().unwrap(), &[1.0; 6]);
    }

    #[test]
    fn lookups_and_hash_buckets() {
        let strings = |v: &[&str]| {
            Tensor::new(vec![v.len()], TensorData::String(v.iter().map(|s| s.as_bytes().to_vec()).collect())).unwrap()
        };
        let table = node(
            "tf.LookupTableFind",
            2,
            vec![
                ("keys", Attribute::Tensor(strings(&["red", "green"]))),
                ("values", Attribute::Tensor(Tensor::from_i64(vec![2], vec![1, 2]).unwrap())),
            ],
        );
        let default = Tensor::from_i64(vec![], vec![0]).unwrap();
        let got = run(&table, 21, &[&strings(&["green", "blue", "red"]), &default]).unwrap().remove(0);
        assert_eq!(got.data(), &TensorData::Int64(vec![2, 0, 1]));
        let wrong = Tensor::from_f32(vec![1], vec![0.0]).unwrap();
        assert!(run(&table, 21, &[&wrong, &default]).is_err());
        // TensorFlow: tf.strings.to_hash_bucket_fast(["hello", ""], 10) = [8, 0]...
        let hash = node("tf.StringToHashBucketFast", 1, vec![("num_buckets", Attribute::Int(1 << 30))]);
        let got = run(&hash, 21, &[&strings(&["", "a"])]).unwrap().remove(0);
        let want: Vec<i64> =
            [b"".as_slice(), b"a"].iter().map(|s| (farmhash::fingerprint64(s) % (1 << 30)) as i64).collect();
        assert_eq!(got.data(), &TensorData::Int64(want));
    }

    #[test]
    fn bitcast_keeps_the_bits() {
        let x = Tensor::from_f32(vec![2], vec![-0.0, 1.0]).unwrap();
        let y = run(&node("tf.Bitcast", 1, vec![("to", Attribute::Int(6))]), 21, &[&x]).unwrap().remove(0);
        assert_eq!(y.data(), &TensorData::Int32(vec![i32::MIN, 0x3f80_0000]));
        let back = run(&node("tf.Bitcast", 1, vec![("to", Attribute::Int(1))]), 21, &[&y]).unwrap().remove(0);
        assert_eq!(back.as_f32().unwrap()[0].to_bits(), (-0.0f32).to_bits());
        assert!(run(&node("tf.Bitcast", 1, vec![("to", Attribute::Int(7))]), 21, &[&x]).is_err());
    }

    #[test]
    fn space_to_batch_and_back() {
        let x = Tensor::from_f32(vec![1, 4, 1], (1..=4).map(|v| v as f32).collect()).unwrap();
        let block = Tensor::new(vec![1], TensorData::Int32(vec![2])).unwrap();
        let pads = Tensor::new(vec![1, 2], TensorData::Int32(vec![1, 1])).unwrap();
        let s2b = run(&node("tf.SpaceToBatchND", 3, vec![]), 21, &[&x, &block, &pads]).unwrap().remove(0);
        // Padded [0,1,2,3,4,0]: phase 0 takes 0,2,4 and phase 1 takes 1,3,0.
        assert_eq!(s2b.shape(), &[2, 3, 1]);
        assert_eq!(s2b.as_f32().unwrap(), &[0.0, 2.0, 4.0, 1.0, 3.0, 0.0]);
        let back = run(&node("tf.BatchToSpaceND", 3, vec![]), 21, &[&s2b, &block, &pads]).unwrap().remove(0);
        assert_eq!(back, x);
        // 2-D blocks on a batch of 2 round-trip too.
        let x = Tensor::from_f32(vec![2, 4, 6, 3], (0..144).map(|v| v as f32).collect()).unwrap();
        let block = Tensor::new(vec![2], TensorData::Int32(vec![2, 3])).unwrap();
        let pads = Tensor::new(vec![2, 2], TensorData::Int32(vec![0, 2, 3, 0])).unwrap();
        let s2b = run(&node("tf.SpaceToBatchND", 3, vec![]), 21, &[&x, &block, &pads]).unwrap().remove(0);
        assert_eq!(s2b.shape(), &[12, 3, 3, 3]);
        let back = run(&node("tf.BatchToSpaceND", 3, vec![]), 21, &[&s2b, &block, &pads]).unwrap().remove(0);
        assert_eq!(back, x);
    }

    #[test]
    fn tensor_lists_are_stacked_tensors() {
        let scalar = |v: i32| Tensor::new(vec![], TensorData::Int32(vec![v])).unwrap();
        let reserve = node("tf.TensorListReserve", 2, vec![("dtype", Attribute::Int(1))]);
        // Element shape unknown (-1): the list waits for its first item.
        let list = run(&reserve, 21, &[&scalar(-1), &scalar(3)]).unwrap().remove(0);
        assert_eq!(list.shape(), &[3, 0]);
        let item = Tensor::from_f32(vec![2], vec![1.0, 2.0]).unwrap();
        let set = node("tf.TensorListSetItem", 3, vec![]);
        let list = run(&set, 21, &[&list, &scalar(1), &item]).unwrap().remove(0);
        assert_eq!(list.shape(), &[3, 2]);
        assert_eq!(list.as_f32().unwrap(), &[0.0, 0.0, 1.0, 2.0, 0.0, 0.0]);
        let get = node("tf.TensorListGetItem", 3, vec![]);
        let got = run(&get, 21, &[&list, &scalar(1), &scalar(-1)]).unwrap().remove(0);
        assert_eq!(got, item);
        assert!(run(&get, 21, &[&list, &scalar(3), &scalar(-1)]).unwrap_err().0.contains("out of range"));
        let stacked = run(&node("tf.TensorListStack", 2, vec![]), 21, &[&list, &scalar(-1)]).unwrap().remove(0);
        assert_eq!(stacked, list);
        let wrong = Tensor::from_f32(vec![3], vec![0.0; 3]).unwrap();
        assert!(run(&set, 21, &[&list, &scalar(0), &wrong]).unwrap_err().0.contains("shape"));
        // A known element shape gives zeros at once.
        let shape = Tensor::new(vec![2], TensorData::Int32(vec![1, 2])).unwrap();
        let list = run(&reserve, 21, &[&shape, &scalar(2)]).unwrap().remove(0);
        assert_eq!(list.shape(), &[2, 1, 2]);
        let length = run(&node("tf.TensorListLength", 1, vec![]), 21, &[&list]).unwrap().remove(0);
        assert_eq!(length, scalar(2));
    }
}
