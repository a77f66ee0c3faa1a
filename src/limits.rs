//! The budget of request bytes in flight (`--max_inflight_request_bytes`).
//!
//! Every request holds a [`Reservation`] of the bytes it brought while it is
//! answered: a gRPC request the length each message's prefix announces, as
//! soon as the prefix arrives (before the message is buffered), a REST
//! request its `Content-Length` up front, and its gzip inflation as it grows.
//! A request that would take the total past the budget is refused at once
//! with RESOURCE_EXHAUSTED (HTTP 429) instead of waiting, so a burst of large
//! uploads cannot exhaust memory.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http_body::{Body, Frame};

use crate::error::ServeError;

/// A shared budget of bytes.
#[derive(Debug)]
pub struct ByteBudget {
    limit: usize,
    used: AtomicUsize,
}

/// Why bytes could not be reserved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "The server is out of memory for requests: this request needs {needed} more bytes, {in_flight} bytes of other requests are in flight, and --max_inflight_request_bytes={limit}; retry later or send smaller requests"
)]
pub struct BudgetExceeded {
    pub needed: usize,
    pub in_flight: usize,
    pub limit: usize,
}

impl From<BudgetExceeded> for ServeError {
    fn from(e: BudgetExceeded) -> ServeError {
        ServeError::ResourceExhausted(e.to_string())
    }
}

impl From<BudgetExceeded> for tonic::Status {
    fn from(e: BudgetExceeded) -> tonic::Status {
        tonic::Status::resource_exhausted(e.to_string())
    }
}

impl ByteBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Arc<ByteBudget> {
        Arc::new(ByteBudget { limit, used: AtomicUsize::new(0) })
    }

    /// Bytes reserved now.
    pub fn in_flight(&self) -> usize {
        self.used.load(Ordering::SeqCst)
    }

    /// An empty reservation, to grow.
    pub fn reservation(self: &Arc<Self>) -> Reservation {
        Reservation { budget: self.clone(), bytes: 0 }
    }

    fn take(&self, n: usize) -> Result<(), BudgetExceeded> {
        let mut used = self.used.load(Ordering::SeqCst);
        loop {
            let total = used.checked_add(n).filter(|t| *t <= self.limit);
            let Some(total) = total else {
                return Err(BudgetExceeded { needed: n, in_flight: used, limit: self.limit });
            };
            match self.used.compare_exchange_weak(used, total, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => return Ok(()),
                Err(now) => used = now,
            }
        }
    }
}

/// Bytes held against a [`ByteBudget`] until dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<ByteBudget>,
    bytes: usize,
}

impl Reservation {
    /// Holds `n` more bytes.
    ///
    /// # Errors
    /// When the budget has less than `n` bytes left; nothing is taken then.
    pub fn grow(&mut self, n: usize) -> Result<(), BudgetExceeded> {
        self.budget.take(n)?;
        self.bytes += n;
        Ok(())
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::SeqCst);
    }
}

/// The default budget: a quarter of physical memory (from
/// `/proc/meminfo`), or 2 GiB where that cannot be read.
pub fn default_inflight_bytes() -> usize {
    let total_kib = std::fs::read_to_string("/proc/meminfo").ok().and_then(|text| {
        text.lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
    });
    total_kib.map_or(2 << 30, |kib| kib.saturating_mul(1024) / 4)
}

/// The reservation of one gRPC request, shared with its handler through
/// the request's extensions, so the handler can hold what decoding will
/// allocate beyond the wire bytes (a one-value `float_val` fills a whole
/// shape, as in TensorFlow).
#[derive(Debug, Clone)]
pub struct RequestBytes(Arc<Mutex<Reservation>>);

impl RequestBytes {
    /// Holds `n` more bytes for this request.
    ///
    /// # Errors
    /// When the budget has less than `n` bytes left.
    pub fn grow(&self, n: usize) -> Result<(), BudgetExceeded> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).grow(n)
    }
}

/// A tower layer for the gRPC server that reserves the length of every
/// request message against the budget as soon as its 5-byte prefix
/// arrives, and holds it until the handler has answered.
#[derive(Debug, Clone)]
pub struct GrpcBudgetLayer {
    budget: Option<Arc<ByteBudget>>,
    /// Messages longer than this are left to tonic's own limit, so their
    /// error names that limit.
    max_message: usize,
}

impl GrpcBudgetLayer {
    pub fn new(budget: Option<Arc<ByteBudget>>, max_message: usize) -> GrpcBudgetLayer {
        GrpcBudgetLayer { budget, max_message }
    }
}

impl<S> tower::Layer<S> for GrpcBudgetLayer {
    type Service = GrpcBudget<S>;
    fn layer(&self, inner: S) -> GrpcBudget<S> {
        GrpcBudget { inner, layer: self.clone() }
    }
}

/// See [`GrpcBudgetLayer`].
#[derive(Debug, Clone)]
pub struct GrpcBudget<S> {
    inner: S,
    layer: GrpcBudgetLayer,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> tower::Service<http::Request<tonic::body::Body>> for GrpcBudget<S>
where
    S: tower::Service<http::Request<tonic::body::Body>, Response = http::Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        // The clone that was made ready is the one that serves this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let Some(budget) = &self.layer.budget else {
            return Box::pin(inner.call(request));
        };
        let held = Arc::new(Mutex::new(budget.reservation()));
        let (mut parts, body) = request.into_parts();
        parts.extensions.insert(RequestBytes(held.clone()));
        let body = MessageBudgetBody {
            inner: body,
            held: held.clone(),
            max_message: self.layer.max_message,
            prefix: [0; 5],
            prefix_len: 0,
            skip: 0,
        };
        let request = http::Request::from_parts(parts, tonic::body::Body::new(body));
        Box::pin(async move {
            let response = inner.call(request).await;
            drop(held);
            response
        })
    }
}

/// A gRPC request body that reserves each message's announced length when
/// its prefix passes through.
struct MessageBudgetBody {
    inner: tonic::body::Body,
    held: Arc<Mutex<Reservation>>,
    max_message: usize,
    prefix: [u8; 5],
    prefix_len: usize,
    /// Message bytes still to pass before the next prefix.
    skip: usize,
}

impl MessageBudgetBody {
    fn scan(&mut self, mut data: &[u8]) -> Result<(), BudgetExceeded> {
        while !data.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(data.len());
                self.skip -= n;
                data = &data[n..];
                continue;
            }
            let n = (5 - self.prefix_len).min(data.len());
            self.prefix[self.prefix_len..self.prefix_len + n].copy_from_slice(&data[..n]);
            self.prefix_len += n;
            data = &data[n..];
            if self.prefix_len == 5 {
                self.prefix_len = 0;
                let len = u32::from_be_bytes([self.prefix[1], self.prefix[2], self.prefix[3], self.prefix[4]]) as usize;
                self.skip = len;
                if len <= self.max_message {
                    let mut held = self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    held.grow(len)?;
                }
            }
        }
        Ok(())
    }
}

impl Body for MessageBudgetBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            other => return other,
        };
        if let Some(data) = frame.data_ref()
            && let Err(e) = self.scan(data.chunk())
        {
            tracing::warn!(needed = e.needed, in_flight = e.in_flight, "request refused: {e}");
            return Poll::Ready(Some(Err(e.into())));
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_fail_past_the_limit_and_give_back_on_drop() {
        let budget = ByteBudget::new(100);
        let mut a = budget.reservation();
        a.grow(60).unwrap();
        let mut b = budget.reservation();
        let err = b.grow(50).unwrap_err();
        assert_eq!(err, BudgetExceeded { needed: 50, in_flight: 60, limit: 100 });
        assert!(err.to_string().contains("--max_inflight_request_bytes=100"), "{err}");
        b.grow(40).unwrap();
        assert_eq!(budget.in_flight(), 100);
        drop(a);
        assert_eq!(budget.in_flight(), 40);
        assert!(b.grow(usize::MAX).is_err(), "no overflow");
        drop(b);
        assert_eq!(budget.in_flight(), 0);
    }

    #[test]
    fn message_prefixes_split_across_frames_are_read() {
        let budget = ByteBudget::new(1000);
        let held = Arc::new(Mutex::new(budget.reservation()));
        let mut body = MessageBudgetBody {
            inner: tonic::body::Body::empty(),
            held: held.clone(),
            max_message: 5000,
            prefix: [0; 5],
            prefix_len: 0,
            skip: 0,
        };
        // Two messages of 3 and 300 bytes, the second prefix split in two.
        let mut wire = vec![0, 0, 0, 0, 3, 1, 2, 3, 0, 0, 0];
        body.scan(&wire).unwrap();
        assert_eq!(held.lock().unwrap().bytes(), 3);
        wire = vec![1, 44];
        wire.extend(std::iter::repeat_n(7, 300));
        body.scan(&wire).unwrap();
        assert_eq!(held.lock().unwrap().bytes(), 303);
        // A message over the message limit is left to tonic.
        body.scan(&[0, 0, 0, 0x20, 0]).unwrap();
        assert_eq!(held.lock().unwrap().bytes(), 303);
        body.skip = 0;
        // One the budget cannot hold is refused.
        let err = body.scan(&[0, 0, 0, 3, 0x20]).unwrap_err();
        assert_eq!((err.needed, err.in_flight), (800, 303));
    }
}
