//! Where the refresh token lives. ([`Secret`], the type that never prints, is
//! `brightrun_supabase`'s, shared with the worker.)
//!
//! The refresh token is the one long-lived credential. It is kept in a [`SecretStore`]: the OS
//! keychain ([`KeychainStore`]) in the app and the CLI, memory ([`MemoryStore`]) in tests. Nothing
//! else (no file, no local database, no log) ever holds it.

use std::sync::Mutex;

pub use brightrun_supabase::Secret;

use crate::config::{BuildChannel, Project};
use crate::error::{Error, Result};

/// Where the refresh token of one project's session is kept. Synchronous: platform keychains are
/// blocking APIs (the Secret Service backend blocks on D-Bus), so async callers run these on a
/// blocking thread (`tokio::task::spawn_blocking`).
pub trait SecretStore: Send + Sync + std::fmt::Debug {
    /// The stored refresh token, or `None` when there is none.
    fn load(&self) -> Result<Option<Secret>>;
    /// Stores (or replaces) the refresh token.
    fn store(&self, refresh_token: &Secret) -> Result<()>;
    /// Removes the refresh token; removing an absent one is not an error.
    fn delete(&self) -> Result<()>;
}

/// The OS keychain (Secret Service on Linux, Keychain on macOS, Credential Manager on Windows),
/// through the `keyring` crate. One entry per project and build channel: service
/// `brightrun:<channel>`, user `<project url>`, so a dev build never reads or overwrites the
/// credentials of a release build, and two projects never share a session.
///
/// Call it from a blocking thread inside the tokio runtime (`spawn_blocking`): the Secret Service
/// backend (`async-secret-service` + `tokio` features) blocks on D-Bus through the runtime.
/// [`crate::session::Session`] does so.
#[derive(Debug, Clone)]
pub struct KeychainStore {
    service: String,
    user: String,
}

impl KeychainStore {
    pub fn new(project: &Project, channel: BuildChannel) -> Self {
        Self::for_url(&project.url, channel)
    }

    /// The entry of the project at `url`.
    pub fn for_url(url: &url::Url, channel: BuildChannel) -> Self {
        Self {
            service: format!("brightrun:{}", channel.as_str()),
            user: url.as_str().trim_end_matches('/').to_owned(),
        }
    }

    /// The keychain entry's service name, e.g. `brightrun:dev`.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The keychain entry's user name: the project URL.
    pub fn user(&self) -> &str {
        &self.user
    }

    fn entry(&self) -> Result<keyring::Entry> {
        keyring::Entry::new(&self.service, &self.user).map_err(keychain_error)
    }
}

/// Keyring errors carry no secret (platform messages and attribute names only).
fn keychain_error(error: keyring::Error) -> Error {
    Error::Keychain(error.to_string())
}

impl SecretStore for KeychainStore {
    fn load(&self) -> Result<Option<Secret>> {
        match self.entry()?.get_password() {
            Ok(token) => Ok(Some(Secret::new(token))),
            Err(keyring::Error::NoEntry) => Ok(None),
            Err(e) => Err(keychain_error(e)),
        }
    }

    fn store(&self, refresh_token: &Secret) -> Result<()> {
        self.entry()?
            .set_password(refresh_token.expose())
            .map_err(keychain_error)
    }

    fn delete(&self) -> Result<()> {
        match self.entry()?.delete_credential() {
            Ok(()) | Err(keyring::Error::NoEntry) => Ok(()),
            Err(e) => Err(keychain_error(e)),
        }
    }
}

/// A store in memory, for tests and for sessions that must not outlive the process.
#[derive(Debug, Default)]
pub struct MemoryStore {
    token: Mutex<Option<Secret>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// A store that already holds `refresh_token`.
    pub fn with_token(refresh_token: Secret) -> Self {
        Self {
            token: Mutex::new(Some(refresh_token)),
        }
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Secret>> {
        self.token
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl SecretStore for MemoryStore {
    fn load(&self) -> Result<Option<Secret>> {
        Ok(self.slot().clone())
    }

    fn store(&self, refresh_token: &Secret) -> Result<()> {
        *self.slot() = Some(refresh_token.clone());
        Ok(())
    }

    fn delete(&self) -> Result<()> {
        *self.slot() = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_store_round_trips_and_deletes() {
        let store = MemoryStore::new();
        assert_eq!(store.load().expect("load"), None, "empty at first");
        store.store(&Secret::new("a")).expect("store");
        store.store(&Secret::new("b")).expect("store again");
        assert_eq!(
            store.load().expect("load"),
            Some(Secret::new("b")),
            "the last value wins"
        );
        store.delete().expect("delete");
        store.delete().expect("deleting an absent token is fine");
        assert_eq!(store.load().expect("load"), None, "gone after delete");
        store.store(&Secret::new("refresh-xyz")).expect("store");
        let printed = format!("{store:?}");
        assert!(
            !printed.contains("refresh-xyz"),
            "a store's Debug redacts too: {printed}"
        );
    }

    #[test]
    fn keychain_entries_are_namespaced_by_channel_and_project() {
        let project = |url: &str| Project {
            url: url.parse().expect("url"),
            anon_key: "anon".into(),
        };
        let dev = KeychainStore::new(&project("https://abc.supabase.co/"), BuildChannel::Dev);
        let release =
            KeychainStore::new(&project("https://abc.supabase.co"), BuildChannel::Release);
        let other = KeychainStore::new(&project("http://127.0.0.1:54321"), BuildChannel::Dev);
        assert_eq!(dev.service(), "brightrun:dev", "service names the channel");
        assert_eq!(
            release.service(),
            "brightrun:release",
            "service names the channel"
        );
        assert_eq!(
            dev.user(),
            "https://abc.supabase.co",
            "user is the project URL"
        );
        assert_eq!(
            dev.user(),
            release.user(),
            "a trailing slash does not make a new entry"
        );
        assert_ne!(dev.user(), other.user(), "another project is another entry");
    }
}
