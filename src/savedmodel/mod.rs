//! TensorFlow SavedModel directories, read without TensorFlow.
//!
//! `sstable` reads the sorted-table format of a checkpoint's index;
//! `bundle` reads the checkpoint itself (the TensorBundle of
//! `variables/variables.index` and its data shards), tensor by tensor with
//! their checksums; `meta` reads `saved_model.pb`: the MetaGraphDef a tag
//! set selects, its signatures, and the checkpoint keys of the variables
//! each signature's function captures.

pub mod bundle;
pub mod meta;
pub mod sstable;
