//! The code generated from proto/ by build.rs, one module per proto package,
//! and the encoded descriptor set behind server reflection.
//!
//! Nothing else lives here: conversions are in `tensor/`, services in
//! `service/`.

#![allow(clippy::all, missing_docs, rustdoc::all)]

/// The FileDescriptorSet compiled from proto/ (with its imports), as served
/// by reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/ferroserve_descriptor.binpb"));

#[rustfmt::skip]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/ferroserve_protos.rs"));
}

pub use generated::*;

#[cfg(test)]
mod tests {
    use prost::Message;

    #[test]
    fn descriptor_set_decodes_and_holds_the_services() {
        let fds = prost_types::FileDescriptorSet::decode(super::FILE_DESCRIPTOR_SET).unwrap();
        let names: Vec<&str> = fds.file.iter().map(|f| f.name()).collect();
        assert!(names.contains(&"tensorflow_serving/apis/prediction_service.proto"));
        assert!(names.contains(&"tensorflow_serving/apis/model_service.proto"));
        assert!(names.contains(&"google/protobuf/any.proto"));
    }
}
