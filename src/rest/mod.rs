//! TensorFlow Serving's REST API, served by axum on `--rest_api_port`.
//!
//! Routing follows TensorFlow Serving's two regular expressions (spec 4.1)
//! by hand: `POST /v1/models/<m>[/versions/<v>|/labels/<l>]:<verb>` and
//! `GET /v1/models/<m>[/versions/<v>|/labels/<l>][/metadata]`; any other
//! `/v1/` request is a 400 "Malformed request", and paths outside `/v1/` are
//! a plain 404. Handlers only convert JSON: models are resolved by the
//! repository, inputs are checked by the signature, and the plan runs on
//! the compute pool, exactly as for gRPC. Every API answer is JSON, errors
//! as `{"error": "<message>"}` with TensorFlow Serving's HTTP codes.

mod convert;
mod examples;
pub mod json;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use crate::error::{ServeError, code_name, truncate_message};
use crate::inference::{Method as Task, PreparedInference, TaskResult};
use crate::limits::Reservation;
use crate::metrics::Entrypoint;
use crate::repository::{VersionChoice, VersionState};
use crate::servable::Signature;
use crate::service::ServingState;
use crate::service::prediction::run_inference;
use json::{Json, write_string};

/// The largest request body accepted (after gzip inflation too), as gRPC's
/// message limit.
const MAX_BODY_BYTES: usize = i32::MAX as usize;

/// Where Prometheus reads the metrics, as TF Serving's default.
pub const METRICS_PATH: &str = "/monitoring/prometheus/metrics";

/// How the REST front end behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct RestOptions {
    /// Add CORS headers to every answer (`--rest_api_enable_cors_support`).
    pub cors: bool,
    /// How long a call may take (`--rest_api_timeout_in_ms`); `None` = no limit.
    pub timeout: Option<std::time::Duration>,
    /// Where the Prometheus page is served (`--monitoring_config_file`);
    /// `None` = not served.
    pub metrics_path: Option<String>,
}

impl Default for RestOptions {
    fn default() -> Self {
        RestOptions {
            cors: false,
            timeout: Some(std::time::Duration::from_millis(30_000)),
            metrics_path: Some(METRICS_PATH.to_string()),
        }
    }
}

/// What the handler shares.
#[derive(Debug, Clone)]
struct RestState {
    serving: Arc<ServingState>,
    options: RestOptions,
}

/// The most a gzip body may inflate to: TensorFlow Serving's
/// (`net_http::ZLib::kMaxUncompressedBytes`, 100 MiB).
const MAX_INFLATED_BYTES: usize = 100 << 20;

/// Inflates a gzip body, refusing one that would inflate past
/// [`MAX_INFLATED_BYTES`];
/// the inflated bytes are held against the request budget as they grow.
fn gunzip(body: &[u8], held: &mut Option<Reservation>) -> Result<Vec<u8>, ServeError> {
    use std::io::Read;
    let corrupt =
        |e: std::io::Error| ServeError::InvalidArgument(format!("Failed to decompress the gzip request body: {e}"));
    let mut decoder = flate2::read::GzDecoder::new(body);
    let mut out = Vec::new();
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        let n = decoder.read(&mut chunk).map_err(corrupt)?;
        if n == 0 {
            return Ok(out);
        }
        if out.len() + n > MAX_INFLATED_BYTES {
            return Err(ServeError::InvalidArgument(format!(
                "The gzip request body inflates past the {MAX_INFLATED_BYTES}-byte limit of compressed REST bodies; send it uncompressed or in smaller requests"
            )));
        }
        if let Some(held) = held {
            held.grow(n)?;
        }
        out.extend_from_slice(&chunk[..n]);
    }
}

/// Reads the request body, holding its bytes against the request budget:
/// a `Content-Length` is reserved before any byte is read, a chunked body
/// as it arrives.
async fn read_body(headers: &HeaderMap, body: &mut Body, held: &mut Option<Reservation>) -> Result<Bytes, ServeError> {
    use http_body_util::BodyExt;
    let too_large =
        || ServeError::InvalidArgument(format!("The request body is larger than the {MAX_BODY_BYTES}-byte limit"));
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(len) = declared {
        if len > MAX_BODY_BYTES as u64 {
            return Err(too_large());
        }
        if let Some(held) = held {
            held.grow(len as usize)?;
        }
    }
    let mut out = bytes::BytesMut::with_capacity(declared.unwrap_or(0) as usize);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ServeError::InvalidArgument(format!("Failed to read the request body: {e}")))?;
        let Ok(data) = frame.into_data() else { continue };
        if out.len() + data.len() > MAX_BODY_BYTES {
            return Err(too_large());
        }
        if declared.is_none()
            && let Some(held) = held
        {
            held.grow(data.len())?;
        }
        out.extend_from_slice(&data);
    }
    Ok(out.freeze())
}

/// The most of a refused body read and thrown away, and for how long.
const DISCARD_BYTES: usize = 64 << 20;
const DISCARD_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads and drops the rest of a refused body, up to a bound, while the
/// refusal is sent: a client still uploading then reads the answer instead
/// of a connection reset. Nothing is kept.
fn discard_rest(mut body: Body) {
    use http_body_util::BodyExt;
    tokio::spawn(async move {
        let mut seen = 0;
        let _ = tokio::time::timeout(DISCARD_TIME, async {
            while let Some(Ok(frame)) = body.frame().await {
                seen += frame.data_ref().map_or(0, |d| d.len());
                if seen > DISCARD_BYTES {
                    break;
                }
            }
        })
        .await;
    });
}

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Predict { model: String, version: VersionChoice },
    Classify { model: String, version: VersionChoice },
    Regress { model: String, version: VersionChoice },
    Status { model: String, version: Option<i64> },
    Metadata { model: String, version: VersionChoice },
}

/// Decodes `%XX` escapes, as `curl_easy_unescape` does.
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = s.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    (s.len() >= prefix.len() && s.is_char_boundary(prefix.len()) && s[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &s[prefix.len()..])
}

/// Splits `[^/:]+` off the front of `s`.
fn name_segment(s: &str) -> Option<(&str, &str)> {
    let end = s.find(['/', ':']).unwrap_or(s.len());
    (end > 0).then(|| (&s[..end], &s[end..]))
}

/// Parses `[/versions/<digits>|/labels/<label>]` off the front of `s`.
fn version_part(s: &str) -> Result<(Option<VersionSpec>, &str), ()> {
    if let Some(rest) = strip_prefix_ci(s, "/versions/") {
        let end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if end == 0 {
            return Err(());
        }
        return Ok((Some(VersionSpec::Number(rest[..end].to_string())), &rest[end..]));
    }
    if let Some(rest) = strip_prefix_ci(s, "/labels/") {
        let (label, rest) = name_segment(rest).ok_or(())?;
        return Ok((Some(VersionSpec::Label(unescape(label))), rest));
    }
    Ok((None, s))
}

enum VersionSpec {
    Number(String),
    Label(String),
}

fn choice(spec: Option<VersionSpec>) -> Result<VersionChoice, ServeError> {
    match spec {
        None => Ok(VersionChoice::Latest),
        Some(VersionSpec::Label(l)) => Ok(VersionChoice::Label(l)),
        Some(VersionSpec::Number(n)) => n
            .parse::<i64>()
            .map(VersionChoice::Specific)
            .map_err(|_| ServeError::InvalidArgument(format!("Failed to convert version: {n} to numeric."))),
    }
}

/// Routes an API request (the path starts with `/v1/`).
fn route(method: &Method, path: &str) -> Result<Route, ServeError> {
    let malformed = || ServeError::InvalidArgument(format!("Malformed request: {method} {path}"));
    let rest = strip_prefix_ci(path, "/v1/models").ok_or_else(malformed)?;
    if *method == Method::POST {
        let rest = rest.strip_prefix('/').ok_or_else(malformed)?;
        let (model, rest) = name_segment(rest).ok_or_else(malformed)?;
        let (version, rest) = version_part(rest).map_err(|_| malformed())?;
        let verb = rest.strip_prefix(':').ok_or_else(malformed)?;
        let (model, version) = (unescape(model), choice(version)?);
        return match verb {
            "predict" => Ok(Route::Predict { model, version }),
            "classify" => Ok(Route::Classify { model, version }),
            "regress" => Ok(Route::Regress { model, version }),
            _ => Err(malformed()),
        };
    }
    if *method != Method::GET {
        return Err(malformed());
    }
    if rest.is_empty() || rest == "/" {
        return Err(ServeError::InvalidArgument("Missing model name in request.".into()));
    }
    let rest = rest.strip_prefix('/').ok_or_else(malformed)?;
    let (model, rest) = name_segment(rest).ok_or_else(malformed)?;
    let (version, rest) = version_part(rest).map_err(|_| malformed())?;
    let model = unescape(model);
    match rest {
        "" => {
            // GetModelStatus ignores labels, as TF Serving does.
            let version = match choice(version)? {
                VersionChoice::Specific(v) => Some(v),
                _ => None,
            };
            Ok(Route::Status { model, version })
        }
        r if strip_prefix_ci(r, "/metadata") == Some("") => Ok(Route::Metadata { model, version: choice(version)? }),
        _ => Err(malformed()),
    }
}

fn json_response(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn error_response(e: &ServeError) -> Response {
    let mut body = String::from("{ \"error\": ");
    write_string(&mut body, &truncate_message(&e.to_string()));
    body.push_str(" }");
    json_response(StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), body)
}

fn state_name(state: VersionState) -> &'static str {
    match state {
        VersionState::Start => "START",
        VersionState::Loading => "LOADING",
        VersionState::Available => "AVAILABLE",
        VersionState::Unloading => "UNLOADING",
        VersionState::End => "END",
    }
}

fn status_json(state: &ServingState, model: &str, version: Option<i64>) -> Result<String, ServeError> {
    let versions = state.repository.status(model, version)?;
    let mut out = String::from("{\"model_version_status\":[");
    for (i, v) in versions.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let (code, message) = match &v.error {
            None => ("OK", ""),
            Some(m) => (code_name(tonic::Code::Unknown), m.as_str()),
        };
        out.push_str(&format!(
            "{{\"version\":\"{}\",\"state\":\"{}\",\"status\":{{\"error_code\":\"{code}\",\"error_message\":",
            v.version,
            state_name(v.state)
        ));
        write_string(&mut out, message);
        out.push_str("}}");
    }
    out.push_str("]}");
    Ok(out)
}

fn tensor_info_json(out: &mut String, dtype: &str, shape: Option<&[i64]>, name: &str) {
    out.push_str("{\"dtype\":\"");
    out.push_str(dtype);
    out.push_str("\",\"tensor_shape\":{\"dim\":[");
    if let Some(dims) = shape {
        for (i, d) in dims.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&format!("{{\"size\":\"{d}\",\"name\":\"\"}}"));
        }
    }
    out.push_str(&format!("],\"unknown_rank\":{}}},\"name\":", shape.is_none()));
    write_string(out, name);
    out.push('}');
}

fn signature_json(out: &mut String, signature: &Signature) {
    type Info<'a> = (&'a str, Option<&'a [i64]>, &'a str);
    fn tensors(
        specs: &std::collections::BTreeMap<String, crate::servable::TensorSpec>,
    ) -> std::collections::BTreeMap<&str, Info<'_>> {
        specs.iter().map(|(a, s)| (a.as_str(), (s.dtype.dt_name(), s.shape.as_deref(), s.name.as_str()))).collect()
    }
    let inputs = tensors(&signature.inputs);
    let mut outputs = tensors(&signature.outputs);
    for (alias, name) in &signature.opaque_outputs {
        outputs.insert(alias.as_str(), ("DT_INVALID", None, name.as_str()));
    }
    for (i, (kind, specs)) in [("inputs", inputs), ("outputs", outputs)].into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&format!("\"{kind}\":{{"));
        for (j, (alias, (dtype, shape, name))) in specs.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            write_string(out, alias);
            out.push(':');
            tensor_info_json(out, dtype, *shape, name);
        }
        out.push('}');
    }
    out.push_str(",\"method_name\":");
    write_string(out, &signature.method_name);
    out.push_str(",\"defaults\":{}");
}

fn metadata_json(state: &ServingState, model: &str, version: &VersionChoice) -> Result<String, ServeError> {
    let servable = state.repository.resolve(model, version)?;
    let mut out = String::from("{\"model_spec\":{\"name\":");
    write_string(&mut out, &servable.name);
    out.push_str(&format!(
        ",\"signature_name\":\"\",\"version\":\"{}\"}},\"metadata\":{{\"signature_def\":{{\"signature_def\":{{",
        servable.version
    ));
    for (i, (key, signature)) in servable.signatures.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_string(&mut out, key);
        out.push_str(":{");
        signature_json(&mut out, signature);
        out.push('}');
    }
    out.push_str("}}}}");
    Ok(out)
}

/// Parses a request body, with TensorFlow Serving's texts for bad JSON.
fn parse_body(body: &[u8]) -> Result<Json, ServeError> {
    json::parse(body).map_err(|e| {
        if e.message == "The document is empty." {
            ServeError::InvalidArgument("JSON Parse error: The document is empty".into())
        } else {
            ServeError::InvalidArgument(format!("JSON Parse error: {} at offset: {}", e.message, e.offset))
        }
    })
}

/// A REST Classify or Regress: the answer's JSON, the version that
/// answered and the number of examples. The body is read before the model
/// is resolved, as TensorFlow Serving does.
async fn classify_regress(
    state: &ServingState,
    model: &str,
    version: &VersionChoice,
    method: Task,
    body: &[u8],
) -> Result<(String, i64, usize), ServeError> {
    let _in_flight = state.enter();
    let doc = parse_body(body)?;
    let (input, signature_name) = examples::request_input(&doc)?;
    drop(doc);
    let servable = state.repository.resolve(model, version)?;
    let prepared = PreparedInference::single(servable, method, &signature_name, Some(input))?
        .checking_methods(state.method_name_check)?;
    let examples = prepared.example_count();
    let mut results = run_inference(state, prepared, method.api()).await?;
    let Some((spec, result)) = results.pop() else {
        return Err(ServeError::Internal(format!("{} produced no result", method.api())));
    };
    let version = match spec.version_choice {
        Some(crate::proto::tensorflow::serving::model_spec::VersionChoice::Version(v)) => v,
        _ => 0,
    };
    let json = match result {
        TaskResult::Classification(c) => examples::classification_json(&c)?,
        TaskResult::Regression(r) => {
            examples::regression_json(&r.regressions.iter().map(|r| r.value).collect::<Vec<_>>())?
        }
    };
    Ok((json, version, examples))
}

/// A REST Predict: the answer's JSON, the version that answered and the
/// batch size.
async fn predict(
    state: &ServingState,
    model: &str,
    version: &VersionChoice,
    body: &[u8],
) -> Result<(String, i64, usize), ServeError> {
    let _in_flight = state.enter();
    let servable = state.repository.resolve(model, version)?;
    let doc = parse_body(body)?;
    let signature_name = match doc.get("signature_name") {
        None => "",
        Some(Json::String(s)) => s.as_str(),
        Some(_) => {
            return Err(ServeError::InvalidArgument(format!(
                "JSON Value: {} not formatted correctly. 'signature_name' key must be a string value.",
                json::to_string(&doc)
            )));
        }
    };
    let (_, signature) = servable.signature(signature_name).map_err(|_| {
        let key = if signature_name.is_empty() { crate::servable::DEFAULT_SIGNATURE } else { signature_name };
        ServeError::InvalidArgument(format!("Serving signature name: \"{key}\" not found in signature def"))
    })?;
    let (tensors, format) = convert::request_tensors(&doc, signature)?;
    let examples = tensors.first().and_then(|(_, t)| t.shape().first().copied()).unwrap_or(1);
    let mut feeds = Vec::with_capacity(tensors.len());
    for (alias, tensor) in tensors {
        let spec = signature.check_input(&alias, tensor.dtype(), tensor.shape())?;
        feeds.push((spec.value, tensor));
    }
    let outputs = signature.select_outputs(&[])?;
    let aliases: Vec<String> = outputs.iter().map(|(a, _)| a.to_string()).collect();
    let fetches: Vec<_> = outputs.iter().map(|(_, s)| s.value).collect();
    let run = servable.clone();
    let metrics = state.repository.metrics().clone();
    let tensors = state
        .compute
        .run(move || {
            let started = std::time::Instant::now();
            let result = run.run(feeds, &fetches);
            metrics.record_runtime(&run.name, "predict", started.elapsed());
            result
        })
        .await
        .map_err(ServeError::from)??;
    let json = convert::response_json(&aliases.into_iter().zip(tensors).collect::<Vec<_>>(), format)?;
    Ok((json, servable.version, examples))
}

/// Runs one inference call under `--rest_api_timeout_in_ms` and records it
/// in the metrics under `api`, the URL's verb.
async fn timed(
    rest: &RestState,
    state: &ServingState,
    model: &str,
    api: &str,
    call: impl Future<Output = Result<(String, i64, usize), ServeError>>,
) -> Result<String, ServeError> {
    let started = std::time::Instant::now();
    let result = match rest.options.timeout {
        None => call.await,
        Some(limit) => tokio::time::timeout(limit, call).await.unwrap_or_else(|_| {
            Err(ServeError::DeadlineExceeded(format!(
                "Deadline exceeded: the call took longer than --rest_api_timeout_in_ms={}",
                limit.as_millis()
            )))
        }),
    };
    let status = result.as_ref().map_or_else(|e| code_name(e.code()), |_| "OK");
    let answered = result.as_ref().ok().map(|(_, version, examples)| (*version, *examples));
    state.repository.metrics().record_request(model, api, Entrypoint::Rest, status, started.elapsed(), answered);
    result.map(|(body, _, _)| body)
}

async fn handle(State(rest): State<RestState>, method: Method, headers: HeaderMap, uri: Uri, body: Body) -> Response {
    let metrics_page = rest.options.metrics_path.as_deref() == Some(uri.path());
    if let Some(token) = &rest.serving.auth
        && !metrics_page
        // A CORS preflight carries no credentials.
        && method != Method::OPTIONS
        && let Err(message) = token.check(headers.get(header::AUTHORIZATION))
    {
        discard_rest(body);
        let mut response = error_response(&ServeError::Unauthenticated(message.into()));
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    }
    // The request's bytes stay reserved until it is answered.
    let mut held = rest.serving.request_budget.as_ref().map(|b| b.reservation());
    let mut body = body;
    let mut response = match read_body(&headers, &mut body, &mut held).await {
        Ok(body) => answer(&rest, &method, &headers, &uri, body, &mut held).await,
        Err(e) => {
            discard_rest(body);
            error_response(&e)
        }
    };
    if rest.options.cors {
        let h = response.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("POST, GET"));
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("Content-Type, Authorization"));
    }
    response
}

async fn answer(
    rest: &RestState,
    method: &Method,
    headers: &HeaderMap,
    uri: &Uri,
    body: Bytes,
    held: &mut Option<Reservation>,
) -> Response {
    let state = &rest.serving;
    let path = uri.path();
    if rest.options.metrics_path.as_deref() == Some(path) && *method == Method::GET {
        let page = state.repository.metrics().render(state.in_flight.load(std::sync::atomic::Ordering::SeqCst));
        let mut response = (StatusCode::OK, page).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
        return response;
    }
    if strip_prefix_ci(path, "/v1/").is_none() {
        let mut response = (
            StatusCode::NOT_FOUND,
            "<html><head><title>404 Not Found</title></head><body><h1>Not Found</h1></body></html>",
        )
            .into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
        return response;
    }
    if *method == Method::OPTIONS {
        // CORS preflight.
        let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()).unwrap_or("");
        if origin.starts_with("http://") || origin.starts_with("https://") {
            return json_response(StatusCode::OK, String::new());
        }
        return error_response(&ServeError::InvalidArgument("Origin header is missing in CORS preflight".into()));
    }
    let gzipped = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    let body = if gzipped {
        match gunzip(&body, held) {
            Ok(inflated) => Bytes::from(inflated),
            Err(e) => return error_response(&e),
        }
    } else {
        body
    };
    let result = match route(method, path) {
        Err(e) => Err(e),
        Ok(Route::Status { model, version }) => status_json(state, &model, version),
        Ok(Route::Metadata { model, version }) => metadata_json(state, &model, &version),
        Ok(Route::Predict { model, version }) => {
            let call = predict(state, &model, &version, &body);
            timed(rest, state, &model, "predict", call).await
        }
        Ok(Route::Classify { model, version }) => {
            let call = classify_regress(state, &model, &version, Task::Classify, &body);
            timed(rest, state, &model, "classify", call).await
        }
        Ok(Route::Regress { model, version }) => {
            let call = classify_regress(state, &model, &version, Task::Regress, &body);
            timed(rest, state, &model, "regress", call).await
        }
    };
    match result {
        Ok(body) => json_response(StatusCode::OK, body),
        Err(e) => error_response(&e),
    }
}

/// The REST router over shared serving state.
pub fn router(state: Arc<ServingState>, options: RestOptions) -> Router {
    Router::new().fallback(handle).with_state(RestState { serving: state, options })
}

/// Serves the REST API on `listener` until `shutdown` resolves; requests in
/// flight then complete.
///
/// # Errors
/// When the listener fails.
pub async fn serve<L>(
    listener: L,
    state: Arc<ServingState>,
    options: RestOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    axum::serve(listener, router(state, options)).with_graceful_shutdown(shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(method: Method, path: &str) -> Result<Route, String> {
        route(&method, path).map_err(|e| e.to_string())
    }

    #[test]
    fn routes_follow_tensorflow_servings_patterns() {
        let m = || "m".to_string();
        assert_eq!(
            r(Method::POST, "/v1/models/m:predict"),
            Ok(Route::Predict { model: m(), version: VersionChoice::Latest })
        );
        assert_eq!(
            r(Method::POST, "/V1/Models/m/Versions/7:regress"),
            Ok(Route::Regress { model: m(), version: VersionChoice::Specific(7) })
        );
        assert_eq!(
            r(Method::POST, "/v1/models/m/labels/can%20ary:classify"),
            Ok(Route::Classify { model: m(), version: VersionChoice::Label("can ary".into()) })
        );
        assert_eq!(r(Method::GET, "/v1/models/m"), Ok(Route::Status { model: m(), version: None }));
        assert_eq!(r(Method::GET, "/v1/models/m/versions/3"), Ok(Route::Status { model: m(), version: Some(3) }));
        assert_eq!(r(Method::GET, "/v1/models/m/labels/x"), Ok(Route::Status { model: m(), version: None }));
        assert_eq!(
            r(Method::GET, "/v1/models/m/versions/3/metadata"),
            Ok(Route::Metadata { model: m(), version: VersionChoice::Specific(3) })
        );
        for (method, path) in [
            (Method::POST, "/v1/models/m:PREDICT"),
            (Method::GET, "/v1/models/m:predict"),
            (Method::POST, "/v1/models/m/metadata"),
            (Method::PUT, "/v1/models/m"),
            (Method::GET, "/v1/models/m/version/1"),
            (Method::GET, "/v1/models/m/versions/x"),
            (Method::GET, "/v1/models/m/versions/1/labels/a"),
            (Method::DELETE, "/v1/models/m"),
        ] {
            assert_eq!(r(method.clone(), path), Err(format!("Malformed request: {method} {path}")));
        }
        assert_eq!(r(Method::GET, "/v1/models"), Err("Missing model name in request.".into()));
        assert_eq!(
            r(Method::GET, "/v1/models/m/versions/99999999999999999999"),
            Err("Failed to convert version: 99999999999999999999 to numeric.".into())
        );
    }
}
