//! Load mode of the bundled client: concurrent callers sending one Predict
//! round-robin over the servers until a duration or a request count is
//! reached, then a summary in `key=value` lines and, optionally, an SVG
//! histogram of the latencies.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::{Args, Client};
use ferroserve::proto::tensorflow::serving::PredictRequest;

/// The run finished, but this many requests failed.
#[derive(Debug)]
pub struct SomeFailed(pub u64);

impl std::fmt::Display for SomeFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} requests failed", self.0)
    }
}

impl std::error::Error for SomeFailed {}

/// What one caller saw.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u64>,
    errors: BTreeMap<String, u64>,
    per_server: Vec<u64>,
}

/// Counters the progress line reads.
#[derive(Default)]
struct Progress {
    issued: AtomicU64,
    done: AtomicU64,
    failed: AtomicU64,
}

pub async fn run(args: &Args, clients: Vec<Client>, request: PredictRequest, concurrency: usize) -> Result<()> {
    let started = Instant::now();
    let deadline = args.duration.map(|d| tokio::time::Instant::now() + Duration::from_secs_f64(d));
    let (clients, request) = (Arc::new(clients), Arc::new(request));
    let progress = Arc::new(Progress::default());
    let mut callers = Vec::with_capacity(concurrency);
    for _ in 0..concurrency.max(1) {
        let (clients, request, progress, limit) = (clients.clone(), request.clone(), progress.clone(), args.requests);
        callers.push(tokio::spawn(async move {
            let mut tally = Tally { per_server: vec![0; clients.len()], ..Tally::default() };
            loop {
                if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                    break;
                }
                let n = progress.issued.fetch_add(1, Ordering::Relaxed);
                if limit.is_some_and(|l| n >= l) {
                    break;
                }
                let server = (n % clients.len() as u64) as usize;
                let mut client = clients[server].clone();
                let sent = Instant::now();
                let call = client.predict((*request).clone());
                let result = match deadline {
                    Some(d) => match tokio::time::timeout_at(d, call).await {
                        Ok(result) => result,
                        // Cut by the end of the run: not counted.
                        Err(_) => break,
                    },
                    None => call.await,
                };
                tally.latencies_us.push(sent.elapsed().as_micros() as u64);
                tally.per_server[server] += 1;
                progress.done.fetch_add(1, Ordering::Relaxed);
                if let Err(status) = result {
                    progress.failed.fetch_add(1, Ordering::Relaxed);
                    *tally.errors.entry(format!("{:?}", status.code())).or_default() += 1;
                }
            }
            tally
        }));
    }
    let bar = std::io::stderr().is_terminal().then(|| {
        let (progress, duration, requests) = (progress.clone(), args.duration, args.requests);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                draw(&progress, started.elapsed(), duration, requests);
            }
        })
    });
    let mut total = Tally { per_server: vec![0; clients.len()], ..Tally::default() };
    for caller in callers {
        let tally = caller.await.context("a caller stopped")?;
        total.latencies_us.extend(tally.latencies_us);
        for (code, n) in tally.errors {
            *total.errors.entry(code).or_default() += n;
        }
        for (sum, n) in total.per_server.iter_mut().zip(tally.per_server) {
            *sum += n;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    if let Some(bar) = bar {
        bar.abort();
        draw(&progress, started.elapsed(), args.duration, args.requests);
        eprintln!();
    }
    total.latencies_us.sort_unstable();
    let failed: u64 = total.errors.values().sum();
    let n = total.latencies_us.len() as u64;
    let ms = |q: f64| percentile(&total.latencies_us, q) as f64 / 1000.0;
    println!(
        "requests={n} ok={} failed={failed} seconds={seconds:.2} requests_per_sec={:.1} p50_ms={:.3} p90_ms={:.3} p99_ms={:.3} max_ms={:.3}",
        n - failed,
        n as f64 / seconds.max(1e-9),
        ms(0.50),
        ms(0.90),
        ms(0.99),
        ms(1.0)
    );
    for (code, count) in &total.errors {
        println!("error code={code} count={count}");
    }
    for (server, count) in args.server.iter().zip(&total.per_server) {
        println!("server address={server} requests={count}");
    }
    if let Some(path) = &args.histogram_svg {
        std::fs::write(path, histogram_svg(&total.latencies_us, failed))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if failed > 0 {
        return Err(SomeFailed(failed).into());
    }
    Ok(())
}

/// The `q` quantile of sorted values (nearest rank).
fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn draw(progress: &Progress, elapsed: Duration, duration: Option<f64>, requests: Option<u64>) {
    let done = progress.done.load(Ordering::Relaxed);
    let fraction = match (duration, requests) {
        (Some(d), _) => elapsed.as_secs_f64() / d,
        (_, Some(r)) => done as f64 / r.max(1) as f64,
        _ => 0.0,
    }
    .clamp(0.0, 1.0);
    const WIDTH: usize = 30;
    let filled = (fraction * WIDTH as f64) as usize;
    let rate = done as f64 / elapsed.as_secs_f64().max(1e-9);
    let mut err = std::io::stderr().lock();
    let _ = write!(
        err,
        "\r[{}{}] {:3.0}% {:6.1}s {done} requests {rate:.0}/s {} failed ",
        "#".repeat(filled),
        ".".repeat(WIDTH - filled),
        fraction * 100.0,
        elapsed.as_secs_f64(),
        progress.failed.load(Ordering::Relaxed)
    );
    let _ = err.flush();
}

/// A histogram of latencies on log-spaced buckets, as a standalone SVG.
fn histogram_svg(sorted_us: &[u64], failed: u64) -> String {
    const BUCKETS: usize = 40;
    const W: f64 = 800.0;
    const H: f64 = 400.0;
    const PAD: f64 = 50.0;
    let lo = (sorted_us.first().copied().unwrap_or(1).max(1) as f64).ln();
    let hi = (sorted_us.last().copied().unwrap_or(1).max(2) as f64).ln().max(lo + 1e-3);
    let mut counts = [0u64; BUCKETS];
    for &v in sorted_us {
        let at = (((v.max(1) as f64).ln() - lo) / (hi - lo) * BUCKETS as f64) as usize;
        counts[at.min(BUCKETS - 1)] += 1;
    }
    let peak = counts.iter().copied().max().unwrap_or(1).max(1) as f64;
    let bar_w = (W - 2.0 * PAD) / BUCKETS as f64;
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{PAD}" y="20">{} requests, {failed} failed; p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms</text>
"#,
        sorted_us.len(),
        percentile(sorted_us, 0.5) as f64 / 1000.0,
        percentile(sorted_us, 0.99) as f64 / 1000.0,
        percentile(sorted_us, 1.0) as f64 / 1000.0
    );
    for (i, &c) in counts.iter().enumerate() {
        let h = c as f64 / peak * (H - 2.0 * PAD);
        svg += &format!(
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"steelblue\"><title>{c}</title></rect>\n",
            PAD + i as f64 * bar_w,
            H - PAD - h,
            bar_w - 1.0
        );
    }
    for tick in 0..=4 {
        let x = PAD + tick as f64 / 4.0 * (W - 2.0 * PAD);
        let ms = (lo + tick as f64 / 4.0 * (hi - lo)).exp() / 1000.0;
        svg += &format!("<text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{ms:.3} ms</text>\n", H - PAD + 18.0);
    }
    svg +=
        &format!("<line x1=\"{PAD}\" y1=\"{0}\" x2=\"{1}\" y2=\"{0}\" stroke=\"black\"/>\n</svg>\n", H - PAD, W - PAD);
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!((percentile(&v, 0.5), percentile(&v, 0.99), percentile(&v, 1.0)), (50, 99, 100));
        assert_eq!(percentile(&[], 0.5), 0);
        assert!(histogram_svg(&v, 0).starts_with("<svg"));
    }
}
