//! What an operator does to one message: retry a dead letter, cancel a pending message. Each is one
//! fenced transition in the store; the wrong state is a 409 naming the state the message is in.

use actix_web::{HttpResponse, post, web};
use uuid::Uuid;

use super::messages::{MessageResponse, parse_id};
use crate::{
    api::{
        AppState,
        error::{ApiError, ErrorBody},
    },
    store::Transition,
};

/// Send a failed message again.
///
/// `failed` → `pending`, due now, with a fresh count of attempts; the history of earlier attempts stays.
#[utoipa::path(
    security(("api_key" = []), ("bearer" = [])),
    tag = "messages",
    params(("id" = Uuid, Path, description = "The message's UUID")),
    responses(
        (status = 401, description = "`API_KEY` is set and the request lacks it", body = ErrorBody),
        (status = 200, description = "Pending again", body = MessageResponse),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 404, description = "No such message", body = ErrorBody),
        (status = 409, description = "The message is not failed", body = ErrorBody,
         example = json!({"error": "wrong_state", "message": "message 0b8f3c1e-5d2a-4d6f-9a51-3f0c2f7f1c11 is sent: only a failed message can be retried", "status": "sent"})),
        (status = 503, description = "The database is unavailable", body = ErrorBody),
    )
)]
#[post("/messages/{id}/retry")]
pub async fn retry(state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id)?;
    let changed = state.store.retry_if_failed(id).await?;
    operator_result(
        id,
        changed,
        "only a failed message can be retried",
        "retried by an operator",
    )
}

/// Cancel a pending message.
///
/// `pending` → `cancelled`: it will never be sent. A message already claimed (`sending`) cannot be
/// cancelled.
#[utoipa::path(
    security(("api_key" = []), ("bearer" = [])),
    tag = "messages",
    params(("id" = Uuid, Path, description = "The message's UUID")),
    responses(
        (status = 401, description = "`API_KEY` is set and the request lacks it", body = ErrorBody),
        (status = 200, description = "Cancelled", body = MessageResponse),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 404, description = "No such message", body = ErrorBody),
        (status = 409, description = "The message is not pending", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody),
    )
)]
#[post("/messages/{id}/cancel")]
pub async fn cancel(state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id)?;
    let changed = state.store.cancel_if_pending(id).await?;
    operator_result(
        id,
        changed,
        "only a pending message can be cancelled",
        "cancelled by an operator",
    )
}

fn operator_result(
    id: Uuid,
    changed: Transition,
    rule: &'static str,
    done: &'static str,
) -> Result<HttpResponse, ApiError> {
    match changed {
        Transition::Changed(message) => {
            log::info!(message_id:% = id; "message {done}");
            // Retried or cancelled: never sent, so it has no delivery to show.
            Ok(HttpResponse::Ok().json(MessageResponse::new(*message, None)))
        }
        Transition::Refused(status) => Err(ApiError::WrongState { id, status, rule }),
        Transition::Missing => Err(ApiError::MessageNotFound(id)),
    }
}
