//! Bearer-token authentication (`--auth_token_file`, ferroserve's own):
//! every gRPC and REST call must carry `authorization: Bearer <token>`,
//! except the gRPC health service and the Prometheus page, which probes and
//! scrapers call without credentials. A call without the token is answered
//! UNAUTHENTICATED (HTTP 401). The token is compared in constant time and
//! never logged.

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// gRPC methods callable without the token.
const OPEN_GRPC_PREFIX: &str = "/grpc.health.v1.Health/";

/// The expected `authorization` header value.
#[derive(Clone, PartialEq, Eq)]
pub struct BearerToken {
    expected: Arc<[u8]>,
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

/// Why a call was refused; never quotes what the client sent.
pub const MISSING_TOKEN: &str = "This server requires a bearer token: send the header 'authorization: Bearer <token>' with the token of --auth_token_file";
pub const WRONG_TOKEN: &str = "The bearer token in the 'authorization' header is not the one this server accepts";

impl BearerToken {
    /// The token in `path`: its contents without surrounding whitespace.
    ///
    /// # Errors
    /// When the file cannot be read, is empty, or holds characters that
    /// cannot go in an HTTP header.
    pub fn read(path: &Path) -> Result<BearerToken, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read it: {e}"))?;
        BearerToken::new(text.trim())
    }

    /// # Errors
    /// When `token` is empty or not visible ASCII.
    pub fn new(token: &str) -> Result<BearerToken, String> {
        if token.is_empty() {
            return Err("the token file is empty".into());
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("the token must be visible ASCII with no spaces, as an HTTP header value allows".into());
        }
        Ok(BearerToken { expected: format!("Bearer {token}").into_bytes().into() })
    }

    /// Checks an `authorization` header value, in time that does not depend
    /// on where it differs from the token.
    ///
    /// # Errors
    /// With the message to answer.
    pub fn check(&self, header: Option<&http::HeaderValue>) -> Result<(), &'static str> {
        let Some(given) = header else { return Err(MISSING_TOKEN) };
        let given = given.as_bytes();
        // The scheme is case-insensitive (RFC 9110 11.1).
        let scheme_ok = given.len() >= 7 && given[..7].eq_ignore_ascii_case(b"Bearer ");
        let mut diff = u8::from(given.len() != self.expected.len());
        for (i, e) in self.expected.iter().enumerate() {
            let g = given.get(i).copied().unwrap_or(!*e);
            diff |= if i < 7 { 0 } else { g ^ e };
        }
        if scheme_ok && diff == 0 { Ok(()) } else { Err(WRONG_TOKEN) }
    }
}

/// A tower layer for the gRPC server: refuses calls without the token.
#[derive(Debug, Clone)]
pub struct GrpcAuthLayer {
    token: Option<BearerToken>,
}

impl GrpcAuthLayer {
    pub fn new(token: Option<BearerToken>) -> GrpcAuthLayer {
        GrpcAuthLayer { token }
    }
}

impl<S> tower::Layer<S> for GrpcAuthLayer {
    type Service = GrpcAuth<S>;
    fn layer(&self, inner: S) -> GrpcAuth<S> {
        GrpcAuth { inner, token: self.token.clone() }
    }
}

/// See [`GrpcAuthLayer`].
#[derive(Debug, Clone)]
pub struct GrpcAuth<S> {
    inner: S,
    token: Option<BearerToken>,
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for GrpcAuth<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if let Some(token) = &self.token
            && !request.uri().path().starts_with(OPEN_GRPC_PREFIX)
            && let Err(message) = token.check(request.headers().get(http::header::AUTHORIZATION))
        {
            tracing::debug!(path = request.uri().path(), "refused: {message}");
            let response = tonic::Status::unauthenticated(message).into_http();
            return Box::pin(std::future::ready(Ok(response)));
        }
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(inner.call(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_token_passes() {
        let token = BearerToken::new("s3cret-token").unwrap();
        let h = |v: &str| http::HeaderValue::from_str(v).unwrap();
        assert_eq!(token.check(Some(&h("Bearer s3cret-token"))), Ok(()));
        assert_eq!(token.check(Some(&h("bearer s3cret-token"))), Ok(()));
        assert_eq!(token.check(None), Err(MISSING_TOKEN));
        for wrong in
            ["Bearer s3cret-tokeN", "Bearer s3cret-token2", "Bearer s3cret", "Basic s3cret-token", "", "Bearer "]
        {
            assert_eq!(token.check(Some(&h(wrong))), Err(WRONG_TOKEN), "{wrong:?}");
        }
        assert!(format!("{token:?}").contains("redacted"));
        assert!(BearerToken::new("").is_err());
        assert!(BearerToken::new("two words").is_err());
    }
}
