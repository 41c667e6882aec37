//! An HTTP proxy in front of the stack that answers chosen requests itself, in the exact shape
//! the server sends when it fails: PostgREST's JSON, storage-api's 400-with-`statusCode`, TUS's
//! plain text, with `Retry-After` where asked. Everything else is forwarded unchanged (bodies
//! streamed both ways), so a test can put one failure on one step of a real flow: a 429 on the
//! third PATCH of an upload, a 503 on a signed download.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt as _;

/// A canned answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    /// PostgREST's error shape: `{code, details, hint, message}` with the real status.
    pub fn rest(status: u16, code: &str, message: &str) -> Self {
        Self {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body:
                serde_json::json!({"code": code, "details": null, "hint": null, "message": message})
                    .to_string(),
        }
    }

    /// storage-api's shape: HTTP 400 for every non-5xx error, the logical status in the body.
    pub fn storage(status: u16, code: &str, error: &str, message: &str) -> Self {
        let http = if status >= 500 { status } else { 400 };
        Self {
            status: http,
            headers: vec![("content-type".into(), "application/json".into())],
            body: serde_json::json!({
                "statusCode": status.to_string(), "error": error, "message": message, "code": code
            })
            .to_string(),
        }
    }

    /// TUS: the real status and a plain-text message.
    pub fn tus(status: u16, message: &str) -> Self {
        Self {
            status,
            headers: vec![
                ("content-type".into(), "text/plain".into()),
                ("tus-resumable".into(), "1.0.0".into()),
            ],
            body: message.to_owned(),
        }
    }

    /// With `Retry-After: <seconds>`.
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.headers
            .push(("retry-after".into(), seconds.to_string()));
        self
    }
}

#[derive(Debug, Clone)]
struct Rule {
    method: String,
    path_prefix: String,
    answer: Answer,
    /// Answers left; `None`: every matching request.
    left: Option<u32>,
    answered: u32,
}

/// A request the proxy handled: method, path and the status it answered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub status: u16,
}

#[derive(Debug)]
struct Shared {
    upstream: String,
    http: reqwest::Client,
    rules: Mutex<Vec<Rule>>,
    seen: Mutex<Vec<Seen>>,
}

impl Shared {
    fn rules(&self) -> std::sync::MutexGuard<'_, Vec<Rule>> {
        self.rules
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The proxy; it stops when dropped.
#[derive(Debug)]
pub struct AnswerProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for AnswerProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl AnswerProxy {
    /// A proxy in front of `upstream_url`, forwarding everything until told otherwise.
    pub async fn start(upstream_url: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("answer proxy binds");
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared {
            upstream: upstream_url.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
            rules: Mutex::new(Vec::new()),
            seen: Mutex::new(Vec::new()),
        });
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, shared, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Answers requests with this method whose path starts with `path_prefix` with `answer`:
    /// the next `times` of them, or all when `None`. A request body is read to its end first,
    /// as a server does before it answers.
    pub fn answer(&self, method: &str, path_prefix: &str, answer: Answer, times: Option<u32>) {
        self.shared.rules().push(Rule {
            method: method.to_ascii_uppercase(),
            path_prefix: path_prefix.to_owned(),
            answer,
            left: times,
            answered: 0,
        });
    }

    /// How many requests the rules answered.
    pub fn answered(&self) -> u32 {
        self.shared.rules().iter().map(|r| r.answered).sum()
    }

    /// Every request so far, in the order their answers began.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Forward everything again.
    pub fn clear(&self) {
        self.shared.rules().clear();
    }
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let method = request.method().as_str().to_owned();
    let path = request.uri().path().to_owned();
    let response = answer(&shared, request, &method, &path).await;
    shared
        .seen
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(Seen {
            method,
            path,
            status: response.status().as_u16(),
        });
    response
}

async fn answer(shared: &Shared, request: Request, method: &str, path: &str) -> Response {
    let canned = {
        let mut rules = shared.rules();
        rules
            .iter_mut()
            .find(|r| r.method == method && path.starts_with(&r.path_prefix) && r.left != Some(0))
            .map(|r| {
                r.answered += 1;
                if let Some(left) = r.left.as_mut() {
                    *left -= 1;
                }
                r.answer.clone()
            })
    };
    if let Some(answer) = canned {
        let _ = axum::body::to_bytes(request.into_body(), usize::MAX).await;
        let mut response = (
            StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            answer.body,
        )
            .into_response();
        for (name, value) in answer.headers {
            if let (Ok(name), Ok(value)) = (
                HeaderName::try_from(name.as_str()),
                HeaderValue::try_from(value.as_str()),
            ) {
                response.headers_mut().insert(name, value);
            }
        }
        return response;
    }
    forward(shared, request).await
}

async fn forward(shared: &Shared, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let target = format!(
        "{}{}",
        shared.upstream,
        parts.uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let mut outbound = shared.http.request(parts.method.clone(), target);
    for (name, value) in &parts.headers {
        if name != axum::http::header::HOST {
            outbound = outbound.header(name, value);
        }
    }
    // As a reverse proxy does: the server's absolute URLs (TUS `Location`) name the proxy, so
    // the requests that follow come through it too.
    if let Some(host) = parts.headers.get(axum::http::header::HOST)
        && !parts.headers.contains_key("x-forwarded-host")
    {
        outbound = outbound.header("x-forwarded-host", host);
    }
    let body = reqwest::Body::wrap_stream(body.into_data_stream());
    let upstream = match outbound.body(body).send().await {
        Ok(upstream) => upstream,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let mut response = Response::builder().status(upstream.status().as_u16());
    for (name, value) in upstream.headers() {
        // Lengths and encodings are the body's own once re-streamed.
        if name != reqwest::header::TRANSFER_ENCODING && name != reqwest::header::CONNECTION {
            response = response.header(name.as_str(), value.as_bytes());
        }
    }
    response
        .body(Body::from_stream(
            upstream.bytes_stream().map_err(std::io::Error::other),
        ))
        .unwrap_or_else(|e| (StatusCode::BAD_GATEWAY, e.to_string()).into_response())
}
