//! grpc.health.v1 follows readiness and drains; reflection (v1 and v1alpha)
//! lists and describes the TensorFlow Serving services.

use std::time::Duration;

use prost::Message;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::harness::{TestServer, example_model};

const NAMES: [&str; 6] = [
    "",
    "ModelService",
    "PredictionService",
    "tensorflow.serving.ModelService",
    "tensorflow.serving.PredictionService",
    "mnist",
];

async fn check(client: &mut HealthClient<tonic::transport::Channel>, name: &str) -> Result<i32, tonic::Status> {
    client.check(HealthCheckRequest { service: name.into() }).await.map(|r| r.into_inner().status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_serving_then_not_serving_from_the_start_of_a_drain() {
    let mut server = TestServer::start_with(vec![example_model()], Duration::from_secs(2)).await;
    let mut client = HealthClient::new(server.channel().await);
    for name in NAMES {
        assert_eq!(check(&mut client, name).await.unwrap(), ServingStatus::Serving as i32, "{name:?}");
    }
    let unknown = check(&mut client, "nope").await.unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    let mut watch = client.watch(HealthCheckRequest { service: "mnist".into() }).await.unwrap().into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);

    server.begin_shutdown();
    // During the shutdown delay the server still answers, and says it is
    // going away; the watcher hears it too.
    let changed =
        tokio::time::timeout(Duration::from_secs(5), watch.message()).await.expect("watch update").unwrap().unwrap();
    assert_eq!(changed.status, ServingStatus::NotServing as i32);
    for name in NAMES {
        assert_eq!(check(&mut client, name).await.unwrap(), ServingStatus::NotServing as i32, "{name:?}");
    }
    drop(watch);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_v1_and_v1alpha_list_and_describe_the_services() {
    use tonic_reflection::pb::{v1, v1alpha};
    let server = TestServer::start().await;
    let expected = [
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
        "tensorflow.serving.ModelService",
        "tensorflow.serving.PredictionService",
    ];

    let mut client = v1::server_reflection_client::ServerReflectionClient::new(server.channel().await);
    let requests = vec![
        v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(String::new())),
        },
        v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(v1::server_reflection_request::MessageRequest::FileContainingSymbol(
                "tensorflow.serving.PredictRequest".into(),
            )),
        },
    ];
    let mut stream = client.server_reflection_info(tokio_stream::iter(requests)).await.unwrap().into_inner();
    match stream.message().await.unwrap().unwrap().message_response {
        Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) => {
            let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
            names.sort();
            assert_eq!(names, expected);
        }
        other => panic!("unexpected answer {other:?}"),
    }
    match stream.message().await.unwrap().unwrap().message_response {
        Some(v1::server_reflection_response::MessageResponse::FileDescriptorResponse(files)) => {
            let names: Vec<String> = files
                .file_descriptor_proto
                .iter()
                .map(|b| prost_types::FileDescriptorProto::decode(b.as_slice()).unwrap().name().to_string())
                .collect();
            assert!(names.contains(&"tensorflow_serving/apis/predict.proto".to_string()), "{names:?}");
        }
        other => panic!("unexpected answer {other:?}"),
    }

    // grpcurl 1.8 speaks only v1alpha.
    let mut client = v1alpha::server_reflection_client::ServerReflectionClient::new(server.channel().await);
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1alpha::server_reflection_request::MessageRequest::ListServices(String::new())),
    };
    let mut stream = client.server_reflection_info(tokio_stream::iter(vec![request])).await.unwrap().into_inner();
    match stream.message().await.unwrap().unwrap().message_response {
        Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) => {
            assert_eq!(list.service.len(), expected.len());
        }
        other => panic!("unexpected answer {other:?}"),
    }
    server.stop().await;
}
