//! Load-time graph passes that make a model cheaper to run without changing
//! what it computes:
//! - constant folding (shape subgraphs, weights reshaped or transposed);
//! - BatchNormalization after a Conv folded into the Conv's weights and bias
//!   (the one pass that rounds differently: within rtol 1e-4 of the
//!   unfolded graph, DESIGN.md's rule);
//! - Relu, LeakyRelu and Clip after a Conv or Gemm fused into it, as
//!   `FusedConv` / `FusedGemm` (bit for bit what the two nodes give);
//! - a MaxPool whose windows tile a 2-D Conv's output (strides equal to
//!   the window, no padding, no dilation, no ceil_mode, no Indices) fused
//!   into it as `FusedConvPool`, so the full-size output is never stored
//!   (bit for bit what the nodes give).
//!
//! A pass rewrites a node only when the value it removes has no other
//! reader and is not a graph output.

use std::collections::HashMap;

use super::fold_constants;
use crate::graph::{Graph, Node, ValueId, ValueInfo};
use crate::kernels::KernelRegistry;
use crate::kernels::epilogue::Activation;
use crate::tensor::{DataType, Tensor};

/// Runs every pass over `graph`.
pub fn optimize(graph: &mut Graph, registry: &KernelRegistry) {
    fold_constants(graph, registry);
    fold_batch_norm(graph);
    fuse_activations(graph);
    fuse_pooling(graph);
    fuse_tf_conv(graph);
    fold_keras_flatten(graph);
    let mut read: std::collections::HashSet<ValueId> = graph.outputs.iter().copied().collect();
    read.extend(graph.nodes.iter().flat_map(|n| n.inputs.iter().flatten().copied()));
    graph.constants.retain(|id, _| read.contains(id));
}

/// How many nodes read each value, a graph output counting as a reader.
fn readers(graph: &Graph) -> HashMap<ValueId, usize> {
    let mut count = HashMap::new();
    for id in graph.nodes.iter().flat_map(|n| n.inputs.iter().flatten()).chain(&graph.outputs) {
        *count.entry(*id).or_insert(0) += 1;
    }
    count
}

/// The node reading `value`, when it is its only reader.
fn sole_reader(graph: &Graph, readers: &HashMap<ValueId, usize>, value: ValueId) -> Option<usize> {
    if readers.get(&value) != Some(&1) {
        return None;
    }
    graph.nodes.iter().position(|n| n.inputs.iter().flatten().any(|&i| i == value))
}

fn const_f32<'g>(graph: &'g Graph, input: Option<&Option<ValueId>>) -> Option<&'g [f32]> {
    graph.constants.get(&(*input?)?)?.as_f32()
}

/// Adds a constant value to the graph and returns its id.
fn add_constant(graph: &mut Graph, name: String, t: Tensor) -> ValueId {
    let id = graph.values.len();
    graph.values.push(ValueInfo {
        name,
        dtype: Some(t.dtype()),
        shape: Some(t.shape().iter().map(|&d| crate::graph::Dim::Known(d)).collect()),
    });
    graph.constants.insert(id, t);
    id
}

/// A float Conv whose weights (and bias, if any) are constants.
fn is_const_float_conv(graph: &Graph, node: &Node) -> bool {
    node.op == "Conv"
        && graph
            .constants
            .get(&node.inputs.get(1).copied().flatten().unwrap_or(usize::MAX))
            .is_some_and(|w| w.dtype() == DataType::Float && w.shape().len() >= 3 && w.shape()[0] > 0)
        && match node.inputs.get(2).copied().flatten() {
            None => true,
            Some(b) => graph.constants.get(&b).is_some_and(|b| b.dtype() == DataType::Float),
        }
}

/// Conv -> BatchNormalization (inference form, constant statistics)
/// becomes one Conv: W' = W · s per output channel, B' = (B - mean) · s +
/// beta, with s = scale / sqrt(var + epsilon), computed in f64.
fn fold_batch_norm(graph: &mut Graph) {
    // A fold leaves every other value's reader count as it was.
    let readers = readers(graph);
    let mut i = 0;
    while i < graph.nodes.len() {
        if let Some(bn) = batch_norm_after(graph, &readers, i) {
            let (w, b) = folded_weights(graph, i, bn);
            let conv = &graph.nodes[i];
            let name = conv.name.clone();
            let w_id = add_constant(graph, format!("{name}/folded_weights"), w);
            let b_id = add_constant(graph, format!("{name}/folded_bias"), b);
            let y = graph.nodes[bn].outputs[0];
            let conv = &mut graph.nodes[i];
            conv.inputs.resize(3, None);
            conv.inputs[1] = Some(w_id);
            conv.inputs[2] = Some(b_id);
            conv.outputs = vec![y];
            graph.nodes.remove(bn);
        }
        i += 1;
    }
}

/// The index of the BatchNormalization that folds into Conv node `i`.
fn batch_norm_after(graph: &Graph, readers: &HashMap<ValueId, usize>, i: usize) -> Option<usize> {
    let conv = &graph.nodes[i];
    if !is_const_float_conv(graph, conv) || conv.outputs.len() != 1 {
        return None;
    }
    let bn = sole_reader(graph, readers, conv.outputs[0])?;
    let node = &graph.nodes[bn];
    let m = graph.constants[&conv.inputs[1]?].shape()[0];
    let stats_fit = (1..5).all(|k| const_f32(graph, node.inputs.get(k)).is_some_and(|v| v.len() == m));
    let inference = node.int_attr("training_mode", 0).ok()? == 0
        && node.outputs.len() == 1
        && node.inputs.first().copied().flatten() == Some(conv.outputs[0])
        && node.opt_float_attr("epsilon").is_ok();
    (node.op == "BatchNormalization" && stats_fit && inference).then_some(bn)
}

fn folded_weights(graph: &Graph, conv: usize, bn: usize) -> (Tensor, Tensor) {
    let conv = &graph.nodes[conv];
    let node = &graph.nodes[bn];
    let w = &graph.constants[&conv.inputs[1].expect("checked")];
    let stat = |k: usize| const_f32(graph, node.inputs.get(k)).expect("checked");
    let (scale, beta, mean, var) = (stat(1), stat(2), stat(3), stat(4));
    let eps = f64::from(node.float_attr("epsilon", 1e-5).unwrap_or(1e-5));
    let m = w.shape()[0];
    let per_filter = w.len() / m;
    let bias = const_f32(graph, conv.inputs.get(2));
    let s: Vec<f64> = (0..m).map(|o| f64::from(scale[o]) / (f64::from(var[o]) + eps).sqrt()).collect();
    let wv = w.as_f32().expect("checked");
    let new_w: Vec<f32> = wv.iter().enumerate().map(|(i, &v)| (f64::from(v) * s[i / per_filter]) as f32).collect();
    let new_b: Vec<f32> = (0..m)
        .map(|o| ((bias.map_or(0.0, |b| f64::from(b[o])) - f64::from(mean[o])) * s[o] + f64::from(beta[o])) as f32)
        .collect();
    (
        Tensor::from_f32(w.shape().to_vec(), new_w).expect("same shape"),
        Tensor::from_f32(vec![m], new_b).expect("one per channel"),
    )
}

/// The activation node `node` computes, when it can be fused: Relu,
/// LeakyRelu, and Clip with constant scalar bounds.
fn activation_of(graph: &Graph, node: &Node) -> Option<Activation> {
    match node.op.as_str() {
        "Relu" => Some(Activation::Relu),
        "LeakyRelu" => Some(Activation::LeakyRelu(node.float_attr("alpha", 0.01).ok()?)),
        "Clip" if graph.opset < 11 => {
            Some(Activation::Clip(node.float_attr("min", f32::MIN).ok()?, node.float_attr("max", f32::MAX).ok()?))
        }
        "Clip" => {
            let bound = |k: usize, default: f32| match node.inputs.get(k).copied().flatten() {
                None => Some(default),
                Some(_) => match const_f32(graph, node.inputs.get(k))? {
                    [v] => Some(*v),
                    _ => None,
                },
            };
            Some(Activation::Clip(bound(1, f32::NEG_INFINITY)?, bound(2, f32::INFINITY)?))
        }
        _ => None,
    }
}

/// Conv or Gemm followed by a fusable activation becomes FusedConv or
/// FusedGemm.
fn fuse_activations(graph: &mut Graph) {
    // A fusion leaves every other value's reader count as it was.
    let readers = readers(graph);
    let mut i = 0;
    while i < graph.nodes.len() {
        let node = &graph.nodes[i];
        let fused_op = match node.op.as_str() {
            "Conv" if is_const_float_conv(graph, node) => "FusedConv",
            "Gemm" if const_f32(graph, node.inputs.get(1)).is_some() => "FusedGemm",
            _ => {
                i += 1;
                continue;
            }
        };
        let fusable = (node.outputs.len() == 1)
            .then(|| sole_reader(graph, &readers, node.outputs[0]))
            .flatten()
            .filter(|&r| graph.nodes[r].inputs.first().copied().flatten() == Some(node.outputs[0]))
            .and_then(|r| activation_of(graph, &graph.nodes[r]).map(|a| (r, a)));
        if let Some((r, act)) = fusable {
            let y = graph.nodes[r].outputs[0];
            let node = &mut graph.nodes[i];
            node.op = fused_op.to_string();
            node.attributes.extend(act.attributes());
            node.outputs = vec![y];
            graph.nodes.remove(r);
        }
        i += 1;
    }
}

/// The window of a MaxPool that tiles its 2-D input: kernel [kh, kw] with
/// the same strides, no padding or dilation, floor sizes, one output.
fn tiling_max_pool(node: &Node) -> Option<[usize; 2]> {
    use crate::kernels::{AutoPad, Window};
    if node.op != "MaxPool" || node.outputs.len() != 1 {
        return None;
    }
    let window = Window::parse(node, 2, true).ok()?;
    let kernel = window.kernel.as_deref()?;
    let tiles = window.strides == kernel
        && window.dilations.iter().all(|&d| d == 1)
        && window.pads.iter().all(|&p| p == 0)
        && matches!(window.auto_pad, AutoPad::NotSet | AutoPad::Valid)
        && !window.ceil_mode;
    tiles.then(|| [kernel[0], kernel[1]])
}

/// A 2-D float Conv or FusedConv (constant weights) followed by a MaxPool
/// that tiles its output becomes FusedConvPool.
fn fuse_pooling(graph: &mut Graph) {
    let readers = readers(graph);
    let mut i = 0;
    while i < graph.nodes.len() {
        let node = &graph.nodes[i];
        let conv_2d = match node.op.as_str() {
            "Conv" => is_const_float_conv(graph, node),
            "FusedConv" => true,
            _ => false,
        } && node.outputs.len() == 1
            && node
                .inputs
                .get(1)
                .copied()
                .flatten()
                .and_then(|w| graph.constants.get(&w))
                .is_some_and(|w| w.shape().len() == 4);
        let pool = conv_2d
            .then(|| sole_reader(graph, &readers, node.outputs[0]))
            .flatten()
            .filter(|&r| graph.nodes[r].inputs.first().copied().flatten() == Some(node.outputs[0]))
            .and_then(|r| tiling_max_pool(&graph.nodes[r]).map(|k| (r, k)));
        if let Some((r, [kh, kw])) = pool {
            let y = graph.nodes[r].outputs[0];
            let node = &mut graph.nodes[i];
            node.op = "FusedConvPool".to_string();
            node.attributes.insert("pool_shape".to_string(), crate::graph::Attribute::Ints(vec![kh as i64, kw as i64]));
            node.outputs = vec![y];
            graph.nodes.remove(r);
        }
        i += 1;
    }
}

/// TensorFlow's channels-last Conv2D with a constant filter, followed by
/// the bias add after it (a constant of one value per output channel), an
/// activation, and a VALID max pool whose windows tile its output (each
/// step optional, in that order, each value read by nothing else), becomes
/// `tf.FusedConv2D`: inputs (input, filter, bias), the activation's
/// attributes and `pool_shape`.
fn fuse_tf_conv(graph: &mut Graph) {
    let readers = readers(graph);
    let mut i = 0;
    while i < graph.nodes.len() {
        let node = &graph.nodes[i];
        let filter = node.inputs.get(1).copied().flatten().and_then(|f| graph.constants.get(&f));
        let Some(co) = filter.filter(|f| f.dtype() == DataType::Float && f.shape().len() == 4).map(|f| f.shape()[3])
        else {
            i += 1;
            continue;
        };
        if node.op != "tf.Conv2D"
            || node.outputs.len() != 1
            || node.string_attr("data_format").ok().flatten().unwrap_or("NHWC") != "NHWC"
        {
            i += 1;
            continue;
        }
        let next = |value: ValueId| {
            sole_reader(graph, &readers, value).filter(|&r| {
                graph.nodes[r].outputs.len() == 1 && graph.nodes[r].inputs.iter().flatten().any(|&v| v == value)
            })
        };
        let mut absorbed = Vec::new();
        let mut value = node.outputs[0];
        let mut bias = None;
        if let Some(r) = next(value) {
            let add = &graph.nodes[r];
            let other = add.inputs.iter().flatten().copied().find(|&v| v != value);
            let per_channel = other
                .and_then(|b| graph.constants.get(&b))
                .is_some_and(|b| b.dtype() == DataType::Float && b.shape() == [co]);
            let data_format_ok = add.string_attr("data_format").ok().flatten().unwrap_or("NHWC") == "NHWC";
            if matches!(add.op.as_str(), "Add" | "tf.BiasAdd") && add.inputs.len() == 2 && per_channel && data_format_ok
            {
                bias = other;
                absorbed.push(r);
                value = add.outputs[0];
            }
        }
        let mut act = Activation::Identity;
        if let Some(r) = next(value)
            && graph.nodes[r].inputs.first().copied().flatten() == Some(value)
            && let Some(a) = activation_of(graph, &graph.nodes[r])
        {
            act = a;
            absorbed.push(r);
            value = graph.nodes[r].outputs[0];
        }
        let mut pool = None;
        if let Some(r) = next(value) {
            let p = &graph.nodes[r];
            let window = |name: &str| p.ints_attr(name).ok().flatten().map(<[i64]>::to_vec);
            let (ksize, strides) = (window("ksize"), window("strides"));
            let valid = p.string_attr("padding").ok().flatten() == Some("VALID")
                && p.string_attr("data_format").ok().flatten().unwrap_or("NHWC") == "NHWC";
            if let (Some([1, kh, kw, 1]), true) = (ksize.as_deref(), p.op == "tf.MaxPool" && valid && ksize == strides)
                && *kh >= 1
                && *kw >= 1
            {
                pool = Some([*kh, *kw]);
                absorbed.push(r);
                value = p.outputs[0];
            }
        }
        if absorbed.is_empty() {
            i += 1;
            continue;
        }
        let node = &mut graph.nodes[i];
        node.op = "tf.FusedConv2D".to_string();
        node.inputs.truncate(2);
        node.inputs.push(bias);
        node.attributes.extend(act.attributes());
        if let Some(pool) = pool {
            node.attributes.insert("pool_shape".to_string(), crate::graph::Attribute::Ints(pool.to_vec()));
        }
        node.outputs = vec![value];
        absorbed.sort_unstable();
        for r in absorbed.into_iter().rev() {
            graph.nodes.remove(r);
            if r < i {
                i -= 1;
            }
        }
        i += 1;
    }
}

/// The node that produces `value`.
fn producer(graph: &Graph, value: ValueId) -> Option<usize> {
    graph.nodes.iter().position(|n| n.outputs.contains(&value))
}

/// The one integer of a constant scalar (or one-element) tensor.
fn const_int(graph: &Graph, value: Option<ValueId>) -> Option<i64> {
    match graph.constants.get(&value?)?.data() {
        crate::tensor::TensorData::Int64(v) if v.len() == 1 => Some(v[0]),
        crate::tensor::TensorData::Int32(v) if v.len() == 1 => Some(i64::from(v[0])),
        _ => None,
    }
}

/// Keras's Flatten computes its target shape at run time: Reshape(x,
/// Cast(Pack(StridedSlice(Cast(Shape(x)), [0], [1], [1], shrink), k))),
/// that is [x's first dim, k]. That is Reshape(x, [0, k]) with allowzero 0
/// (0 copies the input's dim), a constant: the five steps that computed it
/// at every run go, when nothing else reads them.
fn fold_keras_flatten(graph: &mut Graph) {
    let through_casts = |graph: &Graph, mut value: ValueId| {
        while let Some(p) = producer(graph, value).filter(|&p| graph.nodes[p].op == "Cast") {
            value = graph.nodes[p].inputs.first().copied().flatten()?;
        }
        Some(value)
    };
    // The outputs of the chains' nodes, removed at the end if unread.
    let mut chain: Vec<ValueId> = Vec::new();
    for r in 0..graph.nodes.len() {
        let node = &graph.nodes[r];
        let (Some(Some(x)), Some(Some(spec))) = (node.inputs.first(), node.inputs.get(1)) else { continue };
        if node.op != "Reshape" || graph.constants.contains_key(spec) {
            continue;
        }
        let mut seen = Vec::new();
        let k = (|| {
            let pack = &graph.nodes[producer(graph, through_casts(graph, *spec)?)?];
            let [Some(first), second] = pack.inputs.as_slice() else { return None };
            if pack.op != "tf.Pack" || pack.int_attr("axis", 0).ok()? != 0 {
                return None;
            }
            // k = 0 would copy x's second dim under allowzero 0.
            let k = const_int(graph, *second).filter(|&k| k > 0)?;
            let slice = &graph.nodes[producer(graph, *first)?];
            let masks_ok = ["begin_mask", "end_mask", "ellipsis_mask", "new_axis_mask"]
                .iter()
                .all(|m| slice.int_attr(m, 0).ok() == Some(0))
                && slice.int_attr("shrink_axis_mask", 0).ok() == Some(1);
            let bounds = (1..4).map(|i| const_int(graph, slice.inputs.get(i).copied().flatten())).collect::<Vec<_>>();
            if slice.op != "tf.StridedSlice" || !masks_ok || bounds != [Some(0), Some(1), Some(1)] {
                return None;
            }
            let shape = &graph.nodes[producer(graph, through_casts(graph, slice.inputs.first().copied().flatten()?)?)?];
            let whole = shape.int_attr("start", 0).ok() == Some(0) && shape.ints_attr("end").ok().flatten().is_none();
            let end_absent = !shape.attributes.contains_key("end");
            seen.extend([*spec, *first]);
            seen.extend(pack.outputs.iter().chain(&shape.outputs).copied());
            seen.extend(slice.inputs.first().copied().flatten());
            (shape.op == "Shape" && shape.inputs.first().copied().flatten() == Some(*x) && whole && end_absent)
                .then_some(k)
        })();
        if let Some(k) = k {
            let target = Tensor::from_i64(vec![2], vec![0, k]).expect("two dims");
            let name = format!("{}/flattened_shape", graph.nodes[r].name);
            let id = add_constant(graph, name, target);
            graph.nodes[r].inputs[1] = Some(id);
            // TensorFlow's Reshape (allowzero 1) takes a 0 literally; here
            // the 0 copies x's first dim.
            graph.nodes[r].attributes.insert("allowzero".to_string(), crate::graph::Attribute::Int(0));
            chain.extend(seen);
        }
    }
    // Drop the chains' nodes (and the Casts between them) that nothing
    // reads any more, from the Reshape's end back to the Shape.
    loop {
        let read = readers(graph);
        let unread = |n: &Node| n.outputs.iter().all(|o| !read.contains_key(o));
        let before = graph.nodes.len();
        graph.nodes.retain(|n| {
            let in_chain = matches!(n.op.as_str(), "Cast" | "tf.Pack" | "tf.StridedSlice" | "Shape")
                && n.outputs.iter().any(|o| chain.contains(o));
            !(in_chain && unread(n))
        });
        if graph.nodes.len() == before {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{Attribute, Dim};
    use crate::kernels::testing::{assert_close, random_floats};
    use crate::runtime::Plan;

    fn value(name: &str, shape: &[usize]) -> ValueInfo {
        ValueInfo {
            name: name.into(),
            dtype: Some(DataType::Float),
            shape: Some(shape.iter().map(|&d| Dim::Known(d)).collect()),
        }
    }

    fn node(op: &str, inputs: &[usize], output: usize, attributes: Vec<(&str, Attribute)>) -> Node {
        Node {
            name: format!("{op}_{output}"),
            op: op.into(),
            inputs: inputs.iter().map(|&i| Some(i)).collect(),
            outputs: vec![output],
            attributes: attributes.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        }
    }

    /// x -> Conv(3x3, pad 1) -> BatchNormalization -> Relu -> Flatten ->
    /// Gemm -> Clip(0, 6): every pass has something to do.
    fn graph() -> Graph {
        let mut g = Graph { opset: 13, ..Graph::default() };
        let names: [(&str, &[usize]); 14] = [
            ("x", &[2, 3, 6, 6]),
            ("w", &[4, 3, 3, 3]),
            ("b", &[4]),
            ("conv", &[2, 4, 6, 6]),
            ("scale", &[4]),
            ("beta", &[4]),
            ("mean", &[4]),
            ("var", &[4]),
            ("bn", &[2, 4, 6, 6]),
            ("relu", &[2, 4, 6, 6]),
            ("flat", &[2, 144]),
            ("fc_w", &[144, 5]),
            ("fc", &[2, 5]),
            ("y", &[2, 5]),
        ];
        g.values = names.iter().map(|(n, s)| value(n, s)).collect();
        g.values.push(value("lo", &[]));
        g.values.push(value("hi", &[]));
        let c = |shape: &[usize], seed: u64| {
            Tensor::from_f32(shape.to_vec(), random_floats(shape.iter().product(), seed)).unwrap()
        };
        g.constants.insert(1, c(&[4, 3, 3, 3], 1));
        g.constants.insert(2, c(&[4], 2));
        g.constants.insert(4, c(&[4], 3));
        g.constants.insert(5, c(&[4], 4));
        g.constants.insert(6, c(&[4], 5));
        let var: Vec<f32> = random_floats(4, 6).iter().map(|v| v.abs() + 0.5).collect();
        g.constants.insert(7, Tensor::from_f32(vec![4], var).unwrap());
        g.constants.insert(11, c(&[144, 5], 7));
        g.constants.insert(14, Tensor::from_f32(vec![], vec![0.0]).unwrap());
        g.constants.insert(15, Tensor::from_f32(vec![], vec![0.5]).unwrap());
        g.nodes = vec![
            node(
                "Conv",
                &[0, 1, 2],
                3,
                vec![("pads", Attribute::Ints(vec![1; 4])), ("kernel_shape", Attribute::Ints(vec![3, 3]))],
            ),
            node("BatchNormalization", &[3, 4, 5, 6, 7], 8, vec![("epsilon", Attribute::Float(1e-3))]),
            node("Relu", &[8], 9, vec![]),
            node("Flatten", &[9], 10, vec![]),
            node("Gemm", &[10, 11], 12, vec![]),
            node("Clip", &[12, 14, 15], 13, vec![]),
        ];
        g.inputs = vec![0];
        g.outputs = vec![13];
        g
    }

    #[test]
    fn passes_fold_and_fuse_without_changing_the_result() {
        let registry = KernelRegistry::with_all_ops();
        let x = Tensor::from_f32(vec![2, 3, 6, 6], random_floats(216, 9)).unwrap();
        let plain = Plan::new(graph(), &registry).unwrap().run(vec![(0, x.clone())], &[13]).unwrap();
        let mut g = graph();
        optimize(&mut g, &registry);
        let ops: Vec<&str> = g.nodes.iter().map(|n| n.op.as_str()).collect();
        assert_eq!(ops, ["FusedConv", "Flatten", "FusedGemm"]);
        assert_eq!(Activation::from_node(&g.nodes[0]).unwrap(), Activation::Relu);
        assert_eq!(Activation::from_node(&g.nodes[2]).unwrap(), Activation::Clip(0.0, 0.5));
        assert!(!g.constants.contains_key(&4), "the statistics are dropped once folded");
        let fused = Plan::new(g, &registry).unwrap().run(vec![(0, x)], &[13]).unwrap();
        assert_close(fused[0].as_f32().unwrap(), plain[0].as_f32().unwrap());
    }

    #[test]
    fn values_read_elsewhere_are_not_fused_away() {
        let registry = KernelRegistry::with_all_ops();
        // The Conv's output is also a graph output: BN stays, and so does
        // the Conv; the Relu after BN still fuses nowhere (BN is not Conv).
        let mut g = graph();
        g.outputs.push(3);
        optimize(&mut g, &registry);
        let ops: Vec<&str> = g.nodes.iter().map(|n| n.op.as_str()).collect();
        assert_eq!(ops, ["Conv", "BatchNormalization", "Relu", "Flatten", "FusedGemm"]);
        // A Clip with a bound computed at run time is not fused.
        let mut g = graph();
        g.constants.remove(&15);
        g.inputs.push(15);
        optimize(&mut g, &registry);
        assert_eq!(g.nodes.last().unwrap().op, "Clip");
    }

    /// x [n, c, h, w] -> Conv(k x k, pad p, c -> m, bias) -> Relu ->
    /// MaxPool with the given attributes -> y.
    fn conv_pool_graph(
        [n, c, h, w]: [usize; 4],
        m: usize,
        k: usize,
        pad: usize,
        pool: Vec<(&str, Attribute)>,
    ) -> Graph {
        let mut g = Graph { opset: 13, ..Graph::default() };
        let (oh, ow) = (h + 2 * pad + 1 - k, w + 2 * pad + 1 - k);
        g.values = vec![
            value("x", &[n, c, h, w]),
            value("w", &[m, c, k, k]),
            value("b", &[m]),
            value("conv", &[n, m, oh, ow]),
            value("relu", &[n, m, oh, ow]),
        ];
        g.values.push(ValueInfo { name: "y".into(), dtype: Some(DataType::Float), shape: None });
        let he = (2.0 / (c * k * k) as f32).sqrt();
        let weights = random_floats(m * c * k * k, 21).iter().map(|v| v * he).collect();
        g.constants.insert(1, Tensor::from_f32(vec![m, c, k, k], weights).unwrap());
        g.constants.insert(2, Tensor::from_f32(vec![m], random_floats(m, 22)).unwrap());
        g.nodes = vec![
            node(
                "Conv",
                &[0, 1, 2],
                3,
                vec![
                    ("pads", Attribute::Ints(vec![pad as i64; 4])),
                    ("kernel_shape", Attribute::Ints(vec![k as i64; 2])),
                ],
            ),
            node("Relu", &[3], 4, vec![]),
            node("MaxPool", &[4], 5, pool),
        ];
        g.inputs = vec![0];
        g.outputs = vec![5];
        g
    }

    fn tiling(kernel: [i64; 2]) -> Vec<(&'static str, Attribute)> {
        vec![("kernel_shape", Attribute::Ints(kernel.to_vec())), ("strides", Attribute::Ints(kernel.to_vec()))]
    }

    /// Bit patterns, every NaN as one.
    fn bits(t: &Tensor) -> Vec<u32> {
        t.as_f32().unwrap().iter().map(|v| if v.is_nan() { u32::MAX } else { v.to_bits() }).collect()
    }

    #[test]
    fn a_max_pool_tiling_the_conv_output_fuses_into_it_bit_for_bit() {
        let registry = KernelRegistry::with_all_ops();
        // Each case reaches one of the convolution's algorithms: the direct
        // kernel (K = 9), Winograd with 2x2 windows (odd output sizes, whose
        // last row and column the pool drops), Winograd then a 3x3 pool,
        // and im2col (K = 50) with 2x1 windows.
        let cases = [
            ([2, 1, 28, 28], 8, 3, 0, [2, 2]),
            ([1, 3, 21, 71], 6, 3, 1, [2, 2]),
            ([3, 8, 9, 11], 8, 3, 1, [2, 2]),
            ([1, 8, 10, 9], 16, 3, 1, [3, 3]),
            ([2, 2, 12, 9], 4, 5, 2, [2, 1]),
        ];
        // Each case with the Relu, and without it (a Conv straight into
        // the MaxPool).
        let cases = cases.into_iter().flat_map(|case| [(case, true), (case, false)]);
        for (i, ((dims, m, k, pad, pool), relu)) in cases.enumerate() {
            let len: usize = dims.iter().product();
            let mut input = random_floats(len, 30 + i as u64);
            input[len / 3] = f32::NAN;
            let x = Tensor::from_f32(dims.to_vec(), input).unwrap();
            let mut plain = conv_pool_graph(dims, m, k, pad, tiling(pool));
            if !relu {
                plain.nodes.remove(1);
                plain.nodes[1].inputs[0] = Some(3);
            }
            let want = Plan::new(plain.clone(), &registry).unwrap().run(vec![(0, x.clone())], &[5]).unwrap();
            let mut g = plain;
            optimize(&mut g, &registry);
            let ops: Vec<&str> = g.nodes.iter().map(|n| n.op.as_str()).collect();
            assert_eq!(ops, ["FusedConvPool"], "case {i}");
            let plan = Plan::new(g, &registry).unwrap();
            let got = plan.run(vec![(0, x.clone())], &[5]).unwrap();
            let mut counted = None;
            plan.run_profiled(vec![(0, x)], &[5], &mut |step| counted = step.multiply_adds).unwrap();
            let [n, c, h, w] = dims;
            let conv_outputs = n * m * (h + 2 * pad + 1 - k) * (w + 2 * pad + 1 - k);
            assert_eq!(counted, Some((conv_outputs * c * k * k) as u64), "case {i}: the work before pooling");
            assert_eq!(got[0].shape(), want[0].shape(), "case {i}");
            let inferred: Vec<usize> = plan.inferred_shape(5).unwrap().iter().map(|d| d.unwrap()).collect();
            assert_eq!(inferred, got[0].shape(), "case {i}: shape inference knows the pooled shape");
            assert!(got[0].as_f32().unwrap().iter().any(|v| v.is_nan()), "case {i}: the NaN reaches the output");
            assert_eq!(bits(&got[0]), bits(&want[0]), "case {i}");
        }
    }

    #[test]
    fn pools_that_do_not_tile_the_output_stay_apart() {
        let registry = KernelRegistry::with_all_ops();
        let with = |extra: (&'static str, Attribute)| {
            let mut attrs = tiling([2, 2]);
            attrs.retain(|(k, _)| *k != extra.0);
            attrs.push(extra);
            attrs
        };
        let apart = [
            with(("strides", Attribute::Ints(vec![1, 1]))),
            with(("pads", Attribute::Ints(vec![1, 1, 0, 0]))),
            with(("ceil_mode", Attribute::Int(1))),
            with(("dilations", Attribute::Ints(vec![2, 2]))),
            with(("auto_pad", Attribute::String("SAME_UPPER".into()))),
        ];
        for (i, attrs) in apart.into_iter().enumerate() {
            let mut g = conv_pool_graph([1, 8, 10, 10], 8, 3, 1, attrs);
            optimize(&mut g, &registry);
            let ops: Vec<&str> = g.nodes.iter().map(|n| n.op.as_str()).collect();
            assert_eq!(ops, ["FusedConv", "MaxPool"], "case {i}");
        }
        // A MaxPool that also gives Indices, and a Conv output read twice.
        let mut g = conv_pool_graph([1, 8, 10, 10], 8, 3, 1, tiling([2, 2]));
        g.values.push(value("indices", &[1, 8, 5, 5]));
        g.nodes[2].outputs.push(6);
        optimize(&mut g, &registry);
        assert_eq!(g.nodes.last().unwrap().op, "MaxPool");
        let mut g = conv_pool_graph([1, 8, 10, 10], 8, 3, 1, tiling([2, 2]));
        g.outputs.push(4);
        optimize(&mut g, &registry);
        let ops: Vec<&str> = g.nodes.iter().map(|n| n.op.as_str()).collect();
        assert_eq!(ops, ["FusedConv", "MaxPool"]);
    }

    #[test]
    fn a_pool_that_does_not_fit_the_conv_output_is_refused() {
        let registry = KernelRegistry::with_all_ops();
        let mut g = conv_pool_graph([1, 1, 6, 6], 4, 3, 0, tiling([2, 2]));
        // Spatial dims left to the request.
        for v in &mut g.values[3..5] {
            v.shape = None;
        }
        g.values[0].shape = Some(vec![Dim::Known(1), Dim::Known(1), Dim::Unknown(None), Dim::Unknown(None)]);
        optimize(&mut g, &registry);
        assert_eq!(g.nodes[0].op, "FusedConvPool");
        let plan = Plan::new(g, &registry).unwrap();
        // A 4x4 input gives a 2x2 convolution output: pooled to 1x1.
        let small = Tensor::from_f32(vec![1, 1, 4, 4], vec![1.0; 16]).unwrap();
        assert_eq!(plan.run(vec![(0, small)], &[5]).unwrap()[0].shape(), [1, 4, 1, 1]);
        // A 3x3 input gives 1x1: no whole 2x2 window.
        let tiny = Tensor::from_f32(vec![1, 1, 3, 3], vec![1.0; 9]).unwrap();
        let err = plan.run(vec![(0, tiny)], &[5]).unwrap_err().to_string();
        assert!(err.contains("pool window [2, 2] does not fit"), "{err}");
    }

    /// TensorFlow's form: x [n, h, w, c] -> tf.Conv2D (filter [k, k, c,
    /// m], `padding`) -> Add (bias [m]) -> Relu -> tf.MaxPool (2x2,
    /// VALID) -> y; the filter a constant, or a graph input.
    fn tf_conv_graph([n, h, w, c]: [usize; 4], m: usize, k: usize, padding: &str, constant_filter: bool) -> Graph {
        let mut g = Graph { opset: 13, ..Graph::default() };
        let unknown = |name: &str| ValueInfo { name: name.into(), dtype: Some(DataType::Float), shape: None };
        g.values = vec![
            value("x", &[n, h, w, c]),
            value("filter", &[k, k, c, m]),
            value("bias", &[m]),
            unknown("conv"),
            unknown("biased"),
            unknown("relu"),
            unknown("y"),
        ];
        let he = (2.0 / (c * k * k) as f32).sqrt();
        let filter =
            Tensor::from_f32(vec![k, k, c, m], random_floats(k * k * c * m, 41).iter().map(|v| v * he).collect());
        if constant_filter {
            g.constants.insert(1, filter.unwrap());
        }
        g.constants.insert(2, Tensor::from_f32(vec![m], random_floats(m, 42)).unwrap());
        let ones = Attribute::Ints(vec![1; 4]);
        g.nodes = vec![
            node(
                "tf.Conv2D",
                &[0, 1],
                3,
                vec![("strides", ones.clone()), ("padding", Attribute::String(padding.into()))],
            ),
            node("Add", &[3, 2], 4, vec![]),
            node("Relu", &[4], 5, vec![]),
            node(
                "tf.MaxPool",
                &[5],
                6,
                vec![
                    ("ksize", Attribute::Ints(vec![1, 2, 2, 1])),
                    ("strides", Attribute::Ints(vec![1, 2, 2, 1])),
                    ("padding", Attribute::String("VALID".into())),
                ],
            ),
        ];
        g.inputs = if constant_filter { vec![0] } else { vec![0, 1] };
        g.outputs = vec![6];
        g
    }

    #[test]
    fn tensorflow_conv_chains_fuse_and_run_on_the_channels_first_kernels() {
        let registry = KernelRegistry::with_all_ops();
        // The direct kernel (c = 1), Winograd (SAME padding, odd sizes) and
        // im2col (5x5 over 3 channels).
        for (i, (dims, m, k, padding)) in
            [([2, 28, 28, 1], 8, 3, "VALID"), ([3, 11, 9, 8], 16, 3, "SAME"), ([1, 13, 12, 3], 6, 5, "SAME")]
                .into_iter()
                .enumerate()
        {
            let [n, h, w, c] = dims;
            let x = Tensor::from_f32(dims.to_vec(), random_floats(n * h * w * c, 50 + i as u64)).unwrap();
            // The general channels-last path: the filter fed at run time.
            let general = tf_conv_graph(dims, m, k, padding, false);
            let filter = Tensor::from_f32(vec![k, k, c, m], {
                let he = (2.0 / (c * k * k) as f32).sqrt();
                random_floats(k * k * c * m, 41).iter().map(|v| v * he).collect()
            })
            .unwrap();
            let want = Plan::new(general, &registry).unwrap().run(vec![(0, x.clone()), (1, filter)], &[6]).unwrap();
            let mut g = tf_conv_graph(dims, m, k, padding, true);
            optimize(&mut g, &registry);
            let ops: Vec<&str> = g.nodes.iter().map(|n| n.op.as_str()).collect();
            assert_eq!(ops, ["tf.FusedConv2D"], "case {i}");
            let plan = Plan::new(g, &registry).unwrap();
            let got = plan.run(vec![(0, x.clone())], &[6]).unwrap();
            assert_eq!(got[0].shape(), want[0].shape(), "case {i}");
            assert_close(got[0].as_f32().unwrap(), want[0].as_f32().unwrap());
            let mut counted = None;
            plan.run_profiled(vec![(0, x)], &[6], &mut |step| counted = step.multiply_adds).unwrap();
            let (oh, ow) = if padding == "SAME" { (h, w) } else { (h + 1 - k, w + 1 - k) };
            assert_eq!(counted, Some((n * oh * ow * m * k * k * c) as u64), "case {i}: the work before pooling");
        }
        // Without the pool, and without the bias: the Relu alone fuses.
        let mut g = tf_conv_graph([1, 6, 6, 8], 8, 3, "VALID", true);
        g.nodes.truncate(3);
        g.nodes.remove(1);
        g.nodes[1].inputs[0] = Some(3);
        g.outputs = vec![5];
        optimize(&mut g, &registry);
        let ops: Vec<&str> = g.nodes.iter().map(|n| n.op.as_str()).collect();
        assert_eq!(ops, ["tf.FusedConv2D"]);
        let x = Tensor::from_f32(vec![1, 6, 6, 8], random_floats(288, 60)).unwrap();
        let y = Plan::new(g, &registry).unwrap().run(vec![(0, x)], &[5]).unwrap();
        assert_eq!(y[0].shape(), [1, 4, 4, 8]);
        assert!(y[0].as_f32().unwrap().iter().all(|&v| v >= 0.0));
    }

    /// Keras's Flatten as a SavedModel holds it: x [n, 2, 3, 4] -> Shape ->
    /// Cast -> StridedSlice [0:1] (shrunk) -> Pack with 24 -> Cast ->
    /// Reshape (allowzero 1, TensorFlow's).
    fn keras_flatten(shrink: i64) -> Graph {
        let mut g = Graph { opset: 13, ..Graph::default() };
        let unknown = |name: &str| ValueInfo { name: name.into(), dtype: None, shape: None };
        g.values = ["x", "shape64", "shape", "begin", "end", "step", "batch", "k", "packed", "spec", "y"]
            .iter()
            .map(|n| unknown(n))
            .collect();
        g.values[0] = ValueInfo {
            name: "x".into(),
            dtype: Some(DataType::Float),
            shape: Some(vec![Dim::Unknown(None), Dim::Known(2), Dim::Known(3), Dim::Known(4)]),
        };
        let int32 = |v: Vec<i32>, shape: Vec<usize>| Tensor::new(shape, crate::tensor::TensorData::Int32(v)).unwrap();
        g.constants.insert(3, int32(vec![0], vec![1]));
        g.constants.insert(4, int32(vec![1], vec![1]));
        g.constants.insert(5, int32(vec![1], vec![1]));
        g.constants.insert(7, int32(vec![24], vec![]));
        g.nodes = vec![
            node("Shape", &[0], 1, vec![]),
            node("Cast", &[1], 2, vec![("to", Attribute::Int(6))]),
            node("tf.StridedSlice", &[2, 3, 4, 5], 6, vec![("shrink_axis_mask", Attribute::Int(shrink))]),
            node("tf.Pack", &[6, 7], 8, vec![("axis", Attribute::Int(0))]),
            node("Cast", &[8], 9, vec![("to", Attribute::Int(7))]),
            node("Reshape", &[0, 9], 10, vec![("allowzero", Attribute::Int(1))]),
        ];
        g.inputs = vec![0];
        g.outputs = vec![10];
        g
    }

    #[test]
    fn keras_flatten_becomes_a_constant_reshape() {
        let registry = KernelRegistry::with_all_ops();
        let mut g = keras_flatten(1);
        optimize(&mut g, &registry);
        let ops: Vec<&str> = g.nodes.iter().map(|n| n.op.as_str()).collect();
        assert_eq!(ops, ["Reshape"]);
        let plan = Plan::new(g, &registry).unwrap();
        let want = Plan::new(keras_flatten(1), &registry).unwrap();
        for n in [3, 1, 0] {
            let x = Tensor::from_f32(vec![n, 2, 3, 4], random_floats(n * 24, 70)).unwrap();
            let got = plan.run(vec![(0, x.clone())], &[10]).unwrap();
            assert_eq!(got, want.run(vec![(0, x)], &[10]).unwrap(), "batch {n}");
            assert_eq!(got[0].shape(), [n, 24]);
        }
        // Anything but the exact chain stays as it is.
        let mut g = keras_flatten(0);
        optimize(&mut g, &registry);
        assert_eq!(g.nodes.len(), 6);
    }
}
