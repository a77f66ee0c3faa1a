//! `saved_model.pb`: the MetaGraphDef a tag set selects, its signatures,
//! and, for each signature, the function it calls and the checkpoint keys
//! of the variables that function captures.
//!
//! Captures are mapped through the object graphs, as `tf.saved_model.load`
//! does: the called function's `bound_inputs` are node ids of the
//! SavedObjectGraph, and the checkpoint's own object graph (the
//! `_CHECKPOINTABLE_OBJECT_GRAPH` entry, same ids) names each variable's
//! key. Variable names in the graph never decide anything: they do not
//! match the keys.

use std::collections::BTreeSet;
use std::path::Path;

use prost::Message;

use super::bundle::Bundle;
use crate::proto::tensorflow::{MetaGraphDef, SavedModel, TrackableObjectGraph, attr_value, saved_object, tensor_info};
use crate::tensor::TensorData;

/// The file a SavedModel's graphs are in, binary or text.
pub const SAVED_MODEL_PB: &str = "saved_model.pb";
pub const SAVED_MODEL_PBTXT: &str = "saved_model.pbtxt";

/// The checkpoint entry holding the object graph.
const OBJECT_GRAPH_KEY: &str = "_CHECKPOINTABLE_OBJECT_GRAPH";

/// Why a SavedModel could not be read: the file and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct SavedModelError {
    pub path: String,
    pub message: String,
}

fn error(path: &Path, message: impl Into<String>) -> SavedModelError {
    SavedModelError { path: path.display().to_string(), message: message.into() }
}

/// Reads `saved_model.pb` (or `saved_model.pbtxt`) in `dir`.
///
/// # Errors
/// When neither file is there or it does not decode.
pub fn read_saved_model(dir: &Path) -> Result<SavedModel, SavedModelError> {
    let pb = dir.join(SAVED_MODEL_PB);
    if pb.is_file() {
        let bytes = std::fs::read(&pb).map_err(|e| error(&pb, format!("cannot read: {e}")))?;
        return SavedModel::decode(bytes.as_slice()).map_err(|e| error(&pb, format!("not a SavedModel: {e}")));
    }
    let txt = dir.join(SAVED_MODEL_PBTXT);
    let text = std::fs::read_to_string(&txt).map_err(|e| error(&txt, format!("cannot read: {e}")))?;
    let pool = crate::config::descriptor_pool().map_err(|e| error(&txt, e))?;
    let descriptor =
        pool.get_message_by_name("tensorflow.SavedModel").ok_or_else(|| error(&txt, "no SavedModel descriptor"))?;
    prost_reflect::DynamicMessage::parse_text_format(descriptor, &text)
        .map_err(|e| error(&txt, format!("not a text-format SavedModel: {e}")))?
        .transcode_to::<SavedModel>()
        .map_err(|e| error(&txt, e.to_string()))
}

/// The MetaGraphDef whose tags are exactly `tags` (as a set), as
/// TensorFlow's loader chooses it.
///
/// # Errors
/// When none matches, with TensorFlow's text and the tag sets there are.
pub fn select_meta_graph(model: SavedModel, tags: &[String], path: &Path) -> Result<MetaGraphDef, SavedModelError> {
    let wanted: BTreeSet<&str> = tags.iter().map(String::as_str).collect();
    let tag_set = |m: &MetaGraphDef| -> BTreeSet<String> {
        m.meta_info_def.as_ref().map(|i| i.tags.iter().cloned().collect()).unwrap_or_default()
    };
    let available: Vec<String> = model
        .meta_graphs
        .iter()
        .map(|m| format!("{{ {} }}", tag_set(m).into_iter().collect::<Vec<_>>().join(" ")))
        .collect();
    model
        .meta_graphs
        .into_iter()
        .find(|m| tag_set(m).iter().map(String::as_str).collect::<BTreeSet<_>>() == wanted)
        .ok_or_else(|| {
            error(
                path,
                format!(
                    "Could not find meta graph def matching supplied tags: {{ {} }}. To inspect available tag-sets in the SavedModel, please use the SavedModel CLI: `saved_model_cli` (this one has {})",
                    wanted.into_iter().collect::<Vec<_>>().join(" "),
                    if available.is_empty() { "none".to_string() } else { available.join(", ") }
                ),
            )
        })
}

/// The checkpoint's object graph.
///
/// # Errors
/// When the entry is missing or does not decode.
pub fn checkpoint_object_graph(bundle: &Bundle, path: &Path) -> Result<TrackableObjectGraph, SavedModelError> {
    let t = bundle.read(OBJECT_GRAPH_KEY).map_err(|e| error(path, e.to_string()))?;
    let bytes = match t.data() {
        TensorData::String(v) if v.len() == 1 => &v[0],
        _ => return Err(error(path, format!("{OBJECT_GRAPH_KEY} is not one string"))),
    };
    TrackableObjectGraph::decode(bytes.as_slice())
        .map_err(|e| error(path, format!("{OBJECT_GRAPH_KEY} does not decode: {e}")))
}

/// How a signature's outputs are computed: the top-level call node its
/// first output names, the function it calls, its inputs, and the
/// checkpoint keys of the variables the function captures (its last
/// inputs, in order).
#[derive(Debug, Clone, PartialEq)]
pub struct CallSite {
    pub node: String,
    pub function: String,
    pub inputs: Vec<String>,
    pub captures: Vec<Capture>,
}

/// What a function captures, in the order of its trailing inputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Capture {
    /// A variable: the checkpoint key of its value.
    Variable(String),
    /// A constant: the top-level Const node holding it.
    Constant(String),
    /// A resource such as a lookup table: the call passes its own handle.
    Resource,
}

/// The call behind signature `name` and the checkpoint keys of what it
/// captures.
///
/// # Errors
/// When the signature, its call node, the function's concrete-function
/// record or a captured variable's key cannot be found, or a capture is
/// something other than a variable.
pub fn call_site(
    meta: &MetaGraphDef,
    checkpoint: &TrackableObjectGraph,
    name: &str,
    path: &Path,
) -> Result<CallSite, SavedModelError> {
    let signature = meta.signature_def.get(name).ok_or_else(|| error(path, format!("no signature '{name}'")))?;
    let tensor = signature
        .outputs
        .values()
        .find_map(|t| match &t.encoding {
            Some(tensor_info::Encoding::Name(n)) => Some(n.clone()),
            _ => None,
        })
        .ok_or_else(|| error(path, format!("signature '{name}' has no output given by tensor name")))?;
    let node_name = tensor.split(':').next().unwrap_or_default().trim_start_matches('^');
    let graph = meta.graph_def.as_ref().ok_or_else(|| error(path, "the MetaGraphDef has no graph"))?;
    let node =
        graph.node.iter().find(|n| n.name == node_name).ok_or_else(|| {
            error(path, format!("signature '{name}' names node '{node_name}', which the graph lacks"))
        })?;
    if !matches!(node.op.as_str(), "StatefulPartitionedCall" | "PartitionedCall") {
        return Err(error(
            path,
            format!("signature '{name}' output node '{node_name}' is a {}, not a function call", node.op),
        ));
    }
    let function = match node.attr.get("f").and_then(|a| a.value.as_ref()) {
        Some(attr_value::Value::Func(f)) => f.name.clone(),
        _ => return Err(error(path, format!("call node '{node_name}' names no function"))),
    };
    let captures = captures(meta, checkpoint, &function, path)?;
    Ok(CallSite { node: node_name.to_string(), function, inputs: node.input.clone(), captures })
}

/// What `function` captures, in the order of its trailing inputs: its
/// `bound_inputs` are SavedObjectGraph node ids; a variable's checkpoint key
/// comes from the checkpoint's object graph (same ids), a constant names its
/// top-level Const node, and a resource (a lookup table) is the call's own
/// input.
///
/// # Errors
/// When there is no object graph, a capture is neither a variable nor a
/// constant, or the checkpoint has no value for a variable.
pub fn captures(
    meta: &MetaGraphDef,
    checkpoint: &TrackableObjectGraph,
    function: &str,
    path: &Path,
) -> Result<Vec<Capture>, SavedModelError> {
    let objects = meta.object_graph_def.as_ref().ok_or_else(|| error(path, "the MetaGraphDef has no object graph"))?;
    let bound = objects.concrete_functions.get(function).map(|f| f.bound_inputs.clone()).unwrap_or_default();
    let mut captures = Vec::with_capacity(bound.len());
    for id in bound {
        let object = usize::try_from(id).ok().and_then(|i| objects.nodes.get(i));
        match object.and_then(|o| o.kind.as_ref()) {
            Some(saved_object::Kind::Variable(_)) => {}
            Some(saved_object::Kind::Constant(c)) => {
                captures.push(Capture::Constant(c.operation.clone()));
                continue;
            }
            Some(saved_object::Kind::Resource(_)) => {
                captures.push(Capture::Resource);
                continue;
            }
            other => {
                return Err(error(
                    path,
                    format!(
                        "function '{function}' captures object {id}, which is {}; only variables, constants and lookup tables are supported",
                        match other {
                            Some(saved_object::Kind::CapturedTensor(_)) => "a captured tensor",
                            Some(_) => "neither a variable nor a constant",
                            None => "missing",
                        }
                    ),
                ));
            }
        }
        let key = usize::try_from(id)
            .ok()
            .and_then(|i| checkpoint.nodes.get(i))
            .and_then(|n| n.attributes.iter().find(|a| a.name == "VARIABLE_VALUE"))
            .map(|a| a.checkpoint_key.clone())
            .ok_or_else(|| error(path, format!("the checkpoint has no value for variable object {id}")))?;
        captures.push(Capture::Variable(key));
    }
    Ok(captures)
}
