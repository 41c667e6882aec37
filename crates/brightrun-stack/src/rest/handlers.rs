//! HTTP handlers: authenticate as PostgREST does, plan one statement against the schema cache,
//! run it in one impersonating transaction, and shape the response (status, `Content-Range`,
//! singular objects) as supabase-protocol.md §3 says.

use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use super::error::ApiError;
use super::prefer::{MediaType, Preferences, Resolution, Return};
use super::query::{self, QueryParams};
use super::schema::{Column, Function, ReturnShape, Schema, Table};
use super::sql::{
    self, Bind, Embedding, MutationOptions, Read, Relation, Returning, Statement, ident, qualified,
};
use crate::AppState;
use crate::jwt::{JwtError, Keys, Leeway};

/// Supabase's `max_rows`: reads are silently cut to this many rows.
pub const MAX_ROWS: u64 = 1000;

/// How many parameters [`PREAMBLE`] takes; the role's settings follow as `(name, value)` pairs.
const PREAMBLE_PARAMS: usize = 6;

/// The impersonation PostgREST runs first in every transaction (§3.1).
const PREAMBLE: &str = "select set_config('search_path', '\"public\", \"extensions\"', true), \
     set_config('role', $1, true), set_config('request.jwt.claims', $2, true), \
     set_config('request.method', $3, true), set_config('request.path', $4, true), \
     set_config('request.headers', $5, true), set_config('request.cookies', $6, true)";

/// The role and claims a request runs with.
#[derive(Debug)]
struct Auth {
    role: String,
    claims: String,
}

impl Auth {
    fn is_anon(&self) -> bool {
        self.role == "anon"
    }
}

/// Bearer JWT → role and claims; no token → anon (`{"role":"anon"}`).
fn authenticate(keys: &Keys, headers: &HeaderMap) -> Result<Auth, ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| {
            let (scheme, rest) = h.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        });
    let Some(token) = token else {
        return Ok(Auth {
            role: "anon".into(),
            claims: r#"{"role":"anon"}"#.into(),
        });
    };
    if token.is_empty() {
        return Err(ApiError::jwt(
            "PGRST301",
            "Empty JWT is sent in Authorization header",
        ));
    }
    let parts = token.split('.').count();
    if parts != 3 {
        return Err(ApiError::jwt(
            "PGRST301",
            &format!("Expected 3 parts in JWT; got {parts}"),
        ));
    }
    let claims = keys
        .verify_claims(token, Leeway::PostgRest)
        .map_err(|e| match e {
            JwtError::Expired => ApiError::jwt("PGRST303", "JWT expired"),
            JwtError::NotYetValid => ApiError::jwt("PGRST303", "JWT not yet valid"),
            JwtError::BadSignature => {
                ApiError::jwt("PGRST301", "No suitable key or wrong key type")
            }
            JwtError::Invalid(_) => ApiError::jwt("PGRST301", "JWT cryptographic operation failed"),
        })?;
    let Value::Object(mut claims) = claims else {
        return Err(ApiError::jwt("PGRST303", "Parsing claims failed"));
    };
    let role = match claims.get("role") {
        Some(Value::String(role)) if !role.is_empty() => role.clone(),
        _ => {
            claims.insert("role".into(), Value::String("anon".into()));
            "anon".into()
        }
    };
    Ok(Auth {
        role,
        claims: Value::Object(claims).to_string(),
    })
}

/// What the handler knows about a request before planning.
struct Request {
    method: Method,
    /// `/table` or `/rpc/fn`, as `request.path` and `Content-Location` show it.
    path: String,
    raw_query: Option<String>,
    pairs: Vec<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
    prefs: Preferences,
    media: MediaType,
    auth: Auth,
    started: Instant,
}

enum Target {
    Table(String),
    Rpc(String),
}

pub async fn table(
    State(state): State<AppState>,
    Path(table): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handle(&state, Target::Table(table), method, uri, headers, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

pub async fn rpc(
    State(state): State<AppState>,
    Path(function): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handle(&state, Target::Rpc(function), method, uri, headers, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn handle(
    state: &AppState,
    target: Target,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let auth = authenticate(state.keys(), &headers)?;
    let reads = method == Method::GET || method == Method::HEAD;
    let profile_header = if reads {
        "accept-profile"
    } else {
        "content-profile"
    };
    if let Some(profile) = headers.get(profile_header) {
        let profile = profile.to_str().unwrap_or("");
        if profile != "public" {
            return Err(ApiError::new(
                StatusCode::NOT_ACCEPTABLE,
                "PGRST106",
                format!("Invalid schema: {profile}"),
            )
            .hint("Only the following schemas are exposed: public"));
        }
    }
    let body = if reads {
        body
    } else {
        json_body(&headers, body)?
    };
    let prefs = Preferences::from_headers(&headers)?;
    let media = MediaType::from_headers(&headers)?;
    let raw_query = uri.query().map(str::to_owned);
    let pairs: Vec<(String, String)> =
        url::form_urlencoded::parse(raw_query.as_deref().unwrap_or("").as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
    let path = match &target {
        Target::Table(t) => format!("/{t}"),
        Target::Rpc(f) => format!("/rpc/{f}"),
    };
    let request = Request {
        method,
        path,
        raw_query,
        pairs,
        headers,
        body,
        prefs,
        media,
        auth,
        started,
    };

    let rest = state.rest();
    let mut reloaded = false;
    let (plan, settings) = loop {
        let schema = rest.schema();
        let planned = match &target {
            Target::Table(table) => plan_table(&schema, table, &request),
            Target::Rpc(function) => plan_rpc(&schema, function, &request),
        };
        match planned {
            Err(error) if !reloaded && is_schema_miss(&error) => {
                rest.reload_after_miss(request.started).await;
                reloaded = true;
            }
            other => {
                let settings = schema.role_settings.get(&request.auth.role).cloned();
                break (other?, settings.unwrap_or_default());
            }
        }
    };
    execute(state, &request, plan, &settings).await
}

/// Errors that a fresher schema cache might not give (a table or function created since).
/// Unknown columns are not retried, as in PostgREST: a changed table needs
/// `NOTIFY pgrst, 'reload schema'`.
fn is_schema_miss(error: &ApiError) -> bool {
    matches!(error.code.as_str(), "PGRST205" | "PGRST202")
}

/// The body as JSON: JSON as sent, or a form (`a=1&b=x`) as an object of strings, as PostgREST
/// accepts both.
fn json_body(headers: &HeaderMap, body: Bytes) -> Result<Bytes, ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(body);
    };
    let value = value.to_str().unwrap_or("");
    let media = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match media.as_str() {
        ""
        | "application/json"
        | "application/vnd.pgrst.object+json"
        | "application/vnd.pgrst.object"
        | "*/*" => Ok(body),
        "application/x-www-form-urlencoded" => {
            let object: Map<String, Value> = url::form_urlencoded::parse(&body)
                .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
                .collect();
            Ok(Bytes::from(Value::Object(object).to_string()))
        }
        _ => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "PGRST107",
            format!("Content-Type not acceptable: {value}"),
        )),
    }
}

/// One statement and how to turn its result into a response.
struct Plan {
    stmt: Statement,
    read_only: bool,
    shape: Shape,
}

enum Shape {
    /// An array of rows, paged: table reads and set-returning functions.
    Rows {
        offset: u64,
        count: bool,
    },
    Insert {
        returning: Return,
        location: Option<(String, Vec<String>)>,
    },
    Update {
        returning: Return,
    },
    Delete {
        returning: Return,
    },
    /// A function's single value (`Scalar`, `Composite`) or nothing (`Void`).
    Value(ReturnShape),
}

fn parse_body(body: &Bytes) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::body("Empty or invalid json"));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::body("Empty or invalid json").details(e.to_string()))
}

fn plan_table(schema: &Schema, name: &str, request: &Request) -> Result<Plan, ApiError> {
    let table = schema
        .tables
        .get(name)
        .ok_or_else(|| ApiError::unknown_table(name))?;
    let q = query::parse(&request.pairs, &|_| false)?;
    let embedding = Embedding::new(schema, &q.embedded);
    let embedding = &embedding;
    let rel = Relation {
        name: &table.name,
        alias: &table.name,
        columns: &table.columns,
        expand_star: false,
        embedding: Some(embedding),
    };
    let count = request.prefs.count.is_some();
    let from = format!("{} {}", qualified(&table.name), ident(&table.name));
    let returning = request.prefs.return_.unwrap_or_default();
    match request.method {
        Method::GET | Method::HEAD => {
            let (offset, limit) = page(&q, &request.headers)?;
            let stmt = Read {
                rel,
                with: String::new(),
                from,
                select: q.select.as_deref(),
                conditions: &q.conditions,
                order: &q.order,
                limit: Some(limit),
                offset,
                count,
                scalar_column: None,
            }
            .build(Statement::default())?;
            Ok(Plan {
                stmt,
                read_only: true,
                shape: Shape::Rows { offset, count },
            })
        }
        Method::POST => {
            let body = parse_body(&request.body)?;
            let stmt = plan_insert(table, rel, &q, request, &body, returning)?;
            let location = (returning == Return::HeadersOnly && !table.pk.is_empty())
                .then(|| (table.name.clone(), table.pk.clone()));
            Ok(Plan {
                stmt,
                read_only: false,
                shape: Shape::Insert {
                    returning,
                    location,
                },
            })
        }
        Method::PATCH => {
            let body = parse_body(&request.body)?;
            let stmt = plan_update(table, rel, &q, request, &body, returning)?;
            Ok(Plan {
                stmt,
                read_only: false,
                shape: Shape::Update { returning },
            })
        }
        Method::DELETE => {
            let mut stmt = Statement::default();
            let filter = write_filter(table, rel, &q, &mut stmt)?;
            let mutation = format!(
                "delete from {} as {}{filter}",
                qualified(&table.name),
                ident(&table.name)
            );
            let stmt = sql::wrap_mutation(
                stmt,
                &mutation,
                rel,
                write_returning(returning, &q),
                MutationOptions {
                    count,
                    track_inserts: false,
                },
            )?;
            Ok(Plan {
                stmt,
                read_only: false,
                shape: Shape::Delete { returning },
            })
        }
        _ => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "PGRST117",
            format!("Unsupported HTTP method: {}", request.method),
        )),
    }
}

fn write_returning<'a>(returning: Return, q: &'a QueryParams) -> Returning<'a> {
    match returning {
        Return::Representation => Returning::Rows(q.select.as_deref()),
        Return::Minimal | Return::HeadersOnly => Returning::Count,
    }
}

/// The `where` of PATCH/DELETE. With `limit`/`offset` the rows are chosen by `ctid` in `order`.
fn write_filter(
    table: &Table,
    rel: Relation<'_>,
    q: &QueryParams,
    stmt: &mut Statement,
) -> Result<String, ApiError> {
    let conditions = rel.where_clause(&q.conditions, stmt)?;
    if q.limit.is_none() && q.offset.is_none() {
        return Ok(conditions);
    }
    let order = rel.order_clause(&q.order, stmt)?;
    let mut page = String::new();
    if let Some(limit) = q.limit {
        page.push_str(&format!(
            " limit {}::int8",
            stmt.bind(Bind::Int(i64::try_from(limit).unwrap_or(i64::MAX)))
        ));
    }
    if let Some(offset) = q.offset {
        page.push_str(&format!(
            " offset {}::int8",
            stmt.bind(Bind::Int(i64::try_from(offset).unwrap_or(i64::MAX)))
        ));
    }
    let alias = ident(&table.name);
    Ok(format!(
        " where {alias}.ctid = any(array(select {alias}.ctid from {} as {alias}{conditions}{order}{page}))",
        qualified(&table.name)
    ))
}

/// Checks body keys against the table; PGRST204 names the first unknown one.
fn known_columns<'a>(
    table: &Table,
    keys: impl IntoIterator<Item = &'a String>,
) -> Result<Vec<String>, ApiError> {
    keys.into_iter()
        .map(|k| {
            table
                .column(k)
                .map(|c| c.name.clone())
                .ok_or_else(|| ApiError::unknown_payload_column(k, &table.name))
        })
        .collect()
}

fn plan_insert(
    table: &Table,
    rel: Relation<'_>,
    q: &QueryParams,
    request: &Request,
    body: &Value,
    returning: Return,
) -> Result<Statement, ApiError> {
    let (rows_json, single) = match body {
        Value::Object(_) => (
            format!("[{}]", String::from_utf8_lossy(&request.body)),
            true,
        ),
        Value::Array(items) => {
            if !items.iter().all(Value::is_object) {
                return Err(ApiError::body("All object keys must match"));
            }
            (String::from_utf8_lossy(&request.body).into_owned(), false)
        }
        _ => {
            return Err(ApiError::body("Empty or invalid json")
                .details("expected a JSON object or an array of objects"));
        }
    };
    let columns = match (&q.columns, body) {
        (Some(columns), _) => known_columns(table, columns)?,
        (None, Value::Object(object)) => known_columns(table, object.keys())?,
        (None, Value::Array(items)) => {
            let first: Vec<&String> = items
                .first()
                .and_then(Value::as_object)
                .map(|o| o.keys().collect())
                .unwrap_or_default();
            for item in items.iter().skip(1) {
                let keys = item
                    .as_object()
                    .map(|o| o.keys().collect::<Vec<_>>())
                    .unwrap_or_default();
                if keys.len() != first.len() || !keys.iter().all(|k| first.contains(k)) {
                    return Err(ApiError::body("All object keys must match"));
                }
            }
            known_columns(table, first)?
        }
        _ => unreachable!("the body is an object or an array here"),
    };
    let mut stmt = Statement::default();
    let body_param = stmt.bind(Bind::Text(rows_json));
    let target = qualified(&table.name);
    let list = columns
        .iter()
        .map(|c| ident(c))
        .collect::<Vec<_>>()
        .join(", ");
    let into = if columns.is_empty() {
        String::new()
    } else {
        format!(" ({list})")
    };
    // With `columns=`, keys missing from an object become NULL, or their DEFAULT with
    // `Prefer: missing=default`; a lone object without `columns=` lists only its own keys.
    let source = if request.prefs.missing_default
        && !(single && q.columns.is_none())
        && !columns.is_empty()
    {
        let mut exprs = Vec::with_capacity(columns.len());
        for name in &columns {
            let column: &Column = table
                .column(name)
                .ok_or_else(|| ApiError::unknown_payload_column(name, &table.name))?;
            let key = stmt.bind(Bind::Text(name.clone()));
            let fallback = column.default.clone().unwrap_or_else(|| "null".into());
            exprs.push(format!(
                "case when pgrst_e.j::jsonb ? {key}::text then pgrst_p.{} else {fallback} end",
                ident(name)
            ));
        }
        format!(
            "select {} from json_array_elements({body_param}::json) as pgrst_e(j) \
             cross join lateral json_populate_record(null::{target}, pgrst_e.j) as pgrst_p",
            exprs.join(", ")
        )
    } else {
        let select = if columns.is_empty() {
            String::new()
        } else {
            list.clone()
        };
        format!(
            "select {select} from json_populate_recordset(null::{target}, {body_param}::json) as pgrst_body"
        )
    };
    let conflict = match request.prefs.resolution {
        None => String::new(),
        Some(resolution) => {
            let target_cols = match &q.on_conflict {
                Some(cols) => cols
                    .iter()
                    .map(|c| {
                        rel.columns
                            .iter()
                            .find(|x| &x.name == c)
                            .map(|x| ident(&x.name))
                            .ok_or_else(|| ApiError::unknown_column(&table.name, c))
                    })
                    .collect::<Result<Vec<_>, _>>()?,
                None => table.pk.iter().map(|c| ident(c)).collect(),
            };
            let on = if target_cols.is_empty() {
                String::new()
            } else {
                format!(" ({})", target_cols.join(", "))
            };
            match resolution {
                Resolution::IgnoreDuplicates => format!(" on conflict{on} do nothing"),
                Resolution::MergeDuplicates if columns.is_empty() => {
                    format!(" on conflict{on} do nothing")
                }
                Resolution::MergeDuplicates => {
                    if on.is_empty() {
                        return Err(ApiError::new(
                            StatusCode::BAD_REQUEST,
                            "PGRST100",
                            "resolution=merge-duplicates needs on_conflict or a primary key",
                        ));
                    }
                    let sets = columns
                        .iter()
                        .map(|c| format!("{0} = excluded.{0}", ident(c)))
                        .collect::<Vec<_>>()
                        .join(", ");
                    format!(" on conflict{on} do update set {sets}")
                }
            }
        }
    };
    let mutation = format!(
        "insert into {target} as {}{into} {source}{conflict}",
        ident(&table.name)
    );
    let returning = match returning {
        Return::HeadersOnly if !table.pk.is_empty() => Returning::Columns(&table.pk),
        other => write_returning(other, q),
    };
    let options = MutationOptions {
        count: request.prefs.count.is_some(),
        track_inserts: request.prefs.resolution == Some(Resolution::MergeDuplicates),
    };
    sql::wrap_mutation(stmt, &mutation, rel, returning, options)
}

fn plan_update(
    table: &Table,
    rel: Relation<'_>,
    q: &QueryParams,
    request: &Request,
    body: &Value,
    returning: Return,
) -> Result<Statement, ApiError> {
    let Value::Object(object) = body else {
        return Err(ApiError::body("Empty or invalid json").details("PATCH takes a JSON object"));
    };
    let columns = match &q.columns {
        Some(columns) => known_columns(table, columns)?,
        None => known_columns(table, object.keys())?,
    };
    let mut stmt = Statement::default();
    if columns.is_empty() {
        // Nothing to set: PostgREST answers as if no row matched.
        stmt.sql = "select null::int8, 0::int8, '[]'::text, null::int8".into();
        return Ok(stmt);
    }
    let body_param = stmt.bind(Bind::Text(
        String::from_utf8_lossy(&request.body).into_owned(),
    ));
    let target = qualified(&table.name);
    let sets = columns
        .iter()
        .map(|c| format!("{0} = pgrst_body.{0}", ident(c)))
        .collect::<Vec<_>>()
        .join(", ");
    let filter = write_filter(table, rel, q, &mut stmt)?;
    let mutation = format!(
        "update {target} as {} set {sets} from (select * from json_populate_record(null::{target}, {body_param}::json)) as pgrst_body{filter}",
        ident(&table.name)
    );
    let options = MutationOptions {
        count: request.prefs.count.is_some(),
        track_inserts: false,
    };
    sql::wrap_mutation(stmt, &mutation, rel, write_returning(returning, q), options)
}

/// `offset` and `limit` from `limit=`/`offset=` intersected with `Range`, capped at
/// [`MAX_ROWS`].
fn page(q: &QueryParams, headers: &HeaderMap) -> Result<(u64, u64), ApiError> {
    let mut lower = q.offset.unwrap_or(0);
    let mut upper: Option<u64> = q.limit.map(|l| lower.saturating_add(l).saturating_sub(1));
    if q.limit == Some(0) {
        return Ok((lower, 0));
    }
    let unit_ok = headers
        .get("range-unit")
        .and_then(|v| v.to_str().ok())
        .is_none_or(|u| u.eq_ignore_ascii_case("items"));
    if let Some(range) = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .filter(|_| unit_ok)
    {
        let range = range.trim().strip_prefix("items=").unwrap_or(range.trim());
        if let Some((from, to)) = range.split_once('-')
            && let Ok(from) = from.trim().parse::<u64>()
        {
            let to = to.trim().parse::<u64>().ok();
            if to.is_some_and(|to| to < from) {
                return Err(ApiError::new(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    "PGRST103",
                    "Requested range not satisfiable",
                ));
            }
            // Intersect: the header range is relative to the whole result, as is offset.
            lower = lower.max(from);
            upper = match (upper, to) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
    }
    let limit = match upper {
        Some(upper) if upper < lower => 0,
        Some(upper) => upper - lower + 1,
        None => MAX_ROWS,
    };
    Ok((lower, limit.min(MAX_ROWS)))
}

/// Resolves `fn` by name and argument names, as PostgREST does.
fn plan_rpc(schema: &Schema, name: &str, request: &Request) -> Result<Plan, ApiError> {
    if !matches!(request.method, Method::GET | Method::HEAD | Method::POST) {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "PGRST117",
            format!("Unsupported HTTP method: {}", request.method),
        ));
    }
    let candidates: &[Function] = schema
        .functions
        .get(name)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let post = request.method == Method::POST;
    let body = if post {
        if request.body.iter().all(u8::is_ascii_whitespace) {
            Value::Object(Map::new())
        } else {
            parse_body(&request.body)?
        }
    } else {
        Value::Null
    };
    let reserved = |k: &str| {
        matches!(
            k,
            "select"
                | "order"
                | "limit"
                | "offset"
                | "columns"
                | "on_conflict"
                | "apikey"
                | "or"
                | "and"
                | "not.or"
                | "not.and"
        )
    };
    // The argument names the request supplies.
    let given: Vec<String> = match (&body, post) {
        (Value::Object(object), true) => object.keys().cloned().collect(),
        (_, true) => Vec::new(),
        (_, false) => request
            .pairs
            .iter()
            .map(|(k, _)| k.clone())
            .filter(|k| !reserved(k))
            .collect(),
    };
    let single_json = |f: &Function| {
        let inputs: Vec<_> = f.inputs().collect();
        inputs.len() == 1
            && inputs[0].name.is_empty()
            && matches!(inputs[0].type_name.as_str(), "json" | "jsonb")
    };
    let fits = |f: &Function| {
        let inputs: Vec<_> = f.inputs().collect();
        if inputs.iter().any(|p| p.name.is_empty()) {
            return false;
        }
        let required = inputs.len().saturating_sub(f.n_defaults);
        let all_required = inputs[..required].iter().all(|p| given.contains(&p.name));
        // POST: every key is an argument. GET: keys that are not arguments filter the result.
        let all_known = !post || given.iter().all(|g| inputs.iter().any(|p| &p.name == g));
        all_required && all_known
    };
    let mut matches: Vec<&Function> = candidates.iter().filter(|f| fits(f)).collect();
    if matches.len() > 1 {
        // Prefer the overload that takes the most of the given names.
        let used = |f: &Function| f.inputs().filter(|p| given.contains(&p.name)).count();
        let best = matches.iter().map(|f| used(f)).max().unwrap_or(0);
        matches.retain(|f| used(f) == best);
    }
    let function = match (matches.as_slice(), post) {
        ([one], _) => *one,
        ([], true) if body.is_object() || body.is_array() => candidates
            .iter()
            .find(|f| single_json(f))
            .ok_or_else(|| ApiError::unknown_function(name, &sorted(&given)))?,
        ([], _) => return Err(ApiError::unknown_function(name, &sorted(&given))),
        (many, _) => {
            let list = many
                .iter()
                .map(|f| signature(f))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(ApiError::new(StatusCode::MULTIPLE_CHOICES, "PGRST203", format!("Could not choose the best candidate function between: {list}"))
                .hint("Try renaming the parameters or the function itself in the database so function overloading can be resolved"));
        }
    };
    let arg_names: Vec<String> = function.inputs().map(|p| p.name.clone()).collect();
    let q = query::parse(&request.pairs, &|k| {
        !post && arg_names.iter().any(|a| a == k)
    })?;

    // The call, with named arguments bound as parameters.
    let mut stmt = Statement::default();
    let mut with = String::new();
    let callee = qualified(&function.name);
    let call = if post && single_json(function) && !fits(function) {
        let p = stmt.bind(Bind::Text(
            String::from_utf8_lossy(&request.body).into_owned(),
        ));
        let ty = function
            .inputs()
            .next()
            .map_or("json", |p| p.type_name.as_str())
            .to_owned();
        format!("{callee}({p}::{ty})")
    } else if post {
        let used: Vec<_> = function
            .inputs()
            .filter(|p| given.contains(&p.name))
            .collect();
        if used.is_empty() {
            format!("{callee}()")
        } else {
            // The raw body, not a re-serialisation: numbers keep their exact digits.
            let p = stmt.bind(Bind::Text(
                String::from_utf8_lossy(&request.body).into_owned(),
            ));
            let defs = used
                .iter()
                .map(|a| format!("{} {}", ident(&a.name), sql::cast_type(&a.type_name)))
                .collect::<Vec<_>>()
                .join(", ");
            with = format!(
                "with pgrst_args as (select * from json_to_record({p}::json) as pgrst_a({defs})) "
            );
            let args = used
                .iter()
                .map(|a| format!("{0} := (select {0} from pgrst_args)", ident(&a.name)))
                .collect::<Vec<_>>()
                .join(", ");
            format!("{callee}({args})")
        }
    } else {
        let mut args = Vec::new();
        for input in function.inputs() {
            if let Some((_, value)) = q.raw.iter().rev().find(|(k, _)| k == &input.name) {
                let p = stmt.bind(Bind::Text(value.clone()));
                args.push(format!(
                    "{} := {p}::text::{}",
                    ident(&input.name),
                    sql::cast_type(&input.type_name)
                ));
            }
        }
        format!("{callee}({})", args.join(", "))
    };
    let read_only = !post || !function.is_volatile();
    let count = request.prefs.count.is_some();
    let shape = function.shape();
    match shape {
        ReturnShape::Void => {
            stmt.sql = format!(
                "{with}select null::int8, count(*)::int8, null::text, null::int8 from (select {call}) as pgrst_v"
            );
            Ok(Plan {
                stmt,
                read_only,
                shape: Shape::Value(shape),
            })
        }
        ReturnShape::Scalar => {
            stmt.sql =
                format!("{with}select null::int8, 1::int8, to_json({call})::text, null::int8");
            Ok(Plan {
                stmt,
                read_only,
                shape: Shape::Value(shape),
            })
        }
        ReturnShape::Composite | ReturnShape::SetOfComposite | ReturnShape::SetOfScalar => {
            let scalar = shape == ReturnShape::SetOfScalar;
            let columns = if scalar {
                vec![Column {
                    name: function.name.clone(),
                    type_name: function.ret_type.clone(),
                    default: None,
                }]
            } else {
                function.result_columns()
            };
            let rel = Relation {
                name: &function.name,
                alias: "pgrst_call",
                columns: &columns,
                expand_star: false,
                embedding: None,
            };
            let column_list = if scalar {
                format!("({})", ident(&function.name))
            } else {
                String::new()
            };
            let with = format!(
                "{}pgrst_call as (select * from {call} as pgrst_f{column_list}) ",
                if with.is_empty() {
                    "with ".to_owned()
                } else {
                    format!("{}, ", with.trim_end())
                }
            );
            let (offset, limit) = page(&q, &request.headers)?;
            let stmt = Read {
                rel,
                with,
                from: "pgrst_call".into(),
                select: q.select.as_deref(),
                conditions: &q.conditions,
                order: &q.order,
                limit: Some(limit),
                offset,
                count,
                scalar_column: scalar.then_some(function.name.as_str()),
            }
            .build(stmt)?;
            let shape = if shape == ReturnShape::Composite {
                Shape::Value(shape)
            } else {
                Shape::Rows { offset, count }
            };
            Ok(Plan {
                stmt,
                read_only,
                shape,
            })
        }
    }
}

fn sorted(names: &[String]) -> Vec<String> {
    let mut names = names.to_vec();
    names.sort();
    names
}

fn signature(f: &Function) -> String {
    let args = f
        .inputs()
        .map(|p| format!("{} => {}", p.name, p.type_name))
        .collect::<Vec<_>>()
        .join(", ");
    format!("public.{}({args})", f.name)
}

/// The row every statement returns.
struct Outcome {
    total: Option<i64>,
    page: i64,
    body: Option<String>,
    /// Upserts with `merge-duplicates`: how many rows were inserted rather than updated.
    inserted: Option<i64>,
}

/// Runs the plan in one transaction and shapes the response. Errors and refused results (a
/// singular request that did not get one row) roll back.
async fn execute(
    state: &AppState,
    request: &Request,
    plan: Plan,
    role_settings: &[(String, String)],
) -> Result<Response, ApiError> {
    let anon = request.auth.is_anon();
    let db = |e| ApiError::from_sqlx(e, anon);
    let begin = if plan.read_only {
        "BEGIN ISOLATION LEVEL READ COMMITTED READ ONLY"
    } else {
        "BEGIN ISOLATION LEVEL READ COMMITTED READ WRITE"
    };
    let mut tx = state.api_pool().begin_with(begin).await.map_err(db)?;
    let preamble = if role_settings.is_empty() {
        std::borrow::Cow::Borrowed(PREAMBLE)
    } else {
        let mut sql = PREAMBLE.to_owned();
        for i in 0..role_settings.len() {
            let n = PREAMBLE_PARAMS + 2 * i;
            sql.push_str(&format!(", set_config(${}, ${}, true)", n + 1, n + 2));
        }
        std::borrow::Cow::Owned(sql)
    };
    let mut query = sqlx::query(&preamble)
        .bind(&request.auth.role)
        .bind(&request.auth.claims)
        .bind(request.method.as_str())
        .bind(&request.path)
        .bind(headers_json(&request.headers))
        .bind(cookies_json(&request.headers));
    for (name, value) in role_settings {
        query = query.bind(name).bind(value);
    }
    query.execute(&mut *tx).await.map_err(db)?;
    let mut query =
        sqlx::query_as::<_, (Option<i64>, i64, Option<String>, Option<i64>)>(&plan.stmt.sql);
    for bind in &plan.stmt.binds {
        query = match bind {
            Bind::Text(s) => query.bind(s),
            Bind::TextArray(items) => query.bind(items),
            Bind::Int(n) => query.bind(n),
        };
    }
    let (total, page, body, inserted) = query.fetch_one(&mut *tx).await.map_err(db)?;
    let outcome = Outcome {
        total,
        page,
        body,
        inserted,
    };
    match respond(request, &plan.shape, outcome) {
        Ok(response) => {
            tx.commit().await.map_err(db)?;
            Ok(response)
        }
        Err(error) => {
            tx.rollback().await.map_err(db)?;
            Err(error)
        }
    }
}

fn headers_json(headers: &HeaderMap) -> String {
    let mut map = Map::new();
    for (name, value) in headers {
        if let Ok(value) = value.to_str() {
            map.insert(name.as_str().to_owned(), Value::String(value.to_owned()));
        }
    }
    Value::Object(map).to_string()
}

fn cookies_json(headers: &HeaderMap) -> String {
    let mut map = Map::new();
    for value in headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
    {
        for pair in value.split(';') {
            if let Some((k, v)) = pair.trim().split_once('=') {
                map.insert(k.to_owned(), Value::String(v.to_owned()));
            }
        }
    }
    Value::Object(map).to_string()
}

/// `Content-Range: lower-upper/total` (PostgREST's `contentRangeH`).
fn content_range(lower: i64, rows: i64, total: Option<i64>) -> String {
    let upper = lower + rows - 1;
    let range = if total != Some(0) && lower <= upper {
        format!("{lower}-{upper}")
    } else {
        "*".into()
    };
    let total = total.map_or("*".into(), |t| t.to_string());
    format!("{range}/{total}")
}

fn respond(request: &Request, shape: &Shape, outcome: Outcome) -> Result<Response, ApiError> {
    let prefs = &request.prefs;
    let single = request.media == MediaType::SingleObject;
    let head = request.method == Method::HEAD;
    let mut headers = HeaderMap::new();
    let mut set = |name: HeaderName, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    let count_header = |t: &Option<i64>| if prefs.count.is_some() { *t } else { None };
    let (status, body) = match shape {
        Shape::Rows { offset, count } => {
            let offset = i64::try_from(*offset).unwrap_or(i64::MAX);
            let total = if *count { outcome.total } else { None };
            if let Some(total) = total
                && offset > total
            {
                let mut error = ApiError::new(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    "PGRST103",
                    "Requested range not satisfiable",
                )
                .details(format!(
                    "An offset of {offset} was requested, but there are only {total} rows."
                ));
                if let Ok(v) = HeaderValue::from_str(&format!("*/{total}")) {
                    error.headers.push((header::CONTENT_RANGE, v));
                }
                return Err(error);
            }
            set(
                header::CONTENT_RANGE,
                &content_range(offset, outcome.page, total),
            );
            let location = match &request.raw_query {
                Some(q) if !q.is_empty() => format!("{}?{q}", request.path),
                _ => request.path.clone(),
            };
            set(header::CONTENT_LOCATION, &location);
            let status = match total {
                Some(total) if outcome.page < total => StatusCode::PARTIAL_CONTENT,
                _ => StatusCode::OK,
            };
            (status, Some(outcome.body.unwrap_or_else(|| "[]".into())))
        }
        Shape::Insert {
            returning,
            location,
        } => {
            set(
                header::CONTENT_RANGE,
                &content_range(1, 0, count_header(&outcome.total)),
            );
            if let (Some((table, pk)), Some(body)) = (location, &outcome.body)
                && let Some(location) = location_of(table, pk, body)
            {
                set(header::LOCATION, &location);
            }
            let body = (*returning == Return::Representation)
                .then(|| outcome.body.clone().unwrap_or_else(|| "[]".into()));
            // A merge-duplicates upsert that only updated rows answers 200 (PostgREST's
            // UpsertSpec); anything that created a row is 201.
            let status = match outcome.inserted {
                Some(0) => StatusCode::OK,
                _ => StatusCode::CREATED,
            };
            (status, body)
        }
        Shape::Update { returning } => {
            set(
                header::CONTENT_RANGE,
                &content_range(0, outcome.page, count_header(&outcome.total)),
            );
            let representation = *returning == Return::Representation;
            let status = if representation {
                StatusCode::OK
            } else {
                StatusCode::NO_CONTENT
            };
            (
                status,
                representation.then(|| outcome.body.clone().unwrap_or_else(|| "[]".into())),
            )
        }
        Shape::Delete { returning } => {
            set(
                header::CONTENT_RANGE,
                &content_range(1, 0, count_header(&outcome.total)),
            );
            let representation = *returning == Return::Representation;
            let status = if representation {
                StatusCode::OK
            } else {
                StatusCode::NO_CONTENT
            };
            (
                status,
                representation.then(|| outcome.body.clone().unwrap_or_else(|| "[]".into())),
            )
        }
        Shape::Value(ReturnShape::Void) => (StatusCode::NO_CONTENT, None),
        Shape::Value(ReturnShape::Composite) => {
            // A one-row array from the set path: unwrap to the object.
            let body = outcome
                .body
                .as_deref()
                .map(first_element)
                .unwrap_or_else(|| "null".into());
            return Ok(finish(
                StatusCode::OK,
                headers,
                Some(body),
                MediaType::Json,
                head,
                prefs,
            ));
        }
        Shape::Value(_) => (
            StatusCode::OK,
            Some(outcome.body.unwrap_or_else(|| "null".into())),
        ),
    };
    let mutation = matches!(
        shape,
        Shape::Insert { .. } | Shape::Update { .. } | Shape::Delete { .. }
    );
    if mutation
        && let Some(max) = prefs.max_affected.filter(|_| prefs.strict)
        && outcome.page > max
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "PGRST124",
            "Query result exceeds max-affected preference constraint",
        )
        .details(format!("The query affects {} rows", outcome.page)));
    }
    // Singular responses apply to rows (reads, set-returning functions) and to writes, whose
    // transaction is rolled back when the count is wrong, whatever `return=` says.
    if single && !matches!(shape, Shape::Value(_)) {
        if outcome.page != 1 {
            return Err(ApiError::not_singular(outcome.page));
        }
        let object = body.as_deref().map(first_element);
        return Ok(finish(
            status,
            headers,
            object,
            MediaType::SingleObject,
            head,
            prefs,
        ));
    }
    Ok(finish(status, headers, body, MediaType::Json, head, prefs))
}

/// The only element of a one-element JSON array as `json_agg` prints it.
fn first_element(array: &str) -> String {
    let inner = array
        .trim()
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or("null")
        .trim();
    if inner.is_empty() {
        "null".into()
    } else {
        inner.to_owned()
    }
}

/// `Location: /table?pk=eq.value` for the row a headers-only insert created.
fn location_of(table: &str, pk: &[String], body: &str) -> Option<String> {
    let rows: Vec<Map<String, Value>> = serde_json::from_str(body).ok()?;
    let row = rows.first()?;
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for column in pk {
        let value = match row.get(column)? {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        query.append_pair(column, &format!("eq.{value}"));
    }
    Some(format!("/{table}?{}", query.finish()))
}

fn finish(
    status: StatusCode,
    mut headers: HeaderMap,
    body: Option<String>,
    media: MediaType,
    head: bool,
    prefs: &Preferences,
) -> Response {
    if let Some(applied) = prefs.applied_header(|p| !p.starts_with("handling="))
        && let Ok(v) = HeaderValue::from_str(&applied)
    {
        headers.insert(HeaderName::from_static("preference-applied"), v);
    }
    let mut response = match body {
        Some(body) => {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(media.content_type()),
            );
            if head {
                if let Ok(v) = HeaderValue::from_str(&body.len().to_string()) {
                    headers.insert(header::CONTENT_LENGTH, v);
                }
                Response::new(Body::empty())
            } else {
                Response::new(Body::from(body))
            }
        }
        None => Response::new(Body::empty()),
    };
    *response.status_mut() = status;
    response.headers_mut().extend(headers);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_follows_postgrest() {
        assert_eq!(content_range(0, 3, None), "0-2/*");
        assert_eq!(content_range(10, 5, Some(100)), "10-14/100");
        assert_eq!(content_range(0, 0, None), "*/*");
        assert_eq!(content_range(0, 0, Some(0)), "*/0");
        assert_eq!(
            content_range(1, 0, Some(7)),
            "*/7",
            "writes report only the count"
        );
    }

    #[test]
    fn range_header_intersects_limit_and_caps_at_max_rows() {
        let mut headers = HeaderMap::new();
        let q = QueryParams::default();
        assert_eq!(
            page(&q, &headers).ok(),
            Some((0, MAX_ROWS)),
            "no range: max_rows"
        );
        headers.insert(header::RANGE, HeaderValue::from_static("5-9"));
        assert_eq!(page(&q, &headers).ok(), Some((5, 5)));
        let q = QueryParams {
            limit: Some(3),
            offset: Some(6),
            ..Default::default()
        };
        assert_eq!(
            page(&q, &headers).ok(),
            Some((6, 3)),
            "offset 6 limit 3 within 5-9 is 6-8"
        );
        headers.insert(header::RANGE, HeaderValue::from_static("0-"));
        let q = QueryParams {
            limit: Some(5000),
            ..Default::default()
        };
        assert_eq!(
            page(&q, &headers).ok(),
            Some((0, MAX_ROWS)),
            "limits above max_rows are cut"
        );
    }

    #[test]
    fn singular_bodies_unwrap() {
        assert_eq!(first_element("[{\"a\":1}]"), "{\"a\":1}");
        assert_eq!(first_element("[]"), "null");
    }
}
