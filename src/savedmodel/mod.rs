//! TensorFlow SavedModel directories, read without TensorFlow.
//!
//! `sstable` reads the sorted-table format of a checkpoint's index;
//! `bundle` reads the checkpoint itself (the TensorBundle of
//! `variables/variables.index` and its data shards), tensor by tensor with
//! their checksums.

pub mod bundle;
pub mod sstable;
