//! [`ServeError`]: every error a client can see, and the one place where
//! errors become gRPC status codes and HTTP status codes.
//!
//! Texts follow TensorFlow Serving where it defines them (they are part of
//! the contract: clients and tests match on them). Where TensorFlow Serving
//! leaves the text to the TensorFlow runtime (wrong dtype, wrong shape), the
//! message names the input alias, what the signature expects and what
//! arrived.

use tonic::{Code, Status};

use crate::runtime::RunError;

/// Which servable a request asked for, printed as TensorFlow Serving prints
/// it in "not found" errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServableRequest {
    /// The highest available version of the model.
    Latest(String),
    /// One version of the model.
    Specific(String, i64),
}

impl std::fmt::Display for ServableRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServableRequest::Latest(name) => write!(f, "Latest({name})"),
            ServableRequest::Specific(name, v) => write!(f, "Specific({name}, {v})"),
        }
    }
}

/// An error answered to a client.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ServeError {
    #[error("Missing ModelSpec")]
    MissingModelSpec,
    #[error("ModelSpec has no name specified.")]
    EmptyModelName,
    #[error("Servable not found for request: {0}")]
    ServableNotFound(ServableRequest),
    #[error("Unrecognized servable version label: {0}")]
    UnknownVersionLabel(String),
    #[error("Serving signature key \"{0}\" not found.")]
    SignatureNotFound(String),
    #[error("Could not find any versions of model {0}")]
    NoVersionsOfModel(String),
    #[error("Could not find version {version} of model {model}")]
    NoSuchVersion { model: String, version: i64 },
    #[error("GetModelMetadataRequest must specify at least one metadata_field")]
    NoMetadataField,
    #[error("Metadata field {0} is not supported")]
    UnsupportedMetadataField(String),
    /// A request that is malformed or does not fit the signature; the text
    /// says what was wrong and what was expected.
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    DeadlineExceeded(String),
    #[error("{0}")]
    Unknown(String),
    #[error("{0}")]
    Unimplemented(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Internal(String),
}

/// TensorFlow Serving cuts messages longer than this many bytes.
const MAX_MESSAGE_BYTES: usize = 1024;

/// Cuts `message` to [`MAX_MESSAGE_BYTES`] on a character boundary and marks
/// the cut, as TensorFlow Serving does.
pub fn truncate_message(message: &str) -> String {
    if message.len() <= MAX_MESSAGE_BYTES {
        return message.to_string();
    }
    let mut end = MAX_MESSAGE_BYTES;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...TRUNCATED", &message[..end])
}

/// TensorFlow's upper-case name of a status code (`NOT_FOUND`), as its logs,
/// start-up errors and metrics print it.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

impl ServeError {
    /// The gRPC status code (numerically the TensorFlow error code).
    pub fn code(&self) -> Code {
        match self {
            ServeError::ServableNotFound(_)
            | ServeError::NoVersionsOfModel(_)
            | ServeError::NoSuchVersion { .. }
            | ServeError::NotFound(_) => Code::NotFound,
            ServeError::Unknown(_) => Code::Unknown,
            ServeError::DeadlineExceeded(_) => Code::DeadlineExceeded,
            ServeError::SignatureNotFound(_) | ServeError::FailedPrecondition(_) => Code::FailedPrecondition,
            ServeError::Unimplemented(_) => Code::Unimplemented,
            ServeError::Unavailable(_) => Code::Unavailable,
            ServeError::ResourceExhausted(_) => Code::ResourceExhausted,
            ServeError::Unauthenticated(_) => Code::Unauthenticated,
            ServeError::Internal(_) => Code::Internal,
            ServeError::MissingModelSpec
            | ServeError::EmptyModelName
            | ServeError::UnknownVersionLabel(_)
            | ServeError::NoMetadataField
            | ServeError::UnsupportedMetadataField(_)
            | ServeError::InvalidArgument(_) => Code::InvalidArgument,
        }
    }

    /// The HTTP status TensorFlow Serving's REST API gives this code.
    pub fn http_status(&self) -> u16 {
        match self.code() {
            Code::Ok => 200,
            Code::Cancelled => 499,
            Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => 400,
            Code::DeadlineExceeded => 504,
            Code::NotFound => 404,
            Code::AlreadyExists | Code::Aborted => 409,
            Code::PermissionDenied => 403,
            Code::Unauthenticated => 401,
            Code::ResourceExhausted => 429,
            Code::Unimplemented => 501,
            Code::Unavailable => 503,
            Code::Unknown | Code::Internal | Code::DataLoss => 500,
        }
    }
}

impl From<ServeError> for Status {
    fn from(e: ServeError) -> Status {
        Status::new(e.code(), truncate_message(&e.to_string()))
    }
}

impl From<crate::repository::RepositoryError> for ServeError {
    fn from(e: crate::repository::RepositoryError) -> ServeError {
        use crate::repository::RepositoryError as R;
        match e {
            R::BasePath { .. } | R::NoVersions { .. } => ServeError::NotFound(e.to_string()),
            R::NotAvailable(_) => ServeError::Unknown(e.to_string()),
            R::Label(inner) => inner,
        }
    }
}

impl From<RunError> for ServeError {
    fn from(e: RunError) -> ServeError {
        match e {
            // Inputs are checked against the signature first, so a kernel
            // failure means the request's data does not fit the model
            // (a dynamic dim the model cannot take, for instance).
            RunError::Kernel { .. } | RunError::Input(_) => ServeError::InvalidArgument(e.to_string()),
            RunError::OutputCount { .. } | RunError::NotFed(_) => ServeError::Internal(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_and_codes_match_tensorflow_serving() {
        let e = ServeError::ServableNotFound(ServableRequest::Latest("m".into()));
        assert_eq!(e.to_string(), "Servable not found for request: Latest(m)");
        assert_eq!((e.code(), e.http_status()), (Code::NotFound, 404));
        let e = ServeError::ServableNotFound(ServableRequest::Specific("m".into(), 3));
        assert_eq!(e.to_string(), "Servable not found for request: Specific(m, 3)");
        let e = ServeError::SignatureNotFound("x".into());
        assert_eq!(e.to_string(), "Serving signature key \"x\" not found.");
        assert_eq!((e.code(), e.http_status()), (Code::FailedPrecondition, 400));
        assert_eq!(ServeError::Unimplemented(String::new()).http_status(), 501);
    }

    #[test]
    fn long_messages_are_truncated_on_a_char_boundary() {
        let short = "x".repeat(1024);
        assert_eq!(truncate_message(&short), short);
        let long = format!("{}é{}", "a".repeat(1023), "b".repeat(10));
        let cut = truncate_message(&long);
        assert_eq!(cut, format!("{}...TRUNCATED", "a".repeat(1023)));
        let status: Status = ServeError::InvalidArgument("y".repeat(5000)).into();
        assert_eq!(status.message().len(), 1024 + "...TRUNCATED".len());
    }
}
