//! The signed-in session: sign-in, the refresh cache, sign-out.

use crate::error::{Error, Result};
use crate::secret::Secret;

/// The current user's session. Cheap to share (`Arc<Session>`); every request asks it for an
/// access token, which it refreshes when less than a minimum lifetime is left.
#[derive(Debug)]
pub struct Session {}

impl Session {
    /// A valid access token, refreshing first if needed; [`Error::SignedOut`] when there is none.
    pub async fn access_token(&self) -> Result<Secret> {
        Err(Error::SignedOut)
    }
}
