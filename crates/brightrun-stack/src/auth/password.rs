//! Password rules and hashing. Hashes are argon2id PHC strings (GoTrue verifies those as well as
//! bcrypt), computed on the blocking pool so a sign-in never stalls the async runtime.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

use super::error::AuthError;

/// GoTrue's `GOTRUE_PASSWORD_MIN_LENGTH` default (and the CLI's `minimum_password_length`).
pub const MIN_LENGTH: usize = 6;

/// 422 `weak_password` unless the password meets the strength rules (`checkPasswordStrength`:
/// length counted in bytes, like Go's `len`).
pub fn check_strength(password: &str) -> Result<(), AuthError> {
    if password.len() < MIN_LENGTH {
        return Err(AuthError::weak_password(
            format!("Password should be at least {MIN_LENGTH} characters."),
            vec!["length"],
        ));
    }
    Ok(())
}

/// An argon2id PHC string with default parameters and a random salt.
pub async fn hash(password: &str) -> Result<String, AuthError> {
    let password = password.to_owned();
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(|e| AuthError::internal(format!("hashing a password: {e}")))
    })
    .await
    .map_err(AuthError::internal)?
}

/// A stored hash to check against when the user does not exist, so that an unknown email costs
/// as much time as a wrong password and response times do not reveal which addresses exist.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$YnJpZ2h0cnVuLWR1bW15$0r0bD3t1ULq0f7tO5lH6d5cJ8mT0k3n0yQ2kF1b2c3Q";

/// Whether `password` matches `stored`. `None` (no such user, or a user without a password) is
/// checked against a dummy hash and is never a match. An unparsable stored hash is no match.
pub async fn verify(password: &str, stored: Option<&str>) -> Result<bool, AuthError> {
    let password = password.to_owned();
    let (stored, real) = match stored {
        Some(hash) if !hash.is_empty() => (hash.to_owned(), true),
        _ => (DUMMY_HASH.to_owned(), false),
    };
    tokio::task::spawn_blocking(move || {
        let Ok(parsed) = PasswordHash::new(&stored) else {
            tracing::warn!("a stored password hash is not a PHC string this server can verify");
            return false;
        };
        let matches = Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        real && matches
    })
    .await
    .map_err(AuthError::internal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_differ_per_salt() {
        let a = hash("correct horse").await.expect("hash");
        let b = hash("correct horse").await.expect("hash");
        assert!(
            a.starts_with("$argon2id$"),
            "argon2id PHC string expected, got {a}"
        );
        assert_ne!(a, b, "each hash has its own salt");
        assert!(
            verify("correct horse", Some(&a)).await.expect("verify"),
            "right password matches"
        );
        assert!(
            !verify("wrong horse", Some(&a)).await.expect("verify"),
            "wrong password fails"
        );
        assert!(
            !verify("correct horse", None).await.expect("verify"),
            "no user never matches"
        );
        assert!(
            !verify("x", Some("not a hash")).await.expect("verify"),
            "bad hash never matches"
        );
    }

    #[test]
    fn dummy_hash_parses() {
        assert!(
            PasswordHash::new(DUMMY_HASH).is_ok(),
            "the dummy hash must be a valid PHC string"
        );
    }

    #[test]
    fn short_passwords_are_weak() {
        let error = check_strength("12345").expect_err("5 bytes is too short");
        assert_eq!(error.weak_password, Some(vec!["length"]));
        assert!(check_strength("123456").is_ok(), "6 bytes is enough");
    }
}
