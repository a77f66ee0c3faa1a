//! Counters, gauges and histograms under TensorFlow Serving's metric names,
//! rendered in the Prometheus text format as TensorFlow Serving renders
//! them: `# TYPE` lines and no `# HELP`, every character of the internal
//! name outside `[a-zA-Z0-9_]` turned into `:` (so
//! `/tensorflow/serving/request_count` is
//! `:tensorflow:serving:request_count`), latency histograms in microseconds
//! with buckets 10 x 1.8^i.
//!
//! Beyond TensorFlow Serving's set: a `model_version` label on request
//! latency, `process_start_time_seconds`, `process_resident_memory_bytes`
//! and the number of requests in flight.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Label values in the order of the metric's label names.
type Labels = Vec<String>;

#[derive(Debug, Default)]
struct Histogram {
    /// Counts per bucket (not cumulative), the last one for +Inf.
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

#[derive(Debug)]
enum Family {
    Counter(BTreeMap<Labels, u64>),
    Histogram(BTreeMap<Labels, Histogram>),
}

#[derive(Debug)]
struct Metric {
    name: &'static str,
    labels: &'static [&'static str],
    family: Family,
}

/// TensorFlow Serving's latency buckets: 10 x 1.8^i microseconds, 33 of them.
fn latency_bounds() -> Vec<f64> {
    (0..33).map(|i| 10.0 * 1.8f64.powi(i)).collect()
}

/// Batch-size buckets for example counts: powers of 2 up to 2^20.
fn count_bounds() -> Vec<f64> {
    (0..=20).map(|i| 2f64.powi(i)).collect()
}

/// Where a request came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entrypoint {
    Grpc,
    Rest,
}

/// All the server's metrics.
#[derive(Debug)]
pub struct Metrics {
    metrics: Mutex<Vec<Metric>>,
    latency_bounds: Vec<f64>,
    count_bounds: Vec<f64>,
    start: SystemTime,
}

const REQUEST_COUNT: &str = "/tensorflow/serving/request_count";
const REQUEST_LATENCY: &str = "/tensorflow/serving/request_latency";
const RUNTIME_LATENCY: &str = "/tensorflow/serving/runtime_latency";
const EXAMPLE_COUNTS: &str = "/tensorflow/serving/request_example_counts";
const EXAMPLE_COUNT_TOTAL: &str = "/tensorflow/serving/request_example_count_total";
const LOAD_ATTEMPTS: &str = "/tensorflow/cc/saved_model/load_attempt_count";
const LOAD_LATENCY: &str = "/tensorflow/cc/saved_model/load_latency";
const WARMUP_LATENCY: &str = "/tensorflow/serving/model_warmup_latency";

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// The Prometheus name of an internal metric name.
pub fn prometheus_name(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { ':' }).collect()
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl Metrics {
    /// Every metric registered, with no values yet.
    pub fn new() -> Metrics {
        let counter = |name, labels| Metric { name, labels, family: Family::Counter(BTreeMap::new()) };
        let histogram = |name, labels| Metric { name, labels, family: Family::Histogram(BTreeMap::new()) };
        Metrics {
            metrics: Mutex::new(vec![
                counter(REQUEST_COUNT, &["model_name", "status"]),
                histogram(REQUEST_LATENCY, &["model_name", "API", "entrypoint", "model_version"]),
                histogram(RUNTIME_LATENCY, &["model_name", "API", "runtime"]),
                histogram(EXAMPLE_COUNTS, &["model"]),
                counter(EXAMPLE_COUNT_TOTAL, &["model"]),
                counter(LOAD_ATTEMPTS, &["model_path", "status"]),
                counter(LOAD_LATENCY, &["model_path"]),
                histogram(WARMUP_LATENCY, &["model_path", "status"]),
            ]),
            latency_bounds: latency_bounds(),
            count_bounds: count_bounds(),
            start: SystemTime::now(),
        }
    }

    fn with<R>(&self, name: &str, f: impl FnOnce(&mut Family) -> R) -> R {
        let mut metrics = self.metrics.lock().unwrap_or_else(|e| e.into_inner());
        let metric = metrics.iter_mut().find(|m| m.name == name).expect("metric registered in Metrics::new");
        f(&mut metric.family)
    }

    fn add(&self, name: &str, labels: Labels, by: u64) {
        self.with(name, |f| {
            if let Family::Counter(values) = f {
                *values.entry(labels).or_default() += by;
            }
        });
    }

    fn observe(&self, name: &str, labels: Labels, value: f64, bounds: &[f64]) {
        self.with(name, |f| {
            if let Family::Histogram(values) = f {
                let h = values
                    .entry(labels)
                    .or_insert_with(|| Histogram { buckets: vec![0; bounds.len() + 1], ..Histogram::default() });
                let i = bounds.iter().position(|b| value <= *b).unwrap_or(bounds.len());
                h.buckets[i] += 1;
                h.sum += value;
                h.count += 1;
            }
        });
    }

    /// One prediction request: its outcome (a status code name such as
    /// `OK` or `NOT_FOUND`), its latency, and, when a version answered, the
    /// version and the batch size.
    pub fn record_request(
        &self,
        model: &str,
        api: &str,
        entrypoint: Entrypoint,
        status: &str,
        latency: Duration,
        answered: Option<(i64, usize)>,
    ) {
        self.add(REQUEST_COUNT, vec![model.into(), status.into()], 1);
        let entry = match entrypoint {
            Entrypoint::Grpc => "GRPC",
            Entrypoint::Rest => "REST",
        };
        let version = answered.map(|(v, _)| v.to_string()).unwrap_or_default();
        let micros = latency.as_secs_f64() * 1e6;
        self.observe(
            REQUEST_LATENCY,
            vec![model.into(), api.into(), entry.into(), version],
            micros,
            &self.latency_bounds,
        );
        if let Some((_, examples)) = answered {
            self.observe(EXAMPLE_COUNTS, vec![model.into()], examples as f64, &self.count_bounds);
            self.add(EXAMPLE_COUNT_TOTAL, vec![model.into()], examples as u64);
        }
    }

    /// Time spent running a model, without decoding and queueing.
    pub fn record_runtime(&self, model: &str, api: &str, latency: Duration) {
        let micros = latency.as_secs_f64() * 1e6;
        self.observe(RUNTIME_LATENCY, vec![model.into(), api.into(), "TF1".into()], micros, &self.latency_bounds);
    }

    /// One model version load attempt.
    pub fn record_load(&self, model_path: &str, ok: bool, latency: Duration) {
        let status = if ok { "success" } else { "fail" };
        self.add(LOAD_ATTEMPTS, vec![model_path.into(), status.into()], 1);
        self.add(LOAD_LATENCY, vec![model_path.into()], latency.as_micros() as u64);
    }

    /// One warmup of a version.
    pub fn record_warmup(&self, model_path: &str, ok: bool, latency: Duration) {
        let status = if ok { "OK" } else { "ERROR" };
        let micros = latency.as_secs_f64() * 1e6;
        self.observe(WARMUP_LATENCY, vec![model_path.into(), status.into()], micros, &self.latency_bounds);
    }

    /// The Prometheus text page; `in_flight` is the number of requests
    /// being answered.
    pub fn render(&self, in_flight: usize) -> String {
        let mut out = String::new();
        let labels = |names: &[&str], values: &[String], extra: Option<(&str, String)>| {
            let mut parts: Vec<String> =
                names.iter().zip(values).map(|(n, v)| format!("{n}=\"{}\"", escape(v))).collect();
            if let Some((n, v)) = extra {
                parts.push(format!("{n}=\"{v}\""));
            }
            if parts.is_empty() { String::new() } else { format!("{{{}}}", parts.join(",")) }
        };
        let metrics = self.metrics.lock().unwrap_or_else(|e| e.into_inner());
        for m in metrics.iter() {
            let name = prometheus_name(m.name);
            match &m.family {
                Family::Counter(values) => {
                    let _ = writeln!(out, "# TYPE {name} counter");
                    for (l, v) in values {
                        let _ = writeln!(out, "{name}{} {v}", labels(m.labels, l, None));
                    }
                }
                Family::Histogram(values) => {
                    let _ = writeln!(out, "# TYPE {name} histogram");
                    let bounds = if m.name == EXAMPLE_COUNTS { &self.count_bounds } else { &self.latency_bounds };
                    for (l, h) in values {
                        let mut cumulative = 0;
                        for (i, count) in h.buckets.iter().enumerate() {
                            cumulative += count;
                            let le = bounds.get(i).map_or("+Inf".to_string(), |b| format!("{b}"));
                            let _ =
                                writeln!(out, "{name}_bucket{} {cumulative}", labels(m.labels, l, Some(("le", le))));
                        }
                        let _ = writeln!(out, "{name}_sum{} {}", labels(m.labels, l, None), h.sum);
                        let _ = writeln!(out, "{name}_count{} {}", labels(m.labels, l, None), h.count);
                    }
                }
            }
        }
        drop(metrics);
        let start = self.start.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        let _ = writeln!(out, "# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds {start}");
        if let Some(rss) = resident_bytes() {
            let _ = writeln!(out, "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {rss}");
        }
        let _ =
            writeln!(out, "# TYPE :ferroserve:in_flight_requests gauge\n:ferroserve:in_flight_requests {in_flight}");
        out
    }
}

/// Resident memory from /proc (Linux); `None` elsewhere.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_page_follow_tensorflow_serving() {
        assert_eq!(prometheus_name("/tensorflow/serving/request_count"), ":tensorflow:serving:request_count");
        let m = Metrics::new();
        m.record_request("mnist", "Predict", Entrypoint::Grpc, "OK", Duration::from_micros(15), Some((1, 3)));
        m.record_request("mnist", "predict", Entrypoint::Rest, "NOT_FOUND", Duration::from_micros(5), None);
        m.record_load("/models/m/1", true, Duration::from_millis(2));
        let page = m.render(2);
        assert!(!page.contains("# HELP"));
        assert!(page.contains("# TYPE :tensorflow:serving:request_count counter\n"));
        assert!(page.contains(":tensorflow:serving:request_count{model_name=\"mnist\",status=\"OK\"} 1\n"));
        assert!(page.contains(":tensorflow:serving:request_count{model_name=\"mnist\",status=\"NOT_FOUND\"} 1\n"));
        // 15 µs falls in the second bucket (10 < 15 <= 18).
        assert!(page.contains(":tensorflow:serving:request_latency_bucket{model_name=\"mnist\",API=\"Predict\",entrypoint=\"GRPC\",model_version=\"1\",le=\"10\"} 0\n"), "{page}");
        assert!(page.contains(":tensorflow:serving:request_latency_bucket{model_name=\"mnist\",API=\"Predict\",entrypoint=\"GRPC\",model_version=\"1\",le=\"18\"} 1\n"), "{page}");
        assert!(page.contains("le=\"+Inf\"} 1\n"));
        assert!(page.contains(":tensorflow:serving:request_example_count_total{model=\"mnist\"} 3\n"));
        assert!(page.contains(
            ":tensorflow:cc:saved_model:load_attempt_count{model_path=\"/models/m/1\",status=\"success\"} 1\n"
        ));
        assert!(page.contains(":ferroserve:in_flight_requests 2\n"));
        assert!(page.contains("process_start_time_seconds "));
        assert_eq!(escape("a\"b\\c"), "a\\\"b\\\\c");
    }
}
