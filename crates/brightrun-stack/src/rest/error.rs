//! PostgREST's error responses (supabase-protocol.md §3.6): always
//! `{"code","details","hint","message"}`, with the status PostgREST gives each code.

use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use sqlx::postgres::PgDatabaseError;

/// An error as `/rest/v1` reports it.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    /// `None` serializes as `null`. Boxed, like the headers, to keep `Result<_, ApiError>` small.
    pub details: Option<Box<Value>>,
    pub hint: Option<Box<Value>>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.to_owned(),
            message: message.into(),
            details: None,
            hint: None,
            headers: Vec::new(),
        }
    }

    pub fn details(mut self, details: impl Into<String>) -> Self {
        self.details = Some(Box::new(Value::String(details.into())));
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(Box::new(Value::String(hint.into())));
        self
    }

    /// PGRST100: the query string does not parse.
    pub fn parse(what: &str, input: &str, details: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "PGRST100",
            format!("\"failed to parse {what} ({input})\" (line 1, column 1)"),
        )
        .details(details)
    }

    /// PGRST102: the body is not what the endpoint takes.
    pub fn body(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "PGRST102", message)
    }

    /// PGRST204: a body key or `columns=` entry names no column.
    pub fn unknown_payload_column(column: &str, table: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "PGRST204",
            format!("Could not find the '{column}' column of '{table}' in the schema cache"),
        )
    }

    /// 42703 as PostgreSQL reports it, for a column named in `select`, a filter or `order`.
    pub fn unknown_column(relation: &str, column: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "42703",
            format!("column {relation}.{column} does not exist"),
        )
    }

    /// PGRST205: the table is not in the schema cache.
    pub fn unknown_table(table: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "PGRST205",
            format!("Could not find the table 'public.{table}' in the schema cache"),
        )
    }

    /// PGRST202: no function with that name takes that set of arguments.
    pub fn unknown_function(name: &str, args: &[String]) -> Self {
        let (message, details) = if args.is_empty() {
            (
                format!(
                    "Could not find the function public.{name} without parameters in the schema cache"
                ),
                format!(
                    "Searched for the function public.{name} without parameters or with a single unnamed json/jsonb parameter, but no matches were found in the schema cache."
                ),
            )
        } else {
            let list = args.join(", ");
            (
                format!("Could not find the function public.{name}({list}) in the schema cache"),
                format!(
                    "Searched for the function public.{name} with parameters {list} or with a single unnamed json/jsonb parameter, but no matches were found in the schema cache."
                ),
            )
        };
        Self::new(StatusCode::NOT_FOUND, "PGRST202", message).details(details)
    }

    /// PGRST116: the client asked for one object and the result has `rows` rows.
    pub fn not_singular(rows: i64) -> Self {
        Self::new(
            StatusCode::NOT_ACCEPTABLE,
            "PGRST116",
            "Cannot coerce the result to a single JSON object",
        )
        .details(format!("The result contains {rows} rows"))
    }

    /// 401 for a token PostgREST refuses, with the `WWW-Authenticate` challenge.
    pub fn jwt(code: &str, message: &str) -> Self {
        let mut error = Self::new(StatusCode::UNAUTHORIZED, code, message);
        let challenge = format!("Bearer error=\"invalid_token\", error_description=\"{message}\"");
        if let Ok(value) = HeaderValue::from_str(&challenge) {
            error.headers.push((header::WWW_AUTHENTICATE, value));
        }
        error
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "PGRST000", message)
    }

    /// A failure from PostgreSQL (or the pool). `anon` says whether the request ran as the anon
    /// role: PostgREST answers 42501 with 401 then, 403 otherwise.
    pub fn from_sqlx(error: sqlx::Error, anon: bool) -> Self {
        match error {
            sqlx::Error::Database(db) => match db.try_downcast::<PgDatabaseError>() {
                Ok(pg) => Self::from_pg(&pg, anon),
                Err(other) => Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "PGRST000",
                    other.to_string(),
                ),
            },
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                tracing::error!(%error, "database unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "PGRST001",
                    "Database client error. Retrying the connection.",
                )
                .details(error.to_string())
            }
            other => {
                tracing::error!(error = %other, "unexpected database error");
                Self::internal(other.to_string())
            }
        }
    }

    fn from_pg(pg: &PgDatabaseError, anon: bool) -> Self {
        let code = pg.code();
        if code == "PGRST"
            && let Some(custom) = Self::raised_pgrst(pg)
        {
            return custom;
        }
        let status = sqlstate_status(code, anon);
        let mut error = Self::new(status, code, pg.message());
        error.details = pg.detail().map(|d| Box::new(Value::String(d.to_owned())));
        error.hint = pg.hint().map(|h| Box::new(Value::String(h.to_owned())));
        if status == StatusCode::UNAUTHORIZED {
            error
                .headers
                .push((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
        }
        error
    }

    /// `RAISE SQLSTATE 'PGRST' USING message = '{"code":..,"message":..}', detail =
    /// '{"status":..,"headers":{..}}'`: the function decides the whole response.
    fn raised_pgrst(pg: &PgDatabaseError) -> Option<Self> {
        let body: Value = serde_json::from_str(pg.message()).ok()?;
        let detail: Value = serde_json::from_str(pg.detail()?).ok()?;
        let status =
            StatusCode::from_u16(u16::try_from(detail.get("status")?.as_u64()?).ok()?).ok()?;
        let text = |key: &str| {
            body.get(key)
                .filter(|v| !v.is_null())
                .cloned()
                .map(Box::new)
        };
        let mut error = Self::new(
            status,
            body.get("code")?.as_str().unwrap_or(""),
            body.get("message").and_then(Value::as_str).unwrap_or(""),
        );
        error.details = text("details");
        error.hint = text("hint");
        if let Some(headers) = detail.get("headers").and_then(Value::as_object) {
            for (name, value) in headers {
                if let (Ok(name), Some(Ok(value))) = (
                    HeaderName::try_from(name.as_str()),
                    value.as_str().map(HeaderValue::from_str),
                ) {
                    error.headers.push((name, value));
                }
            }
        }
        Some(error)
    }
}

/// PostgREST's `pgErrorStatus`.
fn sqlstate_status(code: &str, anon: bool) -> StatusCode {
    let status = |n: u16| StatusCode::from_u16(n).unwrap_or(StatusCode::BAD_REQUEST);
    if let Some(http) = code.strip_prefix("PT") {
        return http
            .parse::<u16>()
            .ok()
            .and_then(|n| StatusCode::from_u16(n).ok())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    }
    match code {
        "42501" if anon => status(401),
        "42501" => status(403),
        "23505" | "23503" => status(409),
        "42P01" | "42883" => status(404),
        "25006" => status(405),
        "53400" | "57014" | "42P17" => status(500),
        "P0001" => status(400),
        _ if code.starts_with("08") || code.starts_with("53") => status(503),
        _ if code.starts_with("40")
            || code.starts_with("XX")
            || code.starts_with("58")
            || code.starts_with("F0") =>
        {
            status(500)
        }
        _ if code.starts_with("HV") || code.starts_with("P0") => status(500),
        _ => status(400),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(code = %self.code, message = %self.message, "rest request failed");
        }
        let body = json!({"code": self.code, "details": self.details, "hint": self.hint, "message": self.message});
        let mut response = (self.status, body.to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        if let Ok(value) = HeaderValue::from_str(&format!("PostgREST; error={}", self.code)) {
            headers.insert(HeaderName::from_static("proxy-status"), value);
        }
        for (name, value) in self.headers {
            headers.insert(name, value);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_map_to_postgrest_statuses() {
        let cases = [
            ("42501", true, 401),
            ("42501", false, 403),
            ("23505", false, 409),
            ("23503", false, 409),
            ("23502", false, 400),
            ("22P02", false, 400),
            ("42883", false, 404),
            ("P0001", false, 400),
            ("PT402", false, 402),
            ("25006", false, 405),
            ("08006", false, 503),
            ("53400", false, 500),
            ("57014", false, 500),
            ("40001", false, 500),
            ("XX000", false, 500),
        ];
        for (code, anon, expected) in cases {
            assert_eq!(
                sqlstate_status(code, anon).as_u16(),
                expected,
                "status of SQLSTATE {code} (anon: {anon})"
            );
        }
    }
}
