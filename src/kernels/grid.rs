//! Spatial transformers: AffineGrid (a sampling grid from affine matrices)
//! and GridSample (sampling an input at a grid's normalised coordinates,
//! nearest, linear or cubic, with zeros, border or reflection padding), over
//! any spatial rank.

use rayon::prelude::*;

use super::{
    BuildContext, BuildError, Kernel, KernelError, KernelRegistry, MAX_OPSET, float_tensor_like, float_values, required,
};
use crate::tensor::{Tensor, TensorData};

pub fn register(reg: &mut KernelRegistry) {
    reg.register("GridSample", 16, MAX_OPSET, build_grid_sample);
    reg.register("AffineGrid", 20, MAX_OPSET, |ctx| {
        Ok(Box::new(AffineGrid { align_corners: ctx.node.int_attr("align_corners", 0)? != 0 }))
    });
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Nearest,
    Linear,
    Cubic,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Padding {
    Zeros,
    Border,
    Reflection,
}

#[derive(Debug)]
struct GridSample {
    mode: Mode,
    padding: Padding,
    align_corners: bool,
}

fn build_grid_sample(ctx: &BuildContext<'_>) -> Result<Box<dyn Kernel>, BuildError> {
    let node = ctx.node;
    let mode = match node.string_attr("mode")?.unwrap_or(if ctx.opset < 20 { "bilinear" } else { "linear" }) {
        "nearest" => Mode::Nearest,
        "bilinear" | "linear" => Mode::Linear,
        "bicubic" | "cubic" => Mode::Cubic,
        other => return Err(BuildError::invalid(node, format!("mode '{other}' is not nearest, linear or cubic"))),
    };
    let padding = match node.string_attr("padding_mode")?.unwrap_or("zeros") {
        "zeros" => Padding::Zeros,
        "border" => Padding::Border,
        "reflection" => Padding::Reflection,
        other => {
            return Err(BuildError::invalid(
                node,
                format!("padding_mode '{other}' is not zeros, border or reflection"),
            ));
        }
    };
    Ok(Box::new(GridSample { mode, padding, align_corners: node.int_attr("align_corners", 0)? != 0 }))
}

/// Reflects `x` into [lo, hi] as often as it takes.
fn reflect(x: f64, lo: f64, hi: f64) -> f64 {
    let range = hi - lo;
    if range <= 0.0 {
        return lo;
    }
    if x < lo {
        let d = lo - x;
        let n = (d / range).trunc();
        let r = d - n * range;
        if n as i64 % 2 == 0 { lo + r } else { hi - r }
    } else if x > hi {
        let d = x - hi;
        let n = (d / range).trunc();
        let r = d - n * range;
        if n as i64 % 2 == 0 { hi - r } else { lo + r }
    } else {
        x
    }
}

/// The weights of the four taps around a point `t` past the second one.
fn cubic_weights(t: f64) -> [f64; 4] {
    let w = |x: f64| super::resize::keys_cubic(-0.75, x);
    [w(t + 1.0), w(t), w(1.0 - t), w(2.0 - t)]
}

impl GridSample {
    /// The input index a tap at integer position `i` of a dim of size `n`
    /// reads, or `None` for a zero (zeros padding outside the input).
    fn index(&self, i: i64, n: usize, lo: f64, hi: f64) -> Option<usize> {
        match self.padding {
            Padding::Zeros => (0..n as i64).contains(&i).then_some(i as usize),
            Padding::Border => Some(i.clamp(0, n as i64 - 1) as usize),
            Padding::Reflection => Some((reflect(i as f64, lo, hi) as i64).clamp(0, n as i64 - 1) as usize),
        }
    }
}

impl Kernel for GridSample {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let x = required(inputs, 0, "X")?;
        let grid = required(inputs, 1, "grid")?;
        let rank = x.shape().len().saturating_sub(2);
        let gs = grid.shape();
        if rank == 0 || gs.len() != rank + 2 || gs[0] != x.shape()[0] || gs[rank + 1] != rank {
            return Err(KernelError(format!(
                "grid must have shape [N, ...{rank} output dims, {rank}] for X of shape {:?}, got {gs:?}",
                x.shape()
            )));
        }
        let (n, c) = (x.shape()[0], x.shape()[1]);
        let dims = &x.shape()[2..];
        let xs = float_values(x, "X")?;
        let g = float_values(grid, "grid")?;
        let out_points: usize = gs[1..=rank].iter().product();
        let in_plane: usize = dims.iter().product();
        let in_strides = crate::tensor::strides(dims);
        let bounds: Vec<(f64, f64)> = dims
            .iter()
            .map(|&s| if self.align_corners { (0.0, s as f64 - 1.0) } else { (-0.5, s as f64 - 0.5) })
            .collect();
        let mut y = vec![0.0f64; n * c * out_points];
        y.par_chunks_mut(out_points.max(1)).enumerate().for_each(|(lane, out)| {
            let (b, ch) = (lane / c, lane % c);
            let input = &xs[(b * c + ch) * in_plane..(b * c + ch + 1) * in_plane];
            for (p, o) in out.iter_mut().enumerate() {
                let coords = &g[(b * out_points + p) * rank..(b * out_points + p + 1) * rank];
                // Per dim (slowest first): the taps and their weights.
                let mut taps: Vec<Vec<(Option<usize>, f64)>> = Vec::with_capacity(rank);
                for d in 0..rank {
                    let size = dims[d];
                    let nv = coords[rank - 1 - d] as f32;
                    let mut v = f64::from(if self.align_corners {
                        (nv + 1.0) / 2.0 * (size as f32 - 1.0)
                    } else {
                        ((nv + 1.0) * size as f32 - 1.0) / 2.0
                    });
                    if self.mode == Mode::Nearest {
                        v = v.round_ties_even();
                    }
                    let (lo, hi) = bounds[d];
                    if v < lo || v > hi {
                        v = match self.padding {
                            Padding::Border => v.clamp(0.0, size as f64 - 1.0),
                            Padding::Reflection => reflect(v, lo, hi),
                            Padding::Zeros => v,
                        };
                    }
                    let dim_taps = match self.mode {
                        Mode::Nearest => vec![(self.index(v as i64, size, lo, hi), 1.0)],
                        Mode::Linear => {
                            let f = v.floor();
                            let t = v - f;
                            vec![
                                (self.index(f as i64, size, lo, hi), 1.0 - t),
                                (self.index(f as i64 + 1, size, lo, hi), t),
                            ]
                        }
                        Mode::Cubic => {
                            let f = v.floor();
                            let w = cubic_weights(v - f);
                            (0..4).map(|k| (self.index(f as i64 - 1 + k as i64, size, lo, hi), w[k as usize])).collect()
                        }
                    };
                    taps.push(dim_taps);
                }
                // Sum over the tensor product of the taps.
                let mut idx = vec![0usize; rank];
                let mut sum = 0.0;
                'outer: loop {
                    let mut weight = 1.0;
                    let mut at = Some(0usize);
                    for d in 0..rank {
                        let (i, w) = taps[d][idx[d]];
                        weight *= w;
                        at = match (at, i) {
                            (Some(a), Some(i)) => Some(a + i * in_strides[d]),
                            _ => None,
                        };
                    }
                    if let Some(a) = at {
                        sum += weight * input[a];
                    }
                    let mut d = rank;
                    loop {
                        if d == 0 {
                            break 'outer;
                        }
                        d -= 1;
                        idx[d] += 1;
                        if idx[d] < taps[d].len() {
                            break;
                        }
                        idx[d] = 0;
                    }
                }
                *o = sum;
            }
        });
        let mut shape = vec![n, c];
        shape.extend_from_slice(&gs[1..=rank]);
        Ok(vec![float_tensor_like(x, shape, y)?])
    }
}

/// AffineGrid: for each batch entry, the normalised coordinates of every
/// output position mapped through its affine matrix (2x3 for 2-D, 3x4 for
/// 3-D), last dim in (x, y[, z]) order.
#[derive(Debug)]
struct AffineGrid {
    align_corners: bool,
}

impl Kernel for AffineGrid {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let theta = required(inputs, 0, "theta")?;
        let size = match required(inputs, 1, "size")?.data() {
            TensorData::Int64(v) => v.clone(),
            other => return Err(KernelError(format!("size must be int64, not {}", other.dtype()))),
        };
        let rank = size.len().saturating_sub(2);
        let ts = theta.shape();
        if !(2..=3).contains(&rank) || ts.len() != 3 || ts[1] != rank || ts[2] != rank + 1 || size[0] as usize != ts[0]
        {
            return Err(KernelError(format!(
                "theta {ts:?} and size {size:?} must be [N, 2, 3] with [N, C, H, W], or [N, 3, 4] with [N, C, D, H, W]"
            )));
        }
        if size.iter().any(|&s| s < 0) {
            return Err(KernelError(format!("size {size:?} has a negative dim")));
        }
        let th = float_values(theta, "theta")?;
        let dims: Vec<usize> = size[2..].iter().map(|&s| s as usize).collect();
        let coord = |i: usize, s: usize| -> f64 {
            if self.align_corners {
                if s <= 1 { -1.0 } else { -1.0 + i as f64 * (2.0 / (s as f64 - 1.0)) }
            } else {
                let step = 2.0 / s as f64;
                -1.0 + step / 2.0 + i as f64 * step
            }
        };
        let points: usize = dims.iter().product();
        let n = ts[0];
        let mut out = Vec::with_capacity(n * points * rank);
        for b in 0..n {
            let m = &th[b * rank * (rank + 1)..(b + 1) * rank * (rank + 1)];
            for p in 0..points {
                // Homogeneous (x, y[, z], 1): x from the last (width) dim.
                let mut rest = p;
                let mut h = vec![1.0; rank + 1];
                for d in (0..rank).rev() {
                    let i = rest % dims[d];
                    rest /= dims[d];
                    h[rank - 1 - d] = coord(i, dims[d]);
                }
                for r in 0..rank {
                    out.push((0..=rank).map(|k| m[r * (rank + 1) + k] * h[k]).sum());
                }
            }
        }
        let mut shape = vec![n];
        shape.extend(&dims);
        shape.push(rank);
        Ok(vec![float_tensor_like(theta, shape, out)?])
    }
}
