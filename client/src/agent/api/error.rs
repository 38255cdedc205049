//! Error answers: `{"error": {"code": ..., "message": ...}}` with the
//! HTTP status each error maps to.

use super::*;

/// An error answer: `{"error": {"code": ..., "message": ...}}`.
#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// HTTP status (not in the body).
    #[serde(skip, default = "internal_status")]
    pub status: u16,
    /// Stable code: `bad_request`, `not_found`, `ambiguous_id`,
    /// `not_allowed`, `too_large`, `rejected`, `forbidden`, `internal`.
    pub code: String,
    /// What a person reads.
    pub message: String,
}

fn internal_status() -> u16 {
    500
}

/// The body of an error answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ApiError,
}

impl ApiError {
    /// Any error with a status and code.
    pub fn new(status: u16, code: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code: code.into(),
            message: message.into(),
        }
    }

    /// 400 `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        Self::new(400, "bad_request", message)
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        Self::new(404, "not_found", message)
    }

    /// 500 `internal`.
    pub fn internal(message: impl Into<String>) -> ApiError {
        Self::new(500, "internal", message)
    }
}

impl From<crate::ids::IdError> for ApiError {
    fn from(e: crate::ids::IdError) -> ApiError {
        use crate::ids::IdError;
        let (status, code) = match &e {
            IdError::NotHex(_) | IdError::TooShort(_) => (400, "bad_request"),
            IdError::Unknown { .. } => (404, "not_found"),
            IdError::Ambiguous { .. } => (409, "ambiguous_id"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

impl From<crate::archive::ArchiveError> for ApiError {
    fn from(e: crate::archive::ArchiveError) -> ApiError {
        ApiError::internal(format!("archive: {e}"))
    }
}

impl From<crate::client::ClientError> for ApiError {
    fn from(e: crate::client::ClientError) -> ApiError {
        use crate::client::ClientError as E;
        let (status, code) = match &e {
            E::NotAllowed(_) | E::Seal(_) | E::AboveTlp { .. } => (403, "not_allowed"),
            E::TooLarge { .. } => (413, "too_large"),
            E::Rejected { .. } => (422, "rejected"),
            _ => (500, "internal"),
        };
        ApiError::new(status, code, e.to_string())
    }
}
