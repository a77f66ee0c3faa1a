//! The framework-neutral model IR: values, nodes with attributes, constants,
//! and the graph's declared inputs and outputs.
//!
//! Importers (ONNX today, SavedModel later) produce a [`Graph`]; the runtime
//! turns it into an execution plan. Nothing here knows about a file format or
//! a wire protocol, and nothing here executes anything.

use std::collections::HashMap;
use std::fmt;

use crate::tensor::{DataType, Tensor};

/// Index of a value in [`Graph::values`].
pub type ValueId = usize;

/// One dimension of a declared shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    /// A fixed size.
    Known(usize),
    /// A size fixed only at run time, with the symbolic name the model gave
    /// it, if any (`batch`, `N`).
    Unknown(Option<String>),
}

impl Dim {
    /// The TensorFlow signature form of the dim: its size, or -1.
    pub fn as_tf_dim(&self) -> i64 {
        match self {
            Dim::Known(n) => i64::try_from(*n).unwrap_or(i64::MAX),
            Dim::Unknown(_) => -1,
        }
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Known(n) => write!(f, "{n}"),
            Dim::Unknown(_) => f.write_str("-1"),
        }
    }
}

/// What is known about a value before the model runs.
#[derive(Debug, Clone, PartialEq)]
pub struct ValueInfo {
    /// The name the model file gave the value; signature aliases and
    /// `TensorInfo.name`s derive from it.
    pub name: String,
    /// The element type, when the model declares it.
    pub dtype: Option<DataType>,
    /// The shape, when the model declares it (`None` = unknown rank).
    pub shape: Option<Vec<Dim>>,
}

/// A node attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum Attribute {
    Int(i64),
    Float(f32),
    String(String),
    Ints(Vec<i64>),
    Floats(Vec<f32>),
    Strings(Vec<String>),
    Tensor(Tensor),
    /// A subgraph (a Loop's body, an If's branches). Its inputs are the
    /// operator's formal ones followed by the enclosing graph's values it
    /// reads, which the node passes as extra inputs after its own.
    Graph(Box<Graph>),
}

/// One operation of the graph.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The node's name in the model file (or a generated one); errors name it.
    pub name: String,
    /// The operator, in the importer's naming (ONNX op types).
    pub op: String,
    /// Inputs in operator order; `None` is an omitted optional input.
    pub inputs: Vec<Option<ValueId>>,
    /// Outputs in operator order.
    pub outputs: Vec<ValueId>,
    /// Attributes by name.
    pub attributes: HashMap<String, Attribute>,
}

/// A whole model: values, constants, nodes in topological order, and the
/// values the outside world feeds and fetches.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Graph {
    /// Every value of the graph, indexed by [`ValueId`].
    pub values: Vec<ValueInfo>,
    /// Values with a fixed content (weights), by id.
    pub constants: HashMap<ValueId, Tensor>,
    /// The nodes, each after the nodes producing its inputs.
    pub nodes: Vec<Node>,
    /// Values fed by the caller.
    pub inputs: Vec<ValueId>,
    /// Values returned to the caller.
    pub outputs: Vec<ValueId>,
    /// The operator set version the model was written against (ONNX's
    /// default domain); kernels whose semantics changed between versions
    /// read it.
    pub opset: i64,
    /// In a subgraph: how many of the last inputs are the enclosing graph's
    /// values it reads (the rest are the operator's formal inputs).
    pub captured: usize,
}

impl Node {
    /// An integer attribute, or `default` when absent.
    ///
    /// # Errors
    /// When the attribute exists with another type.
    pub fn int_attr(&self, name: &str, default: i64) -> Result<i64, AttributeError> {
        match self.attributes.get(name) {
            None => Ok(default),
            Some(Attribute::Int(v)) => Ok(*v),
            Some(_) => Err(self.attr_error(name, "an integer")),
        }
    }

    /// A float attribute, or `default` when absent.
    ///
    /// # Errors
    /// When the attribute exists with another type.
    pub fn float_attr(&self, name: &str, default: f32) -> Result<f32, AttributeError> {
        match self.attributes.get(name) {
            None => Ok(default),
            Some(Attribute::Float(v)) => Ok(*v),
            Some(_) => Err(self.attr_error(name, "a float")),
        }
    }

    /// An integer attribute, or `None` when absent (for attributes whose
    /// absence means something no value does).
    ///
    /// # Errors
    /// When the attribute exists with another type.
    pub fn opt_int_attr(&self, name: &str) -> Result<Option<i64>, AttributeError> {
        self.attributes.contains_key(name).then(|| self.int_attr(name, 0)).transpose()
    }

    /// A float attribute, or `None` when absent.
    ///
    /// # Errors
    /// When the attribute exists with another type.
    pub fn opt_float_attr(&self, name: &str) -> Result<Option<f32>, AttributeError> {
        self.attributes.contains_key(name).then(|| self.float_attr(name, 0.0)).transpose()
    }

    /// An integer-list attribute, or `None` when absent.
    ///
    /// # Errors
    /// When the attribute exists with another type.
    pub fn ints_attr(&self, name: &str) -> Result<Option<&[i64]>, AttributeError> {
        match self.attributes.get(name) {
            None => Ok(None),
            Some(Attribute::Ints(v)) => Ok(Some(v)),
            Some(_) => Err(self.attr_error(name, "a list of integers")),
        }
    }

    /// A float-list attribute, or `None` when absent.
    ///
    /// # Errors
    /// When the attribute exists with another type.
    pub fn floats_attr(&self, name: &str) -> Result<Option<&[f32]>, AttributeError> {
        match self.attributes.get(name) {
            None => Ok(None),
            Some(Attribute::Floats(v)) => Ok(Some(v)),
            Some(_) => Err(self.attr_error(name, "a list of floats")),
        }
    }

    /// A string attribute, or `None` when absent.
    ///
    /// # Errors
    /// When the attribute exists with another type.
    pub fn string_attr(&self, name: &str) -> Result<Option<&str>, AttributeError> {
        match self.attributes.get(name) {
            None => Ok(None),
            Some(Attribute::String(v)) => Ok(Some(v)),
            Some(_) => Err(self.attr_error(name, "a string")),
        }
    }

    /// A subgraph attribute, or `None` when absent.
    ///
    /// # Errors
    /// When the attribute exists with another type.
    pub fn graph_attr(&self, name: &str) -> Result<Option<&Graph>, AttributeError> {
        match self.attributes.get(name) {
            None => Ok(None),
            Some(Attribute::Graph(g)) => Ok(Some(g)),
            Some(_) => Err(self.attr_error(name, "a graph")),
        }
    }

    fn attr_error(&self, name: &str, expected: &'static str) -> AttributeError {
        AttributeError { node: self.name.clone(), op: self.op.clone(), attribute: name.to_string(), expected }
    }
}

/// An attribute of the wrong type.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("node '{node}' ({op}): attribute '{attribute}' must be {expected}")]
pub struct AttributeError {
    pub node: String,
    pub op: String,
    pub attribute: String,
    pub expected: &'static str,
}

impl Graph {
    /// The id of the value with this name, if any.
    pub fn value_id(&self, name: &str) -> Option<ValueId> {
        self.values.iter().position(|v| v.name == name)
    }
}
