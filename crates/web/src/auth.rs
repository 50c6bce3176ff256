//! Who calls: `Authorization: Bearer TOKEN`, resolved to an [`Access`] for the handler.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use usersync_engine::Access;

use crate::{ApiError, WebState};

/// The caller of an API request, authenticated.
pub struct Caller(pub Access);

impl FromRequestParts<Arc<WebState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<WebState>,
    ) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, token) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .ok_or_else(ApiError::unauthenticated)?;
        let principal = state
            .engine
            .token_principal(token)
            .await?
            .ok_or_else(ApiError::unauthenticated)?;
        Ok(Caller(state.engine.access(principal)))
    }
}
