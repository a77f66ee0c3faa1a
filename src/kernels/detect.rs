//! Detection heads: NonMaxSuppression (greedy, per batch entry and class,
//! by score then box index).

use super::{BuildContext, BuildError, Kernel, KernelError, KernelRegistry, MAX_OPSET, floats, required};
use crate::tensor::{Tensor, TensorData};

pub fn register(reg: &mut KernelRegistry) {
    reg.register("NonMaxSuppression", 10, MAX_OPSET, build_nms);
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
