//! Shape and data movement: Flatten, Reshape, Transpose, Identity. These
//! work on every element type.

use super::{BuildContext, BuildError, Kernel, KernelError, KernelRegistry, MAX_OPSET, required};
use crate::tensor::{Tensor, TensorData, element_count};

pub fn register(reg: &mut KernelRegistry) {
    reg.register("Flatten", 1, MAX_OPSET, build_flatten);
    reg.register("Reshape", 5, MAX_OPSET, build_reshape);
    reg.register("Transpose", 1, MAX_OPSET, build_transpose);
    reg.register("tf.Transpose", 1, MAX_OPSET, |_| Ok(Box::new(Transpose { perm: None, perm_input: true })));
    reg.register("Identity", 1, MAX_OPSET, |_| Ok(Box::new(Identity)));
}

#[derive(Debug)]
struct Identity;

impl Kernel for Identity {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        Ok(vec![required(inputs, 0, "input")?.clone()])
    }

    fn view_shape(&self, inputs: &[Option<&Tensor>]) -> Option<Result<Vec<usize>, KernelError>> {
        Some(required(inputs, 0, "input").map(|x| x.shape().to_vec()))
    }
}

/// Reshapes to 2-D: the dims before `axis` become rows, the rest columns.
#[derive(Debug)]
struct Flatten {
    axis: i64,
}

fn build_flatten(ctx: &BuildContext<'_>) -> Result<Box<dyn Kernel>, BuildError> {
    let axis = ctx.node.int_attr("axis", 1)?;
    if ctx.opset < 11 && axis < 0 {
        return Err(BuildError::invalid(ctx.node, "negative axis needs opset 11 or later"));
    }
    Ok(Box::new(Flatten { axis }))
}

impl Kernel for Flatten {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let shape = self.shape(inputs)?;
        Ok(vec![required(inputs, 0, "input")?.clone().reshape(shape)?])
    }

    fn view_shape(&self, inputs: &[Option<&Tensor>]) -> Option<Result<Vec<usize>, KernelError>> {
        Some(self.shape(inputs))
    }
}

impl Flatten {
    fn shape(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<usize>, KernelError> {
        let x = required(inputs, 0, "input")?;
        let rank = x.shape().len();
        // axis lies in [-rank, rank]: it may equal rank (all dims in the
        // rows), and a negative axis counts from the end.
        let r = rank as i64;
        if self.axis < -r || self.axis > r {
            return Err(KernelError(format!("axis {} is out of range for rank {rank}", self.axis)));
        }
        let axis = if self.axis < 0 { self.axis + r } else { self.axis } as usize;
        let rows: usize = x.shape()[..axis].iter().product();
        let cols: usize = x.shape()[axis..].iter().product();
        Ok(vec![rows, cols])
    }
}

/// Reshape to the shape given by the second input (0 keeps the input's dim
/// unless `allowzero`, -1 is inferred).
#[derive(Debug)]
struct Reshape {
    allow_zero: bool,
}

fn build_reshape(ctx: &BuildContext<'_>) -> Result<Box<dyn Kernel>, BuildError> {
    Ok(Box::new(Reshape { allow_zero: ctx.node.int_attr("allowzero", 0)? != 0 }))
}

/// The output shape of Reshape for `input` and the requested `spec`.
///
/// # Errors
/// When the spec is malformed or its element count differs from the input's.
pub fn reshape_target(input: &[usize], spec: &[i64], allow_zero: bool) -> Result<Vec<usize>, KernelError> {
    let total = element_count(input).ok_or_else(|| KernelError("input shape overflows".into()))?;
    let mut out = Vec::with_capacity(spec.len());
    let mut infer = None;
    for (i, &d) in spec.iter().enumerate() {
        match d {
            -1 if infer.is_none() => {
                infer = Some(i);
                out.push(1);
            }
            -1 => return Err(KernelError(format!("shape {spec:?} has more than one -1"))),
            0 if !allow_zero => out.push(*input.get(i).ok_or_else(|| {
                KernelError(format!(
                    "shape {spec:?} copies dim {i} (0) but the input {input:?} has rank {}",
                    input.len()
                ))
            })?),
            d if d >= 0 => out.push(d as usize),
            d => return Err(KernelError(format!("shape {spec:?} has invalid dim {d}"))),
        }
    }
    let known = element_count(&out).ok_or_else(|| KernelError(format!("shape {spec:?} overflows")))?;
    if let Some(i) = infer {
        if known == 0 || total % known != 0 {
            return Err(KernelError(format!("cannot reshape {input:?} ({total} elements) to {spec:?}")));
        }
        out[i] = total / known;
    } else if known != total {
        return Err(KernelError(format!("cannot reshape {input:?} ({total} elements) to {spec:?} ({known} elements)")));
    }
    Ok(out)
}

impl Kernel for Reshape {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let shape = self.shape(inputs)?;
        Ok(vec![required(inputs, 0, "data")?.clone().reshape(shape)?])
    }

    fn view_shape(&self, inputs: &[Option<&Tensor>]) -> Option<Result<Vec<usize>, KernelError>> {
        Some(self.shape(inputs))
    }
}

impl Reshape {
    fn shape(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<usize>, KernelError> {
        let x = required(inputs, 0, "data")?;
        let spec = required(inputs, 1, "shape")?;
        let spec = spec.as_i64().ok_or_else(|| KernelError(format!("shape must be int64, got {}", spec.dtype())))?;
        reshape_target(x.shape(), spec, self.allow_zero)
    }
}

/// Permutes the dims; the default permutation reverses them. TensorFlow's
/// Transpose (`tf.Transpose`) takes the permutation as its second input.
#[derive(Debug)]
struct Transpose {
    perm: Option<Vec<usize>>,
    perm_input: bool,
}

/// `p` as a permutation, if it is one.
fn permutation(p: &[i64]) -> Option<Vec<usize>> {
    let mut seen = vec![false; p.len()];
    p.iter()
        .map(|&a| {
            let a = usize::try_from(a).ok().filter(|&a| a < p.len())?;
            (!std::mem::replace(&mut seen[a], true)).then_some(a)
        })
        .collect()
}

fn build_transpose(ctx: &BuildContext<'_>) -> Result<Box<dyn Kernel>, BuildError> {
    let perm = match ctx.node.ints_attr("perm")? {
        None => None,
        Some(p) => Some(
            permutation(p).ok_or_else(|| BuildError::invalid(ctx.node, format!("perm {p:?} is not a permutation")))?,
        ),
    };
    Ok(Box::new(Transpose { perm, perm_input: false }))
}

pub(crate) fn permute<T: Clone>(data: &[T], shape: &[usize], perm: &[usize]) -> Vec<T> {
    let Some(first) = data.first() else { return Vec::new() };
    let in_strides = crate::tensor::strides(shape);
    // The output's dims as (size, stride in the input), with unit dims
    // dropped and dims that stay neighbours in the input merged, so NCHW to
    // NHWC is [N, HW, C] from [N, C, HW]: a batch of 2-D transposes.
    let mut dims: Vec<(usize, usize)> = Vec::with_capacity(perm.len());
    for &p in perm {
        let (size, stride) = (shape[p], in_strides[p]);
        if size == 1 {
            continue;
        }
        match dims.last_mut() {
            Some((outer, outer_stride)) if *outer_stride == stride * size => {
                *outer *= size;
                *outer_stride = stride;
            }
            _ => dims.push((size, stride)),
        }
    }
    if dims.is_empty() {
        return data.to_vec();
    }
    let rank = dims.len();
    let mut out_strides = vec![1usize; rank];
    for d in (0..rank - 1).rev() {
        out_strides[d] = out_strides[d + 1] * dims[d + 1].0;
    }
    let mut out = vec![first.clone(); data.len()];
    let (inner, inner_stride) = dims[rank - 1];
    // The output dim read contiguously from the input, when it is not the
    // last: the two are then walked in square tiles, so that both the reads
    // and the writes stay within a few cache lines.
    let unit = (0..rank - 1).find(|&d| dims[d].1 == 1).filter(|_| inner_stride != 1);
    // Every output position over the dims other than the last (and the
    // tiled one), with its offsets in the input and the output.
    let outer: Vec<usize> = (0..rank - 1).filter(|&d| Some(d) != unit).collect();
    let count: usize = outer.iter().map(|&d| dims[d].0).product();
    let mut idx = vec![0usize; outer.len()];
    let (mut src, mut dst) = (0usize, 0usize);
    const TILE: usize = 16;
    for _ in 0..count {
        match unit {
            None if inner_stride == 1 => out[dst..dst + inner].clone_from_slice(&data[src..src + inner]),
            None => {
                for (k, o) in out[dst..dst + inner].iter_mut().enumerate() {
                    *o = data[src + k * inner_stride].clone();
                }
            }
            Some(u) => {
                let (rows, row_out) = (dims[u].0, out_strides[u]);
                for r0 in (0..rows).step_by(TILE) {
                    for c0 in (0..inner).step_by(TILE) {
                        for c in c0..(c0 + TILE).min(inner) {
                            for r in r0..(r0 + TILE).min(rows) {
                                out[dst + r * row_out + c] = data[src + r + c * inner_stride].clone();
                            }
                        }
                    }
                }
            }
        }
        for (k, &d) in outer.iter().enumerate().rev() {
            idx[k] += 1;
            src += dims[d].1;
            dst += out_strides[d];
            if idx[k] < dims[d].0 {
                break;
            }
            src -= dims[d].1 * dims[d].0;
            dst -= out_strides[d] * dims[d].0;
            idx[k] = 0;
        }
    }
    out
}

impl Kernel for Transpose {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let x = required(inputs, 0, "data")?;
        let rank = x.shape().len();
        let given = if self.perm_input {
            let p = super::movement::int_list(required(inputs, 1, "perm")?, "perm")?;
            Some(permutation(&p).ok_or_else(|| KernelError(format!("perm {p:?} is not a permutation")))?)
        } else {
            None
        };
        let perm: Vec<usize> = match given.as_ref().or(self.perm.as_ref()) {
            Some(p) if p.len() == rank => p.clone(),
            Some(p) => {
                return Err(KernelError(format!("perm {p:?} does not fit input of rank {rank}")));
            }
            None => (0..rank).rev().collect(),
        };
        let s = x.shape();
        let data = match x.data() {
            TensorData::Float(v) => TensorData::Float(permute(v, s, &perm)),
            TensorData::Double(v) => TensorData::Double(permute(v, s, &perm)),
            TensorData::Int32(v) => TensorData::Int32(permute(v, s, &perm)),
            TensorData::Int64(v) => TensorData::Int64(permute(v, s, &perm)),
            TensorData::UInt8(v) => TensorData::UInt8(permute(v, s, &perm)),
            TensorData::Int8(v) => TensorData::Int8(permute(v, s, &perm)),
            TensorData::Bool(v) => TensorData::Bool(permute(v, s, &perm)),
            TensorData::String(v) => TensorData::String(permute(v, s, &perm)),
        };
        let shape = perm.iter().map(|&p| s[p]).collect();
        Ok(vec![Tensor::new(shape, data)?])
    }
}

#[cfg(test)]
mod tests {
    use super::{permute, reshape_target};
    use crate::graph::Attribute;
    use crate::kernels::testing::{node, run};
    use crate::tensor::Tensor;

    #[test]
    fn reshape_targets() {
        assert_eq!(reshape_target(&[2, 3, 4], &[0, -1], false).unwrap(), vec![2, 12]);
        assert_eq!(reshape_target(&[2, 3, 4], &[-1], false).unwrap(), vec![24]);
        assert_eq!(reshape_target(&[0, 3], &[0, 3], true).unwrap(), vec![0, 3]);
        assert!(reshape_target(&[2, 3], &[-1, -1], false).is_err());
        assert!(reshape_target(&[2, 3], &[4, -1], false).is_err());
        assert!(reshape_target(&[2, 3], &[7], false).is_err());
        assert!(reshape_target(&[2, 3], &[-2, 3], false).is_err());
    }

    #[test]
    fn transpose_nhwc_to_nchw_matches_index_formula() {
        let (n, h, w, c) = (2, 3, 4, 5);
        let x: Vec<f32> = (0..n * h * w * c).map(|v| v as f32).collect();
        let t = Tensor::from_f32(vec![n, h, w, c], x.clone()).unwrap();
        let out = run(&node("Transpose", 1, vec![("perm", Attribute::Ints(vec![0, 3, 1, 2]))]), 13, &[&t]).unwrap();
        assert_eq!(out[0].shape(), &[n, c, h, w]);
        let got = out[0].as_f32().unwrap();
        for b in 0..n {
            for ch in 0..c {
                for y in 0..h {
                    for xx in 0..w {
                        assert_eq!(got[((b * c + ch) * h + y) * w + xx], x[((b * h + y) * w + xx) * c + ch]);
                    }
                }
            }
        }
        let out = run(&node("Transpose", 1, vec![]), 13, &[&t]).unwrap();
        assert_eq!(out[0].shape(), &[c, w, h, n]);
    }

    #[test]
    fn every_permutation_matches_the_index_formula() {
        for shape in [[2usize, 3, 4, 5], [1, 17, 1, 33], [3, 1, 40, 2], [2, 2, 2, 2]] {
            let n: usize = shape.iter().product();
            let x: Vec<i64> = (0..n as i64).collect();
            let strides = crate::tensor::strides(&shape);
            let mut perms = Vec::new();
            for a in 0..4 {
                for b in 0..4 {
                    for c in 0..4 {
                        for d in 0..4 {
                            let p = [a, b, c, d];
                            if (0..4).all(|i| p.contains(&i)) {
                                perms.push(p);
                            }
                        }
                    }
                }
            }
            for perm in perms {
                let got = permute(&x, &shape, &perm);
                let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
                let want: Vec<i64> = (0..n)
                    .map(|flat| {
                        let (mut rest, mut at) = (flat, 0);
                        for d in (0..4).rev() {
                            at += (rest % out_shape[d]) * strides[perm[d]];
                            rest /= out_shape[d];
                        }
                        x[at]
                    })
                    .collect();
                assert_eq!(got, want, "{shape:?} by {perm:?}");
            }
        }
    }

    #[test]
    fn flatten_and_reshape() {
        let t = Tensor::from_f32(vec![2, 3, 4], vec![0.0; 24]).unwrap();
        let out = run(&node("Flatten", 1, vec![]), 13, &[&t]).unwrap();
        assert_eq!(out[0].shape(), &[2, 12]);
        let out = run(&node("Flatten", 1, vec![("axis", Attribute::Int(0))]), 13, &[&t]).unwrap();
        assert_eq!(out[0].shape(), &[1, 24]);
        let out = run(&node("Flatten", 1, vec![("axis", Attribute::Int(-1))]), 13, &[&t]).unwrap();
        assert_eq!(out[0].shape(), &[6, 4]);
        let spec = Tensor::from_i64(vec![3], vec![4, 0, -1]).unwrap();
        let out = run(&node("Reshape", 2, vec![]), 13, &[&t, &spec]).unwrap();
        assert_eq!(out[0].shape(), &[4, 3, 2]);
        let bad = Tensor::from_f32(vec![3], vec![4.0, 0.0, -1.0]).unwrap();
        assert!(run(&node("Reshape", 2, vec![]), 13, &[&t, &bad]).is_err());
    }
}
