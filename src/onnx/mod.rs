//! ONNX `ModelProto` to [`Graph`].
//!
//! The importer reads the model with the prost types generated from our own
//! `proto/onnx/onnx.proto`, turns initializers and `Constant` nodes into graph
//! constants, keeps graph inputs that have no initializer as the model's
//! inputs (older exporters list every initializer as an input too), and
//! copies nodes and attributes as they are. It checks structure, not
//! operator semantics: the kernel registry refuses unknown operators.

use std::collections::HashMap;
use std::path::Path;

use prost::Message;

use crate::graph::{Attribute, Dim, Graph, Node, ValueId, ValueInfo};
use crate::proto::onnx as pb;
use crate::tensor::{DataType, Tensor, TensorData, element_count};

/// Why an ONNX file could not be imported.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("not a valid ONNX ModelProto: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("the model has no graph")]
    NoGraph,
    #[error("the model imports no opset of the default ONNX domain")]
    NoOpset,
    #[error("node '{node}' uses operator domain '{domain}'; only the default ONNX domain is supported")]
    Domain { node: String, domain: String },
    #[error("tensor '{name}': {message}")]
    Tensor { name: String, message: String },
    #[error("node '{node}': attribute '{attribute}': {message}")]
    Attribute { node: String, attribute: String, message: String },
    #[error("value '{name}': {message}")]
    Value { name: String, message: String },
    #[error("value '{0}' is produced twice")]
    Redefined(String),
}

/// Reads and imports an ONNX file.
///
/// # Errors
/// When the file cannot be read or is not an importable ONNX model.
pub fn load_file(path: &Path) -> Result<Graph, OnnxError> {
    let bytes = std::fs::read(path).map_err(|source| OnnxError::Io { path: path.display().to_string(), source })?;
    let mut model = pb::ModelProto::decode(bytes.as_slice())?;
    if let Some(graph) = model.graph.as_mut() {
        let dir = path.parent().unwrap_or(Path::new("."));
        for t in graph.initializer.iter_mut() {
            load_external(t, dir)?;
        }
        for node in graph.node.iter_mut() {
            for a in node.attribute.iter_mut() {
                if let Some(t) = a.t.as_mut() {
                    load_external(t, dir)?;
                }
            }
        }
    }
    import_model(model)
}

/// Reads a tensor's external data (`location`, `offset`, `length`, as
/// `onnx.save(..., save_as_external_data=True)` writes them) from a file
/// next to the model into `raw_data`. The location must name a file inside
/// the model's directory.
fn load_external(t: &mut pb::TensorProto, dir: &Path) -> Result<(), OnnxError> {
    if t.data_location() != pb::tensor_proto::DataLocation::External && t.external_data.is_empty() {
        return Ok(());
    }
    let name = t.name().to_string();
    let err = |message: String| OnnxError::Tensor { name: name.clone(), message };
    let field = |key: &str| t.external_data.iter().find(|e| e.key() == key).map(|e| e.value().to_string());
    let location = field("location").ok_or_else(|| err("external data without a 'location'".into()))?;
    let relative = Path::new(&location);
    if relative.is_absolute() || relative.components().any(|c| !matches!(c, std::path::Component::Normal(_))) {
        return Err(err(format!(
            "external data location '{location}' must be a file name inside the model's directory"
        )));
    }
    let number = |key: &str| -> Result<Option<u64>, OnnxError> {
        field(key)
            .map(|v| v.parse::<u64>().map_err(|_| err(format!("external data {key} '{v}' is not a number"))))
            .transpose()
    };
    let (offset, length) = (number("offset")?.unwrap_or(0), number("length")?);
    let path = dir.join(relative);
    let io = |e: std::io::Error| err(format!("cannot read external data {}: {e}", path.display()));
    let file_len = std::fs::metadata(&path).map_err(io)?.len();
    let length = length.unwrap_or(file_len.saturating_sub(offset));
    if offset.checked_add(length).is_none_or(|end| end > file_len) {
        return Err(err(format!(
            "external data {} holds {file_len} bytes, but the tensor is at bytes {offset}..{}",
            path.display(),
            offset.saturating_add(length)
        )));
    }
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(&path).map_err(io)?;
    let mut raw = vec![0u8; length as usize];
    file.seek(SeekFrom::Start(offset)).and_then(|_| file.read_exact(&mut raw)).map_err(io)?;
    t.raw_data = Some(raw);
    t.external_data.clear();
    t.data_location = Some(pb::tensor_proto::DataLocation::Default as i32);
    Ok(())
}

/// Imports a serialized ONNX model.
///
/// # Errors
/// When the bytes are not a ModelProto, or the model uses something the
/// importer does not support (another operator domain, external data,
/// subgraphs, an unsupported element type).
pub fn load(bytes: &[u8]) -> Result<Graph, OnnxError> {
    import_model(pb::ModelProto::decode(bytes)?)
}

fn import_model(model: pb::ModelProto) -> Result<Graph, OnnxError> {
    let opset = model
        .opset_import
        .iter()
        .find(|o| matches!(o.domain(), "" | "ai.onnx"))
        .map(|o| o.version())
        .ok_or(OnnxError::NoOpset)?;
    let graph = model.graph.ok_or(OnnxError::NoGraph)?;
    Importer::default().import(graph, opset)
}

/// Subgraph attributes by attribute name.
type NamedGraphs = Vec<(String, Graph)>;

#[derive(Default)]
struct Importer {
    graph: Graph,
    ids: HashMap<String, ValueId>,
    /// Names the enclosing graphs define, which a subgraph may read.
    outer: std::collections::HashSet<String>,
    /// The enclosing graphs' values this (sub)graph reads, in first-use
    /// order, each with the input value that stands for it here.
    captures: Vec<(String, ValueId)>,
}

impl Importer {
    fn value(&mut self, name: &str) -> ValueId {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = self.graph.values.len();
        self.graph.values.push(ValueInfo { name: name.to_string(), dtype: None, shape: None });
        self.ids.insert(name.to_string(), id);
        id
    }

    /// The value a node input names: one of this graph's, or, in a
    /// subgraph, an enclosing graph's value, captured as an extra input.
    fn reference(&mut self, name: &str) -> ValueId {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        if self.outer.contains(name) {
            let id = self.value(name);
            self.captures.push((name.to_string(), id));
            return id;
        }
        self.value(name)
    }

    /// Imports a node's subgraph attributes. Returns them by attribute name
    /// and the enclosing values they read (the node's extra inputs), in the
    /// order every subgraph's extra inputs follow.
    fn subgraphs(
        &mut self,
        node: &str,
        graphs: Vec<(String, pb::GraphProto)>,
    ) -> Result<(NamedGraphs, Vec<ValueId>), OnnxError> {
        let mut visible = self.outer.clone();
        visible.extend(self.ids.keys().cloned());
        let mut imported = Vec::with_capacity(graphs.len());
        let mut names: Vec<String> = Vec::new();
        for (attr, g) in graphs {
            let sub = Importer { outer: visible.clone(), ..Importer::default() };
            let (graph, captures) = sub.import_scope(g, self.graph.opset).map_err(|e| OnnxError::Attribute {
                node: node.to_string(),
                attribute: attr.clone(),
                message: e.to_string(),
            })?;
            for (name, _) in &captures {
                if !names.contains(name) {
                    names.push(name.clone());
                }
            }
            imported.push((attr, graph, captures));
        }
        let graphs = imported
            .into_iter()
            .map(|(attr, mut graph, captures)| {
                for name in &names {
                    let id = match captures.iter().find(|(n, _)| n == name) {
                        Some(&(_, id)) => id,
                        None => {
                            graph.values.push(ValueInfo { name: name.clone(), dtype: None, shape: None });
                            graph.values.len() - 1
                        }
                    };
                    graph.inputs.push(id);
                }
                graph.captured = names.len();
                (attr, graph)
            })
            .collect();
        let outer = names.iter().map(|n| self.reference(n)).collect();
        Ok((graphs, outer))
    }

    /// A fresh value no name refers to (an omitted optional output).
    fn unnamed(&mut self) -> ValueId {
        let id = self.graph.values.len();
        self.graph.values.push(ValueInfo { name: format!("<omitted output {id}>"), dtype: None, shape: None });
        id
    }

    fn declare(&mut self, info: &pb::ValueInfoProto) -> Result<ValueId, OnnxError> {
        let name = info.name();
        let id = self.value(name);
        let Some(pb::type_proto::Value::TensorType(t)) = info.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
            return Ok(id);
        };
        let dtype = match t.elem_type {
            Some(e) => {
                Some(dtype_from_onnx(e).map_err(|message| OnnxError::Value { name: name.to_string(), message })?)
            }
            None => None,
        };
        let shape = t.shape.as_ref().map(|s| {
            s.dim
                .iter()
                .map(|d| match &d.value {
                    Some(pb::tensor_shape_proto::dimension::Value::DimValue(v)) if *v >= 0 => Dim::Known(*v as usize),
                    Some(pb::tensor_shape_proto::dimension::Value::DimParam(p)) => Dim::Unknown(Some(p.clone())),
                    _ => Dim::Unknown(None),
                })
                .collect()
        });
        let v = &mut self.graph.values[id];
        v.dtype = dtype.or(v.dtype);
        if shape.is_some() {
            v.shape = shape;
        }
        Ok(id)
    }

    fn import(self, g: pb::GraphProto, opset: i64) -> Result<Graph, OnnxError> {
        Ok(self.import_scope(g, opset)?.0)
    }

    /// Imports a graph; a subgraph also returns the enclosing values it
    /// reads.
    fn import_scope(mut self, mut g: pb::GraphProto, opset: i64) -> Result<(Graph, Vec<(String, ValueId)>), OnnxError> {
        self.graph.opset = opset;
        for init in &g.initializer {
            let id = self.value(init.name());
            let t = tensor_from_onnx(init)?;
            let v = &mut self.graph.values[id];
            v.dtype = Some(t.dtype());
            v.shape = Some(t.shape().iter().map(|&d| Dim::Known(d)).collect());
            self.graph.constants.insert(id, t);
        }
        for input in &g.input {
            let id = self.declare(input)?;
            if !self.graph.constants.contains_key(&id) {
                self.graph.inputs.push(id);
            }
        }
        for info in &g.value_info {
            self.declare(info)?;
        }
        for output in &g.output {
            let id = self.declare(output)?;
            self.graph.outputs.push(id);
        }
        let mut produced: Vec<bool> = Vec::new();
        for (index, mut n) in std::mem::take(&mut g.node).into_iter().enumerate() {
            let name = match n.name() {
                "" => format!("{}_{index}", n.op_type()),
                s => s.to_string(),
            };
            if !matches!(n.domain(), "" | "ai.onnx") {
                return Err(OnnxError::Domain { node: name, domain: n.domain().to_string() });
            }
            let mut attributes = HashMap::new();
            let mut graphs = Vec::new();
            for mut a in std::mem::take(&mut n.attribute) {
                match (a.r#type(), a.g.take()) {
                    (pb::attribute_proto::AttributeType::Graph, Some(g)) => graphs.push((a.name().to_string(), g)),
                    _ => {
                        attributes.insert(a.name().to_string(), attribute_from_onnx(&name, &a)?);
                    }
                }
            }
            // Subgraphs first: the values they read become extra inputs.
            let (graphs, extra_inputs) = self.subgraphs(&name, graphs)?;
            for (attr, graph) in graphs {
                attributes.insert(attr, Attribute::Graph(Box::new(graph)));
            }
            // An omitted optional output ("") before a used one keeps its
            // position with a value nothing reads; trailing ones are dropped.
            let used = n.output.iter().rposition(|o| !o.is_empty()).map_or(0, |i| i + 1);
            let outputs: Vec<ValueId> =
                n.output[..used].iter().map(|o| if o.is_empty() { self.unnamed() } else { self.value(o) }).collect();
            for &id in &outputs {
                produced.resize(self.graph.values.len(), false);
                if std::mem::replace(&mut produced[id], true)
                    || self.graph.constants.contains_key(&id)
                    || self.graph.inputs.contains(&id)
                {
                    return Err(OnnxError::Redefined(self.graph.values[id].name.clone()));
                }
            }
            if FOLDED_OPS.contains(&n.op_type()) {
                let [out] = outputs[..] else {
                    return Err(OnnxError::Value {
                        name,
                        message: "a Constant node must have exactly one output".into(),
                    });
                };
                let t = constant_value(&name, attributes)?;
                let v = &mut self.graph.values[out];
                v.dtype = Some(t.dtype());
                v.shape = Some(t.shape().iter().map(|&d| Dim::Known(d)).collect());
                self.graph.constants.insert(out, t);
                continue;
            }
            let mut inputs: Vec<Option<ValueId>> =
                n.input.iter().map(|i| if i.is_empty() { None } else { Some(self.reference(i)) }).collect();
            inputs.extend(extra_inputs.into_iter().map(Some));
            self.graph.nodes.push(Node { name, op: n.op_type().to_string(), inputs, outputs, attributes });
        }
        // The caller appends a subgraph's captures to its inputs, in the
        // order all subgraphs of the node share.
        let captures = std::mem::take(&mut self.captures);
        Ok((self.graph, captures))
    }
}

/// The tensor held by a Constant node's attributes.
fn constant_value(node: &str, mut attributes: HashMap<String, Attribute>) -> Result<Tensor, OnnxError> {
    let (key, value) = attributes.drain().next().ok_or_else(|| OnnxError::Value {
        name: node.to_string(),
        message: "a Constant node needs one value attribute".into(),
    })?;
    let t = match value {
        Attribute::Tensor(t) => Ok(t),
        Attribute::Float(f) => Tensor::from_f32(vec![], vec![f]),
        Attribute::Floats(v) => Tensor::from_f32(vec![v.len()], v),
        Attribute::Int(i) => Tensor::from_i64(vec![], vec![i]),
        Attribute::Ints(v) => Tensor::from_i64(vec![v.len()], v),
        _ => {
            return Err(OnnxError::Attribute {
                node: node.to_string(),
                attribute: key,
                message: "this Constant value kind is not supported".into(),
            });
        }
    };
    t.map_err(|e| OnnxError::Tensor { name: node.to_string(), message: e.to_string() })
}

/// Maps an ONNX element type number to ours.
fn dtype_from_onnx(elem_type: i32) -> Result<DataType, String> {
    use pb::tensor_proto::DataType as T;
    match T::try_from(elem_type) {
        Ok(T::Float) => Ok(DataType::Float),
        Ok(T::Double) => Ok(DataType::Double),
        Ok(T::Int32) => Ok(DataType::Int32),
        Ok(T::Int64) => Ok(DataType::Int64),
        Ok(T::Uint8) => Ok(DataType::UInt8),
        Ok(T::Int8) => Ok(DataType::Int8),
        Ok(T::Bool) => Ok(DataType::Bool),
        Ok(T::String) => Ok(DataType::String),
        Ok(other) => Err(format!("element type {} is not supported", other.as_str_name())),
        Err(_) => Err(format!("unknown element type {elem_type}")),
    }
}

/// Operators the importer evaluates itself, so they never reach the kernel
/// registry: a Constant node becomes a constant value of the graph.
pub const FOLDED_OPS: &[&str] = &["Constant"];

/// An ONNX TensorProto (initializer, attribute, or a test's input or output
/// file) as a tensor.
///
/// # Errors
/// For external data, an unsupported element type, or data that does not
/// match the dims.
pub fn tensor_from_onnx(t: &pb::TensorProto) -> Result<Tensor, OnnxError> {
    let name = t.name().to_string();
    let err = |message: String| OnnxError::Tensor { name: name.clone(), message };
    if t.data_location() == pb::tensor_proto::DataLocation::External || !t.external_data.is_empty() {
        return Err(err(
            "its data is in an external file, which only a model loaded from its directory can have".into()
        ));
    }
    let dtype = dtype_from_onnx(t.data_type()).map_err(&err)?;
    let shape = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| err(format!("negative dim {d}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let n = element_count(&shape).ok_or_else(|| err(format!("shape {shape:?} overflows")))?;
    let data = match t.raw_data.as_deref() {
        // ONNX keeps strings in string_data only.
        Some(raw) if dtype != DataType::String && (!raw.is_empty() || n == 0) => {
            if raw.len() != n * dtype.size_of() {
                return Err(err(format!(
                    "raw_data holds {} bytes but {dtype} {shape:?} needs {}",
                    raw.len(),
                    n * dtype.size_of()
                )));
            }
            TensorData::from_le_bytes(dtype, raw)
        }
        _ => match dtype {
            DataType::Float => TensorData::Float(t.float_data.clone()),
            DataType::Double => TensorData::Double(t.double_data.clone()),
            DataType::Int64 => TensorData::Int64(t.int64_data.clone()),
            // ONNX stores the narrow integer types and bool widened in
            // int32_data.
            DataType::Int32 => TensorData::Int32(t.int32_data.clone()),
            DataType::UInt8 => TensorData::UInt8(t.int32_data.iter().map(|&v| v as u8).collect()),
            DataType::Int8 => TensorData::Int8(t.int32_data.iter().map(|&v| v as i8).collect()),
            DataType::Bool => TensorData::Bool(t.int32_data.iter().map(|&v| v != 0).collect()),
            DataType::String => TensorData::String(t.string_data.clone()),
        },
    };
    Tensor::new(shape, data).map_err(|e| err(e.to_string()))
}

fn attribute_from_onnx(node: &str, a: &pb::AttributeProto) -> Result<Attribute, OnnxError> {
    use pb::attribute_proto::AttributeType as A;
    let err = |message: &str| OnnxError::Attribute {
        node: node.to_string(),
        attribute: a.name().to_string(),
        message: message.to_string(),
    };
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| err("string is not UTF-8"));
    Ok(match a.r#type() {
        A::Float => Attribute::Float(a.f()),
        A::Int => Attribute::Int(a.i()),
        A::String => Attribute::String(text(a.s())?),
        A::Tensor => Attribute::Tensor(tensor_from_onnx(a.t.as_ref().ok_or_else(|| err("tensor is missing"))?)?),
        A::Floats => Attribute::Floats(a.floats.clone()),
        A::Ints => Attribute::Ints(a.ints.clone()),
        A::Strings => Attribute::Strings(a.strings.iter().map(|s| text(s)).collect::<Result<_, _>>()?),
        A::Graph | A::Graphs => return Err(err("this subgraph attribute is not supported")),
        _ => return Err(err("this attribute type is not supported")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor_info(name: &str, dims: &[i64]) -> pb::ValueInfoProto {
        pb::ValueInfoProto {
            name: Some(name.into()),
            r#type: Some(pb::TypeProto {
                value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                    elem_type: Some(pb::tensor_proto::DataType::Float as i32),
                    shape: Some(pb::TensorShapeProto {
                        dim: dims
                            .iter()
                            .map(|&d| pb::tensor_shape_proto::Dimension {
                                value: Some(if d < 0 {
                                    pb::tensor_shape_proto::dimension::Value::DimParam("N".into())
                                } else {
                                    pb::tensor_shape_proto::dimension::Value::DimValue(d)
                                }),
                                ..Default::default()
                            })
                            .collect(),
                    }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn model(nodes: Vec<pb::NodeProto>, inits: Vec<pb::TensorProto>, inputs: Vec<pb::ValueInfoProto>) -> Vec<u8> {
        pb::ModelProto {
            ir_version: Some(8),
            opset_import: vec![pb::OperatorSetIdProto { domain: Some(String::new()), version: Some(13) }],
            graph: Some(pb::GraphProto {
                node: nodes,
                initializer: inits,
                input: inputs,
                output: vec![tensor_info("y", &[-1, 2])],
                ..Default::default()
            }),
            ..Default::default()
        }
        .encode_to_vec()
    }

    fn node(op: &str, inputs: &[&str], output: &str) -> pb::NodeProto {
        pb::NodeProto {
            op_type: Some(op.into()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            ..Default::default()
        }
    }

    fn bias() -> pb::TensorProto {
        pb::TensorProto {
            name: Some("b".into()),
            dims: vec![2],
            data_type: Some(pb::tensor_proto::DataType::Float as i32),
            raw_data: Some([1.0f32.to_le_bytes(), 2.0f32.to_le_bytes()].concat()),
            ..Default::default()
        }
    }

    #[test]
    fn initializers_listed_as_inputs_are_constants() {
        let bytes = model(
            vec![node("Add", &["x", "b"], "y")],
            vec![bias()],
            vec![tensor_info("x", &[-1, 2]), tensor_info("b", &[2])],
        );
        let g = load(&bytes).unwrap();
        assert_eq!(g.inputs.len(), 1);
        assert_eq!(g.values[g.inputs[0]].name, "x");
        assert_eq!(g.values[g.inputs[0]].shape, Some(vec![Dim::Unknown(Some("N".into())), Dim::Known(2)]));
        let b = g.value_id("b").unwrap();
        assert_eq!(g.constants[&b].as_f32().unwrap(), &[1.0, 2.0]);
        assert_eq!(g.nodes[0].name, "Add_0");
        assert_eq!(g.opset, 13);
    }

    #[test]
    fn constant_nodes_become_constants() {
        let mut c = node("Constant", &[], "b");
        c.attribute.push(pb::AttributeProto {
            name: Some("value".into()),
            r#type: Some(pb::attribute_proto::AttributeType::Tensor as i32),
            t: Some(bias()),
            ..Default::default()
        });
        let bytes = model(vec![c, node("Add", &["x", "b"], "y")], vec![], vec![tensor_info("x", &[-1, 2])]);
        let g = load(&bytes).unwrap();
        assert_eq!(g.nodes.len(), 1);
        assert_eq!(g.constants.len(), 1);
    }

    #[test]
    fn malformed_models_are_refused_with_reasons() {
        assert!(matches!(load(b"\xff\xff\xff"), Err(OnnxError::Decode(_))));
        let mut bad = bias();
        bad.raw_data = Some(vec![0; 5]);
        let err = load(&model(vec![], vec![bad], vec![])).unwrap_err();
        assert!(err.to_string().contains("raw_data holds 5 bytes"), "{err}");
        let mut n = node("Add", &["x", "b"], "y");
        n.domain = Some("com.microsoft".into());
        let err = load(&model(vec![n], vec![bias()], vec![tensor_info("x", &[2])])).unwrap_err();
        assert!(err.to_string().contains("com.microsoft"), "{err}");
        let twice = vec![node("Relu", &["x"], "y"), node("Relu", &["x"], "y")];
        assert!(matches!(load(&model(twice, vec![], vec![tensor_info("x", &[2])])), Err(OnnxError::Redefined(_))));
    }
}
