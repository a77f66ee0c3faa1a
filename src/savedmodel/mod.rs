//! TensorFlow SavedModel directories, read without TensorFlow.
//!
//! `sstable` reads the sorted-table format of a checkpoint's index;
//! `bundle` reads the checkpoint itself (the TensorBundle of
//! `variables/variables.index` and its data shards), tensor by tensor with
//! their checksums; `meta` reads `saved_model.pb`: the MetaGraphDef a tag
//! set selects, its signatures, and the checkpoint keys of the variables
//! each signature's function captures; `import` turns the signatures into
//! one graph, inlining the functions they call, with `ops` mapping each
//! TensorFlow op onto the kernels.

pub mod bundle;
pub mod import;
pub mod meta;
mod ops;
pub mod sstable;
