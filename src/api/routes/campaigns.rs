//! Campaigns: the messages sharing a `campaign` label, listed with their counts by status, and paused,
//! resumed or cancelled together. A pause holds on every replica at once (the claim reads it).

use std::collections::BTreeMap;

use actix_web::{HttpResponse, get, post, web};
use serde::Serialize;
use utoipa::ToSchema;

use super::messages::parse_campaign;
use crate::{
    api::{
        AppState,
        error::{ApiError, ErrorBody},
    },
    store::CampaignSummary,
};

/// The campaign a route acts on.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct CampaignPath {
    /// The campaign's label: 1 to 64 characters, no `/` or control characters.
    #[param(example = "black-friday-2026", pattern = r"^[^/\u0000-\u001F\u007F-\u009F]{1,64}$")]
    pub campaign: String,
}

/// A campaign and its messages' counts.
#[derive(Debug, Serialize, ToSchema)]
pub struct CampaignResponse {
    #[schema(example = "black-friday-2026")]
    campaign: String,
    /// Its messages are not being claimed (`POST /campaigns/{campaign}/pause`).
    paused: bool,
    /// Its messages by status; a status it has none in is left out.
    #[schema(example = json!({"pending": 120, "sent": 880}))]
    counts: BTreeMap<&'static str, u64>,
}

impl From<CampaignSummary> for CampaignResponse {
    fn from(summary: CampaignSummary) -> Self {
        Self {
            campaign: summary.name,
            paused: summary.paused,
            counts: summary.counts,
        }
    }
}

/// Every campaign.
#[derive(Debug, Serialize, ToSchema)]
pub struct CampaignList {
    items: Vec<CampaignResponse>,
}

/// What a pause, resume or cancel did.
#[derive(Debug, Serialize, ToSchema)]
pub struct CampaignChange {
    #[schema(example = "black-friday-2026")]
    campaign: String,
    paused: bool,
    /// Whether this request changed the pause (false: it already stood so).
    #[serde(skip_serializing_if = "Option::is_none")]
    changed: Option<bool>,
    /// Pending messages this request cancelled.
    #[serde(skip_serializing_if = "Option::is_none")]
    cancelled: Option<u64>,
}

/// Every campaign with messages (and every paused one), with its counts by status.
#[utoipa::path(
    security(("api_key" = []), ("bearer" = [])),
    tag = "campaigns",
    responses(
        (status = 401, description = "`API_KEY` is set and the request lacks it", body = ErrorBody),
        (status = 200, description = "The campaigns, by name", body = CampaignList),
        (status = 503, description = "The database is unavailable", body = ErrorBody),
    )
)]
#[get("/campaigns")]
pub async fn list(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let items = state.campaigns.list_campaigns().await?;
    Ok(HttpResponse::Ok().json(CampaignList {
        items: items.into_iter().map(CampaignResponse::from).collect(),
    }))
}

/// Pause a campaign: no replica claims its messages until it resumes.
///
/// Its messages stay `pending` in their places; those already claimed go on. The claim skips them, so
/// they never hold up other messages. Idempotent; a name may be paused before it has messages.
#[utoipa::path(
    security(("api_key" = []), ("bearer" = [])),
    tag = "campaigns",
    params(CampaignPath),
    responses(
        (status = 401, description = "`API_KEY` is set and the request lacks it", body = ErrorBody),
        (status = 200, description = "Paused", body = CampaignChange),
        (status = 400, description = "The label is not 1 to 64 characters", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody),
    )
)]
#[post("/campaigns/{campaign}/pause")]
pub async fn pause(state: web::Data<AppState>, path: web::Path<CampaignPath>) -> Result<HttpResponse, ApiError> {
    set_paused(&state, &path.campaign, true).await
}

/// Resume a paused campaign: its messages are claimed again, each in its place. Idempotent.
#[utoipa::path(
    security(("api_key" = []), ("bearer" = [])),
    tag = "campaigns",
    params(CampaignPath),
    responses(
        (status = 401, description = "`API_KEY` is set and the request lacks it", body = ErrorBody),
        (status = 200, description = "Running", body = CampaignChange),
        (status = 400, description = "The label is not 1 to 64 characters", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody),
    )
)]
#[post("/campaigns/{campaign}/resume")]
pub async fn resume(state: web::Data<AppState>, path: web::Path<CampaignPath>) -> Result<HttpResponse, ApiError> {
    set_paused(&state, &path.campaign, false).await
}

/// Pauses or resumes a campaign, and answers what the request changed.
async fn set_paused(state: &AppState, campaign: &str, paused: bool) -> Result<HttpResponse, ApiError> {
    let campaign = parse_campaign(campaign)?;
    let changed = if paused {
        state.campaigns.pause_campaign(&campaign).await?
    } else {
        state.campaigns.resume_campaign(&campaign).await?
    };
    let done = if paused { "paused" } else { "resumed" };
    log::info!(campaign = campaign.as_str(), changed = changed; "campaign {done}");
    Ok(HttpResponse::Ok().json(CampaignChange {
        campaign,
        paused,
        changed: Some(changed),
        cancelled: None,
    }))
}

/// Cancel every pending message of a campaign at once: `cancelled`, never sent.
///
/// The campaign is paused too: a message being sent at that moment goes on, and should it come back
/// pending (a retry, a put-back), it is held, not sent. Cancel again to cancel it as well, or resume the
/// campaign to let it go.
#[utoipa::path(
    security(("api_key" = []), ("bearer" = [])),
    tag = "campaigns",
    params(CampaignPath),
    responses(
        (status = 401, description = "`API_KEY` is set and the request lacks it", body = ErrorBody),
        (status = 200, description = "How many were cancelled", body = CampaignChange),
        (status = 400, description = "The label is not 1 to 64 characters", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody),
    )
)]
#[post("/campaigns/{campaign}/cancel")]
pub async fn cancel(state: web::Data<AppState>, path: web::Path<CampaignPath>) -> Result<HttpResponse, ApiError> {
    let campaign = parse_campaign(&path.campaign)?;
    let cancelled = state.campaigns.cancel_campaign(&campaign).await?;
    log::info!(campaign = campaign.as_str(), cancelled = cancelled; "campaign cancelled (and paused)");
    Ok(HttpResponse::Ok().json(CampaignChange {
        campaign,
        paused: true,
        changed: None,
        cancelled: Some(cancelled),
    }))
}
