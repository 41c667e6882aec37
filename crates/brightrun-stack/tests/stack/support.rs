//! The test harness: HTTP clients for the stack under test; where it is and the test users come
//! from `brightrun_stack::testing`.

#![allow(dead_code)]

use std::sync::OnceLock;
use std::time::Duration;

pub use brightrun_stack::testing::*;
use serde_json::Value;

pub fn http() -> reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client")
        })
        .clone()
}

/// A request to `/rest/v1` as `user` (or anon when `None`), with the anon apikey.
pub fn rest_as(
    stack: &TestStack,
    method: reqwest::Method,
    path: &str,
    user: Option<&TestUser>,
) -> reqwest::RequestBuilder {
    let bearer = user
        .map(|u| u.access_token.as_str())
        .unwrap_or(&stack.anon_key);
    http()
        .request(method, stack.rest(path))
        .header("apikey", &stack.anon_key)
        .bearer_auth(bearer)
}

/// A request to `/rest/v1` with the service_role key (what the worker uses).
pub fn rest_as_service(
    stack: &TestStack,
    method: reqwest::Method,
    path: &str,
) -> reqwest::RequestBuilder {
    http()
        .request(method, stack.rest(path))
        .header("apikey", &stack.service_role_key)
        .bearer_auth(&stack.service_role_key)
}

pub async fn json_of(response: reqwest::Response) -> (reqwest::StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.expect("body");
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, value)
}
