//! The `apikey` gate Supabase's Kong gateway puts in front of `/auth/v1` and `/rest/v1`
//! (supabase-protocol.md §1): the key comes from the `apikey` header or `?apikey=` and must be
//! the project's anon or service_role key.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::AppState;

pub async fn require_api_key(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let from_header = request
        .headers()
        .get("apikey")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let key = from_header.or_else(|| {
        url::form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes())
            .find(|(k, _)| k == "apikey")
            .map(|(_, v)| v.into_owned())
    });
    match key {
        None => (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({
                "message": "No API key found in request",
                "hint": "No `apikey` request header or url param was found."
            })),
        )
            .into_response(),
        Some(key) if !state.keys().is_api_key(&key) => (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({
                "message": "Invalid API key",
                "hint": "Double check your Supabase `anon` or `service_role` API key."
            })),
        )
            .into_response(),
        Some(_) => next.run(request).await,
    }
}
