//! Classify, Regress and MultiInference over gRPC and REST, on the iris
//! fixture (two inputs, `scores` and `outputs`, labels.txt) and the
//! example model (one output, no labels).

use std::collections::HashMap;
use std::time::Duration;

use tonic::Code;

use crate::harness::{TestServer, cases, example_model, flowers, iris_model, spec};
use ferroserve::proto::tensorflow::serving::{
    ClassificationRequest, ExampleList, ExampleListWithContext, InferenceTask, Input, ModelSpec, MultiInferenceRequest,
    RegressionRequest, inference_result, input, model_spec,
};
use ferroserve::proto::tensorflow::{Example, Feature, Features, FloatList, Int64List, feature};

const CLASSIFY: &str = "tensorflow/serving/classify";
const REGRESS: &str = "tensorflow/serving/regress";

fn floats(v: &[f32]) -> Feature {
    Feature { kind: Some(feature::Kind::FloatList(FloatList { value: v.to_vec() })) }
}

fn example(features: Vec<(&str, Feature)>) -> Example {
    Example {
        features: Some(Features {
            feature: features.into_iter().map(|(k, f)| (k.to_string(), f)).collect::<HashMap<_, _>>(),
        }),
    }
}

fn examples(list: Vec<Example>) -> Option<Input> {
    Some(Input { kind: Some(input::Kind::ExampleList(ExampleList { examples: list })) })
}

/// Every reference flower as an example.
fn flower_input() -> Option<Input> {
    let (_, flowers) = flowers();
    examples(flowers.iter().map(|f| example(vec![("sepal", floats(&f.sepal)), ("petal", floats(&f.petal))])).collect())
}

fn resolved(name: &str) -> Option<ModelSpec> {
    Some(ModelSpec {
        name: name.into(),
        signature_name: "serving_default".into(),
        version_choice: Some(model_spec::VersionChoice::Version(1)),
    })
}

fn close(a: f32, e: f32) -> bool {
    (a - e).abs() <= 1e-5 + 1e-4 * e.abs()
}

async fn start() -> TestServer {
    TestServer::start_with(vec![example_model(), iris_model()], Duration::ZERO).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classify_regress_and_multi_inference_answer_from_the_model() {
    let server = start().await;
    let mut client = server.prediction().await;
    let (labels, flowers) = flowers();

    let response = client
        .classify(ClassificationRequest { model_spec: spec("iris"), input: flower_input() })
        .await
        .expect("classify")
        .into_inner();
    assert_eq!(response.model_spec, resolved("iris"));
    let result = response.result.expect("result");
    assert_eq!(result.classifications.len(), flowers.len());
    for (got, flower) in result.classifications.iter().zip(&flowers) {
        let got_labels: Vec<&str> = got.classes.iter().map(|c| c.label.as_str()).collect();
        assert_eq!(got_labels, labels, "classes come in output order, labelled from labels.txt");
        for (class, &want) in got.classes.iter().zip(&flower.scores) {
            assert!(close(class.score, want), "{} vs {want}", class.score);
        }
    }

    let response = client
        .regress(RegressionRequest { model_spec: spec("iris"), input: flower_input() })
        .await
        .expect("regress")
        .into_inner();
    assert_eq!(response.model_spec, resolved("iris"));
    let values: Vec<f32> = response.result.unwrap().regressions.iter().map(|r| r.value).collect();
    assert_eq!(values.len(), flowers.len());
    for (got, flower) in values.iter().zip(&flowers) {
        assert!(close(*got, flower.output), "{got} vs {}", flower.output);
    }

    let task = |method: &str| InferenceTask { model_spec: spec("iris"), method_name: method.into() };
    let response = client
        .multi_inference(MultiInferenceRequest { tasks: vec![task(REGRESS), task(CLASSIFY)], input: flower_input() })
        .await
        .expect("multi inference")
        .into_inner();
    assert_eq!(response.results.len(), 2);
    assert!(response.results.iter().all(|r| r.model_spec == resolved("iris")));
    let Some(inference_result::Result::RegressionResult(r)) = &response.results[0].result else {
        panic!("first result is the regression: {:?}", response.results[0]);
    };
    assert!(close(r.regressions[2].value, flowers[2].output));
    let Some(inference_result::Result::ClassificationResult(c)) = &response.results[1].result else {
        panic!("second result is the classification");
    };
    assert!(close(c.classifications[1].classes[1].score, flowers[1].scores[1]));

    // The example model: its only output is the classifier's, with no labels.
    let digit = &cases()[7];
    let response = client
        .classify(ClassificationRequest {
            model_spec: spec("mnist"),
            input: examples(vec![example(vec![("image", floats(&digit.input))])]),
        })
        .await
        .expect("classify mnist")
        .into_inner();
    let classes = &response.result.unwrap().classifications[0].classes;
    let names: Vec<&str> = classes.iter().map(|c| c.label.as_str()).collect();
    assert_eq!(names, ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]);
    let scores: Vec<f32> = classes.iter().map(|c| c.score).collect();
    crate::harness::assert_close(&scores, &digit.probabilities);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_features_apply_to_every_example_and_the_example_wins() {
    let server = start().await;
    let mut client = server.prediction().await;
    let (_, flowers) = flowers();
    let (a, b) = (&flowers[0], &flowers[2]);
    let input = Input {
        kind: Some(input::Kind::ExampleListWithContext(ExampleListWithContext {
            examples: vec![
                example(vec![("petal", floats(&a.petal))]),
                example(vec![("sepal", floats(&b.sepal)), ("petal", floats(&b.petal))]),
            ],
            context: Some(example(vec![("sepal", floats(&a.sepal)), ("petal", floats(&b.petal))])),
        })),
    };
    let response = client
        .regress(RegressionRequest { model_spec: spec("iris"), input: Some(input) })
        .await
        .expect("regress with context")
        .into_inner();
    let values: Vec<f32> = response.result.unwrap().regressions.iter().map(|r| r.value).collect();
    assert!(close(values[0], a.output), "context sepal + own petal: {} vs {}", values[0], a.output);
    assert!(close(values[1], b.output), "own features win: {} vs {}", values[1], b.output);

    // int64 values feed a float input.
    let ints = |v: &[i64]| Feature { kind: Some(feature::Kind::Int64List(Int64List { value: v.to_vec() })) };
    let input = examples(vec![example(vec![("sepal", ints(&[5, 3])), ("petal", ints(&[1, 0]))])]);
    let response = client
        .classify(ClassificationRequest { model_spec: spec("iris"), input })
        .await
        .expect("int64 features")
        .into_inner();
    assert_eq!(response.result.unwrap().classifications[0].classes.len(), 3);
    server.stop().await;
}

/// How a message is checked.
enum Text {
    Exact(String),
    Contains(&'static [&'static str]),
}

fn exact(s: &str) -> Text {
    Text::Exact(s.to_string())
}

fn check(what: &str, status: tonic::Status, code: Code, text: &Text) {
    assert_eq!(status.code(), code, "{what}: {}", status.message());
    match text {
        Text::Exact(t) => assert_eq!(status.message(), t, "{what}"),
        Text::Contains(parts) => {
            for p in *parts {
                assert!(status.message().contains(p), "{what}: {:?} lacks {p:?}", status.message());
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inference_errors_have_tensorflow_servings_codes_and_texts() {
    let server = start().await;
    let mut client = server.prediction().await;
    let (_, flowers) = flowers();
    let f = &flowers[0];
    let signed = |name: &str, signature: &str| {
        Some(ModelSpec { name: name.into(), signature_name: signature.into(), ..ModelSpec::default() })
    };
    let labelled = Some(ModelSpec {
        name: "iris".into(),
        version_choice: Some(model_spec::VersionChoice::VersionLabel("stable".into())),
        ..ModelSpec::default()
    });
    let no_petal = examples(vec![example(vec![("sepal", floats(&f.sepal))])]);
    let long_petal = examples(vec![example(vec![("sepal", floats(&f.sepal)), ("petal", floats(&[1.0, 2.0, 3.0]))])]);
    let long_name = "m".repeat(2000);
    let truncated = format!("{}...TRUNCATED", &format!("Servable not found for request: Latest({long_name})")[..1024]);

    // Classify and Regress share their checks; each row runs on both.
    type Row = (&'static str, Option<ModelSpec>, Option<Input>, Code, Text);
    let rows: Vec<Row> = vec![
        ("no model_spec", None, flower_input(), Code::InvalidArgument, exact("Missing ModelSpec")),
        ("empty name", spec(""), flower_input(), Code::InvalidArgument, exact("ModelSpec has no name specified.")),
        (
            "unknown model",
            spec("nope"),
            flower_input(),
            Code::NotFound,
            exact("Servable not found for request: Latest(nope)"),
        ),
        ("long unknown model", spec(&long_name), flower_input(), Code::NotFound, Text::Exact(truncated)),
        (
            "unknown label",
            labelled,
            flower_input(),
            Code::InvalidArgument,
            exact("Unrecognized servable version label: stable"),
        ),
        (
            "unknown signature",
            signed("iris", "nope"),
            flower_input(),
            Code::InvalidArgument,
            exact("No signature was found with the name: nope"),
        ),
        ("no input", spec("iris"), None, Code::InvalidArgument, exact("Input is empty.")),
        ("no examples", spec("iris"), examples(vec![]), Code::InvalidArgument, exact("Input is empty.")),
        (
            "missing feature",
            spec("iris"),
            no_petal,
            Code::InvalidArgument,
            exact("Feature: petal (data type: float) is required but could not be found in example 0 or the context."),
        ),
        (
            "too many values",
            spec("iris"),
            long_petal,
            Code::InvalidArgument,
            exact("feature 'petal' of example 0 has 3 values, but input 'petal' takes 2 per example (shape [2])"),
        ),
    ];
    for (what, model_spec, input, code, text) in &rows {
        let status = client
            .classify(ClassificationRequest { model_spec: model_spec.clone(), input: input.clone() })
            .await
            .expect_err(what);
        check(&format!("Classify, {what}"), status, *code, text);
        let status = client
            .regress(RegressionRequest { model_spec: model_spec.clone(), input: input.clone() })
            .await
            .expect_err(what);
        check(&format!("Regress, {what}"), status, *code, text);
    }

    // A model whose outputs cannot answer a regression.
    let digit = examples(vec![example(vec![("image", floats(&cases()[0].input))])]);
    let status = client.regress(RegressionRequest { model_spec: spec("mnist"), input: digit }).await.unwrap_err();
    check(
        "Regress on a classifier",
        status,
        Code::InvalidArgument,
        &exact(
            "Regress needs output 'probabilities' of signature \"serving_default\" to be float [batch] or [batch, 1], but it is DT_FLOAT [-1,10]",
        ),
    );

    let task = |name: &str, signature: &str, method: &str| InferenceTask {
        model_spec: signed(name, signature),
        method_name: method.into(),
    };
    let multi = |tasks| MultiInferenceRequest { tasks, input: flower_input() };
    let rows: Vec<(&str, MultiInferenceRequest, Code, Text)> = vec![
        ("no tasks", multi(vec![]), Code::InvalidArgument, Text::Contains(&["no tasks", CLASSIFY, REGRESS])),
        (
            "empty name",
            multi(vec![task("iris", "", CLASSIFY), task("", "", REGRESS)]),
            Code::InvalidArgument,
            exact("Found ModelSpec with an empty model name."),
        ),
        (
            "two models",
            multi(vec![task("iris", "", CLASSIFY), task("mnist", "", REGRESS)]),
            Code::InvalidArgument,
            exact("All ModelSpecs in a MultiInferenceRequest must access the same model name."),
        ),
        (
            "the same task twice",
            multi(vec![task("iris", "", CLASSIFY), task("iris", "serving_default", CLASSIFY)]),
            Code::InvalidArgument,
            exact("Duplicate evaluation of signature: serving_default"),
        ),
        (
            "unknown signature",
            multi(vec![task("iris", "nope", CLASSIFY)]),
            Code::InvalidArgument,
            exact("Requested signature not found in model graph: nope"),
        ),
        (
            "predict method",
            multi(vec![task("iris", "", "tensorflow/serving/predict")]),
            Code::Unimplemented,
            exact("Unsupported signature method_name: tensorflow/serving/predict"),
        ),
        (
            "unknown model",
            multi(vec![task("nope", "", CLASSIFY)]),
            Code::NotFound,
            exact("Servable not found for request: Latest(nope)"),
        ),
        (
            "no input",
            MultiInferenceRequest { tasks: vec![task("iris", "", CLASSIFY)], input: None },
            Code::InvalidArgument,
            exact("Input is empty."),
        ),
    ];
    for (what, request, code, text) in rows {
        let status = client.multi_inference(request).await.expect_err(what);
        check(&format!("MultiInference, {what}"), status, code, &text);
    }

    // Still serving.
    client
        .classify(ClassificationRequest { model_spec: spec("iris"), input: flower_input() })
        .await
        .expect("classify after errors");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_classify_and_regress_use_tensorflow_servings_json() {
    let server = start().await;
    let (labels, flowers) = flowers();
    let json_floats = |v: &[f32]| v.iter().map(|x| format!("{:?}", *x as f64)).collect::<Vec<_>>().join(",");
    let body = format!(
        r#"{{"examples":[{}]}}"#,
        flowers
            .iter()
            .map(|f| format!(r#"{{"sepal":[{}],"petal":[{}]}}"#, json_floats(&f.sepal), json_floats(&f.petal)))
            .collect::<Vec<_>>()
            .join(",")
    );

    let (status, _, text) = server.http("POST", "/v1/models/iris:classify", body.as_bytes()).await;
    assert_eq!(status, 200, "{text}");
    let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
    let results = answer["results"].as_array().expect("the key is results");
    assert_eq!(results.len(), flowers.len());
    for (row, flower) in results.iter().zip(&flowers) {
        for ((pair, label), &score) in row.as_array().unwrap().iter().zip(&labels).zip(&flower.scores) {
            assert_eq!(pair[0], label.as_str());
            assert!(close(pair[1].as_f64().unwrap() as f32, score), "{pair} vs {score}");
        }
    }

    let (status, _, text) = server.http("POST", "/v1/models/iris/versions/1:regress", body.as_bytes()).await;
    assert_eq!(status, 200, "{text}");
    let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
    let values = answer["results"].as_array().expect("the key is results");
    for (v, flower) in values.iter().zip(&flowers) {
        assert!(close(v.as_f64().unwrap() as f32, flower.output), "{v} vs {}", flower.output);
    }

    // Context, and integers for a float input.
    let body = r#"{"signature_name":"serving_default","context":{"sepal":[5,3]},"examples":[{"petal":[1,0]}]}"#;
    let (status, _, text) = server.http("POST", "/v1/models/iris:regress", body.as_bytes()).await;
    assert_eq!(status, 200, "{text}");

    let digit = format!(r#"{{"examples":[{{"image":[{}]}}]}}"#, json_floats(&cases()[0].input));
    let rows: Vec<(&str, &str, u16, String)> = vec![
        ("iris:classify", "", 400, "JSON Parse error: The document is empty".into()),
        ("iris:classify", "[1]", 400, "JSON Value: [1] Is not object".into()),
        (
            "iris:classify",
            r#"{"instances":[1]}"#,
            400,
            r#"JSON Value: {"instances":[1]} When method is classify, key 'examples' is expected and was not found"#.into(),
        ),
        ("iris:regress", r#"{"examples":[]}"#, 400, r#"JSON Value: {"examples":[]} 'examples' value is an empty array"#.into()),
        (
            "iris:regress",
            r#"{"examples":[{"sepal":[5,3.5],"petal":[1,0]}]}"#,
            400,
            "Unexpected element type in feature: sepal expecting type: int64".into(),
        ),
        (
            "iris:regress",
            r#"{"examples":[{"sepal":[5,3]}]}"#,
            400,
            "Feature: petal (data type: float) is required but could not be found in example 0 or the context.".into(),
        ),
        (
            "iris:classify",
            r#"{"signature_name":"x","examples":[{"sepal":[5,3]}]}"#,
            400,
            "No signature was found with the name: x".into(),
        ),
        ("nope:classify", r#"{"examples":[{"a":1}]}"#, 404, "Servable not found for request: Latest(nope)".into()),
        ("mnist:regress", &digit, 400,
            "Regress needs output 'probabilities' of signature \"serving_default\" to be float [batch] or [batch, 1], but it is DT_FLOAT [-1,10]".into()),
    ];
    for (path, body, code, message) in rows {
        let (status, _, text) = server.http("POST", &format!("/v1/models/{path}"), body.as_bytes()).await;
        assert_eq!(status, code, "{path} {body}: {text}");
        let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(answer["error"], message.as_str(), "{path} {body}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_method_name_check_leaves_onnx_signatures_to_predict() {
    let repository = ferroserve::repository::ModelRepository::load(
        &[iris_model()],
        ferroserve::kernels::KernelRegistry::with_all_ops(),
    )
    .expect("iris loads");
    let state = TestServer::state(std::sync::Arc::new(repository)).with_method_name_check(true);
    let server = TestServer::start_state(state, Duration::ZERO).await;
    let mut client = server.prediction().await;
    let classify =
        client.classify(ClassificationRequest { model_spec: spec("iris"), input: flower_input() }).await.unwrap_err();
    check(
        "Classify",
        classify,
        Code::InvalidArgument,
        &exact(
            "Expected classification signature method_name to be tensorflow/serving/classify. Was: tensorflow/serving/predict",
        ),
    );
    let regress =
        client.regress(RegressionRequest { model_spec: spec("iris"), input: flower_input() }).await.unwrap_err();
    check(
        "Regress",
        regress,
        Code::InvalidArgument,
        &exact(
            "Expected regression signature method_name to be tensorflow/serving/regress. Was: tensorflow/serving/predict",
        ),
    );
    let task = InferenceTask { model_spec: spec("iris"), method_name: REGRESS.into() };
    let multi =
        client.multi_inference(MultiInferenceRequest { tasks: vec![task], input: flower_input() }).await.unwrap_err();
    assert_eq!(multi.code(), Code::InvalidArgument);
    let (status, _, text) = server
        .http("POST", "/v1/models/iris:classify", br#"{"examples":[{"sepal":[5.0,3.0],"petal":[1.0,0.2]}]}"#)
        .await;
    assert_eq!(status, 400, "{text}");
    // Predict still answers: its signature is a prediction signature.
    let request = ferroserve::proto::tensorflow::serving::PredictRequest {
        model_spec: spec("iris"),
        inputs: [
            ("sepal".to_string(), crate::harness::float_tensor(&[1, 2], vec![5.0, 3.0])),
            ("petal".to_string(), crate::harness::float_tensor(&[1, 2], vec![1.0, 0.2])),
        ]
        .into(),
        ..Default::default()
    };
    client.predict(request).await.expect("predict under the method check");
    server.stop().await;
}
