//! A SavedModel's signatures as one [`Graph`]: every signature's outputs
//! traced back through the top-level graph into the function library, each
//! call inlined with its arguments bound by position, the variables it
//! captures read from the checkpoint as constants, and every TensorFlow op
//! on the way mapped onto a kernel of the registry ([`ops`]).
//!
//! Only what a signature output depends on is imported: the save and
//! restore functions, unused library functions and dead nodes inside used
//! ones (a recurrent layer's peeled first step) are never looked at, and
//! control edges are dropped (no op of a serving path has a side effect).
//! Each function's nodes are visited in dependency order with an explicit
//! stack, so deep graphs need no deep recursion; only nested calls recurse,
//! and their depth is bounded.
//!
//! `While` loops become ONNX Loops (the body subgraph runs TensorFlow's body
//! then its condition); lookup tables take the constants the init op imports
//! into them; TensorFlow 1 graphs, which have no object graph, find their
//! variables' keys through the top-level saver's restore ops.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use super::bundle::Bundle;
use super::meta::{self, SAVED_MODEL_PB, SavedModelError, read_saved_model, select_meta_graph};
use super::ops;
use crate::graph::{Attribute, Dim, Graph, Node, ValueId, ValueInfo};
use crate::proto::tensorflow::{
    FunctionDef, MetaGraphDef, NodeDef, TensorShapeProto, TrackableObjectGraph, attr_value, tensor_info,
};
use crate::tensor::Tensor;
use crate::tensor::proto::{dtype_from_wire, from_proto, wire_dtype_name};

/// The ONNX operator set whose semantics the ONNX operators the importer
/// emits follow (axes and sizes as inputs, Split's `num_outputs`).
pub const OPSET: i64 = 21;

/// How deep function calls may nest before the import gives up.
const MAX_CALL_DEPTH: usize = 64;

/// One input or output of an imported signature, as its SignatureDef
/// describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorRef {
    /// The `TensorInfo.name` (`serving_default_image:0`).
    pub name: String,
    /// The wire `DataType` number (0 = DT_INVALID for a non-tensor such as
    /// the init op's `NoOp`).
    pub dtype: i32,
    /// Dims (-1 = any size), or `None` for an unknown rank.
    pub shape: Option<Vec<i64>>,
    /// The graph value it feeds or fetches; `None` when it is not a tensor
    /// the graph computes.
    pub value: Option<ValueId>,
}

/// One imported SignatureDef.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportedSignature {
    pub method_name: String,
    pub inputs: BTreeMap<String, TensorRef>,
    pub outputs: BTreeMap<String, TensorRef>,
    /// `SignatureDef.defaults`: values for inputs a request may leave out.
    pub defaults: BTreeMap<String, Tensor>,
}

/// A SavedModel as the server runs it.
#[derive(Debug)]
pub struct Imported {
    pub graph: Graph,
    /// Every SignatureDef of the selected MetaGraphDef, by key.
    pub signatures: BTreeMap<String, ImportedSignature>,
}

/// A value of the TensorFlow graph during the import.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Val {
    /// A tensor of the IR graph.
    Tensor(ValueId),
    /// A variable handle: the checkpoint key of its value.
    Resource(String),
    /// A top-level variable handle not (yet) bound to a checkpoint key: only
    /// a function call that captures it gives it one.
    Handle(String),
    /// A top-level lookup table, by node name.
    Table(String),
}

/// Reads the SavedModel in `dir` and imports every signature of the
/// MetaGraphDef tagged with exactly `tags`.
///
/// # Errors
/// When a file is missing or corrupt, no MetaGraphDef has those tags, or a
/// signature needs an op, a function or a variable that cannot be imported;
/// the message names the file and, for ops, the function and node.
pub fn import(dir: &Path, tags: &[String]) -> Result<Imported, SavedModelError> {
    let pb = dir.join(SAVED_MODEL_PB);
    let model = read_saved_model(dir)?;
    let meta = select_meta_graph(model, tags, &pb)?;
    let mut importer = Importer::new(dir, &meta)?;
    let mut signatures = BTreeMap::new();
    for (key, def) in &meta.signature_def {
        let convert = |map: &HashMap<String, crate::proto::tensorflow::TensorInfo>,
                       importer: &mut Importer<'_>,
                       input: bool|
         -> Result<BTreeMap<String, TensorRef>, SavedModelError> {
            let mut out = BTreeMap::new();
            for (alias, info) in map {
                let name = match &info.encoding {
                    Some(tensor_info::Encoding::Name(n)) => n.clone(),
                    _ => {
                        return Err(importer.error(format!(
                            "signature '{key}' {} '{alias}' is not a dense tensor given by name (sparse and composite tensors are not supported)",
                            if input { "input" } else { "output" }
                        )));
                    }
                };
                let shape = info.tensor_shape.as_ref().and_then(shape_dims);
                let value = if info.dtype == 0 {
                    None
                } else if input {
                    Some(importer.placeholder(key, alias, &name)?)
                } else {
                    // The error keeps its own file (a corrupt checkpoint
                    // names the checkpoint, not saved_model.pb).
                    Some(importer.top_level_tensor(&name).map_err(|e| SavedModelError {
                        path: e.path,
                        message: format!("signature '{key}' output '{alias}' ({name}): {}", e.message),
                    })?)
                };
                out.insert(alias.clone(), TensorRef { name, dtype: info.dtype, shape, value });
            }
            Ok(out)
        };
        let inputs = convert(&def.inputs, &mut importer, true)?;
        let outputs = convert(&def.outputs, &mut importer, false)?;
        let mut defaults = BTreeMap::new();
        for (alias, proto) in &def.defaults {
            let tensor = from_proto(proto)
                .map_err(|e| importer.error(format!("signature '{key}' default for input '{alias}': {e}")))?;
            defaults.insert(alias.clone(), tensor);
        }
        signatures
            .insert(key.clone(), ImportedSignature { method_name: def.method_name.clone(), inputs, outputs, defaults });
    }
    let mut graph = importer.finish();
    for s in signatures.values() {
        for id in s.outputs.values().filter_map(|t| t.value) {
            if !graph.outputs.contains(&id) {
                graph.outputs.push(id);
            }
        }
    }
    Ok(Imported { graph, signatures })
}

/// The dims of a shape proto, `None` for an unknown rank.
fn shape_dims(s: &TensorShapeProto) -> Option<Vec<i64>> {
    (!s.unknown_rank).then(|| s.dim.iter().map(|d| d.size).collect())
}

/// An error in the import of one node: the function and node it happened in
/// are added by the caller.
#[derive(Debug)]
pub(super) struct NodeError(pub String);

pub(super) struct Importer<'a> {
    dir: PathBuf,
    pb: PathBuf,
    meta: &'a MetaGraphDef,
    library: HashMap<&'a str, &'a FunctionDef>,
    top: HashMap<&'a str, &'a NodeDef>,
    /// Top-level nodes already imported, and their outputs.
    top_done: HashMap<String, Vec<Val>>,
    /// The checkpoint, and the object graph it holds (absent from
    /// TensorFlow 1 checkpoints), read on first use.
    bundle: Option<Bundle>,
    checkpoint: Option<TrackableObjectGraph>,
    /// The constant holding each checkpoint key's value.
    weights: HashMap<String, ValueId>,
    pub(super) graph: Graph,
    /// Int64 copies of int32 constants, by the original's id.
    widened: HashMap<ValueId, ValueId>,
    depth: usize,
    /// Top-level variables a top-level restore op fills (TensorFlow 1
    /// graphs), by node name, with the checkpoint key it reads.
    restored: HashMap<String, String>,
}

/// Where a node of a function body reads an input from.
enum Source<'n> {
    /// A function argument, by name.
    Arg(&'n str),
    /// Output `index` of a node (flat, across its output args).
    Node(&'n str, OutRef<'n>),
}

/// Which output of a node a reference names.
enum OutRef<'n> {
    /// The flat index (the top-level `node:k` form).
    Flat(usize),
    /// Element `index` of output arg `arg` (the function-body form).
    Arg(&'n str, usize),
}

impl<'a> Importer<'a> {
    fn new(dir: &Path, meta: &'a MetaGraphDef) -> Result<Importer<'a>, SavedModelError> {
        let pb = dir.join(SAVED_MODEL_PB);
        let graph_def = meta.graph_def.as_ref().ok_or_else(|| SavedModelError {
            path: pb.display().to_string(),
            message: "the MetaGraphDef has no graph".into(),
        })?;
        let library = graph_def
            .library
            .iter()
            .flat_map(|l| &l.function)
            .filter_map(|f| f.signature.as_ref().map(|s| (s.name.as_str(), f)))
            .collect();
        Ok(Importer {
            dir: dir.to_path_buf(),
            pb,
            meta,
            library,
            top: graph_def.node.iter().map(|n| (n.name.as_str(), n)).collect(),
            top_done: HashMap::new(),
            bundle: None,
            checkpoint: None,
            weights: HashMap::new(),
            graph: Graph { opset: OPSET, ..Graph::default() },
            widened: HashMap::new(),
            depth: 0,
            restored: restored_variables(&graph_def.node),
        })
    }

    fn error(&self, message: impl Into<String>) -> SavedModelError {
        SavedModelError { path: self.pb.display().to_string(), message: message.into() }
    }

    fn finish(self) -> Graph {
        self.graph
    }

    /// The graph input behind a signature input: a top-level Placeholder.
    fn placeholder(&mut self, key: &str, alias: &str, name: &str) -> Result<ValueId, SavedModelError> {
        let (node_name, _) = split_top_ref(name);
        if let Some(Val::Tensor(id)) = self.top_done.get(node_name).and_then(|v| v.first()) {
            return Ok(*id);
        }
        let node = self.top.get(node_name).copied().ok_or_else(|| {
            self.error(format!("signature '{key}' input '{alias}' names node '{node_name}', which the graph lacks"))
        })?;
        if !matches!(node.op.as_str(), "Placeholder" | "PlaceholderWithDefault") {
            return Err(self.error(format!(
                "signature '{key}' input '{alias}' is fed into node '{node_name}', a {}; only Placeholders can be fed",
                node.op
            )));
        }
        let dtype = match node.attr.get("dtype").and_then(|a| a.value.as_ref()) {
            Some(attr_value::Value::Type(t)) => Some(dtype_from_wire(*t).map_err(|_| {
                self.error(format!(
                    "signature '{key}' input '{alias}' has dtype {}, which the server does not compute with",
                    wire_dtype_name(*t)
                ))
            })?),
            _ => None,
        };
        let shape = match node.attr.get("shape").and_then(|a| a.value.as_ref()) {
            Some(attr_value::Value::Shape(s)) => shape_dims(s).map(|dims| {
                dims.iter().map(|&d| if d < 0 { Dim::Unknown(None) } else { Dim::Known(d as usize) }).collect()
            }),
            _ => None,
        };
        let id = self.graph.values.len();
        self.graph.values.push(ValueInfo { name: node_name.to_string(), dtype, shape });
        self.graph.inputs.push(id);
        self.top_done.insert(node_name.to_string(), vec![Val::Tensor(id)]);
        Ok(id)
    }

    /// The IR value of a top-level tensor name (`node:k`).
    fn top_level_tensor(&mut self, name: &str) -> Result<ValueId, SavedModelError> {
        let (node, index) = split_top_ref(name);
        let outputs = self.eval_top(node)?;
        match outputs.get(index) {
            Some(Val::Tensor(id)) => Ok(*id),
            Some(_) => Err(self.error(format!("'{name}' is a variable handle, not a tensor"))),
            None => Err(self.error(format!("node '{node}' has no output {index}"))),
        }
    }

    /// Imports top-level node `name` and what it depends on.
    fn eval_top(&mut self, name: &str) -> Result<Vec<Val>, SavedModelError> {
        if let Some(v) = self.top_done.get(name) {
            return Ok(v.clone());
        }
        let top = self.top.clone();
        let order = dependency_order(name, |n| {
            let node = top.get(n).ok_or_else(|| format!("the graph has no node '{n}'"))?;
            Ok(node
                .input
                .iter()
                .filter(|i| !i.starts_with('^'))
                .map(|i| split_top_ref(i).0)
                .filter(|dep| !self.top_done.contains_key(*dep))
                .collect())
        })
        .map_err(|e| self.error(e))?;
        for n in order {
            let node = top[n];
            if matches!(node.op.as_str(), "Placeholder" | "PlaceholderWithDefault") {
                return Err(self.error(format!(
                    "a signature output depends on Placeholder '{n}', which no input of the signature feeds"
                )));
            }
            let inputs: Vec<Val> = node
                .input
                .iter()
                .filter(|i| !i.starts_with('^'))
                .map(|i| {
                    let (dep, k) = split_top_ref(i);
                    self.top_done[dep].get(k).cloned().ok_or_else(|| {
                        self.error(format!("node '{n}' reads output {k} of '{dep}', which has no such output"))
                    })
                })
                .collect::<Result<_, _>>()?;
            let outputs = if matches!(node.op.as_str(), "HashTableV2" | "HashTable") {
                // A lookup table: its contents come from the init op (see
                // `table_contents`) when a lookup reads it.
                vec![Val::Table(n.to_string())]
            } else if matches!(node.op.as_str(), "VarHandleOp" | "VariableV2" | "Variable") {
                // A TensorFlow 1 graph restores its variables with top-level
                // ops; a TensorFlow 2 one binds them to the functions that
                // capture them (the object graph says how).
                match (self.restored.get(n).cloned(), node.op.as_str()) {
                    (Some(key), "VarHandleOp") => vec![Val::Resource(key)],
                    (Some(key), _) => vec![Val::Tensor(self.weight(&key)?)],
                    (None, "VarHandleOp") => vec![Val::Handle(n.to_string())],
                    (None, _) => {
                        return Err(self.error(format!("variable '{n}' is restored by no top-level restore op")));
                    }
                }
            } else {
                self.node(node, inputs, "", "the top-level graph")?
            };
            self.top_done.insert(n.to_string(), outputs);
        }
        Ok(self.top_done[name].clone())
    }

    /// Imports one node whose inputs are imported; calls are inlined.
    fn node(
        &mut self,
        node: &NodeDef,
        mut inputs: Vec<Val>,
        prefix: &str,
        function: &str,
    ) -> Result<Vec<Val>, SavedModelError> {
        let name = format!("{prefix}{}", node.name);
        let called = match node.op.as_str() {
            "StatefulPartitionedCall" | "PartitionedCall" => match node.attr.get("f").and_then(|a| a.value.as_ref()) {
                Some(attr_value::Value::Func(f)) => Some(f.name.clone()),
                _ => return Err(self.error(format!("{function}, node '{}': the call names no function", node.name))),
            },
            op if self.library.contains_key(op) => Some(op.to_string()),
            _ => None,
        };
        if let Some(callee) = called {
            // Top-level calls receive their captured variables as handles:
            // the object graph says which checkpoint key each one is.
            if inputs.iter().any(|v| matches!(v, Val::Handle(_))) {
                let captured = self.captures(&callee)?;
                let first = inputs.len().saturating_sub(captured.len());
                for (slot, capture) in inputs[first..].iter_mut().zip(captured) {
                    *slot = match capture {
                        meta::Capture::Resource => slot.clone(),
                        meta::Capture::Variable(key) => Val::Resource(key),
                        meta::Capture::Constant(node) => self
                            .eval_top(&node)?
                            .into_iter()
                            .next()
                            .ok_or_else(|| self.error(format!("captured constant '{node}' has no value")))?,
                    };
                }
                if let Some(Val::Handle(h)) = inputs.iter().find(|v| matches!(v, Val::Handle(_))) {
                    return Err(self.error(format!(
                        "call '{}' passes variable '{h}' to '{callee}', but the object graph binds no variable there",
                        node.name
                    )));
                }
            }
            return self.call(&callee, inputs, &format!("{name}/"));
        }
        if matches!(node.op.as_str(), "While" | "StatelessWhile") {
            return self.while_loop(node, inputs, &name, function);
        }
        if matches!(node.op.as_str(), "LookupTableFindV2" | "LookupTableSizeV2") {
            return self.lookup(node, &inputs, &name, function);
        }
        if node.op == "ReadVariableOp" {
            return match inputs.first() {
                Some(Val::Resource(key)) => {
                    let key = key.clone();
                    Ok(vec![Val::Tensor(self.weight(&key)?)])
                }
                Some(Val::Handle(h)) => Err(self.error(format!(
                    "{function}, node '{}': variable '{h}' is read outside a function, but no top-level restore op fills it",
                    node.name
                ))),
                _ => Err(self.error(format!("{function}, node '{}': ReadVariableOp needs a variable", node.name))),
            };
        }
        let tensors: Vec<ValueId> = inputs
            .iter()
            .map(|v| match v {
                Val::Tensor(id) => Ok(*id),
                _ => Err(self.error(format!(
                    "{function}, node '{}' ({}): takes a variable handle where a tensor is expected",
                    node.name, node.op
                ))),
            })
            .collect::<Result<_, _>>()?;
        ops::import_op(self, node, &name, tensors, &inputs).map_err(|NodeError(message)| {
            self.error(format!("function '{function}', node '{}' ({}): {message}", node.name, node.op))
        })
    }

    /// A While loop as an ONNX Loop: the condition on the initial values
    /// is inlined before it, and the body subgraph runs TensorFlow's body
    /// then its condition on the new values. Variables carried through the
    /// loop stay what they are (their reads become the body's constants);
    /// only tensors are carried at run time.
    fn while_loop(
        &mut self,
        node: &NodeDef,
        inputs: Vec<Val>,
        name: &str,
        function: &str,
    ) -> Result<Vec<Val>, SavedModelError> {
        let func = |attr: &str| match node.attr.get(attr).and_then(|a| a.value.as_ref()) {
            Some(attr_value::Value::Func(f)) => Ok(f.name.clone()),
            _ => Err(self.error(format!("{function}, node '{}': the loop names no '{attr}' function", node.name))),
        };
        let (cond, body) = (func("cond")?, func("body")?);
        let first = match self.call(&cond, inputs.clone(), &format!("{name}/cond/"))?.first() {
            Some(Val::Tensor(id)) => *id,
            _ => {
                return Err(self.error(format!("{function}, node '{}': the loop condition is not a tensor", node.name)));
            }
        };
        let outer = std::mem::replace(&mut self.graph, Graph { opset: OPSET, ..Graph::default() });
        let outer_weights = std::mem::take(&mut self.weights);
        let outer_widened = std::mem::take(&mut self.widened);
        let built = self.loop_body(&cond, &body, &inputs, name, &node.name, function);
        let subgraph = std::mem::replace(&mut self.graph, outer);
        self.weights = outer_weights;
        self.widened = outer_widened;
        built?;
        let carried: Vec<Option<ValueId>> = inputs
            .iter()
            .filter_map(|v| match v {
                Val::Tensor(id) => Some(Some(*id)),
                _ => None,
            })
            .collect();
        let mut loop_inputs = vec![None, Some(first)];
        loop_inputs.extend(&carried);
        let outputs =
            self.emit(name, "Loop", loop_inputs, carried.len(), vec![("body", Attribute::Graph(Box::new(subgraph)))]);
        let mut results = outputs.into_iter();
        Ok(inputs
            .into_iter()
            .map(|v| match v {
                Val::Tensor(_) => Val::Tensor(results.next().expect("one output per carried tensor")),
                other => other,
            })
            .collect())
    }

    /// Fills `self.graph` (a fresh graph) with a Loop body: inputs the
    /// iteration number, the condition and the carried tensors; outputs the
    /// condition on the new values and the new values.
    fn loop_body(
        &mut self,
        cond: &str,
        body: &str,
        inputs: &[Val],
        name: &str,
        node: &str,
        function: &str,
    ) -> Result<(), SavedModelError> {
        let input = |im: &mut Self, value: String| {
            let id = im.graph.values.len();
            im.graph.values.push(ValueInfo { name: value, dtype: None, shape: None });
            im.graph.inputs.push(id);
            id
        };
        input(self, format!("{name}/iteration"));
        input(self, format!("{name}/condition"));
        let args: Vec<Val> = inputs
            .iter()
            .enumerate()
            .map(|(k, v)| match v {
                Val::Tensor(_) => Val::Tensor(input(self, format!("{name}/var_{k}"))),
                other => other.clone(),
            })
            .collect();
        let next = self.call(body, args, &format!("{name}/body/"))?;
        if next.len() != inputs.len() {
            return Err(self.error(format!(
                "{function}, node '{node}': the loop body returns {} values for {} loop variables",
                next.len(),
                inputs.len()
            )));
        }
        let mut outputs = Vec::new();
        for (k, (before, after)) in inputs.iter().zip(&next).enumerate() {
            match (before, after) {
                (Val::Tensor(_), Val::Tensor(id)) => outputs.push(*id),
                (Val::Resource(a), Val::Resource(b)) if a == b => {}
                (Val::Table(a), Val::Table(b)) if a == b => {}
                _ => {
                    return Err(self.error(format!(
                        "{function}, node '{node}': loop variable {k} changes from {before:?} to {after:?}; only tensors may change in a loop"
                    )));
                }
            }
        }
        let again = self.call(cond, next, &format!("{name}/cond_next/"))?;
        match again.first() {
            Some(Val::Tensor(id)) => outputs.insert(0, *id),
            _ => return Err(self.error(format!("{function}, node '{node}': the loop condition is not a tensor"))),
        }
        self.graph.outputs = outputs;
        Ok(())
    }

    /// A lookup in a table the init op fills with constants: the keys and
    /// values become attributes of a `tf.LookupTableFind` node.
    fn lookup(
        &mut self,
        node: &NodeDef,
        inputs: &[Val],
        name: &str,
        function: &str,
    ) -> Result<Vec<Val>, SavedModelError> {
        let at = |what: &str| format!("function '{function}', node '{}' ({}): {what}", node.name, node.op);
        let table = match inputs.first() {
            Some(Val::Table(t)) => t.clone(),
            _ => return Err(self.error(at("the table is not a top-level HashTableV2"))),
        };
        let (keys, values) = self.table_contents(&table)?;
        if node.op == "LookupTableSizeV2" {
            let size = Tensor::from_i64(vec![], vec![keys.len() as i64]).expect("scalar");
            return Ok(vec![Val::Tensor(self.constant(name, size))]);
        }
        let operands: Vec<Option<ValueId>> = inputs[1..]
            .iter()
            .map(|v| match v {
                Val::Tensor(id) => Ok(Some(*id)),
                _ => Err(self.error(at("the keys and the default value must be tensors"))),
            })
            .collect::<Result<_, _>>()?;
        if operands.len() != 2 {
            return Err(self.error(at("needs a table, keys and a default value")));
        }
        let attrs = vec![("keys", Attribute::Tensor(keys)), ("values", Attribute::Tensor(values))];
        Ok(vec![Val::Tensor(self.emit(name, "tf.LookupTableFind", operands, 1, attrs)[0])])
    }

    /// The keys and values the init op imports into top-level table
    /// `table`: a top-level call whose function runs `LookupTableImportV2`
    /// (or `InitializeTableV2`) on the table, with constant keys and values
    /// (passed in from top-level Consts or made inside the function).
    fn table_contents(&mut self, table: &str) -> Result<(Tensor, Tensor), SavedModelError> {
        let calls: Vec<&NodeDef> = self
            .top
            .values()
            .filter(|n| matches!(n.op.as_str(), "StatefulPartitionedCall" | "PartitionedCall"))
            .copied()
            .collect();
        for call in calls {
            let Some(attr_value::Value::Func(f)) = call.attr.get("f").and_then(|a| a.value.as_ref()) else { continue };
            let Some(fdef) = self.library.get(f.name.as_str()).copied() else { continue };
            let Some(signature) = fdef.signature.as_ref() else { continue };
            let arg_input = |arg: &str| -> Option<&str> {
                let k = signature.input_arg.iter().position(|a| a.name == arg)?;
                call.input.get(k).map(|i| split_top_ref(i).0)
            };
            for init in
                fdef.node_def.iter().filter(|n| matches!(n.op.as_str(), "LookupTableImportV2" | "InitializeTableV2"))
            {
                if init.input.first().and_then(|h| arg_input(h)) != Some(table) {
                    continue;
                }
                let operand = |k: usize| -> Result<Tensor, SavedModelError> {
                    let r = init.input.get(k).map(String::as_str).unwrap_or_default();
                    let node = match parse_body_ref(r) {
                        Source::Arg(a) => arg_input(a).and_then(|n| self.top.get(n).copied()),
                        Source::Node(n, _) => fdef.node_def.iter().find(|d| d.name == n),
                    };
                    match node {
                        Some(c) if c.op == "Const" => self.const_tensor(c).map_err(|NodeError(m)| self.error(m)),
                        _ => Err(self.error(format!(
                            "table '{table}' is filled from '{r}', which is not a constant (tables read from files, as TextVectorization's, are not supported)"
                        ))),
                    }
                };
                let (keys, values) = (operand(1)?, operand(2)?);
                if keys.len() != values.len() {
                    return Err(self.error(format!(
                        "table '{table}' gets {} keys but {} values",
                        keys.len(),
                        values.len()
                    )));
                }
                return Ok((keys, values));
            }
        }
        Err(self.error(format!(
            "no init op fills lookup table '{table}' with constants (tables read from files, as TextVectorization's, are not supported)"
        )))
    }

    /// Inlines function `name` called with `args`; returns its outputs.
    fn call(&mut self, name: &str, args: Vec<Val>, prefix: &str) -> Result<Vec<Val>, SavedModelError> {
        let f = *self.library.get(name).ok_or_else(|| self.error(format!("the library has no function '{name}'")))?;
        let signature =
            f.signature.as_ref().ok_or_else(|| self.error(format!("function '{name}' has no signature")))?;
        if args.len() != signature.input_arg.len() {
            return Err(self.error(format!(
                "function '{name}' takes {} arguments, but the call passes {}",
                signature.input_arg.len(),
                args.len()
            )));
        }
        if self.depth >= MAX_CALL_DEPTH {
            return Err(self.error(format!("function calls nest deeper than {MAX_CALL_DEPTH} at '{name}'")));
        }
        self.depth += 1;
        let result = self.call_body(f, name, args, prefix);
        self.depth -= 1;
        result
    }

    fn call_body(
        &mut self,
        f: &FunctionDef,
        name: &str,
        args: Vec<Val>,
        prefix: &str,
    ) -> Result<Vec<Val>, SavedModelError> {
        let signature = f.signature.as_ref().expect("checked by call");
        let args: HashMap<&str, Val> = signature.input_arg.iter().map(|a| a.name.as_str()).zip(args).collect();
        let nodes: HashMap<&str, &NodeDef> = f.node_def.iter().map(|n| (n.name.as_str(), n)).collect();
        let rets: Vec<&str> = signature
            .output_arg
            .iter()
            .map(|a| {
                f.ret.get(&a.name).map(String::as_str).ok_or_else(|| {
                    self.error(format!("function '{name}' does not say what its output '{}' is", a.name))
                })
            })
            .collect::<Result<_, _>>()?;
        let mut done: HashMap<&str, Vec<Val>> = HashMap::new();
        fn source<'r>(r: &'r str, args: &HashMap<&str, Val>, name: &str) -> Result<Option<&'r str>, String> {
            match parse_body_ref(r) {
                Source::Arg(a) if args.contains_key(a) => Ok(None),
                Source::Arg(a) => {
                    Err(format!("function '{name}' reads '{a}', which is neither an argument nor a node output"))
                }
                Source::Node(n, _) => Ok(Some(n)),
            }
        }
        for ret in &rets {
            let Some(root) = source(ret, &args, name).map_err(|e| self.error(e))? else { continue };
            let order = dependency_order(root, |n| {
                let node = nodes.get(n).ok_or_else(|| format!("function '{name}' has no node '{n}'"))?;
                let mut deps = Vec::new();
                for i in node.input.iter().filter(|i| !i.starts_with('^')) {
                    if let Some(d) = source(i, &args, name)?
                        && !done.contains_key(d)
                    {
                        deps.push(d);
                    }
                }
                Ok(deps)
            })
            .map_err(|e| self.error(e))?;
            for n in order {
                let node = nodes[n];
                let inputs = node
                    .input
                    .iter()
                    .filter(|i| !i.starts_with('^'))
                    .map(|i| self.resolve(i, &args, &nodes, &done, &format!("node '{n}'"), name))
                    .collect::<Result<Vec<_>, _>>()?;
                let outputs = self.node(node, inputs, prefix, name)?;
                done.insert(n, outputs);
            }
        }
        rets.iter().map(|r| self.resolve(r, &args, &nodes, &done, "its return values", name)).collect()
    }

    /// The value a function-body reference names.
    fn resolve(
        &self,
        r: &str,
        args: &HashMap<&str, Val>,
        nodes: &HashMap<&str, &NodeDef>,
        done: &HashMap<&str, Vec<Val>>,
        reader: &str,
        function: &str,
    ) -> Result<Val, SavedModelError> {
        match parse_body_ref(r) {
            Source::Arg(a) => Ok(args[a].clone()),
            Source::Node(n, out) => {
                let outputs = &done[n];
                let op = nodes.get(n).map_or("", |p| p.op.as_str());
                let index = match out {
                    OutRef::Flat(k) => k,
                    OutRef::Arg(arg, i) => ops::output_offset(op, arg).saturating_add(i),
                };
                outputs.get(index).cloned().ok_or_else(|| {
                    self.error(format!(
                        "function '{function}', {reader}: reads '{r}', an output the import does not provide ({op} gives {} here)",
                        outputs.len()
                    ))
                })
            }
        }
    }

    /// What `function` captures: checkpoint keys and constants.
    fn captures(&mut self, function: &str) -> Result<Vec<meta::Capture>, SavedModelError> {
        if self.checkpoint.is_none() {
            let variables = self.dir.join("variables");
            let checkpoint = meta::checkpoint_object_graph(self.bundle()?, &variables)?;
            self.checkpoint = Some(checkpoint);
        }
        meta::captures(self.meta, self.checkpoint.as_ref().expect("read above"), function, &self.pb)
    }

    /// The checkpoint, opened on first use.
    fn bundle(&mut self) -> Result<&Bundle, SavedModelError> {
        if self.bundle.is_none() {
            let bundle = Bundle::open(&self.dir.join("variables").join("variables"))
                .map_err(|e| SavedModelError { path: e.path, message: e.message })?;
            self.bundle = Some(bundle);
        }
        Ok(self.bundle.as_ref().expect("opened above"))
    }

    /// The constant holding the value of checkpoint key `key`, read once.
    fn weight(&mut self, key: &str) -> Result<ValueId, SavedModelError> {
        if let Some(&id) = self.weights.get(key) {
            return Ok(id);
        }
        let tensor = self.bundle()?.read(key).map_err(|e| SavedModelError { path: e.path, message: e.message })?;
        let id = self.constant(key, tensor);
        self.weights.insert(key.to_string(), id);
        Ok(id)
    }

    /// A new constant value.
    pub(super) fn constant(&mut self, name: &str, tensor: Tensor) -> ValueId {
        let id = self.graph.values.len();
        self.graph.values.push(ValueInfo {
            name: name.to_string(),
            dtype: Some(tensor.dtype()),
            shape: Some(tensor.shape().iter().map(|&d| Dim::Known(d)).collect()),
        });
        self.graph.constants.insert(id, tensor);
        id
    }

    /// The constant behind `id`, if it is one.
    pub(super) fn constant_value(&self, id: ValueId) -> Option<&Tensor> {
        self.graph.constants.get(&id)
    }

    /// `id` as int64 (the ONNX operators' index type): int32 constants are
    /// converted once, other values get a Cast.
    pub(super) fn int64(&mut self, name: &str, id: ValueId) -> ValueId {
        if let Some(&w) = self.widened.get(&id) {
            return w;
        }
        let widened = match self.graph.constants.get(&id).map(Tensor::data) {
            Some(crate::tensor::TensorData::Int64(_)) => return id,
            Some(crate::tensor::TensorData::Int32(v)) => {
                let t = Tensor::from_i64(
                    self.graph.constants[&id].shape().to_vec(),
                    v.iter().map(|&x| i64::from(x)).collect(),
                )
                .expect("same element count");
                self.constant(&format!("{name}/int64"), t)
            }
            _ => self.emit(&format!("{name}/int64"), "Cast", vec![Some(id)], 1, vec![("to", Attribute::Int(7))])[0],
        };
        self.widened.insert(id, widened);
        widened
    }

    /// Appends an IR node with `outputs` fresh values.
    pub(super) fn emit(
        &mut self,
        name: &str,
        op: &str,
        inputs: Vec<Option<ValueId>>,
        outputs: usize,
        attributes: Vec<(&str, Attribute)>,
    ) -> Vec<ValueId> {
        let first = self.graph.values.len();
        for k in 0..outputs {
            let value = if k == 0 { name.to_string() } else { format!("{name}:{k}") };
            self.graph.values.push(ValueInfo { name: value, dtype: None, shape: None });
        }
        let ids: Vec<ValueId> = (first..first + outputs).collect();
        self.graph.nodes.push(Node {
            name: name.to_string(),
            op: op.to_string(),
            inputs,
            outputs: ids.clone(),
            attributes: attributes.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        });
        ids
    }

    /// Decodes a Const node's tensor.
    pub(super) fn const_tensor(&self, node: &NodeDef) -> Result<Tensor, NodeError> {
        match node.attr.get("value").and_then(|a| a.value.as_ref()) {
            Some(attr_value::Value::Tensor(t)) => {
                from_proto(t).map_err(|e| NodeError(format!("its value cannot be used: {e}")))
            }
            _ => Err(NodeError("it has no tensor value".into())),
        }
    }
}

/// The variables a top-level saver restores, with their checkpoint keys:
/// every `Assign` (reference variables) or `AssignVariableOp` (resource
/// variables) whose value is, through Identity ops, output `k` of a
/// `RestoreV2` reads the `k`-th of that op's constant `tensor_names`. This is
/// how TensorFlow 1 graphs (and TensorFlow Serving's session loading) tie a
/// variable to its key.
fn restored_variables(nodes: &[NodeDef]) -> HashMap<String, String> {
    let by_name: HashMap<&str, &NodeDef> = nodes.iter().map(|n| (n.name.as_str(), n)).collect();
    let names_of = |restore: &NodeDef| -> Option<Vec<String>> {
        let names = by_name.get(split_top_ref(restore.input.get(1)?).0)?;
        match names.attr.get("value").and_then(|a| a.value.as_ref()) {
            Some(attr_value::Value::Tensor(t)) => match from_proto(t).ok()?.into_data() {
                crate::tensor::TensorData::String(v) => {
                    Some(v.into_iter().map(|b| String::from_utf8_lossy(&b).into_owned()).collect())
                }
                _ => None,
            },
            _ => None,
        }
    };
    let mut out = HashMap::new();
    for node in nodes.iter().filter(|n| matches!(n.op.as_str(), "Assign" | "AssignVariableOp")) {
        let (Some(variable), Some(value)) = (node.input.first(), node.input.get(1)) else { continue };
        let mut source = split_top_ref(value);
        // Follow Identity ops back to the restore (bounded: no cycles).
        for _ in 0..8 {
            match by_name.get(source.0) {
                Some(n) if n.op == "Identity" && !n.input.is_empty() => source = split_top_ref(&n.input[0]),
                _ => break,
            }
        }
        let Some(restore) = by_name.get(source.0).filter(|n| matches!(n.op.as_str(), "RestoreV2" | "Restore")) else {
            continue;
        };
        if let Some(key) = names_of(restore).and_then(|names| names.get(source.1).cloned()) {
            out.insert(split_top_ref(variable).0.to_string(), key);
        }
    }
    out
}

/// `node:k` (or `node`, `^node`) as the node name and flat output index.
fn split_top_ref(r: &str) -> (&str, usize) {
    let r = r.trim_start_matches('^');
    match r.rsplit_once(':') {
        Some((n, k)) if k.bytes().all(|b| b.is_ascii_digit()) && !k.is_empty() => (n, k.parse().unwrap_or(usize::MAX)),
        _ => (r, 0),
    }
}

/// A function-body reference: `arg`, `node:out_arg:i` or `node:out_arg`.
fn parse_body_ref(r: &str) -> Source<'_> {
    let mut parts = r.splitn(3, ':');
    let first = parts.next().unwrap_or_default();
    match (parts.next(), parts.next()) {
        (None, _) => Source::Arg(first),
        (Some(k), None) if k.bytes().all(|b| b.is_ascii_digit()) => {
            Source::Node(first, OutRef::Flat(k.parse().unwrap_or(usize::MAX)))
        }
        (Some(arg), None) => Source::Node(first, OutRef::Arg(arg, 0)),
        (Some(arg), Some(i)) => Source::Node(first, OutRef::Arg(arg, i.parse().unwrap_or(usize::MAX))),
    }
}

/// The nodes `root` depends on (through `deps`), and `root`, each after its
/// dependencies; an explicit stack, so long chains need no deep recursion.
///
/// # Errors
/// When `deps` fails or the dependencies form a cycle.
fn dependency_order<'n>(
    root: &'n str,
    mut deps: impl FnMut(&'n str) -> Result<Vec<&'n str>, String>,
) -> Result<Vec<&'n str>, String> {
    #[derive(Clone, Copy, PartialEq)]
    enum State {
        Open,
        Done,
    }
    let mut state: HashMap<&str, State> = HashMap::new();
    let mut order = Vec::new();
    let mut stack = vec![(root, false)];
    while let Some((n, expanded)) = stack.pop() {
        if expanded {
            state.insert(n, State::Done);
            order.push(n);
            continue;
        }
        match state.get(n) {
            Some(State::Done) => continue,
            Some(State::Open) => return Err(format!("node '{n}' depends on itself")),
            None => {}
        }
        state.insert(n, State::Open);
        stack.push((n, true));
        for d in deps(n)? {
            match state.get(d) {
                Some(State::Done) => {}
                Some(State::Open) => return Err(format!("node '{d}' depends on itself")),
                None => stack.push((d, false)),
            }
        }
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        assert_eq!(split_top_ref("StatefulPartitionedCall_1:0"), ("StatefulPartitionedCall_1", 0));
        assert_eq!(split_top_ref("a:b:3"), ("a:b", 3));
        assert_eq!(split_top_ref("^NoOp"), ("NoOp", 0));
        assert!(matches!(parse_body_ref("keras_tensor"), Source::Arg("keras_tensor")));
        assert!(matches!(parse_body_ref("conv:output:0"), Source::Node("conv", OutRef::Arg("output", 0))));
        assert!(matches!(parse_body_ref("split:output:3"), Source::Node("split", OutRef::Arg("output", 3))));
    }

    #[test]
    fn dependency_order_puts_inputs_first_and_finds_cycles() {
        let graph: HashMap<&str, Vec<&str>> =
            HashMap::from([("y", vec!["a", "b"]), ("a", vec!["x"]), ("b", vec!["x", "a"]), ("x", vec![])]);
        let order = dependency_order("y", |n| Ok(graph[n].clone())).unwrap();
        let at = |n| order.iter().position(|m| *m == n).unwrap();
        assert_eq!(order.len(), 4);
        assert!(at("x") < at("a") && at("a") < at("b") && at("b") < at("y"), "{order:?}");
        let cyclic: HashMap<&str, Vec<&str>> = HashMap::from([("a", vec!["b"]), ("b", vec!["a"])]);
        assert!(dependency_order("a", |n| Ok(cyclic[n].clone())).unwrap_err().contains("depends on itself"));
    }
}
