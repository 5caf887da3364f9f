//! Errors as Thinger-style JSON: `{"error":{"message":"..."}}` with a status that says
//! whose fault it was and whether to retry.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use thicket_cluster::wire::Refusal;
use thicket_cluster::{ReadError, WriteError};
use thicket_engine::{CommandError, QueryError};

/// An HTTP error: status plus message (plus Retry-After for overload).
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub retry_after_s: Option<u32>,
}

impl ApiError {
    /// A 400 naming the problem.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            retry_after_s: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": {"message": self.message}}).to_string();
        let mut r = (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response();
        if let Some(s) = self.retry_after_s {
            if let Ok(v) = s.to_string().parse() {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        r
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        let status = match e {
            CommandError::Invalid(_) | CommandError::TooLarge { .. } => StatusCode::BAD_REQUEST,
            CommandError::NotFound(_) => StatusCode::NOT_FOUND,
            CommandError::Conflict(_) => StatusCode::CONFLICT,
        };
        ApiError {
            status,
            message: e.to_string(),
            retry_after_s: None,
        }
    }
}

impl From<WriteError> for ApiError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Rejected(c) => c.into(),
            WriteError::Overloaded { .. } => ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: e.to_string(),
                retry_after_s: Some(1),
            },
            WriteError::Unavailable(_) => ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: e.to_string(),
                retry_after_s: Some(1),
            },
            WriteError::Storage(_) | WriteError::Unknown(_) => ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: e.to_string(),
                retry_after_s: None,
            },
            WriteError::TooLarge { .. } => ApiError {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                message: e.to_string(),
                retry_after_s: None,
            },
        }
    }
}

impl From<ReadError> for ApiError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Query(q) => q.into(),
            ReadError::NotLeader { .. } | ReadError::Unavailable(_) => ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: e.to_string(),
                retry_after_s: Some(1),
            },
        }
    }
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        let (status, message) = match r {
            Refusal::NotLeader { leader } => (
                StatusCode::SERVICE_UNAVAILABLE,
                match leader {
                    Some(l) => format!("leadership is moving to node {l}; retry"),
                    None => "no leader is elected; retry".into(),
                },
            ),
            Refusal::NoQuorum(m) => (StatusCode::SERVICE_UNAVAILABLE, m),
            Refusal::Overloaded { retry_after_ms } => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("overloaded; retry in {retry_after_ms} ms"),
            ),
            Refusal::Failed(m) => (StatusCode::BAD_REQUEST, m),
        };
        ApiError {
            status,
            message,
            retry_after_s: None,
        }
    }
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        let status = match e {
            QueryError::BadParam { .. } | QueryError::Sql(_) | QueryError::TooLarge(_) => {
                StatusCode::BAD_REQUEST
            }
            QueryError::NotFound(_) => StatusCode::NOT_FOUND,
            QueryError::Timeout(_) | QueryError::ResourcesExhausted(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            QueryError::Engine(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError {
            status,
            message: e.to_string(),
            retry_after_s: None,
        }
    }
}
