//! The suppression list: numbers that opted out (`POST /opt-outs`), listed a keyset page at a time
//! (`GET /opt-outs`) and taken off again (`DELETE /opt-outs/{to}`). A message to a number on the list is
//! never sent: the claim moves it to `suppressed`, whenever it was enqueued.

use actix_web::{HttpResponse, delete, get, post, web};
use base64::{
    Engine, alphabet,
    engine::{GeneralPurpose, GeneralPurposeConfig},
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::page;
use crate::{
    api::{
        AppState,
        error::{ApiError, ErrorBody},
        json_value::UniqueKeys,
    },
    domain::PhoneNumber,
    store::OptOut,
};

const LIMIT_DEFAULT: u32 = 20;
const LIMIT_MAX: u32 = 100;

/// A number to put on the list.
#[derive(Debug, ToSchema)]
#[schema(example = json!({"to": "+905551111111"}))]
pub struct CreateOptOutRequest {
    /// E.164, normalised as a message's `to` is (spaces and dashes dropped).
    #[schema(example = "+905551111111", pattern = r"^\+[ -]*[1-9](?:[ -]*[0-9]){7,14}[ -]*$")]
    pub to: String,
}

/// A number on the list.
#[derive(Debug, Serialize, ToSchema)]
pub struct OptOutResponse {
    #[schema(example = "+905551111111")]
    to: String,
    /// When it was put on the list: when an operator last added it, or when the phone sent its opt-out
    /// keyword (not after it arrived).
    created_at: DateTime<Utc>,
}

impl From<OptOut> for OptOutResponse {
    fn from(entry: OptOut) -> Self {
        Self {
            to: entry.to,
            created_at: entry.created_at,
        }
    }
}

/// The list's cursor: the last number listed, base64url without padding, read back whatever its last
/// character's unused bits hold.
const CURSOR: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::RequireNone),
);

/// One page of the list, in ascending order of the numbers.
#[derive(Debug, Serialize, ToSchema)]
pub struct OptOutPage {
    items: Vec<OptOutResponse>,
    /// Pass as `cursor` for the next page (opaque: the last number as stored, base64url); null on the last
    /// page.
    #[schema(example = "KzkwNTU1MTExMTExMQ")]
    next_cursor: Option<String>,
}

/// The number of `DELETE /opt-outs/{to}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct OptOutPath {
    /// The number, E.164 (`+` may be sent as `%2B`).
    #[param(example = "+905551111111", pattern = r"^\+[ -]*[1-9](?:[ -]*[0-9]){7,14}[ -]*$")]
    pub to: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct OptOutQuery {
    /// Items per page, 1 to 100 (default 20).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100, example = 20)]
    limit: Option<String>,
    /// `next_cursor` of the previous page; omit it (or leave it empty) for the first page.
    #[param(pattern = r"^(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-]{2,3})?$")]
    cursor: Option<String>,
}

/// Put a number on the suppression list.
///
/// No message is sent to it from now on, those already enqueued included: each becomes `suppressed`
/// when it comes due. Idempotent: 201 when the number is new on the list, 200 when it was there already
/// (on it as of now: a START the phone sent before this no longer takes it off).
#[utoipa::path(
    security(("api_key" = []), ("bearer" = [])),
    tag = "opt-outs",
    request_body = CreateOptOutRequest,
    responses(
        (status = 401, description = "`API_KEY` is set and the request lacks it", body = ErrorBody),
        (status = 201, description = "Put on the list", body = OptOutResponse),
        (status = 200, description = "Already on the list", body = OptOutResponse),
        (status = 400, description = "`to` is missing or not a phone number", body = ErrorBody,
         example = json!({"error": "invalid_field", "message": "to: must start with + and the country code", "field": "to"})),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body not sent as application/json", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody),
    )
)]
#[post("/opt-outs")]
pub async fn create(state: web::Data<AppState>, body: web::Json<UniqueKeys>) -> Result<HttpResponse, ApiError> {
    let UniqueKeys(body) = body.into_inner();
    let to = match &body {
        Value::Object(fields) => match fields.get("to") {
            None | Some(Value::Null) => return Err(ApiError::invalid("to", "is required")),
            Some(Value::String(to)) => parse_number(to)?,
            Some(_) => return Err(ApiError::invalid("to", "must be a string")),
        },
        _ => {
            return Err(ApiError::MalformedBody(
                "an opt-out must be a JSON object with \"to\"".to_owned(),
            ));
        }
    };
    let (entry, new) = state.opt_outs.add_opt_out(&to).await?;
    if new {
        log::info!(to:% = to; "number opted out: its messages will not be sent");
        Ok(HttpResponse::Created().json(OptOutResponse::from(entry)))
    } else {
        Ok(HttpResponse::Ok().json(OptOutResponse::from(entry)))
    }
}

/// The suppression list, in ascending order of the numbers.
///
/// Keyset pagination on the number: pages stay stable while numbers come and go.
#[utoipa::path(
    security(("api_key" = []), ("bearer" = [])),
    tag = "opt-outs",
    params(OptOutQuery),
    responses(
        (status = 401, description = "`API_KEY` is set and the request lacks it", body = ErrorBody),
        (status = 200, description = "A page of the list", body = OptOutPage),
        (status = 400, description = "`limit` or `cursor` is invalid", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody),
    )
)]
#[get("/opt-outs")]
pub async fn list(state: web::Data<AppState>, query: web::Query<OptOutQuery>) -> Result<HttpResponse, ApiError> {
    let limit = page::limit(query.limit.as_deref(), LIMIT_DEFAULT, LIMIT_MAX)?;
    let after = query
        .cursor
        .as_deref()
        .filter(|c| !c.is_empty())
        .map(|cursor| {
            // Any cursor the spec's pattern allows is a place in the list, as a page of digits once was:
            // what is no stored number (bytes that are no UTF-8, a control character, which Postgres
            // refuses outright when it is a NUL) is read as the nearest text.
            CURSOR
                .decode(cursor)
                .map(|bytes| {
                    String::from_utf8_lossy(&bytes)
                        .chars()
                        .filter(|c| !c.is_control())
                        .collect::<String>()
                })
                .map_err(|_| ApiError::invalid("cursor", "must be the next_cursor of a previous page"))
        })
        .transpose()?;
    let entries = state.opt_outs.list_opt_outs(limit + 1, after.as_deref()).await?;
    // The number exactly as stored, which the next page starts after: a row stored before numbers were
    // spelled plainly (`905551110003`, `+90 555 ABC 12`) ended a page with a cursor that named another
    // place, or none, and the walk repeated it forever or stopped.
    let (entries, next_cursor) = page::cut(entries, limit, |entry| CURSOR.encode(&entry.to));
    Ok(HttpResponse::Ok().json(OptOutPage {
        items: entries.into_iter().map(OptOutResponse::from).collect(),
        next_cursor,
    }))
}

/// Take a number off the suppression list.
///
/// Messages enqueued from now on go out again; those already `suppressed` stay so.
#[utoipa::path(
    security(("api_key" = []), ("bearer" = [])),
    tag = "opt-outs",
    params(OptOutPath),
    responses(
        (status = 401, description = "`API_KEY` is set and the request lacks it", body = ErrorBody),
        (status = 204, description = "Taken off the list"),
        (status = 400, description = "`to` is not a phone number", body = ErrorBody),
        (status = 404, description = "The number is not on the list", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody),
    )
)]
#[delete("/opt-outs/{to}")]
pub async fn remove(state: web::Data<AppState>, path: web::Path<OptOutPath>) -> Result<HttpResponse, ApiError> {
    let to = parse_number(&path.to)?;
    if state.opt_outs.remove_opt_out(&to).await? {
        log::info!(to:% = to; "number opted in again");
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::OptOutNotFound)
    }
}

fn parse_number(raw: &str) -> Result<PhoneNumber, ApiError> {
    PhoneNumber::parse(raw).map_err(|e| ApiError::invalid("to", e.to_string()))
}
