//! Signing up, in and out, and who is signed in. The refresh token goes to the OS keychain
//! entry of the project and build channel, which the CLI and the app share.

use brightrun_supabase::Secret;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::app::App;
use crate::error::{Error, Result};
use crate::session::{self, Session};

/// Email and password.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct Credentials {
    pub email: String,
    pub password: Secret,
}

/// Who is signed in, where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct Account {
    pub user_id: Uuid,
    /// Unknown for a fixed access token.
    pub email: Option<String>,
    pub project_url: String,
}

impl Account {
    fn of(session: &Session) -> Self {
        Self {
            user_id: session.user_id(),
            email: session.email().map(str::to_owned),
            project_url: session.project().url.as_str().to_owned(),
        }
    }
}

/// What a sign-up gave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum SignedUp {
    /// Signed in at once.
    SignedIn { account: Account },
    /// The project sent a confirmation email; sign in once it is confirmed.
    ConfirmEmail { email: String },
}

fn checked(credentials: &Credentials) -> Result<String> {
    let email = credentials.email.trim();
    if email.is_empty() || !email.contains('@') {
        return Err(Error::InvalidInput(format!(
            "{email:?} is not an email address"
        )));
    }
    if credentials.password.expose().is_empty() {
        return Err(Error::InvalidInput("the password is empty".into()));
    }
    Ok(email.to_owned())
}

/// Creates an account; signed in at once where the project allows it.
pub async fn sign_up(app: &App, request: Credentials) -> Result<SignedUp> {
    let email = checked(&request)?;
    let outcome = Session::sign_up(
        app.project()?,
        app.keychain().clone(),
        app.http().clone(),
        &email,
        &request.password,
    )
    .await?;
    Ok(match outcome {
        session::SignUp::SignedIn(session) => {
            let account = Account::of(&session);
            app.set_session(Some(session)).await?;
            SignedUp::SignedIn { account }
        }
        session::SignUp::ConfirmEmail => SignedUp::ConfirmEmail { email },
    })
}

/// Signs in; the session is kept in the keychain for the next start.
pub async fn sign_in(app: &App, request: Credentials) -> Result<Account> {
    let email = checked(&request)?;
    let session = Session::sign_in(
        app.project()?,
        app.keychain().clone(),
        app.http().clone(),
        &email,
        &request.password,
    )
    .await?;
    let account = Account::of(&session);
    app.set_session(Some(session)).await?;
    Ok(account)
}

/// Whether there was a session to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct SignedOut {
    pub was_signed_in: bool,
}

/// Signs out: revokes the session on the server (when it can be reached) and deletes the
/// keychain entry, so the CLI and the app of this build are both signed out.
pub async fn sign_out(app: &App) -> Result<SignedOut> {
    let session = match app.session().await {
        Ok(session) => Some(session),
        Err(Error::SignedOut) => None,
        // Offline: the entry is deleted anyway; the server session expires by itself.
        Err(e) if e.code() == crate::ErrorCode::Offline => None,
        Err(e) => return Err(e),
    };
    let was_signed_in = match session {
        Some(session) => {
            session.sign_out().await?;
            true
        }
        None => {
            let store = app.keychain().clone();
            tokio::task::spawn_blocking(move || {
                let had = store.load()?.is_some();
                store.delete()?;
                Ok::<_, Error>(had)
            })
            .await
            .map_err(|e| Error::Keychain(format!("keychain call did not finish: {e}")))??
        }
    };
    app.set_session(None).await?;
    Ok(SignedOut { was_signed_in })
}

/// Who is signed in (restoring the keychain's session on first use).
pub async fn whoami(app: &App) -> Result<Account> {
    let session = app.session().await?;
    Ok(Account::of(&session))
}

/// Where the session stands when the window opens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct SessionStatus {
    /// Signed in (restored from the keychain), or the account signed in last when `offline`.
    pub account: Option<Account>,
    /// The server could not be reached: the account is the last one known, the lists cached.
    pub offline: bool,
}

/// The session at start: restored (refreshed) from the keychain, signed out, or, when the
/// server cannot be reached, the account signed in last (offline is not signed out).
pub async fn status(app: &App) -> Result<SessionStatus> {
    match app.session().await {
        Ok(session) => Ok(SessionStatus {
            account: Some(Account::of(&session)),
            offline: false,
        }),
        Err(Error::SignedOut) => Ok(SessionStatus {
            account: None,
            offline: false,
        }),
        Err(e) if e.code() == crate::ErrorCode::Offline => {
            let account = app
                .db()
                .last_account()
                .await?
                .map(|(user_id, email)| Account {
                    user_id,
                    email,
                    project_url: app.config().url.as_str().to_owned(),
                });
            Ok(SessionStatus {
                account,
                offline: true,
            })
        }
        Err(e) => Err(e),
    }
}
