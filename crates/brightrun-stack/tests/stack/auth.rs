//! `/auth/v1` through HTTP, checked against GoTrue's wire protocol (supabase-protocol.md §2):
//! status, error code, message and JSON fields, plus what each call leaves in GoTrue's tables.

use std::collections::HashSet;

use brightrun_stack::jwt::{JwtSecret, Keys, Leeway};
use reqwest::{RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::{chrono_now, http, json_of, stack, unique_email};

const PASSWORD: &str = "correct-horse-battery";
const API_VERSION_HEADER: &str = "x-supabase-api-version";
const ERROR_CODE_HEADER: &str = "x-sb-error-code";

// ---------------------------------------------------------------------------------------------
// Helpers

fn auth_request(method: reqwest::Method, path: &str) -> RequestBuilder {
    let stack = stack();
    http()
        .request(method, stack.auth(path))
        .header("apikey", &stack.anon_key)
}

/// A request as auth-js sends it: with `X-Supabase-Api-Version: 2024-01-01`.
fn post(path: &str) -> RequestBuilder {
    auth_request(reqwest::Method::POST, path).header(API_VERSION_HEADER, "2024-01-01")
}

async fn send(request: RequestBuilder) -> (StatusCode, Value) {
    json_of(request.send().await.expect("request reaches the stack")).await
}

async fn sign_up(email: &str, password: &str) -> (StatusCode, Value) {
    send(post("signup").json(&json!({"email": email, "password": password}))).await
}

/// A new user and the session its signup returned.
async fn signed_up(tag: &str) -> (String, Value) {
    let email = unique_email(tag);
    let (status, session) = sign_up(&email, PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "signup must succeed: {session}");
    (email, session)
}

async fn sign_in(email: &str, password: &str) -> (StatusCode, Value) {
    send(post("token?grant_type=password").json(&json!({"email": email, "password": password})))
        .await
}

async fn signed_in(email: &str) -> Value {
    let (status, session) = sign_in(email, PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "sign-in must succeed: {session}");
    session
}

async fn refresh_response(refresh_token: &str) -> Response {
    post("token?grant_type=refresh_token")
        .json(&json!({"refresh_token": refresh_token}))
        .send()
        .await
        .expect("request reaches the stack")
}

async fn refresh(refresh_token: &str) -> (StatusCode, Value) {
    json_of(refresh_response(refresh_token).await).await
}

async fn refreshed(refresh_token: &str) -> Value {
    let (status, session) = refresh(refresh_token).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "refresh of {refresh_token} must succeed: {session}"
    );
    session
}

async fn get_user(access_token: &str) -> (StatusCode, Value) {
    send(
        auth_request(reqwest::Method::GET, "user")
            .header(API_VERSION_HEADER, "2024-01-01")
            .bearer_auth(access_token),
    )
    .await
}

async fn logout(access_token: &str, scope: &str) -> (StatusCode, Value) {
    send(post(&format!("logout?scope={scope}")).bearer_auth(access_token)).await
}

fn str_of<'a>(value: &'a Value, field: &str) -> &'a str {
    value[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} must be a string in {value}"))
}

/// The verified claims of an access token (signature checked with the project secret).
fn claims_of(session: &Value) -> Value {
    stack()
        .keys()
        .verify_claims(str_of(session, "access_token"), Leeway::None)
        .expect("access token is signed with the project secret")
}

fn session_id_of(session: &Value) -> Uuid {
    Uuid::parse_str(str_of(&claims_of(session), "session_id")).expect("session_id is a uuid")
}

fn assert_error(status: StatusCode, body: &Value, expected: StatusCode, code: &str, message: &str) {
    assert_eq!(status, expected, "status for {code}: {body}");
    assert_eq!(
        body,
        &json!({"code": code, "message": message}),
        "error body for {code}"
    );
}

/// Go's RFC3339Nano in UTC: `2024-06-10T12:34:56.123456Z`, fraction without trailing zeros.
fn assert_go_time(value: &Value, field: &str) {
    let text = str_of(value, field);
    assert!(
        chrono::DateTime::parse_from_rfc3339(text).is_ok(),
        "{field} must be RFC 3339: {text}"
    );
    let rest = text
        .strip_suffix('Z')
        .unwrap_or_else(|| panic!("{field} must be UTC with Z: {text}"));
    if let Some((_, fraction)) = rest.split_once('.') {
        assert!(
            (1..=9).contains(&fraction.len())
                && fraction.bytes().all(|b| b.is_ascii_digit())
                && !fraction.ends_with('0'),
            "{field} fraction must be 1-9 digits without trailing zeros: {text}"
        );
    }
}

fn is_v1_refresh_token(token: &str) -> bool {
    token.len() == 12
        && token
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

// ---------------------------------------------------------------------------------------------
// Sign-up and sign-in

#[tokio::test]
async fn signup_returns_a_session_with_gotrue_claims_and_user() {
    let stack = stack();
    let email = format!("Mixed.Case-{}", unique_email("signup"));
    let lower = email.to_lowercase();
    let (status, session) = send(post("signup").json(&json!({
        "email": email, "password": PASSWORD, "data": {"display_name": "Ada"},
    })))
    .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "autoconfirm signup returns a session: {session}"
    );
    let keys: HashSet<&str> = session
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        HashSet::from([
            "access_token",
            "token_type",
            "expires_in",
            "expires_at",
            "refresh_token",
            "user"
        ]),
        "session fields"
    );
    assert_eq!(
        session["token_type"], "bearer",
        "token_type is lowercase bearer"
    );
    let now = chrono_now();
    let expires_in = session["expires_in"]
        .as_i64()
        .expect("expires_in is an integer");
    let expires_at = session["expires_at"]
        .as_i64()
        .expect("expires_at is an integer");
    assert!(
        (3599..=3600).contains(&expires_in),
        "expires_in is the 1 h lifetime: {expires_in}"
    );
    assert!(
        (expires_at - now - 3600).abs() <= 5,
        "expires_at is about now + 1 h: {expires_at}"
    );
    let refresh_token = str_of(&session, "refresh_token");
    assert!(
        is_v1_refresh_token(refresh_token),
        "v1 refresh token: {refresh_token}"
    );

    // The user JSON.
    let user = &session["user"];
    let user_id = Uuid::parse_str(str_of(user, "id")).expect("user id is a uuid");
    assert_eq!(user["aud"], "authenticated");
    assert_eq!(user["role"], "authenticated");
    assert_eq!(
        user["email"],
        lower.as_str(),
        "the email is stored lowercased"
    );
    assert_eq!(user["phone"], "", "no phone is an empty string");
    assert_eq!(
        user["app_metadata"],
        json!({"provider": "email", "providers": ["email"]})
    );
    assert_eq!(
        user["user_metadata"],
        json!({"display_name": "Ada", "email_verified": true})
    );
    assert_eq!(user["is_anonymous"], false);
    for field in [
        "email_confirmed_at",
        "confirmed_at",
        "last_sign_in_at",
        "created_at",
        "updated_at",
    ] {
        assert_go_time(user, field);
    }
    for absent in [
        "phone_confirmed_at",
        "invited_at",
        "confirmation_sent_at",
        "recovery_sent_at",
        "banned_until",
        "deleted_at",
    ] {
        assert!(
            user.get(absent).is_none(),
            "null {absent} is omitted: {user}"
        );
    }
    let identities = user["identities"]
        .as_array()
        .expect("identities is an array");
    assert_eq!(identities.len(), 1, "one email identity: {identities:?}");
    let identity = &identities[0];
    assert!(
        Uuid::parse_str(str_of(identity, "identity_id")).is_ok(),
        "identity_id is a uuid"
    );
    assert_eq!(
        identity["id"],
        user_id.to_string(),
        "the email provider id is the user id"
    );
    assert_eq!(identity["user_id"], user_id.to_string());
    assert_eq!(identity["provider"], "email");
    assert_eq!(identity["email"], lower.as_str());
    assert_eq!(
        identity["identity_data"],
        json!({"sub": user_id.to_string(), "email": lower, "email_verified": false, "phone_verified": false})
    );
    for field in ["last_sign_in_at", "created_at", "updated_at"] {
        assert_go_time(identity, field);
    }

    // The access token: HS256 without kid, and exactly GoTrue's claims.
    let token = str_of(&session, "access_token");
    let header = jsonwebtoken::decode_header(token).expect("JWT header");
    assert_eq!(header.alg, jsonwebtoken::Algorithm::HS256);
    assert_eq!(header.typ.as_deref(), Some("JWT"));
    assert!(header.kid.is_none(), "no kid with a shared secret");
    let claims = claims_of(&session);
    let names: HashSet<&str> = claims
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        names,
        HashSet::from([
            "iss",
            "sub",
            "aud",
            "exp",
            "iat",
            "email",
            "phone",
            "app_metadata",
            "user_metadata",
            "role",
            "aal",
            "amr",
            "session_id",
            "is_anonymous",
        ]),
        "claim names: {claims}"
    );
    assert_eq!(claims["iss"], format!("{}/auth/v1", stack.url));
    assert_eq!(claims["sub"], user_id.to_string());
    assert_eq!(claims["aud"], "authenticated", "aud is a single string");
    let iat = claims["iat"].as_i64().expect("iat");
    assert!((iat - now).abs() <= 5, "iat is now: {iat}");
    assert_eq!(
        claims["exp"].as_i64(),
        Some(iat + 3600),
        "exp = iat + jwt_expiry"
    );
    assert_eq!(
        claims["exp"].as_i64(),
        Some(expires_at),
        "exp is the session's expires_at"
    );
    assert_eq!(claims["email"], lower.as_str());
    assert_eq!(claims["phone"], "");
    assert_eq!(claims["app_metadata"], user["app_metadata"]);
    assert_eq!(claims["user_metadata"], user["user_metadata"]);
    assert_eq!(claims["role"], "authenticated");
    assert_eq!(claims["aal"], "aal1");
    let amr = claims["amr"].as_array().expect("amr is an array");
    assert_eq!(amr.len(), 1, "one authentication method: {amr:?}");
    assert_eq!(amr[0]["method"], "password");
    let amr_at = amr[0]["timestamp"]
        .as_i64()
        .expect("amr timestamp is unix seconds");
    assert!((amr_at - now).abs() <= 5, "amr timestamp is now: {amr_at}");
    assert_eq!(claims["is_anonymous"], false);
    let session_id = session_id_of(&session);

    // What GoTrue's tables hold.
    let db = stack.db().await;
    let (hash, sessions_user): (String, Uuid) = sqlx::query_as(
        "select u.encrypted_password, s.user_id from auth.users u join auth.sessions s on s.user_id = u.id
         where u.id = $1 and s.id = $2",
    )
    .bind(user_id)
    .bind(session_id)
    .fetch_one(&db)
    .await
    .expect("the user and its session exist");
    assert_eq!(sessions_user, user_id);
    assert!(
        hash.starts_with("$argon2id$") && !hash.contains(PASSWORD),
        "argon2id hash stored"
    );
    let methods: Vec<String> = sqlx::query_scalar(
        "select authentication_method from auth.mfa_amr_claims where session_id = $1",
    )
    .bind(session_id)
    .fetch_all(&db)
    .await
    .expect("amr claims");
    assert_eq!(methods, vec!["password"], "one password AMR claim");
    let (token_user, revoked, parent): (String, bool, Option<String>) = sqlx::query_as(
        "select user_id, revoked, parent from auth.refresh_tokens where token = $1 and session_id = $2",
    )
    .bind(refresh_token)
    .bind(session_id)
    .fetch_one(&db)
    .await
    .expect("the refresh token belongs to the session");
    assert_eq!(
        (token_user, revoked, parent),
        (user_id.to_string(), false, None)
    );
    db.close().await;
}

#[tokio::test]
async fn password_grant_starts_a_new_session_and_records_the_sign_in() {
    let (email, signup) = signed_up("signin").await;
    let (status, session) = sign_in(&email.to_uppercase(), PASSWORD).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "sign-in is case-insensitive in the email: {session}"
    );
    assert_eq!(session["user"]["id"], signup["user"]["id"]);
    assert_ne!(
        session_id_of(&session),
        session_id_of(&signup),
        "each sign-in is a new session"
    );
    assert_ne!(session["refresh_token"], signup["refresh_token"]);
    let before = str_of(&signup["user"], "last_sign_in_at");
    let after = str_of(&session["user"], "last_sign_in_at");
    let parse = |t: &str| chrono::DateTime::parse_from_rfc3339(t).expect("timestamp");
    assert!(
        parse(after) > parse(before),
        "last_sign_in_at moves on: {before} -> {after}"
    );
    assert_eq!(claims_of(&session)["amr"][0]["method"], "password");

    let db = stack().db().await;
    let sessions: i64 =
        sqlx::query_scalar("select count(*) from auth.sessions where user_id = $1::uuid")
            .bind(str_of(&session["user"], "id"))
            .fetch_one(&db)
            .await
            .expect("count sessions");
    assert_eq!(sessions, 2, "signup and sign-in each made a session");
    db.close().await;
}

#[tokio::test]
async fn bad_credentials_fail_in_both_error_shapes() {
    let (email, _) = signed_up("badcreds").await;
    let body = json!({"email": email, "password": "not-the-password"});

    // Legacy shape: no X-Supabase-Api-Version.
    let response = auth_request(reqwest::Method::POST, "token?grant_type=password")
        .json(&body)
        .send()
        .await
        .expect("request");
    assert_eq!(response.headers()[ERROR_CODE_HEADER], "invalid_credentials");
    assert!(
        response.headers().get(API_VERSION_HEADER).is_none(),
        "no version echoed without one"
    );
    let (status, legacy) = json_of(response).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        legacy,
        json!({"code": 400, "error_code": "invalid_credentials", "msg": "Invalid login credentials"})
    );

    // 2024-01-01 shape, and the version is echoed.
    let response = post("token?grant_type=password")
        .json(&body)
        .send()
        .await
        .expect("request");
    assert_eq!(response.headers()[ERROR_CODE_HEADER], "invalid_credentials");
    assert_eq!(response.headers()[API_VERSION_HEADER], "2024-01-01");
    let (status, current) = json_of(response).await;
    assert_error(
        status,
        &current,
        StatusCode::BAD_REQUEST,
        "invalid_credentials",
        "Invalid login credentials",
    );

    // An unknown address is indistinguishable from a wrong password.
    let (status, unknown) = sign_in(&unique_email("nobody"), PASSWORD).await;
    assert_error(
        status,
        &unknown,
        StatusCode::BAD_REQUEST,
        "invalid_credentials",
        "Invalid login credentials",
    );

    let (status, missing) =
        send(post("token?grant_type=password").json(&json!({"password": PASSWORD}))).await;
    assert_error(
        status,
        &missing,
        StatusCode::BAD_REQUEST,
        "validation_failed",
        "missing email or phone",
    );

    let (status, grant) = send(post("token?grant_type=magic").json(&body)).await;
    assert_error(
        status,
        &grant,
        StatusCode::BAD_REQUEST,
        "invalid_credentials",
        "unsupported_grant_type",
    );

    let (status, bad_json) = send(post("token?grant_type=password").body("{not json")).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "malformed JSON: {bad_json}"
    );
    assert_eq!(bad_json["code"], "bad_json");
    assert!(
        str_of(&bad_json, "message").starts_with("Could not parse request body as JSON: "),
        "bad_json message: {bad_json}"
    );
}

#[tokio::test]
async fn signup_rejects_weak_passwords_duplicates_and_bad_input() {
    let email = unique_email("weak");
    let (status, weak) = sign_up(&email, "12345").await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "5-char password: {weak}"
    );
    assert_eq!(
        weak,
        json!({"code": "weak_password", "message": "Password should be at least 6 characters.",
               "weak_password": {"reasons": ["length"]}})
    );
    let (status, legacy) = send(
        auth_request(reqwest::Method::POST, "signup")
            .json(&json!({"email": email, "password": "12345"})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        legacy,
        json!({"code": 422, "error_code": "weak_password",
               "msg": "Password should be at least 6 characters.",
               "weak_password": {"reasons": ["length"]}})
    );

    let (email, _) = signed_up("dup").await;
    let (status, dup) = sign_up(&email.to_uppercase(), PASSWORD).await;
    assert_error(
        status,
        &dup,
        StatusCode::UNPROCESSABLE_ENTITY,
        "user_already_exists",
        "User already registered",
    );

    let (status, invalid) = sign_up("not-an-email", PASSWORD).await;
    assert_error(
        status,
        &invalid,
        StatusCode::BAD_REQUEST,
        "validation_failed",
        "Unable to validate email address: invalid format",
    );

    let (status, anonymous) = send(post("signup").json(&json!({"password": PASSWORD}))).await;
    assert_error(
        status,
        &anonymous,
        StatusCode::UNPROCESSABLE_ENTITY,
        "anonymous_provider_disabled",
        "Anonymous sign-ins are disabled",
    );

    let (status, no_password) =
        send(post("signup").json(&json!({"email": unique_email("nopw")}))).await;
    assert_error(
        status,
        &no_password,
        StatusCode::BAD_REQUEST,
        "validation_failed",
        "Signup requires a valid password",
    );
}

#[tokio::test]
async fn requests_without_an_api_key_are_refused_by_the_gateway() {
    let (status, body) = send(
        http()
            .post(stack().auth("signup"))
            .json(&json!({"email": unique_email("nokey"), "password": PASSWORD})),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        body,
        json!({"message": "No API key found in request",
               "hint": "No `apikey` request header or url param was found."})
    );
}

// ---------------------------------------------------------------------------------------------
// GET /user and bearer tokens

#[tokio::test]
async fn get_user_returns_the_signed_in_user_with_identities() {
    let (_, session) = signed_up("getuser").await;
    let (status, user) = get_user(str_of(&session, "access_token")).await;
    assert_eq!(status, StatusCode::OK, "valid access token: {user}");
    assert_eq!(
        user, session["user"],
        "GET /user returns the same user JSON as the session"
    );
}

#[tokio::test]
async fn bad_bearer_tokens_are_rejected_with_gotrue_errors() {
    let stack = stack();
    let (_, session) = signed_up("badjwt").await;
    let claims = claims_of(&session);
    let now = chrono_now();

    let (status, body) =
        send(auth_request(reqwest::Method::GET, "user").header(API_VERSION_HEADER, "2024-01-01"))
            .await;
    assert_error(
        status,
        &body,
        StatusCode::UNAUTHORIZED,
        "no_authorization",
        "This endpoint requires a valid Bearer token",
    );

    let mut expired = claims.clone();
    expired["iat"] = json!(now - 3610);
    expired["exp"] = json!(now - 10);
    let (status, body) = get_user(&stack.keys().sign(&expired)).await;
    assert_error(
        status,
        &body,
        StatusCode::FORBIDDEN,
        "bad_jwt",
        "invalid JWT: unable to parse or verify signature, token has invalid claims: token is expired",
    );

    let foreign = Keys::new(
        JwtSecret::new("some-other-projects-secret-0123456789abcdef"),
        String::new(),
        now,
    );
    let (status, body) = get_user(&foreign.sign(&claims)).await;
    assert_error(
        status,
        &body,
        StatusCode::FORBIDDEN,
        "bad_jwt",
        "invalid JWT: unable to parse or verify signature, token signature is invalid: signature is invalid",
    );

    let (status, body) = get_user("not-a-jwt").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "garbage token: {body}");
    assert_eq!(body["code"], "bad_jwt");
    assert!(
        str_of(&body, "message").starts_with("invalid JWT: unable to parse or verify signature, "),
        "bad_jwt message: {body}"
    );

    let (status, body) = get_user(&stack.anon_key).await;
    assert_error(
        status,
        &body,
        StatusCode::FORBIDDEN,
        "bad_jwt",
        "invalid claim: missing sub claim",
    );

    let mut stranger = claims.clone();
    stranger["sub"] = json!(Uuid::new_v4().to_string());
    let (status, body) = get_user(&stack.keys().sign(&stranger)).await;
    assert_error(
        status,
        &body,
        StatusCode::FORBIDDEN,
        "user_not_found",
        "User from sub claim in JWT does not exist",
    );

    let mut sessionless = claims.clone();
    sessionless["session_id"] = json!(Uuid::new_v4().to_string());
    let (status, body) = get_user(&stack.keys().sign(&sessionless)).await;
    assert_error(
        status,
        &body,
        StatusCode::FORBIDDEN,
        "session_not_found",
        "Session from session_id claim in JWT does not exist",
    );
}

// ---------------------------------------------------------------------------------------------
// Refresh tokens

#[tokio::test]
async fn refresh_rotates_the_token_and_keeps_the_session() {
    let (_, session) = signed_up("rotate").await;
    let r0 = str_of(&session, "refresh_token").to_owned();
    let response = refresh_response(&r0).await;
    let headers = response.headers().clone();
    let (status, first) = json_of(response).await;
    assert_eq!(status, StatusCode::OK, "refresh succeeds: {first}");
    let r1 = str_of(&first, "refresh_token").to_owned();
    assert!(is_v1_refresh_token(&r1) && r1 != r0, "a new v1 token: {r1}");
    assert_eq!(headers["sb-auth-user-id"], str_of(&session["user"], "id"));
    assert_eq!(
        headers["sb-auth-session-id"],
        session_id_of(&session).to_string().as_str()
    );
    assert_eq!(headers["sb-auth-refresh-token-prefix"], &r1[..5]);
    let (before, after) = (claims_of(&session), claims_of(&first));
    assert_eq!(
        after["session_id"], before["session_id"],
        "same session after refresh"
    );
    assert_eq!(after["amr"], before["amr"], "amr unchanged by refresh");
    assert_eq!(first["user"]["id"], session["user"]["id"]);

    let db = stack().db().await;
    let rows: Vec<(String, bool, Option<String>)> = sqlx::query_as(
        "select token, revoked, parent from auth.refresh_tokens where session_id = $1 order by id",
    )
    .bind(session_id_of(&session))
    .fetch_all(&db)
    .await
    .expect("tokens");
    assert_eq!(
        rows,
        vec![
            (r0.clone(), true, None),
            (r1.clone(), false, Some(r0.clone()))
        ],
        "the old token is revoked and the new one is its child"
    );
    db.close().await;

    let second = refreshed(&r1).await;
    assert_ne!(
        second["refresh_token"], first["refresh_token"],
        "every refresh rotates"
    );
    let (status, user) = get_user(str_of(&second, "access_token")).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the refreshed access token works: {user}"
    );
}

#[tokio::test]
async fn replaying_the_parent_returns_the_active_token() {
    let (_, session) = signed_up("parent").await;
    let r0 = str_of(&session, "refresh_token").to_owned();
    let r1 = str_of(&refreshed(&r0).await, "refresh_token").to_owned();
    let replay = refreshed(&r0).await;
    assert_eq!(
        replay["refresh_token"],
        r1.as_str(),
        "the parent gets the active child back"
    );
    assert_eq!(
        claims_of(&replay)["session_id"],
        claims_of(&session)["session_id"]
    );

    let db = stack().db().await;
    let tokens: i64 =
        sqlx::query_scalar("select count(*) from auth.refresh_tokens where session_id = $1")
            .bind(session_id_of(&session))
            .fetch_one(&db)
            .await
            .expect("count");
    assert_eq!(tokens, 2, "replaying the parent creates no token");
    db.close().await;
}

#[tokio::test]
async fn reuse_within_the_interval_makes_another_child() {
    let (_, session) = signed_up("reuse-in").await;
    let r0 = str_of(&session, "refresh_token").to_owned();
    let r1 = str_of(&refreshed(&r0).await, "refresh_token").to_owned();
    let r2 = str_of(&refreshed(&r1).await, "refresh_token").to_owned();
    // r0 is no longer the active token's parent. Pin its revocation to "just now", so the test
    // does not depend on how fast the machine is.
    let db = stack().db().await;
    sqlx::query("update auth.refresh_tokens set updated_at = now() where token = $1")
        .bind(&r0)
        .execute(&db)
        .await
        .expect("arrange updated_at");

    let reused = refreshed(&r0).await;
    let r3 = str_of(&reused, "refresh_token").to_owned();
    assert!(
        ![&r0, &r1, &r2].contains(&&r3),
        "a new child, not an existing token: {r3}"
    );
    let (revoked, parent): (bool, Option<String>) =
        sqlx::query_as("select revoked, parent from auth.refresh_tokens where token = $1")
            .bind(&r3)
            .fetch_one(&db)
            .await
            .expect("new token row");
    assert_eq!(
        (revoked, parent),
        (false, Some(r0.clone())),
        "the new token is an active child of r0"
    );
    db.close().await;
    assert_eq!(
        claims_of(&reused)["session_id"],
        claims_of(&session)["session_id"]
    );
}

#[tokio::test]
async fn reuse_after_the_interval_revokes_the_whole_family() {
    let (_, session) = signed_up("reuse-out").await;
    let session_id = session_id_of(&session);
    let r0 = str_of(&session, "refresh_token").to_owned();
    let r1 = str_of(&refreshed(&r0).await, "refresh_token").to_owned();
    let active = refreshed(&r1).await;
    let r2 = str_of(&active, "refresh_token").to_owned();
    let db = stack().db().await;
    sqlx::query(
        "update auth.refresh_tokens set updated_at = now() - interval '1 hour' where token = $1",
    )
    .bind(&r0)
    .execute(&db)
    .await
    .expect("arrange: r0 was revoked an hour ago");

    let (status, body) = refresh(&r0).await;
    assert_error(
        status,
        &body,
        StatusCode::BAD_REQUEST,
        "refresh_token_already_used",
        "Invalid Refresh Token: Already Used",
    );
    let live: i64 = sqlx::query_scalar(
        "select count(*) from auth.refresh_tokens where session_id = $1 and revoked = false",
    )
    .bind(session_id)
    .fetch_one(&db)
    .await
    .expect("count");
    assert_eq!(live, 0, "every token of the session is revoked");

    for token in [&r2, &r1] {
        let (status, body) = refresh(token).await;
        assert_error(
            status,
            &body,
            StatusCode::BAD_REQUEST,
            "refresh_token_already_used",
            "Invalid Refresh Token: Already Used",
        );
    }
    let (status, user) = get_user(str_of(&active, "access_token")).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the session row stays: issued access tokens live until exp: {user}"
    );
    db.close().await;
}

#[tokio::test]
async fn concurrent_refreshes_of_one_token_all_get_the_same_child() {
    // Serialised by the session's row lock: the first rotates, the others find the token revoked
    // and the parent of the active token, so they all get that token back (GoTrue §2.6 5a).
    const CONCURRENT: usize = 8;
    let (_, session) = signed_up("concurrent").await;
    let r0 = str_of(&session, "refresh_token").to_owned();
    let results = futures::future::join_all((0..CONCURRENT).map(|_| refresh(&r0))).await;
    let mut tokens = HashSet::new();
    for (status, body) in &results {
        assert_eq!(
            *status,
            StatusCode::OK,
            "every concurrent refresh succeeds: {body}"
        );
        assert_eq!(
            claims_of(body)["session_id"],
            claims_of(&session)["session_id"]
        );
        tokens.insert(str_of(body, "refresh_token").to_owned());
    }
    assert_eq!(
        tokens.len(),
        1,
        "all concurrent refreshes get the same child: {tokens:?}"
    );

    let db = stack().db().await;
    let children: Vec<String> =
        sqlx::query_scalar("select token from auth.refresh_tokens where parent = $1")
            .bind(&r0)
            .fetch_all(&db)
            .await
            .expect("children");
    assert_eq!(
        children.into_iter().collect::<HashSet<_>>(),
        tokens,
        "exactly one child was made"
    );
    db.close().await;
}

#[tokio::test]
async fn a_refresh_blocked_on_a_locked_session_gives_up_with_conflict() {
    let (_, session) = signed_up("locked").await;
    let r0 = str_of(&session, "refresh_token").to_owned();
    let db = stack().db().await;
    let mut holder = db.begin().await.expect("begin");
    sqlx::query("select id from auth.sessions where id = $1 for update")
        .bind(session_id_of(&session))
        .execute(&mut *holder)
        .await
        .expect("hold the session's row lock");

    // GoTrue waits up to 5 s for a session another refresh holds, then answers 409.
    let (status, body) = refresh(&r0).await;
    assert_error(
        status,
        &body,
        StatusCode::CONFLICT,
        "conflict",
        "Too many concurrent token refresh requests on the same session or refresh token",
    );
    holder.rollback().await.expect("release the lock");
    db.close().await;

    let after = refreshed(&r0).await;
    assert_ne!(
        after["refresh_token"],
        r0.as_str(),
        "the token still works once the lock is gone"
    );
}

#[tokio::test]
async fn refresh_token_errors_follow_gotrue() {
    for malformed in ["short", "ABCDEFGHIJKL", "abcdefgh!jkl", ""] {
        let (status, body) = refresh(malformed).await;
        assert_error(
            status,
            &body,
            StatusCode::BAD_REQUEST,
            "validation_failed",
            "Refresh token is not valid",
        );
    }
    let (status, body) = refresh("aaaaaaaaaaaa").await;
    assert_error(
        status,
        &body,
        StatusCode::BAD_REQUEST,
        "refresh_token_not_found",
        "Invalid Refresh Token: Refresh Token Not Found",
    );

    // A token without a session (from before sessions existed) is deleted.
    let (_, session) = signed_up("nosession").await;
    let db = stack().db().await;
    let orphan = Uuid::new_v4().simple().to_string()[..12].to_owned();
    sqlx::query(
        "insert into auth.refresh_tokens (token, user_id, revoked, created_at, updated_at)
         values ($1, $2, false, now(), now())",
    )
    .bind(&orphan)
    .bind(str_of(&session["user"], "id"))
    .execute(&db)
    .await
    .expect("arrange orphan token");
    let (status, body) = refresh(&orphan).await;
    assert_error(
        status,
        &body,
        StatusCode::BAD_REQUEST,
        "session_not_found",
        "Invalid Refresh Token: No Valid Session Found",
    );
    let left: i64 = sqlx::query_scalar("select count(*) from auth.refresh_tokens where token = $1")
        .bind(&orphan)
        .fetch_one(&db)
        .await
        .expect("count");
    assert_eq!(left, 0, "the sessionless token is deleted");
    db.close().await;
}

// ---------------------------------------------------------------------------------------------
// Logout

#[tokio::test]
async fn logout_scopes_delete_the_right_sessions() {
    let (email, a) = signed_up("logout").await;
    let b = signed_in(&email).await;
    let c = signed_in(&email).await;
    let access = |s: &Value| str_of(s, "access_token").to_owned();
    let refresh_of = |s: &Value| str_of(s, "refresh_token").to_owned();
    let gone = |status: StatusCode, body: &Value| {
        assert_error(
            status,
            body,
            StatusCode::FORBIDDEN,
            "session_not_found",
            "Session from session_id claim in JWT does not exist",
        )
    };
    let not_found = |status: StatusCode, body: &Value| {
        assert_error(
            status,
            body,
            StatusCode::BAD_REQUEST,
            "refresh_token_not_found",
            "Invalid Refresh Token: Refresh Token Not Found",
        )
    };

    // others: b and c end, a stays.
    let (status, body) = logout(&access(&a), "others").await;
    assert_eq!(
        (status, body),
        (StatusCode::NO_CONTENT, Value::Null),
        "logout is 204 without a body"
    );
    for ended in [&b, &c] {
        let (status, body) = get_user(&access(ended)).await;
        gone(status, &body);
        let (status, body) = refresh(&refresh_of(ended)).await;
        not_found(status, &body);
    }
    assert_eq!(
        get_user(&access(&a)).await.0,
        StatusCode::OK,
        "others keeps the current session"
    );

    // local: only the current session ends.
    let d = signed_in(&email).await;
    let (status, _) = logout(&access(&a), "local").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = get_user(&access(&a)).await;
    gone(status, &body);
    let (status, body) = refresh(&refresh_of(&a)).await;
    not_found(status, &body);
    assert_eq!(
        get_user(&access(&d)).await.0,
        StatusCode::OK,
        "local leaves other sessions"
    );

    // Unknown scope: rejected after authentication, nothing ends.
    let (status, body) = logout(&access(&d), "everywhere").await;
    assert_error(
        status,
        &body,
        StatusCode::BAD_REQUEST,
        "validation_failed",
        "Unsupported logout scope \"everywhere\"",
    );
    assert_eq!(
        get_user(&access(&d)).await.0,
        StatusCode::OK,
        "a rejected logout ends nothing"
    );

    // global: every session ends.
    let e = signed_in(&email).await;
    let (status, _) = logout(&access(&d), "global").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    for ended in [&d, &e] {
        let (status, body) = get_user(&access(ended)).await;
        gone(status, &body);
    }
    let db = stack().db().await;
    let sessions: i64 =
        sqlx::query_scalar("select count(*) from auth.sessions where user_id = $1::uuid")
            .bind(str_of(&a["user"], "id"))
            .fetch_one(&db)
            .await
            .expect("count");
    assert_eq!(
        sessions, 0,
        "global logout deletes every session of the user"
    );
    db.close().await;

    let (status, body) = send(post("logout")).await;
    assert_error(
        status,
        &body,
        StatusCode::UNAUTHORIZED,
        "no_authorization",
        "This endpoint requires a valid Bearer token",
    );
}
