//! Detection heads: NonMaxSuppression (greedy, per batch entry and class,
//! by score then box index) and RoiAlign (bilinear sampling of each region
//! of interest into a fixed grid, averaged or maxed per bin).

use super::{BuildContext, BuildError, Kernel, KernelError, KernelRegistry, MAX_OPSET, floats, required};
use crate::tensor::{Tensor, TensorData};

pub fn register(reg: &mut KernelRegistry) {
    reg.register("NonMaxSuppression", 10, MAX_OPSET, build_nms);
    reg.register("RoiAlign", 10, MAX_OPSET, build_roi_align);
}

#[derive(Debug)]
struct RoiAlign {
    max: bool,
    half_pixel: bool,
    out_h: usize,
    out_w: usize,
    sampling_ratio: i64,
    spatial_scale: f32,
}

fn build_roi_align(ctx: &BuildContext<'_>) -> Result<Box<dyn Kernel>, BuildError> {
    let node = ctx.node;
    let max = match node.string_attr("mode")?.unwrap_or("avg") {
        "avg" => false,
        "max" => true,
        other => return Err(BuildError::invalid(node, format!("mode '{other}' is not avg or max"))),
    };
    let default_mode = if ctx.opset < 16 { "output_half_pixel" } else { "half_pixel" };
    let half_pixel = match node.string_attr("coordinate_transformation_mode")?.unwrap_or(default_mode) {
        "half_pixel" => true,
        "output_half_pixel" => false,
        other => {
            return Err(BuildError::invalid(
                node,
                format!("coordinate_transformation_mode '{other}' is not half_pixel or output_half_pixel"),
            ));
        }
    };
    let size = |name: &str| -> Result<usize, BuildError> {
        match node.int_attr(name, 1)? {
            v if v >= 1 => Ok(v as usize),
            v => Err(BuildError::invalid(node, format!("{name} must be at least 1, got {v}"))),
        }
    };
    Ok(Box::new(RoiAlign {
        max,
        half_pixel,
        out_h: size("output_height")?,
        out_w: size("output_width")?,
        sampling_ratio: node.int_attr("sampling_ratio", 0)?,
        spatial_scale: node.float_attr("spatial_scale", 1.0)?,
    }))
}

/// One bilinear sample: four input positions and their weights.
type Sample = [(usize, f32); 4];

impl RoiAlign {
    /// The samples of every bin of one region, bin by bin.
    fn samples(&self, roi: &[f32], height: usize, width: usize) -> (Vec<Sample>, usize) {
        let offset = if self.half_pixel { 0.5 } else { 0.0 };
        let start_w = roi[0] * self.spatial_scale - offset;
        let start_h = roi[1] * self.spatial_scale - offset;
        let mut roi_w = roi[2] * self.spatial_scale - offset - start_w;
        let mut roi_h = roi[3] * self.spatial_scale - offset - start_h;
        if !self.half_pixel {
            roi_w = roi_w.max(1.0);
            roi_h = roi_h.max(1.0);
        }
        let (bin_h, bin_w) = (roi_h / self.out_h as f32, roi_w / self.out_w as f32);
        let grid = |extent: f32, bins: usize| {
            if self.sampling_ratio > 0 {
                self.sampling_ratio as usize
            } else {
                (extent / bins as f32).ceil().max(0.0) as usize
            }
        };
        let (grid_h, grid_w) = (grid(roi_h, self.out_h), grid(roi_w, self.out_w));
        let mut out = Vec::with_capacity(self.out_h * self.out_w * grid_h * grid_w);
        for ph in 0..self.out_h {
            for pw in 0..self.out_w {
                for iy in 0..grid_h {
                    let y = start_h + ph as f32 * bin_h + (iy as f32 + 0.5) * bin_h / grid_h as f32;
                    for ix in 0..grid_w {
                        let x = start_w + pw as f32 * bin_w + (ix as f32 + 0.5) * bin_w / grid_w as f32;
                        if y < -1.0 || y > height as f32 || x < -1.0 || x > width as f32 {
                            out.push([(0, 0.0); 4]);
                            continue;
                        }
                        let (mut y, mut x) = (y.max(0.0), x.max(0.0));
                        let (mut y_low, mut x_low) = (y as usize, x as usize);
                        let y_high = if y_low >= height - 1 {
                            y_low = height - 1;
                            y = y_low as f32;
                            y_low
                        } else {
                            y_low + 1
                        };
                        let x_high = if x_low >= width - 1 {
                            x_low = width - 1;
                            x = x_low as f32;
                            x_low
                        } else {
                            x_low + 1
                        };
                        let (ly, lx) = (y - y_low as f32, x - x_low as f32);
                        let (hy, hx) = (1.0 - ly, 1.0 - lx);
                        out.push([
                            (y_low * width + x_low, hy * hx),
                            (y_low * width + x_high, hy * lx),
                            (y_high * width + x_low, ly * hx),
                            (y_high * width + x_high, ly * lx),
                        ]);
                    }
                }
            }
        }
        (out, (grid_h * grid_w).max(1))
    }
}

impl Kernel for RoiAlign {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let x = required(inputs, 0, "X")?;
        let rois = required(inputs, 1, "rois")?;
        let indices = match required(inputs, 2, "batch_indices")?.data() {
            TensorData::Int64(v) => v.clone(),
            other => return Err(KernelError(format!("batch_indices must be int64, not {}", other.dtype()))),
        };
        let &[n, c, height, width] = x.shape() else {
            return Err(KernelError(format!("X must be [N, C, H, W], got {:?}", x.shape())));
        };
        let r = rois.shape().first().copied().unwrap_or(0);
        if rois.shape() != [r, 4] || indices.len() != r {
            return Err(KernelError(format!("rois {:?} must be [R, 4] with R batch indices", rois.shape())));
        }
        if height == 0 || width == 0 {
            return Err(KernelError("X has an empty spatial dim".into()));
        }
        let (xv, rv) = (floats(x, "X")?, floats(rois, "rois")?);
        let plane = self.out_h * self.out_w;
        let mut y = vec![0.0f32; r * c * plane];
        for k in 0..r {
            let b = usize::try_from(indices[k])
                .ok()
                .filter(|&b| b < n)
                .ok_or_else(|| KernelError(format!("batch index {} is outside the batch of {n}", indices[k])))?;
            let (samples, count) = self.samples(&rv[k * 4..k * 4 + 4], height, width);
            let per_bin = samples.len() / plane.max(1);
            for ch in 0..c {
                let input = &xv[(b * c + ch) * height * width..(b * c + ch + 1) * height * width];
                for bin in 0..plane {
                    let bins = &samples[bin * per_bin..(bin + 1) * per_bin];
                    let value = if self.max {
                        bins.iter()
                            .map(|s| s.iter().map(|&(p, w)| w * input[p]).fold(f32::NEG_INFINITY, f32::max))
                            .fold(None, |acc: Option<f32>, v| Some(acc.map_or(v, |a| a.max(v))))
                            .unwrap_or(0.0)
                    } else {
                        bins.iter().map(|s| s.iter().map(|&(p, w)| w * input[p]).sum::<f32>()).sum::<f32>()
                            / count as f32
                    };
                    y[(k * c + ch) * plane + bin] = value;
                }
            }
        }
        Ok(vec![Tensor::from_f32(vec![r, c, self.out_h, self.out_w], y)?])
    }
}

#[derive(Debug)]
struct NonMaxSuppression {
    /// Boxes are [x_center, y_center, width, height], not corners.
    center: bool,
}

fn build_nms(ctx: &BuildContext<'_>) -> Result<Box<dyn Kernel>, BuildError> {
    match ctx.node.int_attr("center_point_box", 0)? {
        0 => Ok(Box::new(NonMaxSuppression { center: false })),
        1 => Ok(Box::new(NonMaxSuppression { center: true })),
        other => Err(BuildError::invalid(ctx.node, format!("center_point_box must be 0 or 1, got {other}"))),
    }
}

impl NonMaxSuppression {
    /// A box as (x_min, x_max, y_min, y_max).
    fn extent(&self, b: &[f32]) -> (f32, f32, f32, f32) {
        let order = |p: f32, q: f32| if p >= q { (q, p) } else { (p, q) };
        if self.center {
            let (hw, hh) = (b[2] / 2.0, b[3] / 2.0);
            (b[0] - hw, b[0] + hw, b[1] - hh, b[1] + hh)
        } else {
            let (x0, x1) = order(b[1], b[3]);
            let (y0, y1) = order(b[0], b[2]);
            (x0, x1, y0, y1)
        }
    }

    /// True when `a` and `b` overlap by more than `threshold` (IoU).
    fn suppresses(&self, a: &[f32], b: &[f32], threshold: f32) -> bool {
        let (ax0, ax1, ay0, ay1) = self.extent(a);
        let (bx0, bx1, by0, by1) = self.extent(b);
        let (ix0, ix1) = (ax0.max(bx0), ax1.min(bx1));
        let (iy0, iy1) = (ay0.max(by0), ay1.min(by1));
        if ix1 <= ix0 || iy1 <= iy0 {
            return false;
        }
        let inter = (ix1 - ix0) * (iy1 - iy0);
        let (area_a, area_b) = ((ax1 - ax0) * (ay1 - ay0), (bx1 - bx0) * (by1 - by0));
        let union = area_a + area_b - inter;
        if inter <= 0.0 || area_a <= 0.0 || area_b <= 0.0 || union <= 0.0 {
            return false;
        }
        inter / union > threshold
    }
}

impl Kernel for NonMaxSuppression {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, KernelError> {
        let boxes = required(inputs, 0, "boxes")?;
        let scores = required(inputs, 1, "scores")?;
        let (bs, ss) = (boxes.shape(), scores.shape());
        if bs.len() != 3 || bs[2] != 4 || ss.len() != 3 || ss[0] != bs[0] || ss[2] != bs[1] {
            return Err(KernelError(format!("boxes {bs:?} must be [B, N, 4] and scores {ss:?} [B, C, N]")));
        }
        let opt = |i: usize| inputs.get(i).copied().flatten().filter(|t| !t.is_empty());
        let max_out = match opt(2).map(Tensor::data) {
            Some(TensorData::Int64(v)) => v[0].max(0) as usize,
            Some(_) => return Err(KernelError("max_output_boxes_per_class must be int64".into())),
            None => 0,
        };
        let iou = opt(3).map(|t| floats(t, "iou_threshold").map(|v| v[0])).transpose()?.unwrap_or(0.0);
        let score_min = opt(4).map(|t| floats(t, "score_threshold").map(|v| v[0])).transpose()?;
        let (bv, sv) = (floats(boxes, "boxes")?, floats(scores, "scores")?);
        let (batches, classes, n) = (ss[0], ss[1], ss[2]);
        let mut selected: Vec<i64> = Vec::new();
        for b in 0..batches {
            let box_of = |i: usize| &bv[(b * n + i) * 4..(b * n + i + 1) * 4];
            for c in 0..classes {
                let class_scores = &sv[(b * classes + c) * n..(b * classes + c + 1) * n];
                let mut candidates: Vec<usize> =
                    (0..n).filter(|&i| score_min.is_none_or(|t| class_scores[i] > t)).collect();
                // Highest score first; equal scores by box index.
                candidates.sort_by(|&p, &q| {
                    class_scores[q].partial_cmp(&class_scores[p]).unwrap_or(std::cmp::Ordering::Equal).then(p.cmp(&q))
                });
                let mut kept: Vec<usize> = Vec::new();
                for i in candidates {
                    if kept.len() >= max_out {
                        break;
                    }
                    if kept.iter().all(|&k| !self.suppresses(box_of(i), box_of(k), iou)) {
                        kept.push(i);
                        selected.extend([b as i64, c as i64, i as i64]);
                    }
                }
            }
        }
        let count = selected.len() / 3;
        Ok(vec![Tensor::new(vec![count, 3], TensorData::Int64(selected))?])
    }
}
