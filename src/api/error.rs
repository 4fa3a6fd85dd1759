//! The one mapping from errors to HTTP. Bad input gets a 4xx naming what is wrong; anything unexpected
//! gets an opaque 500 (or 503 when the database is unreachable) and its cause chain is logged once, here.

use std::{borrow::Cow, time::Duration};

use actix_web::{
    HttpResponse, ResponseError,
    error::{JsonPayloadError, PathError, PayloadError, QueryPayloadError},
    http::StatusCode,
};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::body_timeout;
use crate::{
    dispatch::{PipelineError, ReceiptsNotStored},
    domain::MessageStatus,
    store::StoreError,
    telemetry::error_chain,
};

/// Every error the API returns has this shape.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// A stable code for programs.
    #[schema(example = "invalid_field")]
    pub error: &'static str,
    /// What went wrong, for people.
    #[schema(example = "to: must start with + and the country code")]
    pub message: String,
    /// The request field at fault, for `invalid_field`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "to")]
    #[schema(value_type = Option<String>)]
    pub field: Option<Cow<'static, str>>,
    /// The message's current state, for `wrong_state`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<MessageStatus>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{field}: {message}")]
    InvalidField { field: Cow<'static, str>, message: String },
    #[error("{0}")]
    MalformedBody(String),
    #[error("the request body is larger than {0} bytes")]
    BodyTooLarge(usize),
    #[error("the request body must be sent as Content-Type: application/json")]
    UnsupportedMediaType,
    #[error("the request body did not arrive within {}", humantime::format_duration(*.0))]
    BodyTimeout(Duration),
    #[error("no message has id {0}")]
    MessageNotFound(Uuid),
    #[error("no status event has id {0}")]
    EventNotFound(Uuid),
    #[error("the number is not on the opt-out list")]
    OptOutNotFound,
    #[error("message {id} is {status}: {rule}")]
    WrongState {
        id: Uuid,
        status: MessageStatus,
        rule: &'static str,
    },
    #[error("no route matches this method and path")]
    NoRoute,
    #[error("this path answers only {0}")]
    MethodNotAllowed(String),
    #[error("this route needs the API key: send Authorization: Bearer <key> or X-API-Key: <key>")]
    Unauthorized,
    #[error("this route takes the provider's callbacks and needs its key: send x-ins-auth-key: <CALLBACK_AUTH_KEY>")]
    CallbackUnauthorized,
    #[error("the provider's callbacks are off on this service: set CALLBACK_AUTH_KEY to take them")]
    CallbacksOff,
    #[error("this route refuses requests sent by a page of another site: {0}")]
    CrossSite(String),
    #[error("the database is unavailable; try again shortly")]
    DatabaseUnavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the service failed unexpectedly")]
    Unexpected(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    pub fn invalid(field: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self::InvalidField {
            field: field.into(),
            message: message.into(),
        }
    }

    /// What the client is told, in the one shape every error has.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: self.code(),
            message: self.to_string(),
            field: match self {
                Self::InvalidField { field, .. } => Some(field.clone()),
                _ => None,
            },
            status: match self {
                Self::WrongState { status, .. } => Some(*status),
                _ => None,
            },
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::InvalidField { .. } => "invalid_field",
            Self::MalformedBody(_) => "malformed_body",
            Self::BodyTooLarge(_) => "body_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::BodyTimeout(_) => "body_timeout",
            Self::MessageNotFound(_) => "message_not_found",
            Self::EventNotFound(_) => "event_not_found",
            Self::OptOutNotFound => "opt_out_not_found",
            Self::WrongState { .. } => "wrong_state",
            Self::NoRoute => "no_route",
            Self::MethodNotAllowed(_) => "method_not_allowed",
            Self::Unauthorized | Self::CallbackUnauthorized => "unauthorized",
            Self::CallbacksOff => "callbacks_off",
            Self::CrossSite(_) => "cross_site_request",
            Self::DatabaseUnavailable(_) => "database_unavailable",
            Self::Unexpected(_) => "internal_error",
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        if error.is_unavailable() {
            Self::DatabaseUnavailable(Box::new(error))
        } else {
            Self::Unexpected(Box::new(error))
        }
    }
}

impl From<PipelineError> for ApiError {
    fn from(error: PipelineError) -> Self {
        match error {
            PipelineError::Switch(store) => store.into(),
            PipelineError::Receipts(ReceiptsNotStored::Database(store)) if store.is_unavailable() => {
                Self::DatabaseUnavailable(Box::new(store))
            }
            PipelineError::ReceiptsOff => Self::CallbacksOff,
            gone => Self::Unexpected(Box::new(gone)),
        }
    }
}

impl From<JsonPayloadError> for ApiError {
    fn from(error: JsonPayloadError) -> Self {
        match error {
            JsonPayloadError::OverflowKnownLength { limit, .. } | JsonPayloadError::Overflow { limit } => {
                Self::BodyTooLarge(limit)
            }
            JsonPayloadError::ContentType => Self::UnsupportedMediaType,
            JsonPayloadError::Deserialize(e) => Self::MalformedBody(format!("the request body is not valid JSON: {e}")),
            JsonPayloadError::Payload(payload) => payload.into(),
            other => Self::MalformedBody(format!("the request body could not be read: {other}")),
        }
    }
}

impl From<PayloadError> for ApiError {
    fn from(error: PayloadError) -> Self {
        match body_timeout::limit_of(&error) {
            Some(limit) => Self::BodyTimeout(limit),
            None => Self::MalformedBody(format!("the request body could not be read: {error}")),
        }
    }
}

impl From<QueryPayloadError> for ApiError {
    fn from(error: QueryPayloadError) -> Self {
        // A parameter the route does not take, or one given twice, is named as `field`, as a bad value of
        // one is: serde names it in its message (`unknown field `match`, expected one of …`, `duplicate
        // field `limit``), which a name holding a backtick cannot end early.
        if let QueryPayloadError::Deserialize(cause) = &error {
            let cause = cause.to_string();
            let unknown = cause
                .strip_prefix("unknown field `")
                .and_then(|rest| {
                    rest.split_once("`, expected ")
                        .or_else(|| rest.split_once("`, there are no fields"))
                })
                .map(|(name, _)| (name, "not a parameter of this route"));
            let twice = cause
                .strip_prefix("duplicate field `")
                .and_then(|rest| rest.strip_suffix('`'))
                .map(|name| (name, "given twice"));
            if let Some((name, problem)) = unknown.or(twice) {
                return Self::invalid(name.to_owned(), format!("{problem}: {cause}"));
            }
        }
        Self::MalformedBody(format!("the query string could not be read: {error}"))
    }
}

impl From<PathError> for ApiError {
    fn from(error: PathError) -> Self {
        Self::MalformedBody(format!("the path could not be read: {error}"))
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::InvalidField { .. } | Self::MalformedBody(_) => StatusCode::BAD_REQUEST,
            Self::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::MessageNotFound(_) | Self::EventNotFound(_) | Self::OptOutNotFound | Self::NoRoute => {
                StatusCode::NOT_FOUND
            }
            Self::Unauthorized | Self::CallbackUnauthorized => StatusCode::UNAUTHORIZED,
            Self::CallbacksOff => StatusCode::SERVICE_UNAVAILABLE,
            Self::CrossSite(_) => StatusCode::FORBIDDEN,
            Self::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::WrongState { .. } => StatusCode::CONFLICT,
            Self::DatabaseUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        if status.is_server_error() {
            log::error!(status = status.as_u16(); "request failed: {}", error_chain(self));
        }
        let mut response = HttpResponse::build(status);
        if status == StatusCode::UNAUTHORIZED {
            response.insert_header(("WWW-Authenticate", "Bearer"));
        }
        if let Self::MethodNotAllowed(allowed) = self {
            response.insert_header(("Allow", allowed.as_str()));
        }
        // The rest of a late body may still be on its way: the connection cannot carry another request.
        if let Self::BodyTimeout(_) = self {
            response.force_close();
        }
        response.json(self.body())
    }
}
