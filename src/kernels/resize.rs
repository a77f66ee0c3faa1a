//! Resize (and its predecessor Upsample) in `nearest`, `linear` and `cubic`
//! modes, with every coordinate transformation ONNX defines, output sizes
//! from `scales` or `sizes`, `axes`, `keep_aspect_ratio_policy`,
//! `exclude_outside` and `antialias`.
//!
//! Every mode is separable, so the output is built one axis at a time:
//! nearest picks an input index per output index (any element type);
//! linear and cubic weigh a few neighbours (float and double, in f64),
//! reading the edge value past either end. With `antialias`, downscaling
//! stretches the linear or cubic filter by 1 / scale.

use super::{
    BuildContext, BuildError, Kernel, KernelError, KernelRegistry, MAX_OPSET, float_values, normalize_axis, required,
};
use crate::tensor::{Tensor, TensorData};

pub fn register(reg: &mut KernelRegistry) {
    reg.register("Resize", 10, MAX_OPSET, build);
    reg.register("Upsample", 9, 9, build);
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Nearest,
    Linear,
    Cubic,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Transform {
    HalfPixel,
    HalfPixelSymmetric,
    PytorchHalfPixel,
    AlignCorners,
    Asymmetric,
    TfCropAndResize,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Nearest {
    RoundPreferFloor,
    RoundPreferCeil,
    Floor,
    Ceil,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Policy {
    Stretch,
    NotLarger,
    NotSmaller,
}

#[derive(Debug)]
struct Resize {
    mode: Mode,
    /// Cubic's `A` (`cubic_coeff_a`).
    cubic_a: f64,
    antialias: bool,
    exclude_outside: bool,
    transform: Transform,
    nearest: Nearest,
    policy: Policy,
    axes: Option<Vec<i64>>,
    extrapolation: f64,
    /// Upsample: scales is input 1 (no roi).
    upsample: bool,
}

fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Kernel>, BuildError> {
    let node = ctx.node;
    let mode = match node.string_attr("mode")?.unwrap_or("nearest") {
        "nearest" => Mode::Nearest,
        "linear" | "bilinear" => Mode::Linear,
        "cubic" => Mode::Cubic,
        other => {
            return Err(BuildError::invalid(node, format!("mode \"{other}\" is not one of nearest, linear, cubic")));
        }
    };
    let old = ctx.opset < 11;
    let transform = match node.string_attr("coordinate_transformation_mode")?.unwrap_or(if old {
        "asymmetric"
    } else {
        "half_pixel"
    }) {
        "half_pixel" => Transform::HalfPixel,
        "half_pixel_symmetric" => Transform::HalfPixelSymmetric,
        "pytorch_half_pixel" => Transform::PytorchHalfPixel,
        "align_corners" => Transform::AlignCorners,
        "asymmetric" => Transform::Asymmetric,
        "tf_crop_and_resize" => Transform::TfCropAndResize,
        other => {
            return Err(BuildError::invalid(node, format!("coordinate_transformation_mode \"{other}\" is unknown")));
        }
    };
    let nearest = match node.string_attr("nearest_mode")?.unwrap_or(if old { "floor" } else { "round_prefer_floor" }) {
        "round_prefer_floor" => Nearest::RoundPreferFloor,
        "round_prefer_ceil" => Nearest::RoundPreferCeil,
        "floor" => Nearest::Floor,
        "ceil" => Nearest::Ceil,
        other => return Err(BuildError::invalid(node, format!("nearest_mode \"{other}\" is unknown"))),
    };
    let policy = match node.string_attr("keep_aspect_ratio_policy")?.unwrap_or("stretch") {
        "stretch" => Policy::Stretch,
        "not_larger" => Policy::NotLarger,
        "not_smaller" => Policy::NotSmaller,
        other => return Err(BuildError::invalid(node, format!("keep_aspect_ratio_policy \"{other}\" is unknown"))),
    };
    Ok(Box::new(Resize {
        mode,
        cubic_a: f64::from(node.float_attr("cubic_coeff_a", -0.75)?),
        antialias: node.int_attr("antialias", 0)? != 0,
        exclude_outside: node.int_attr("exclude_outside", 0)? != 0,
        transform,
        nearest,
        policy,
        axes: node.ints_attr("axes")?.map(<[i64]>::to_vec),
        extrapolation: f64::from(node.float_attr("extrapolation_value", 0.0)?),
        upsample: node.op == "Upsample",
    }))
}

/// One axis: where each output index reads from.
struct AxisMap {
    out: usize,
    /// Per output index: the source coordinate, or `None` to extrapolate.
    source: Vec<Option<f64>>,
}

impl Resize {
    /// The input coordinate of output index `o` along an axis.
    fn coordinate(&self, o: usize, input: usize, out: usize, scale: f64, roi: (f64, f64)) -> Option<f64> {
        let o = o as f64;
        let (i, n) = (input as f64, out as f64);
        let x = match self.transform {
            Transform::HalfPixel => (o + 0.5) / scale - 0.5,
            Transform::HalfPixelSymmetric => {
                let adjustment = n / (scale * i);
                let center = i / 2.0;
                center * (1.0 - adjustment) + (o + 0.5) / scale - 0.5
            }
            Transform::PytorchHalfPixel => {
                if out > 1 {
                    (o + 0.5) / scale - 0.5
                } else {
                    -0.5
                }
            }
            // The resized length here is scale x input, not its floor.
            Transform::AlignCorners => {
                let resized = scale * i;
                if resized == 1.0 { 0.0 } else { o * (i - 1.0) / (resized - 1.0) }
            }
            Transform::Asymmetric => o / scale,
            Transform::TfCropAndResize => {
                let (start, end) = roi;
                let x = if out > 1 {
                    start * (i - 1.0) + o * (end - start) * (i - 1.0) / (n - 1.0)
                } else {
                    0.5 * (start + end) * (i - 1.0)
                };
                if x < 0.0 || x > i - 1.0 {
                    return None;
                }
                x
            }
        };
        Some(x)
    }

    /// The input positions an output at source coordinate `x` reads and
    /// their weights, for linear and cubic modes (`scale` widens the filter
    /// when antialiasing a downscale). Positions past either end read the
    /// edge value.
    fn taps(&self, x: f64, input: usize, scale: f64) -> Vec<(usize, f64)> {
        // The neighbour on the left of x, and x's distance from it, in (0, 1].
        let (base, ratio) = if x.fract() == 0.0 { (x as i64 - 1, 1.0) } else { (x.floor() as i64, x - x.floor()) };
        let a = self.cubic_a;
        let cubic = move |t: f64| keys_cubic(a, t);
        let s = if self.antialias { scale.min(1.0) } else { 1.0 };
        // Offsets from `base` the filter covers, and the weight of each.
        let (start, weight): (i64, Box<dyn Fn(f64) -> f64>) = match self.mode {
            Mode::Cubic => ((-2.0 / s).floor() as i64 + 1, Box::new(move |d: f64| cubic(d * s))),
            _ => ((-1.0 / s).floor() as i64 + 1, Box::new(move |d: f64| (1.0 - (d * s).abs()).clamp(0.0, 1.0))),
        };
        let mut taps: Vec<(i64, f64)> = (start..=1 - start).map(|k| (base + k, weight(k as f64 - ratio))).collect();
        if self.exclude_outside {
            for t in &mut taps {
                if t.0 < 0 || t.0 >= input as i64 {
                    t.1 = 0.0;
                }
            }
        }
        if self.antialias || self.exclude_outside {
            let sum: f64 = taps.iter().map(|t| t.1).sum();
            if sum != 0.0 {
                taps.iter_mut().for_each(|t| t.1 /= sum);
            }
        }
        taps.into_iter().map(|(i, w)| (i.clamp(0, input as i64 - 1) as usize, w)).collect()
    }

    fn nearest_index(&self, x: f64, input: usize) -> usize {
        let picked = match self.nearest {
            Nearest::RoundPreferFloor => {
                if x.fract() == 0.5 || x.fract() == -0.5 {
                    x.floor()
                } else {
                    x.round()
                }
            }
            Nearest::RoundPreferCeil => {
                if x.fract() == 0.5 || x.fract() == -0.5 {
                    x.ceil()
                } else {
                    x.round()
                }
            }
            Nearest::Floor => x.floor(),
            Nearest::Ceil => x.ceil(),
        };
        picked.clamp(0.0, (input - 1) as f64) as usize
    }
}

/// Resamples `data` (of `shape`) along `axis` to `map.out` entries.
/// Keys' cubic convolution kernel with coefficient `a` at distance `t`
/// (Resize's and GridSample's cubic modes).
pub(super) fn keys_cubic(a: f64, t: f64) -> f64 {
    let t = t.abs();
    if t <= 1.0 {
        ((a + 2.0) * t - (a + 3.0)) * t * t + 1.0
    } else if t < 2.0 {
        ((a * t - 5.0 * a) * t + 8.0 * a) * t - 4.0 * a
    } else {
        0.0
    }
}

fn resize_axis(
    data: &TensorData,
    shape: &[usize],
    axis: usize,
    map: &AxisMap,
    nearest: Option<&dyn Fn(f64) -> usize>,
    taps: &dyn Fn(f64) -> Vec<(usize, f64)>,
    extrapolation: f64,
) -> Result<TensorData, KernelError> {
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    let input = shape[axis];
    if let Some(nearest) = nearest
        && map.source.iter().all(Option::is_some)
    {
        let picks: Vec<usize> = map.source.iter().map(|x| nearest(x.unwrap_or(0.0))).collect();
        let mut idx = Vec::with_capacity(outer * map.out * inner);
        for o in 0..outer {
            for &p in &picks {
                idx.extend((0..inner).map(|i| (o * input + p) * inner + i));
            }
        }
        return Ok(data.select(&idx));
    }
    let values: Vec<f64> = match data {
        TensorData::Float(v) => v.iter().map(|&x| f64::from(x)).collect(),
        TensorData::Double(v) => v.clone(),
        other => {
            return Err(KernelError(format!("linear and cubic resizing take float or double, not {}", other.dtype())));
        }
    };
    // The taps of every output position, computed once for the axis.
    let weights: Vec<Option<Vec<(usize, f64)>>> = match nearest {
        Some(nearest) => map.source.iter().map(|x| x.map(|x| vec![(nearest(x), 1.0)])).collect(),
        None => map.source.iter().map(|x| x.map(taps)).collect(),
    };
    let mut out = Vec::with_capacity(outer * map.out * inner);
    for o in 0..outer {
        for w in &weights {
            for i in 0..inner {
                out.push(match w {
                    None => extrapolation,
                    Some(w) => w.iter().map(|&(k, c)| c * values[(o * input + k) * inner + i]).sum(),
                });
            }
        }
    }
    Ok(match data {
        TensorData::Double(_) => TensorData::Double(out),
        _ => TensorData::Float(out.into_iter().map(|x| x as f32).collect()),
    })
}

impl Kernel for Resize {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let x = required(inputs, 0, "X")?;
        let rank = x.shape().len();
        let opt = |i: usize| inputs.get(i).copied().flatten().filter(|t| !t.is_empty());
        let (roi, scales, sizes) = if self.upsample { (None, opt(1), None) } else { (opt(1), opt(2), opt(3)) };
        let axes: Vec<usize> = match &self.axes {
            Some(a) => a.iter().map(|&d| normalize_axis(d, rank)).collect::<Result<_, _>>()?,
            None => (0..rank).collect(),
        };
        let inputs_of: Vec<usize> = axes.iter().map(|&d| x.shape()[d]).collect();
        // Output size and scale per listed axis.
        let (outs, scale): (Vec<usize>, Vec<f64>) = match (scales, sizes) {
            (Some(s), None) => {
                let s = float_values(s, "scales")?;
                if s.len() != axes.len() || s.iter().any(|&v| v <= 0.0) {
                    return Err(KernelError(format!("scales {s:?} must hold {} positive values", axes.len())));
                }
                (inputs_of.iter().zip(&s).map(|(&n, &k)| (n as f64 * k).floor() as usize).collect(), s)
            }
            (None, Some(z)) => {
                let z: Vec<i64> = match z.data() {
                    TensorData::Int64(v) => v.clone(),
                    other => return Err(KernelError(format!("sizes must be int64, not {}", other.dtype()))),
                };
                if z.len() != axes.len() || z.iter().any(|&v| v < 0) {
                    return Err(KernelError(format!("sizes {z:?} must hold {} sizes", axes.len())));
                }
                let ratios: Vec<f64> = z.iter().zip(&inputs_of).map(|(&o, &n)| o as f64 / n as f64).collect();
                match self.policy {
                    Policy::Stretch => (z.iter().map(|&v| v as usize).collect(), ratios),
                    Policy::NotLarger | Policy::NotSmaller => {
                        let pick = if self.policy == Policy::NotLarger { f64::min } else { f64::max };
                        let k = ratios.iter().copied().reduce(pick).unwrap_or(1.0);
                        (
                            inputs_of.iter().map(|&n| (k * n as f64 + 0.5).floor() as usize).collect(),
                            vec![k; axes.len()],
                        )
                    }
                }
            }
            _ => return Err(KernelError("exactly one of scales and sizes must be given".into())),
        };
        let roi = match roi {
            Some(r) if self.transform == Transform::TfCropAndResize => {
                let r = float_values(r, "roi")?;
                let n = r.len() / 2;
                if r.len() != 2 * axes.len() && r.len() != 2 * rank {
                    return Err(KernelError(format!("roi {r:?} must hold a start and an end per axis")));
                }
                // roi may list every dim or only the resized axes.
                axes.iter()
                    .enumerate()
                    .map(|(k, &d)| if n == rank { (r[d], r[d + n]) } else { (r[k], r[k + n]) })
                    .collect()
            }
            _ => vec![(0.0, 1.0); axes.len()],
        };
        let mut shape = x.shape().to_vec();
        let mut data = x.data().clone();
        for (k, &d) in axes.iter().enumerate() {
            let (input, out) = (x.shape()[d], outs[k]);
            if input == 0 && out > 0 {
                return Err(KernelError(format!("cannot resize empty dim {d} to {out}")));
            }
            let source = (0..out).map(|o| self.coordinate(o, input, out, scale[k], roi[k])).collect();
            let map = AxisMap { out, source };
            let nearest = |v: f64| self.nearest_index(v, input);
            let nearest = (self.mode == Mode::Nearest).then_some(&nearest as &dyn Fn(f64) -> usize);
            let taps = |v: f64| self.taps(v, input, scale[k]);
            data = resize_axis(&data, &shape, d, &map, nearest, &taps, self.extrapolation)?;
            shape[d] = out;
        }
        Ok(vec![Tensor::new(shape, data)?])
    }
}

#[cfg(test)]
mod tests {
    use crate::graph::Attribute;
    use crate::kernels::testing::{assert_close, node, run};
    use crate::tensor::Tensor;

    #[test]
    fn nearest_and_linear_upscaling() {
        let x = Tensor::from_f32(vec![1, 2], vec![1.0, 3.0]).unwrap();
        let none = Tensor::from_f32(vec![0], vec![]).unwrap();
        let scales = Tensor::from_f32(vec![2], vec![1.0, 2.0]).unwrap();
        let out = run(&node("Resize", 3, vec![]), 19, &[&x, &none, &scales]).unwrap();
        assert_eq!(out[0].as_f32().unwrap(), &[1.0, 1.0, 3.0, 3.0]);
        let linear = vec![("mode", Attribute::String("linear".into()))];
        let out = run(&node("Resize", 3, linear), 19, &[&x, &none, &scales]).unwrap();
        // half_pixel: sources -0.25, 0.25, 0.75, 1.25.
        assert_close(out[0].as_f32().unwrap(), &[1.0, 1.5, 2.5, 3.0]);
    }
}
