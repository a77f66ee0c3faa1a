//! Every bad request gets the right code and a message that says what was
//! wrong (TensorFlow Serving's text where it defines one), and the server
//! keeps serving.

use bytes::Bytes;
use tonic::Code;

use crate::harness::{TestServer, cases, float_tensor, predict_request, spec};
use ferroserve::proto::tensorflow::serving::{
    GetModelMetadataRequest, GetModelStatusRequest, ModelSpec, PredictRequest, ReloadConfigRequest, model_spec,
};
use ferroserve::proto::tensorflow::{DataType, TensorProto};
use ferroserve::tensor::proto::shape_proto;

/// How a message is checked.
enum Text {
    Exact(&'static str),
    Starts(&'static str),
    Contains(&'static [&'static str]),
}

fn check(what: &str, status: tonic::Status, code: Code, text: Text) {
    assert_eq!(status.code(), code, "{what}: {}", status.message());
    let m = status.message();
    match text {
        Text::Exact(t) => assert_eq!(m, t, "{what}"),
        Text::Starts(t) => assert!(m.starts_with(t), "{what}: {m}"),
        Text::Contains(parts) => {
            for p in parts {
                assert!(m.contains(p), "{what}: {m:?} lacks {p:?}");
            }
        }
    }
}

fn with_spec(spec: Option<ModelSpec>) -> PredictRequest {
    let mut r = predict_request(&cases()[0]);
    r.model_spec = spec;
    r
}

fn with_input(alias: &str, tensor: TensorProto) -> PredictRequest {
    PredictRequest {
        model_spec: spec("mnist"),
        inputs: [(alias.to_string(), tensor)].into(),
        ..PredictRequest::default()
    }
}

fn image(dtype: DataType, dims: &[i64]) -> TensorProto {
    TensorProto { dtype: dtype as i32, tensor_shape: Some(shape_proto(dims.iter().copied())), ..TensorProto::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predict_errors_have_tensorflow_servings_codes_and_texts() {
    let server = TestServer::start().await;
    let mut client = server.prediction().await;
    let digit = cases()[0].input.clone();
    let versioned = |v| {
        Some(ModelSpec {
            name: "mnist".into(),
            version_choice: Some(model_spec::VersionChoice::Version(v)),
            ..ModelSpec::default()
        })
    };
    let labelled = Some(ModelSpec {
        name: "mnist".into(),
        version_choice: Some(model_spec::VersionChoice::VersionLabel("canary".into())),
        ..ModelSpec::default()
    });
    let signed = Some(ModelSpec { name: "mnist".into(), signature_name: "nope".into(), ..ModelSpec::default() });
    let mut extra = predict_request(&cases()[0]);
    extra.inputs.insert("extra".into(), float_tensor(&[1], vec![1.0]));
    let mut content = image(DataType::DtFloat, &[1, 28, 28, 1]);
    content.tensor_content = Bytes::from_static(&[0, 0, 0, 0, 0]);
    let mut unknown_filter = predict_request(&cases()[0]);
    unknown_filter.output_filter = vec!["nope".into()];
    let mut twice_filter = predict_request(&cases()[0]);
    twice_filter.output_filter = vec!["probabilities".into(), "probabilities".into()];

    let table: Vec<(&str, PredictRequest, Code, Text)> = vec![
        ("no model_spec", with_spec(None), Code::InvalidArgument, Text::Exact("Missing ModelSpec")),
        ("empty request", PredictRequest::default(), Code::InvalidArgument, Text::Exact("Missing ModelSpec")),
        ("empty name", with_spec(spec("")), Code::InvalidArgument, Text::Exact("ModelSpec has no name specified.")),
        (
            "unknown model",
            with_spec(spec("nope")),
            Code::NotFound,
            Text::Exact("Servable not found for request: Latest(nope)"),
        ),
        (
            "unknown version",
            with_spec(versioned(7)),
            Code::NotFound,
            Text::Exact("Servable not found for request: Specific(mnist, 7)"),
        ),
        (
            "unknown label",
            with_spec(labelled),
            Code::InvalidArgument,
            Text::Exact("Unrecognized servable version label: canary"),
        ),
        (
            "unknown signature",
            with_spec(signed),
            Code::FailedPrecondition,
            Text::Exact("Serving signature key \"nope\" not found."),
        ),
        (
            "no inputs",
            PredictRequest { model_spec: spec("mnist"), ..PredictRequest::default() },
            Code::InvalidArgument,
            Text::Exact(
                "input size does not match signature: 0!=1 len({}) != len({image}). Sent extra: {}. Missing but required: {image}.",
            ),
        ),
        (
            "extra input",
            extra,
            Code::InvalidArgument,
            Text::Exact(
                "input size does not match signature: 2!=1 len({extra,image}) != len({image}). Sent extra: {extra}. Missing but required: {}.",
            ),
        ),
        (
            "wrong alias",
            with_input("img", float_tensor(&[1, 28, 28, 1], digit.clone())),
            Code::InvalidArgument,
            Text::Starts(
                "Signature input alias: image(feed name: image:0) not found in request and no default value provided.",
            ),
        ),
        (
            "wrong dtype",
            with_input("image", image(DataType::DtInt32, &[1, 28, 28, 1])),
            Code::InvalidArgument,
            Text::Contains(&["input 'image'", "DT_FLOAT", "[-1,28,28,1]", "DT_INT32", "[1,28,28,1]"]),
        ),
        (
            "wrong rank",
            with_input("image", float_tensor(&[1, 28, 28], digit.clone())),
            Code::InvalidArgument,
            Text::Contains(&["input 'image'", "[-1,28,28,1]", "shape [1,28,28]"]),
        ),
        (
            "wrong fixed dim",
            with_input("image", float_tensor(&[1, 28, 27, 1], digit.clone())),
            Code::InvalidArgument,
            Text::Contains(&["input 'image'", "[1,28,27,1]"]),
        ),
        (
            "unsupported dtype",
            with_input("image", image(DataType::DtHalf, &[1])),
            Code::InvalidArgument,
            Text::Starts("tensor parsing error: image (dtype DT_HALF is not supported"),
        ),
        (
            "negative dim",
            with_input("image", image(DataType::DtFloat, &[-1, 28, 28, 1])),
            Code::InvalidArgument,
            Text::Starts("tensor parsing error: image (tensor_shape dim 0 is -1"),
        ),
        (
            "huge shape",
            with_input("image", image(DataType::DtFloat, &[1 << 40, 28, 28, 1])),
            Code::InvalidArgument,
            Text::Contains(&["tensor parsing error: image", "limit"]),
        ),
        (
            "short tensor_content",
            with_input("image", content),
            Code::InvalidArgument,
            Text::Exact(
                "tensor parsing error: image (tensor_content holds 5 bytes but DT_FLOAT [1,28,28,1] needs 3136)",
            ),
        ),
        (
            "unknown output_filter",
            unknown_filter,
            Code::InvalidArgument,
            Text::Exact(
                "output tensor alias not found in signature: nope Outputs expected to be in the set {probabilities}.",
            ),
        ),
        (
            "repeated output_filter",
            twice_filter,
            Code::InvalidArgument,
            Text::Exact("duplicate output tensor alias: probabilities"),
        ),
    ];
    for (what, request, code, text) in table {
        let status = client.predict(request).await.expect_err(what);
        check(what, status, code, text);
    }
    // The server is still serving, and gives the right answer.
    let case = &cases()[1];
    let response = client.predict(predict_request(case)).await.expect("predict after errors");
    crate::harness::assert_close(&response.into_inner().outputs["probabilities"].float_val, &case.probabilities);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_and_status_errors() {
    let server = TestServer::start().await;
    let mut prediction = server.prediction().await;
    let mut models = server.models().await;
    let metadata = |spec, fields: &[&str]| GetModelMetadataRequest {
        model_spec: spec,
        metadata_field: fields.iter().map(|s| s.to_string()).collect(),
    };
    let cases: Vec<(&str, GetModelMetadataRequest, Code, &str)> = vec![
        ("no spec", metadata(None, &["signature_def"]), Code::InvalidArgument, "Missing ModelSpec"),
        (
            "no field",
            metadata(spec("mnist"), &[]),
            Code::InvalidArgument,
            "GetModelMetadataRequest must specify at least one metadata_field",
        ),
        (
            "other field",
            metadata(spec("mnist"), &["signature_def", "graph"]),
            Code::InvalidArgument,
            "Metadata field graph is not supported",
        ),
        (
            "unknown model",
            metadata(spec("nope"), &["signature_def"]),
            Code::NotFound,
            "Servable not found for request: Latest(nope)",
        ),
    ];
    for (what, request, code, text) in cases {
        check(what, prediction.get_model_metadata(request).await.expect_err(what), code, Text::Exact(text));
    }

    let status = |spec| GetModelStatusRequest { model_spec: spec };
    let version = |v| {
        Some(ModelSpec {
            name: "mnist".into(),
            version_choice: Some(model_spec::VersionChoice::Version(v)),
            ..ModelSpec::default()
        })
    };
    let cases: Vec<(&str, GetModelStatusRequest, Code, &str)> = vec![
        ("no spec", status(None), Code::InvalidArgument, "Missing ModelSpec"),
        ("empty name", status(spec("")), Code::InvalidArgument, "ModelSpec has no name specified."),
        ("unknown model", status(spec("nope")), Code::NotFound, "Could not find any versions of model nope"),
        ("unknown version", status(version(9)), Code::NotFound, "Could not find version 9 of model mnist"),
    ];
    for (what, request, code, text) in cases {
        check(what, models.get_model_status(request).await.expect_err(what), code, Text::Exact(text));
    }

    let status = models.handle_reload_config_request(ReloadConfigRequest::default()).await.unwrap_err();
    check("reload without config", status, Code::InvalidArgument, Text::Exact("ReloadConfigRequest has no config"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_receive_limit_is_resource_exhausted_naming_the_flag() {
    use ferroserve::proto::tensorflow::serving::GetModelStatusRequest;

    // --grpc_channel_arguments=grpc.max_receive_message_length=2000
    let state = TestServer::example_state().with_message_limits(2000, ferroserve::service::MAX_MESSAGE_BYTES);
    let server = TestServer::start_state(state, std::time::Duration::ZERO).await;
    let mut client = server.prediction().await;
    // One 28x28 image is 3136 bytes of floats, more than the limit.
    let err = client.predict(predict_request(&cases()[0])).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message().starts_with("Received message larger than max (")
            && err.message().contains(" vs. 2000)")
            && err.message().contains("--grpc_channel_arguments=grpc.max_receive_message_length"),
        "{}",
        err.message()
    );
    // Small messages still pass, and the server keeps serving.
    let mut models = server.models().await;
    let status = models.get_model_status(GetModelStatusRequest { model_spec: spec("mnist") }).await;
    assert!(status.is_ok(), "{status:?}");
    server.stop().await;
}
