//! The project's one HS256 secret, the API keys derived from it, and token checks shared by
//! `/auth/v1` and `/rest/v1` (supabase-protocol.md §1, §2.2, §3.1).

use std::fmt;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// Ten years, like the keys `supabase start` prints.
const API_KEY_LIFETIME_SECS: i64 = 10 * 365 * 24 * 3600;

/// The shared HS256 secret: the one `Secret` type of the project, whose `Debug` never shows
/// the value and which cannot be serialized.
pub type JwtSecret = brightrun_supabase::Secret;

/// 40 random alphanumerics, as long as the CLI's default secret.
pub fn generate_secret() -> JwtSecret {
    use rand::Rng;
    use rand::distributions::Alphanumeric;
    JwtSecret::new(
        rand::thread_rng()
            .sample_iter(&Alphanumeric)
            .take(40)
            .map(char::from)
            .collect::<String>(),
    )
}

/// How strictly a token's time claims are checked: GoTrue allows no leeway, PostgREST 30 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leeway {
    None,
    PostgRest,
}

#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error("token is expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    /// Well-formed, but not signed with this project's secret.
    #[error("signature verification failed")]
    BadSignature,
    /// Not a decodable HS256 JWT at all.
    #[error("{0}")]
    Invalid(String),
}

/// Signing and verification with the project secret, plus the anon and service_role keys.
#[derive(Clone)]
pub struct Keys {
    secret: JwtSecret,
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// `iss` of user tokens, `<url>/auth/v1`.
    pub issuer: String,
    pub anon_key: String,
    pub service_role_key: String,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keys")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl Keys {
    pub fn new(secret: JwtSecret, issuer: String, now: i64) -> Self {
        let encoding = EncodingKey::from_secret(secret.expose().as_bytes());
        let decoding = DecodingKey::from_secret(secret.expose().as_bytes());
        let api_key = |role: &str| {
            sign_with(
                &encoding,
                &json!({"iss": "supabase-demo", "role": role, "iat": now, "exp": now + API_KEY_LIFETIME_SECS}),
            )
        };
        let anon_key = api_key("anon");
        let service_role_key = api_key("service_role");
        Self {
            secret,
            encoding,
            decoding,
            issuer,
            anon_key,
            service_role_key,
        }
    }

    pub fn secret(&self) -> &JwtSecret {
        &self.secret
    }

    /// Whether `key` is one of this project's API keys (the gateway's `apikey` check).
    pub fn is_api_key(&self, key: &str) -> bool {
        key == self.anon_key || key == self.service_role_key
    }

    pub fn sign(&self, claims: &impl Serialize) -> String {
        sign_with(&self.encoding, claims)
    }

    /// Verifies signature and `exp`/`nbf`; `aud` is not checked (neither PostgREST with its
    /// default config nor storage-api check it).
    pub fn verify<T: DeserializeOwned>(&self, token: &str, leeway: Leeway) -> Result<T, JwtError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = match leeway {
            Leeway::None => 0,
            Leeway::PostgRest => 30,
        };
        validation.validate_aud = false;
        validation.validate_nbf = true;
        validation.required_spec_claims.clear();
        jsonwebtoken::decode::<T>(token, &self.decoding, &validation)
            .map(|d| d.claims)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                match e.kind() {
                    ErrorKind::ExpiredSignature => JwtError::Expired,
                    ErrorKind::ImmatureSignature => JwtError::NotYetValid,
                    ErrorKind::InvalidSignature => JwtError::BadSignature,
                    _ => JwtError::Invalid(e.to_string()),
                }
            })
    }

    /// Verifies and returns the claims as JSON, as PostgREST hands them to PostgreSQL.
    pub fn verify_claims(&self, token: &str, leeway: Leeway) -> Result<Value, JwtError> {
        self.verify::<Value>(token, leeway)
    }
}

fn sign_with(key: &EncodingKey, claims: &impl Serialize) -> String {
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, key)
        .expect("HS256 signing of serialisable claims cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys::new(
            JwtSecret::new("super-secret-jwt-token-with-at-least-32-characters"),
            "http://x/auth/v1".into(),
            1_700_000_000,
        )
    }

    #[test]
    fn api_keys_carry_their_role_and_verify() {
        let keys = keys();
        let now = chrono::Utc::now().timestamp();
        let fresh = Keys::new(keys.secret().clone(), keys.issuer.clone(), now);
        let claims = fresh
            .verify_claims(&fresh.anon_key, Leeway::None)
            .expect("anon key verifies");
        assert_eq!(claims["role"], "anon", "anon key must carry role anon");
        let claims = fresh
            .verify_claims(&fresh.service_role_key, Leeway::None)
            .expect("service key verifies");
        assert_eq!(claims["role"], "service_role");
        assert!(fresh.is_api_key(&fresh.anon_key) && !fresh.is_api_key("nope"));
    }

    #[test]
    fn expired_and_forged_tokens_are_rejected() {
        let keys = keys();
        let now = chrono::Utc::now().timestamp();
        let expired = keys.sign(&json!({"sub": "x", "exp": now - 10}));
        assert!(matches!(
            keys.verify_claims(&expired, Leeway::None),
            Err(JwtError::Expired)
        ));
        assert!(
            keys.verify_claims(&expired, Leeway::PostgRest).is_ok(),
            "PostgREST allows 30 s skew"
        );
        let other = Keys::new(
            JwtSecret::new("another-secret-another-secret-another"),
            String::new(),
            now,
        );
        let forged = other.sign(&json!({"sub": "x", "exp": now + 100}));
        assert!(matches!(
            keys.verify_claims(&forged, Leeway::None),
            Err(JwtError::BadSignature)
        ));
        assert!(matches!(
            keys.verify_claims("not.a.jwt", Leeway::None),
            Err(JwtError::Invalid(_))
        ));
    }

    #[test]
    fn secret_debug_is_redacted() {
        let secret = JwtSecret::new("hunter2-hunter2");
        assert!(!format!("{secret:?}").contains("hunter2"));
        assert!(!format!("{:?}", keys()).contains("super-secret"));
    }
}
