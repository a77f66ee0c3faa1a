pub mod graph;
pub mod kernels;
pub mod proto;
pub mod runtime;
pub mod tensor;
