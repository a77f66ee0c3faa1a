//! GetModelMetadata and GetModelStatus answer as TensorFlow Serving does.

use prost::Message;

use crate::harness::{TestServer, spec};
use ferroserve::proto::tensorflow::serving::{
    GetModelMetadataRequest, GetModelStatusRequest, ModelSpec, SignatureDefMap, model_spec, model_version_status,
};
use ferroserve::proto::tensorflow::{DataType, tensor_info};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_carries_the_serving_default_signature() {
    let server = TestServer::start().await;
    let mut client = server.prediction().await;
    let response = client
        .get_model_metadata(GetModelMetadataRequest {
            model_spec: spec("mnist"),
            metadata_field: vec!["signature_def".into()],
        })
        .await
        .expect("metadata")
        .into_inner();
    let spec = response.model_spec.unwrap();
    assert_eq!(spec.name, "mnist");
    assert_eq!(spec.signature_name, "", "metadata sets only name and version");
    assert_eq!(spec.version_choice, Some(model_spec::VersionChoice::Version(1)));
    let any = &response.metadata["signature_def"];
    assert_eq!(any.type_url, "type.googleapis.com/tensorflow.serving.SignatureDefMap");
    let map = SignatureDefMap::decode(any.value.as_slice()).unwrap();
    assert_eq!(map.signature_def.len(), 1);
    let sig = &map.signature_def["serving_default"];
    assert_eq!(sig.method_name, "tensorflow/serving/predict");
    let check = |info: &ferroserve::proto::tensorflow::TensorInfo, name: &str, dims: &[i64]| {
        assert_eq!(info.encoding, Some(tensor_info::Encoding::Name(name.into())));
        assert_eq!(info.dtype, DataType::DtFloat as i32);
        let got: Vec<i64> = info.tensor_shape.as_ref().unwrap().dim.iter().map(|d| d.size).collect();
        assert_eq!(got, dims);
    };
    check(&sig.inputs["image"], "image:0", &[-1, 28, 28, 1]);
    check(&sig.outputs["probabilities"], "probabilities:0", &[-1, 10]);
    assert!(sig.defaults.is_empty());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_lists_the_available_version_and_ignores_labels() {
    let server = TestServer::start().await;
    let mut client = server.models().await;
    let specs = [
        spec("mnist"),
        Some(ModelSpec {
            name: "mnist".into(),
            version_choice: Some(model_spec::VersionChoice::Version(1)),
            ..ModelSpec::default()
        }),
        Some(ModelSpec {
            name: "mnist".into(),
            version_choice: Some(model_spec::VersionChoice::VersionLabel("stable".into())),
            ..ModelSpec::default()
        }),
    ];
    for model_spec in specs {
        let response =
            client.get_model_status(GetModelStatusRequest { model_spec }).await.expect("status").into_inner();
        assert_eq!(response.model_version_status.len(), 1);
        let v = &response.model_version_status[0];
        assert_eq!(v.version, 1);
        assert_eq!(v.state, model_version_status::State::Available as i32);
        let status = v.status.as_ref().unwrap();
        assert_eq!((status.error_code, status.error_message.as_str()), (0, ""));
    }
    server.stop().await;
}
