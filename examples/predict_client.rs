//! The bundled client: classifies PNG images with a model served by
//! ferroserve (or by TensorFlow Serving: it uses nothing but the public API),
//! and shows a model's signature or version states.
//!
//! ```text
//! cargo run --release --example predict_client -- --server 127.0.0.1:8500 --model mnist examples/digits/3.png
//! cargo run --release --example predict_client -- --server 127.0.0.1:8500 --model mnist --metadata
//! cargo run --release --example predict_client -- --server 127.0.0.1:8500 --model mnist --status
//! # Load: 64 concurrent callers for 60 s, round-robin over two servers.
//! cargo run --release --example predict_client -- --server 127.0.0.1:8500,127.0.0.1:8510 --model mnist \
//!     --concurrency 64 --duration 60 --histogram-svg latency.svg examples/digits/3.png
//! ```
//!
//! In load mode (`--concurrency` with `--duration` or `--requests`) every
//! caller sends the same Predict (the images given, or one all-zero image
//! of the signature's size) to the next server in turn, and the run ends
//! with `key=value` lines: requests, errors, requests per second, latency
//! percentiles, errors by code and requests by server. The exit status is
//! 2 when any request failed.
//!
//! Images are read as 8-bit grayscale (colour is converted to luminance),
//! scaled to [0, 1] and sent as one float batch `[n, height, width, 1]` to
//! the signature's only input; every image must match the input's fixed
//! height and width. Errors print one line and exit with status 1.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::Parser;
use prost::Message;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use ferroserve::proto::tensorflow::serving::model_service_client::ModelServiceClient;
use ferroserve::proto::tensorflow::serving::prediction_service_client::PredictionServiceClient;
use ferroserve::proto::tensorflow::serving::{
    GetModelMetadataRequest, GetModelStatusRequest, ModelSpec, PredictRequest, SignatureDefMap, model_spec,
    model_version_status,
};
use ferroserve::proto::tensorflow::{DataType, SignatureDef, TensorInfo, TensorProto, tensor_info};
use ferroserve::tensor::proto::shape_proto;

#[path = "predict_client/load.rs"]
mod load;

#[derive(Debug, Parser)]
#[command(about = "Classify images with a model served over TensorFlow Serving's gRPC API")]
struct Args {
    /// host:port of the gRPC server; in load mode several, comma-separated
    /// or repeated, are called in turn.
    #[arg(long, default_value = "127.0.0.1:8500", value_delimiter = ',')]
    server: Vec<String>,
    /// Model name.
    #[arg(long, default_value = "mnist")]
    model: String,
    /// Model version (default: the latest available).
    #[arg(long)]
    version: Option<i64>,
    /// Signature name.
    #[arg(long, default_value = "serving_default")]
    signature: String,
    /// Print the model's signatures instead of predicting.
    #[arg(long)]
    metadata: bool,
    /// Print the model's version states instead of predicting.
    #[arg(long)]
    status: bool,
    /// Seconds to wait for each call.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// PEM file of the certificate authority that signed the server's
    /// certificate: connect with TLS.
    #[arg(long)]
    ca_cert: Option<PathBuf>,
    /// PEM certificate and key of this client, for servers that verify
    /// clients (with --ca-cert).
    #[arg(long, requires = "client_key")]
    client_cert: Option<PathBuf>,
    #[arg(long, requires = "client_cert")]
    client_key: Option<PathBuf>,
    /// File holding a bearer token sent as `authorization: Bearer <token>`.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Load mode: concurrent callers.
    #[arg(long, requires = "stop")]
    concurrency: Option<usize>,
    /// Load mode: seconds to run.
    #[arg(long, group = "stop")]
    duration: Option<f64>,
    /// Load mode: requests to send in all.
    #[arg(long, group = "stop")]
    requests: Option<u64>,
    /// Load mode: write an SVG histogram of the latencies here.
    #[arg(long)]
    histogram_svg: Option<PathBuf>,
    /// PNG images to classify.
    images: Vec<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        // The summary already says which codes failed.
        Err(e) if e.is::<load::SomeFailed>() => ExitCode::from(2),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A gRPC error as one line: its code name and message.
fn status_line(s: tonic::Status) -> anyhow::Error {
    anyhow!("{:?}: {}", s.code(), s.message())
}

fn model_spec(args: &Args, signature: bool) -> Option<ModelSpec> {
    Some(ModelSpec {
        name: args.model.clone(),
        signature_name: if signature { args.signature.clone() } else { String::new() },
        version_choice: args.version.map(model_spec::VersionChoice::Version),
    })
}

/// A channel to `server`, with TLS when `--ca-cert` is given.
async fn connect(args: &Args, server: &str) -> Result<Channel> {
    let scheme = if args.ca_cert.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{server}");
    let mut endpoint = Channel::from_shared(url.clone())
        .with_context(|| format!("bad --server address {server}"))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(args.timeout));
    if let Some(ca) = &args.ca_cert {
        let read = |p: &PathBuf| std::fs::read(p).with_context(|| format!("cannot read {}", p.display()));
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)?));
        if let (Some(cert), Some(key)) = (&args.client_cert, &args.client_key) {
            tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        endpoint = endpoint.tls_config(tls)?;
    }
    endpoint.connect().await.with_context(|| format!("cannot connect to {url}"))
}

/// The `authorization` value of `--token-file`.
fn bearer(args: &Args) -> Result<Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>> {
    let Some(path) = &args.token_file else { return Ok(None) };
    let token = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(Some(format!("Bearer {}", token.trim()).parse().context("the token is not a valid header value")?))
}

type Client = PredictionServiceClient<tonic::service::interceptor::InterceptedService<Channel, Auth>>;

/// Adds the bearer token to every call.
#[derive(Clone)]
struct Auth(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.0 {
            request.metadata_mut().insert("authorization", token.clone());
        }
        Ok(request)
    }
}

async fn run(args: Args) -> Result<()> {
    let first = args.server.first().ok_or_else(|| anyhow!("give a --server"))?.clone();
    let channel = connect(&args, &first).await?;
    let auth = Auth(bearer(&args)?);
    if args.status {
        return print_status(&args, ModelServiceClient::with_interceptor(channel, auth)).await;
    }
    let mut client =
        PredictionServiceClient::with_interceptor(channel, auth.clone()).max_decoding_message_size(256 << 20);
    let signatures = fetch_signatures(&args, &mut client).await?;
    if args.metadata {
        print_signatures(&signatures);
        return Ok(());
    }
    if args.images.is_empty() && args.concurrency.is_none() {
        bail!("give one or more PNG images to classify, or --metadata or --status");
    }
    let signature = signatures
        .signature_def
        .get(&args.signature)
        .ok_or_else(|| anyhow!("model {} has no signature {}", args.model, args.signature))?;
    let request = build_request(&args, signature)?;
    if let Some(concurrency) = args.concurrency {
        let mut clients = vec![client];
        for server in &args.server[1..] {
            let channel = connect(&args, server).await?;
            clients.push(
                PredictionServiceClient::with_interceptor(channel, auth.clone()).max_decoding_message_size(256 << 20),
            );
        }
        return load::run(&args, clients, request, concurrency).await;
    }
    predict(&args, &mut client, request).await
}

async fn fetch_signatures(args: &Args, client: &mut Client) -> Result<SignatureDefMap> {
    let response = client
        .get_model_metadata(GetModelMetadataRequest {
            model_spec: model_spec(args, false),
            metadata_field: vec!["signature_def".into()],
        })
        .await
        .map_err(status_line)?
        .into_inner();
    let any =
        response.metadata.get("signature_def").ok_or_else(|| anyhow!("the server sent no signature_def metadata"))?;
    SignatureDefMap::decode(any.value.as_slice()).context("decoding the SignatureDefMap")
}

fn describe(info: &TensorInfo) -> String {
    let name = match &info.encoding {
        Some(tensor_info::Encoding::Name(n)) => n.as_str(),
        _ => "?",
    };
    let dtype = DataType::try_from(info.dtype).map_or("DT_?", |d| d.as_str_name());
    let shape = info.tensor_shape.as_ref().map_or("?".to_string(), |s| {
        if s.unknown_rank {
            "<unknown rank>".into()
        } else {
            format!("[{}]", s.dim.iter().map(|d| d.size.to_string()).collect::<Vec<_>>().join(","))
        }
    });
    format!("{name} {dtype} {shape}")
}

fn print_signatures(map: &SignatureDefMap) {
    let mut keys: Vec<&String> = map.signature_def.keys().collect();
    keys.sort();
    for key in keys {
        let sig = &map.signature_def[key];
        println!("signature {key} ({})", sig.method_name);
        for (kind, tensors) in [("input", &sig.inputs), ("output", &sig.outputs)] {
            let mut aliases: Vec<&String> = tensors.keys().collect();
            aliases.sort();
            for alias in aliases {
                println!("  {kind} {alias}: {}", describe(&tensors[alias]));
            }
        }
    }
}

async fn print_status(
    args: &Args,
    mut client: ModelServiceClient<tonic::service::interceptor::InterceptedService<Channel, Auth>>,
) -> Result<()> {
    let response = client
        .get_model_status(GetModelStatusRequest { model_spec: model_spec(args, false) })
        .await
        .map_err(status_line)?
        .into_inner();
    for v in response.model_version_status {
        let state = model_version_status::State::try_from(v.state).map_or("UNKNOWN", |s| s.as_str_name());
        let status = v.status.unwrap_or_default();
        if status.error_message.is_empty() {
            println!("model {} version {}: {state}", args.model, v.version);
        } else {
            println!("model {} version {}: {state} ({})", args.model, v.version, status.error_message);
        }
    }
    Ok(())
}

/// Reads a PNG as 8-bit grayscale: `(height, width, pixels)`.
fn read_gray_png(path: &PathBuf) -> Result<(usize, usize, Vec<u8>)> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().with_context(|| format!("{} is not a PNG", path.display()))?;
    let mut buf = vec![0; reader.output_buffer_size().context("image too large")?];
    let info = reader.next_frame(&mut buf).with_context(|| format!("cannot decode {}", path.display()))?;
    let (w, h) = (info.width as usize, info.height as usize);
    let channels = info.color_type.samples();
    let pixels = buf[..info.buffer_size()]
        .chunks(channels)
        .map(|px| match channels {
            1 | 2 => px[0],
            // ITU-R BT.601 luma, as most image libraries convert.
            _ => (0.299 * px[0] as f32 + 0.587 * px[1] as f32 + 0.114 * px[2] as f32).round() as u8,
        })
        .collect();
    Ok((h, w, pixels))
}

/// The Predict of `--images` (or, in load mode without images, of one
/// all-zero image) on the signature's one input.
fn build_request(args: &Args, signature: &SignatureDef) -> Result<PredictRequest> {
    let [(alias, info)] = signature.inputs.iter().collect::<Vec<_>>()[..] else {
        bail!(
            "signature {} has {} inputs; this client feeds exactly one image input",
            args.signature,
            signature.inputs.len()
        );
    };
    let dims: Vec<i64> = info.tensor_shape.as_ref().map(|s| s.dim.iter().map(|d| d.size).collect()).unwrap_or_default();
    if dims.len() != 4 || dims[3] != 1 {
        bail!("input {alias} has shape {dims:?}; this client feeds grayscale images as [batch, height, width, 1]");
    }
    let mut values = Vec::new();
    let mut size = None;
    for path in &args.images {
        let (h, w, pixels) = read_gray_png(path)?;
        if (dims[1] > 0 && dims[1] as usize != h) || (dims[2] > 0 && dims[2] as usize != w) {
            bail!("{} is {w}x{h}, but input {alias} takes {}x{} images", path.display(), dims[2], dims[1]);
        }
        if size.is_some_and(|s| s != (h, w)) {
            bail!("{} is {w}x{h}; all images of one request must have the same size", path.display());
        }
        size = Some((h, w));
        values.extend(pixels.into_iter().map(|p| p as f32 / 255.0));
    }
    if args.images.is_empty() {
        // Load mode without images: one all-zero image.
        let (h, w) = (dims[1].max(1) as usize, dims[2].max(1) as usize);
        size = Some((h, w));
        values = vec![0.0; h * w];
    }
    let (h, w) = size.unwrap_or_default();
    let shape = [args.images.len().max(1) as i64, h as i64, w as i64, 1];
    Ok(PredictRequest {
        model_spec: model_spec(args, true),
        inputs: [(
            alias.clone(),
            TensorProto {
                dtype: DataType::DtFloat as i32,
                tensor_shape: Some(shape_proto(shape)),
                float_val: values,
                ..TensorProto::default()
            },
        )]
        .into(),
        ..PredictRequest::default()
    })
}

async fn predict(args: &Args, client: &mut Client, request: PredictRequest) -> Result<()> {
    let response = client.predict(request).await.map_err(status_line)?.into_inner();
    let version = match response.model_spec.and_then(|s| s.version_choice) {
        Some(model_spec::VersionChoice::Version(v)) => v.to_string(),
        _ => "?".into(),
    };
    let (name, output) = response.outputs.iter().next().ok_or_else(|| anyhow!("the server answered with no output"))?;
    let classes = output.float_val.len() / args.images.len().max(1);
    for (path, probs) in args.images.iter().zip(output.float_val.chunks(classes.max(1))) {
        let (best, p) = probs.iter().enumerate().fold((0, f32::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b });
        println!("{}: class {best} (p={p:.4}; model {} version {version})", path.display(), args.model);
        let listed: Vec<String> = probs.iter().enumerate().map(|(i, v)| format!("{i}:{v:.4}")).collect();
        println!("  {name}: {}", listed.join(" "));
    }
    Ok(())
}
