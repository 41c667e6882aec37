//! The server's notifications: the list and marking them read.

use brightrun_core::Notification;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::api::NotificationFilter;
use crate::app::App;
use crate::error::Result;

/// Which notifications to list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct ListNotifications {
    #[serde(default)]
    pub unread_only: bool,
}

/// The caller's notifications, newest first.
pub async fn list(app: &App, request: ListNotifications) -> Result<Vec<Notification>> {
    let filter = if request.unread_only {
        NotificationFilter::Unread
    } else {
        NotificationFilter::All
    };
    app.api().await?.notifications(filter).await
}

/// Exactly these notifications: the ones the user was shown, never one that arrived since.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct MarkRead {
    pub ids: Vec<Uuid>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct MarkedRead {
    /// How many changed (already read ones do not count).
    pub count: u32,
}

/// Marks the listed notifications read.
pub async fn mark_read(app: &App, request: MarkRead) -> Result<MarkedRead> {
    if request.ids.is_empty() {
        return Ok(MarkedRead { count: 0 });
    }
    let count = app
        .api()
        .await?
        .mark_notifications_read(Some(&request.ids))
        .await?;
    Ok(MarkedRead { count })
}
