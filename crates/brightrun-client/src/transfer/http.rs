//! The few raw requests transfers make: PostgREST RPC/reads for the rows they need, Storage
//! signing, and the classification of TUS's plain-text refusals.

use serde::de::DeserializeOwned;
use serde_json::Value;
use url::Url;

use crate::error::{ApiError, Service};
use crate::session::Session;
use crate::transfer::TransferError;

/// `<project>/storage/v1/<segments…>`, each segment percent-encoded.
pub(crate) fn storage_url(session: &Session, prefix: &[&str], object_path: &str) -> Url {
    let mut url = session.project().endpoint("storage", "");
    {
        let mut segments = url
            .path_segments_mut()
            .expect("an http(s) URL has path segments");
        segments.pop_if_empty();
        segments.extend(prefix);
        segments.extend(object_path.split('/'));
    }
    url
}

/// `<project>/storage/v1` + a relative URL the server returned (`/object/sign/...?token=`).
pub(crate) fn storage_relative(session: &Session, relative: &str) -> Result<Url, TransferError> {
    let base = session.project().endpoint("storage", "");
    let joined = format!(
        "{}/{}",
        base.as_str().trim_end_matches('/'),
        relative.trim_start_matches('/')
    );
    Url::parse(&joined).map_err(|e| {
        TransferError::Client(crate::Error::Protocol(format!(
            "signed URL does not parse: {e}"
        )))
    })
}

async fn authed(
    session: &Session,
    builder: reqwest::RequestBuilder,
) -> Result<reqwest::RequestBuilder, TransferError> {
    let token = session.access_token().await?;
    Ok(builder
        .header("apikey", &session.project().anon_key)
        .bearer_auth(token.expose()))
}

/// `POST /rest/v1/rpc/<name>` with named arguments; the function's JSON result.
pub(crate) async fn rpc<T: DeserializeOwned>(
    session: &Session,
    name: &str,
    args: &Value,
) -> Result<T, TransferError> {
    let url = session.project().endpoint("rest", &format!("rpc/{name}"));
    let response = authed(session, session.http().post(url).json(args))
        .await?
        .send()
        .await?;
    if !response.status().is_success() {
        return Err(ApiError::from_response(Service::Rest, response)
            .await
            .into());
    }
    Ok(response.json().await?)
}

/// `GET /rest/v1/<table>?<query>`: the rows.
pub(crate) async fn select<T: DeserializeOwned>(
    session: &Session,
    table: &str,
    query: &[(&str, String)],
) -> Result<Vec<T>, TransferError> {
    let url = session.project().endpoint("rest", table);
    let response = authed(session, session.http().get(url).query(query))
        .await?
        .send()
        .await?;
    if !response.status().is_success() {
        return Err(ApiError::from_response(Service::Rest, response)
            .await
            .into());
    }
    Ok(response.json().await?)
}

/// A Storage call with the user's token; errors parsed as Storage errors.
pub(crate) async fn storage_post(
    session: &Session,
    url: Url,
    body: &Value,
) -> Result<Value, TransferError> {
    let response = authed(session, session.http().post(url).json(body))
        .await?
        .send()
        .await?;
    if !response.status().is_success() {
        let api = ApiError::from_response(Service::Storage, response).await;
        return Err(TransferError::from_api(api));
    }
    Ok(response.json().await?)
}

/// What a TUS refusal means. TUS answers in plain text with the real status; where the status
/// alone is ambiguous (409, 400) the wording of storage-api / `@tus/server` decides, here and
/// nowhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TusRefusal {
    /// 409 `Upload-Offset conflict`: our offset is stale; HEAD and continue from the server's.
    OffsetConflict,
    /// 409 `Upload is locked by another request` (or 423): an earlier request still holds it.
    Locked,
    /// 409 `The resource already exists`.
    Exists,
    /// 400 `"exp" claim timestamp check failed`, `Invalid signature`, `Invalid Compact JWS`,
    /// `Missing x-signature header`: get a new signed token.
    BadToken,
    /// 404 / 410: the server forgot the upload; create a new one.
    Gone,
    Other,
}

pub(crate) fn tus_refusal(api: &ApiError) -> TusRefusal {
    let m = api.message.to_ascii_lowercase();
    match api.status {
        409 if m.contains("already exists") => TusRefusal::Exists,
        409 if m.contains("locked") => TusRefusal::Locked,
        409 => TusRefusal::OffsetConflict,
        423 => TusRefusal::Locked,
        400 if m.contains("\"exp\" claim")
            || m.contains("signature")
            || m.contains("compact jws")
            || m.contains("jwt") =>
        {
            TusRefusal::BadToken
        }
        404 | 410 => TusRefusal::Gone,
        _ => TusRefusal::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tus_refusals_are_classified_by_storage_api_wording() {
        let table = [
            (409, "Upload-Offset conflict", TusRefusal::OffsetConflict),
            (
                409,
                "Upload is locked by another request",
                TusRefusal::Locked,
            ),
            (409, "The resource already exists", TusRefusal::Exists),
            (423, "", TusRefusal::Locked),
            (
                400,
                "\"exp\" claim timestamp check failed",
                TusRefusal::BadToken,
            ),
            (400, "Invalid signature", TusRefusal::BadToken),
            (400, "Invalid Compact JWS", TusRefusal::BadToken),
            (400, "Missing x-signature header", TusRefusal::BadToken),
            (400, "Invalid upload-metadata", TusRefusal::Other),
            (404, "The file for this url was not found", TusRefusal::Gone),
            (
                410,
                "The file for this url no longer exists",
                TusRefusal::Gone,
            ),
            (413, "Maximum size exceeded", TusRefusal::Other),
        ];
        for (status, text, want) in table {
            let api = ApiError::from_body(Service::Tus, status, text, None);
            assert_eq!(tus_refusal(&api), want, "{status} {text:?}");
        }
    }
}
