//! Numpy-style broadcasting: the output shape of two operands and, for each
//! output element, the element of each operand it reads.

use super::KernelError;

/// The broadcast shape of `a` and `b` (numpy rules: align trailing dims; a
/// dim of 1 stretches).
///
/// # Errors
/// When two aligned dims differ and neither is 1.
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Result<Vec<usize>, KernelError> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for (i, o) in out.iter_mut().enumerate() {
        let da = dim_from_end(a, rank - 1 - i);
        let db = dim_from_end(b, rank - 1 - i);
        *o = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => {
                return Err(KernelError(format!("shapes {a:?} and {b:?} cannot be broadcast together")));
            }
        };
    }
    Ok(out)
}

fn dim_from_end(shape: &[usize], from_end: usize) -> usize {
    if from_end < shape.len() { shape[shape.len() - 1 - from_end] } else { 1 }
}

/// Row-major strides of `shape` as seen from an output of rank `rank`, with
/// stride 0 on broadcast dims.
pub fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let rank = out.len();
    let mut strides = vec![0; rank];
    let mut stride = 1;
    for i in (0..shape.len()).rev() {
        let oi = rank - shape.len() + i;
        strides[oi] = if shape[i] == 1 && out[oi] != 1 { 0 } else { stride };
        stride *= shape[i];
    }
    strides
}

/// Applies `f` elementwise over the broadcast of `a` and `b`.
///
/// # Errors
/// When the shapes do not broadcast.
pub fn binary<A: Copy, B: Copy, O>(
    a: &[A],
    a_shape: &[usize],
    b: &[B],
    b_shape: &[usize],
    f: impl Fn(A, B) -> O,
) -> Result<(Vec<usize>, Vec<O>), KernelError> {
    let out_shape = broadcast_shape(a_shape, b_shape)?;
    if a_shape == b_shape {
        return Ok((out_shape, a.iter().zip(b).map(|(&x, &y)| f(x, y)).collect()));
    }
    let n: usize = out_shape.iter().product();
    if b.len() == 1 {
        let y = b[0];
        return Ok((out_shape, a.iter().map(|&x| f(x, y)).collect()));
    }
    // General case: walk the output in row-major order, a run of the last
    // dim at a time, keeping an index counter over the other dims and the
    // two operand offsets. Each run is a plain loop over slices (a bias
    // over the channels of NHWC, a per-channel scale over a row of NCHW).
    let sa = broadcast_strides(a_shape, &out_shape);
    let sb = broadcast_strides(b_shape, &out_shape);
    let rank = out_shape.len();
    let mut out = Vec::with_capacity(n);
    let inner = out_shape.last().copied().unwrap_or(1);
    if n == 0 || inner == 0 {
        return Ok((out_shape, out));
    }
    let (ia, ib) = (sa[rank - 1], sb[rank - 1]);
    let mut idx = vec![0usize; rank - 1];
    let (mut oa, mut ob) = (0usize, 0usize);
    for _ in 0..n / inner {
        match (ia, ib) {
            (1, 1) => out.extend(a[oa..oa + inner].iter().zip(&b[ob..ob + inner]).map(|(&x, &y)| f(x, y))),
            (1, 0) => out.extend(a[oa..oa + inner].iter().map(|&x| f(x, b[ob]))),
            (0, 1) => out.extend(b[ob..ob + inner].iter().map(|&y| f(a[oa], y))),
            _ => out.extend((0..inner).map(|k| f(a[oa + k * ia], b[ob + k * ib]))),
        }
        for d in (0..rank - 1).rev() {
            idx[d] += 1;
            oa += sa[d];
            ob += sb[d];
            if idx[d] < out_shape[d] {
                break;
            }
            oa -= sa[d] * out_shape[d];
            ob -= sb[d] * out_shape[d];
            idx[d] = 0;
        }
    }
    Ok((out_shape, out))
}

/// Applies `f` elementwise over the broadcast of three operands (Where).
///
/// # Errors
/// When the shapes do not broadcast.
pub fn ternary<A: Copy, B: Clone, O>(
    a: (&[A], &[usize]),
    b: (&[B], &[usize]),
    c: (&[B], &[usize]),
    f: impl Fn(A, &B, &B) -> O,
) -> Result<(Vec<usize>, Vec<O>), KernelError> {
    let out_shape = broadcast_shape(&broadcast_shape(a.1, b.1)?, c.1)?;
    let n: usize = out_shape.iter().product();
    let strides = [a.1, b.1, c.1].map(|s| broadcast_strides(s, &out_shape));
    let rank = out_shape.len();
    let mut idx = vec![0usize; rank];
    let mut at = [0usize; 3];
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(f(a.0[at[0]], &b.0[at[1]], &c.0[at[2]]));
        for d in (0..rank).rev() {
            idx[d] += 1;
            for (o, s) in at.iter_mut().zip(&strides) {
                *o += s[d];
            }
            if idx[d] < out_shape[d] {
                break;
            }
            for (o, s) in at.iter_mut().zip(&strides) {
                *o -= s[d] * out_shape[d];
            }
            idx[d] = 0;
        }
    }
    Ok((out_shape, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_broadcast_like_numpy() {
        assert_eq!(broadcast_shape(&[2, 3], &[3]).unwrap(), vec![2, 3]);
        assert_eq!(broadcast_shape(&[4, 1, 5], &[3, 1]).unwrap(), vec![4, 3, 5]);
        assert_eq!(broadcast_shape(&[], &[2]).unwrap(), vec![2]);
        assert!(broadcast_shape(&[2, 3], &[4]).is_err());
    }

    #[test]
    fn ternary_broadcasts_all_three() {
        let c = [true, false];
        let (shape, out) =
            ternary((&c, &[2, 1]), (&[1.0f32, 2.0, 3.0], &[3]), (&[-1.0f32], &[]), |c, x, y| if c { *x } else { *y })
                .unwrap();
        assert_eq!(shape, vec![2, 3]);
        assert_eq!(out, vec![1.0, 2.0, 3.0, -1.0, -1.0, -1.0]);
    }

    #[test]
    fn every_run_pattern_matches_index_arithmetic() {
        // The last dim full in both, in one, in the other, and in neither
        // (a size-1 last dim), plus empty outputs.
        let cases: [(&[usize], &[usize]); 7] = [
            (&[2, 3, 4], &[4]),
            (&[2, 3, 4], &[3, 1]),
            (&[3, 1], &[2, 3, 4]),
            (&[2, 1, 4], &[3, 4]),
            (&[2, 3, 1], &[1, 3, 1]),
            (&[5, 1], &[1, 1, 1]),
            (&[0, 3], &[3]),
        ];
        for (sa, sb) in cases {
            let a: Vec<i64> = (0..sa.iter().product::<usize>() as i64).collect();
            let b: Vec<i64> = (0..sb.iter().product::<usize>() as i64).map(|v| v * 1000).collect();
            let (shape, out) = binary(&a, sa, &b, sb, |x, y| x + y).unwrap();
            assert_eq!(shape, broadcast_shape(sa, sb).unwrap());
            let (stride_a, stride_b) = (broadcast_strides(sa, &shape), broadcast_strides(sb, &shape));
            let want: Vec<i64> = (0..shape.iter().product::<usize>())
                .map(|flat| {
                    let (mut rest, mut ia, mut ib) = (flat, 0, 0);
                    for d in (0..shape.len()).rev() {
                        let i = rest % shape[d];
                        rest /= shape[d];
                        ia += i * stride_a[d];
                        ib += i * stride_b[d];
                    }
                    a[ia] + b[ib]
                })
                .collect();
            assert_eq!(out, want, "{sa:?} with {sb:?}");
        }
    }

    #[test]
    fn general_broadcast_matches_index_arithmetic() {
        // a: [2,1,3], b: [4,1] -> [2,4,3]; out[i,j,k] = a[i,0,k] * 10 + b[j,0]
        let a: Vec<f32> = (0..6).map(|x| x as f32).collect();
        let b: Vec<f32> = (0..4).map(|x| x as f32).collect();
        let (shape, out) = binary(&a, &[2, 1, 3], &b, &[4, 1], |x, y| x * 10.0 + y).unwrap();
        assert_eq!(shape, vec![2, 4, 3]);
        for i in 0..2 {
            for j in 0..4 {
                for k in 0..3 {
                    assert_eq!(out[(i * 4 + j) * 3 + k], a[i * 3 + k] * 10.0 + b[j]);
                }
            }
        }
    }
}
