//! Dense layers: Gemm and MatMul, over one row-major matrix product.

use super::broadcast::{broadcast_shape, broadcast_strides};
use super::epilogue::Activation;
use super::sgemm::{ColumnBlocks, FEW_COLUMNS, SMALL_M, TransposedColumns, View, sgemm, sgemm_blocks};
use super::{BuildContext, BuildError, Kernel, KernelError, KernelRegistry, MAX_OPSET, floats, required};
use crate::tensor::{Tensor, TensorData};

pub fn register(reg: &mut KernelRegistry) {
    reg.register("Gemm", 7, MAX_OPSET, build_gemm);
    // Gemm with its activation fused in (onnxruntime's contrib operator of
    // the same name), made by the load-time passes.
    reg.register("FusedGemm", 7, MAX_OPSET, build_gemm);
    reg.register("MatMul", 1, MAX_OPSET, build_matmul);
    reg.register("Det", 11, MAX_OPSET, |_| Ok(Box::new(Det)));
}

/// Det: the determinant of each trailing square matrix (LU with partial
/// pivoting, in f64).
#[derive(Debug)]
struct Det;

impl Kernel for Det {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let x = required(inputs, 0, "X")?;
        let r = x.shape().len();
        if r < 2 || x.shape()[r - 1] != x.shape()[r - 2] {
            return Err(KernelError(format!("X must end in a square matrix, got shape {:?}", x.shape())));
        }
        let n = x.shape()[r - 1];
        let v = super::float_values(x, "X")?;
        if n == 0 {
            // The determinant of an empty matrix is 1.
            let count = x.shape()[..r - 2].iter().product();
            return Ok(vec![super::float_tensor_like(x, x.shape()[..r - 2].to_vec(), vec![1.0; count])?]);
        }
        let dets = v
            .chunks(n * n)
            .map(|m| {
                let mut a = m.to_vec();
                let mut det = 1.0;
                for col in 0..n {
                    let pivot =
                        (col..n).max_by(|&p, &q| a[p * n + col].abs().total_cmp(&a[q * n + col].abs())).unwrap_or(col);
                    if a[pivot * n + col] == 0.0 {
                        return 0.0;
                    }
                    if pivot != col {
                        for k in 0..n {
                            a.swap(pivot * n + k, col * n + k);
                        }
                        det = -det;
                    }
                    det *= a[col * n + col];
                    for row in col + 1..n {
                        let f = a[row * n + col] / a[col * n + col];
                        for k in col..n {
                            a[row * n + k] -= f * a[col * n + k];
                        }
                    }
                }
                det
            })
            .collect();
        Ok(vec![super::float_tensor_like(x, x.shape()[..r - 2].to_vec(), dets)?])
    }
}

/// `c = a · b` for row-major `a` [m, k], `b` [k, n] and `c` [m, n], on the
/// tuned kernels of [`sgemm`], spread over the current pool when large.
/// The split is over blocks of `c`, never the reduction, so the result does
/// not depend on the thread count.
pub fn matmul_f32(a: &[f32], b: &[f32], c: &mut [f32], m: usize, k: usize, n: usize) {
    debug_assert_eq!(a.len(), m * k);
    debug_assert_eq!(b.len(), k * n);
    debug_assert_eq!(c.len(), m * n);
    sgemm(View::row_major(a, m, k), View::row_major(b, k, n), c, n, false, true);
}

/// `Y = alpha · A' · B' + beta · C`, with `'` an optional transpose and C
/// broadcast to [M, N].
#[derive(Debug)]
struct Gemm {
    alpha: f32,
    beta: f32,
    trans_a: bool,
    trans_b: bool,
    /// FusedGemm's activation (Identity for Gemm).
    activation: Activation,
    /// B packed in column blocks when it is a constant (the weights of a
    /// dense layer), for products of a few rows.
    packed_b: Option<ColumnBlocks>,
    /// B transposed when it is a constant with few columns: every output is
    /// a dot product, at any batch size.
    few_columns: Option<TransposedColumns>,
}

fn build_gemm(ctx: &BuildContext<'_>) -> Result<Box<dyn Kernel>, BuildError> {
    let n = ctx.node;
    let trans_b = n.int_attr("transB", 0)? != 0;
    let weights = ctx.constant_input(1).and_then(|b| match (b.shape(), b.as_f32()) {
        ([rows, cols], Some(data)) => {
            let view = View::row_major(data, *rows, *cols);
            Some(if trans_b { view.t() } else { view })
        }
        _ => None,
    });
    let few = weights.filter(|w| w.cols <= FEW_COLUMNS);
    Ok(Box::new(Gemm {
        packed_b: weights.filter(|w| w.cols > FEW_COLUMNS).map(ColumnBlocks::new),
        few_columns: few.map(TransposedColumns::new),
        alpha: n.float_attr("alpha", 1.0)?,
        beta: n.float_attr("beta", 1.0)?,
        trans_a: n.int_attr("transA", 0)? != 0,
        trans_b,
        activation: if n.op == "FusedGemm" { Activation::from_node(n)? } else { Activation::Identity },
    }))
}

fn matrix_dims(t: &Tensor, what: &str) -> Result<(usize, usize), KernelError> {
    match t.shape() {
        [r, c] => Ok((*r, *c)),
        s => Err(KernelError(format!("{what} must be a matrix (rank 2), got shape {s:?}"))),
    }
}

impl Kernel for Gemm {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let a = required(inputs, 0, "A")?;
        let b = required(inputs, 1, "B")?;
        let (ar, ac) = matrix_dims(a, "A")?;
        let (br, bc) = matrix_dims(b, "B")?;
        let (m, k) = if self.trans_a { (ac, ar) } else { (ar, ac) };
        let (kb, n) = if self.trans_b { (bc, br) } else { (br, bc) };
        if k != kb {
            return Err(KernelError(format!(
                "inner dimensions differ: A{} is {m}x{k} but B{} is {kb}x{n}",
                if self.trans_a { "'" } else { "" },
                if self.trans_b { "'" } else { "" },
            )));
        }
        let a_view = View::row_major(floats(a, "A")?, ar, ac);
        let b_view = View::row_major(floats(b, "B")?, br, bc);
        let a_view = if self.trans_a { a_view.t() } else { a_view };
        let b_view = if self.trans_b { b_view.t() } else { b_view };
        // Y starts as beta · C (broadcast), and the product adds onto it.
        let mut y = vec![0.0f32; m * n];
        let c = inputs.get(2).copied().flatten();
        if let Some(c) = c {
            let c_data = floats(c, "C")?;
            let out_shape = broadcast_shape(c.shape(), &[m, n])?;
            if out_shape != [m, n] {
                return Err(KernelError(format!("C of shape {:?} cannot be broadcast to [{m}, {n}]", c.shape())));
            }
            let strides = broadcast_strides(c.shape(), &[m, n]);
            for (i, row) in y.chunks_mut(n.max(1)).enumerate().take(m) {
                for (j, v) in row.iter_mut().enumerate() {
                    *v = self.beta * c_data[i * strides[0] + j * strides[1]];
                }
            }
        }
        let packed = self.packed_b.as_ref().filter(|p| m <= SMALL_M && p.dims() == (k, n));
        let few = self.few_columns.as_ref().filter(|p| p.dims() == (k, n) && (a_view.cs == 1 || k <= 1));
        let multiply = |out: &mut [f32], accumulate: bool| match (few, packed) {
            (Some(p), _) => p.multiply(a_view, out, n, accumulate, true),
            (None, Some(p)) => sgemm_blocks(a_view, p, out, n, accumulate, true),
            (None, None) => sgemm(a_view, b_view, out, n, accumulate, true),
        };
        if self.alpha == 1.0 {
            multiply(&mut y, c.is_some());
        } else {
            let mut product = vec![0.0f32; m * n];
            multiply(&mut product, false);
            y.iter_mut().zip(product).for_each(|(v, p)| *v += self.alpha * p);
        }
        self.activation.apply(&mut y);
        Ok(vec![Tensor::from_f32(vec![m, n], y)?])
    }
}

/// Numpy's matmul: batched over leading dims with broadcasting, with 1-D
/// operands promoted to a matrix and the added dim removed afterwards.
#[derive(Debug)]
struct MatMul {
    /// For a constant float matrix B (a dense layer's weights, as
    /// TensorFlow's MatMul holds them): Gemm's kernel with B prepared,
    /// which runs every float A of rank 2.
    dense: Option<Box<dyn Kernel>>,
}

fn build_matmul(ctx: &BuildContext<'_>) -> Result<Box<dyn Kernel>, BuildError> {
    let weights = ctx.constant_input(1).filter(|b| b.shape().len() == 2 && b.as_f32().is_some());
    let dense = match weights {
        Some(_) => Some(build_gemm(ctx)?),
        None => None,
    };
    Ok(Box::new(MatMul { dense }))
}

/// The plain product of an [m, k] and a [k, n] matrix, for the element
/// types without a tuned kernel (integers wrap, as numpy's).
fn matmul_naive<T: Copy + Default>(
    a: &[T],
    b: &[T],
    y: &mut [T],
    (m, k, n): (usize, usize, usize),
    mul_add: fn(T, T, T) -> T,
) {
    for i in 0..m {
        for j in 0..n {
            let mut acc = T::default();
            for p in 0..k {
                acc = mul_add(acc, a[i * k + p], b[p * n + j]);
            }
            y[i * n + j] = acc;
        }
    }
}

/// A batched, broadcast MatMul of `a` and `b` (row-major, batch dims
/// already broadcast to `batch` by the strides), one matrix at a time.
#[allow(clippy::too_many_arguments)]
fn batched<T: Copy + Default>(
    a: &[T],
    b: &[T],
    batch: &[usize],
    (sa, sb): (&[usize], &[usize]),
    (m, k, n): (usize, usize, usize),
    matmul: impl Fn(&[T], &[T], &mut [T]),
) -> Vec<T> {
    let count: usize = batch.iter().product();
    let mut y = vec![T::default(); count * m * n];
    for (bi, y_mat) in y.chunks_mut((m * n).max(1)).enumerate().take(count) {
        // Decompose the flat batch index into the two operands' offsets.
        let (mut oa, mut ob, mut rem) = (0, 0, bi);
        for d in (0..batch.len()).rev() {
            let i = rem % batch[d];
            rem /= batch[d];
            oa += i * sa[d];
            ob += i * sb[d];
        }
        matmul(&a[oa * m * k..(oa + 1) * m * k], &b[ob * k * n..(ob + 1) * k * n], y_mat);
    }
    y
}

impl Kernel for MatMul {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let a = required(inputs, 0, "A")?;
        let b = required(inputs, 1, "B")?;
        if let Some(dense) = &self.dense
            && a.shape().len() == 2
            && a.as_f32().is_some()
            && b.as_f32().is_some()
            && b.shape().len() == 2
        {
            return dense.run(&[Some(a), Some(b)]);
        }
        if a.shape().is_empty() || b.shape().is_empty() {
            return Err(KernelError("MatMul operands must have rank 1 or more".into()));
        }
        let mut a_shape = a.shape().to_vec();
        let mut b_shape = b.shape().to_vec();
        let a_vec = a_shape.len() == 1;
        let b_vec = b_shape.len() == 1;
        if a_vec {
            a_shape.insert(0, 1);
        }
        if b_vec {
            b_shape.push(1);
        }
        let (m, k) = (a_shape[a_shape.len() - 2], a_shape[a_shape.len() - 1]);
        let (kb, n) = (b_shape[b_shape.len() - 2], b_shape[b_shape.len() - 1]);
        if k != kb {
            return Err(KernelError(format!(
                "inner dimensions differ: A has shape {:?} and B has shape {:?}",
                a.shape(),
                b.shape()
            )));
        }
        let a_batch = &a_shape[..a_shape.len() - 2];
        let b_batch = &b_shape[..b_shape.len() - 2];
        let batch = broadcast_shape(a_batch, b_batch)?;
        let sa = broadcast_strides(a_batch, &batch);
        let sb = broadcast_strides(b_batch, &batch);
        let strides = (sa.as_slice(), sb.as_slice());
        let dims = (m, k, n);
        let data = match (a.data(), b.data()) {
            (TensorData::Float(x), TensorData::Float(y)) => {
                TensorData::Float(batched(x, y, &batch, strides, dims, |p, q, out| matmul_f32(p, q, out, m, k, n)))
            }
            (TensorData::Double(x), TensorData::Double(y)) => {
                TensorData::Double(batched(x, y, &batch, strides, dims, |p, q, out| {
                    matmul_naive(p, q, out, dims, |acc, u, v| acc + u * v)
                }))
            }
            (TensorData::Int32(x), TensorData::Int32(y)) => {
                TensorData::Int32(batched(x, y, &batch, strides, dims, |p, q, out| {
                    matmul_naive(p, q, out, dims, |acc, u, v| acc.wrapping_add(u.wrapping_mul(v)))
                }))
            }
            (TensorData::Int64(x), TensorData::Int64(y)) => {
                TensorData::Int64(batched(x, y, &batch, strides, dims, |p, q, out| {
                    matmul_naive(p, q, out, dims, |acc, u, v| acc.wrapping_add(u.wrapping_mul(v)))
                }))
            }
            _ => {
                return Err(KernelError(format!(
                    "MatMul takes two operands of one type (float, double, int32, int64), got {} and {}",
                    a.dtype(),
                    b.dtype()
                )));
            }
        };
        let mut shape = batch;
        if !a_vec {
            shape.push(m);
        }
        if !b_vec {
            shape.push(n);
        }
        Ok(vec![Tensor::new(shape, data)?])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Attribute;
    use crate::kernels::testing::{assert_close, node, random_floats, run};

    fn transpose_2d(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
        let mut out = vec![0.0; x.len()];
        for r in 0..rows {
            for c in 0..cols {
                out[c * rows + r] = x[r * cols + c];
            }
        }
        out
    }

    fn naive_matmul(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a[i * k + p] as f64 * b[p * n + j] as f64).sum::<f64>() as f32;
            }
        }
        c
    }

    #[test]
    fn matmul_core_matches_naive() {
        for (m, k, n) in [(1, 1, 1), (3, 5, 7), (40, 33, 17), (17, 64, 1)] {
            let a = random_floats(m * k, 1);
            let b = random_floats(k * n, 2);
            let mut c = vec![f32::NAN; m * n];
            matmul_f32(&a, &b, &mut c, m, k, n);
            assert_close(&c, &naive_matmul(&a, &b, m, k, n));
        }
    }

    #[test]
    fn gemm_with_transposes_alpha_beta_and_row_bias() {
        let (m, k, n) = (3, 4, 5);
        let a = random_floats(k * m, 3); // stored transposed: [k, m]
        let b = random_floats(n * k, 4); // stored transposed: [n, k]
        let c = random_floats(n, 5);
        let node = node(
            "Gemm",
            3,
            vec![
                ("transA", Attribute::Int(1)),
                ("transB", Attribute::Int(1)),
                ("alpha", Attribute::Float(0.5)),
                ("beta", Attribute::Float(2.0)),
            ],
        );
        let out = run(
            &node,
            13,
            &[
                &Tensor::from_f32(vec![k, m], a.clone()).unwrap(),
                &Tensor::from_f32(vec![n, k], b.clone()).unwrap(),
                &Tensor::from_f32(vec![n], c.clone()).unwrap(),
            ],
        )
        .unwrap();
        let at = transpose_2d(&a, k, m);
        let bt = transpose_2d(&b, n, k);
        let mut expected = naive_matmul(&at, &bt, m, k, n);
        for i in 0..m {
            for j in 0..n {
                expected[i * n + j] = 0.5 * expected[i * n + j] + 2.0 * c[j];
            }
        }
        assert_eq!(out[0].shape(), &[m, n]);
        assert_close(out[0].as_f32().unwrap(), &expected);
    }

    #[test]
    fn gemm_rejects_mismatched_inner_dims() {
        let a = Tensor::from_f32(vec![2, 3], vec![0.0; 6]).unwrap();
        let b = Tensor::from_f32(vec![4, 2], vec![0.0; 8]).unwrap();
        let err = run(&node("Gemm", 2, vec![]), 13, &[&a, &b]).unwrap_err();
        assert!(err.0.contains("inner dimensions"), "{err}");
    }

    #[test]
    fn matmul_batched_broadcast_and_vectors() {
        // [2,1,3,4] x [5,4,2] -> [2,5,3,2]
        let a = random_floats(2 * 3 * 4, 6);
        let b = random_floats(5 * 4 * 2, 7);
        let out = run(
            &node("MatMul", 2, vec![]),
            13,
            &[
                &Tensor::from_f32(vec![2, 1, 3, 4], a.clone()).unwrap(),
                &Tensor::from_f32(vec![5, 4, 2], b.clone()).unwrap(),
            ],
        )
        .unwrap();
        assert_eq!(out[0].shape(), &[2, 5, 3, 2]);
        let got = out[0].as_f32().unwrap();
        for i in 0..2 {
            for j in 0..5 {
                let exp = naive_matmul(&a[i * 12..(i + 1) * 12], &b[j * 8..(j + 1) * 8], 3, 4, 2);
                assert_close(&got[(i * 5 + j) * 6..(i * 5 + j + 1) * 6], &exp);
            }
        }
        // 1-D operands: [4] x [4,3] -> [3]; [2,4] x [4] -> [2].
        let v = random_floats(4, 8);
        let w = random_floats(12, 9);
        let out = run(
            &node("MatMul", 2, vec![]),
            13,
            &[&Tensor::from_f32(vec![4], v.clone()).unwrap(), &Tensor::from_f32(vec![4, 3], w.clone()).unwrap()],
        )
        .unwrap();
        assert_eq!(out[0].shape(), &[3]);
        assert_close(out[0].as_f32().unwrap(), &naive_matmul(&v, &w, 1, 4, 3));
        let out = run(
            &node("MatMul", 2, vec![]),
            13,
            &[&Tensor::from_f32(vec![3, 4], w.clone()).unwrap(), &Tensor::from_f32(vec![4], v.clone()).unwrap()],
        )
        .unwrap();
        assert_eq!(out[0].shape(), &[3]);
        assert_close(out[0].as_f32().unwrap(), &naive_matmul(&w, &v, 3, 4, 1));
    }
}
