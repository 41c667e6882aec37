//! Local preferences of this machine: where downloads go, the monthly budget and its alert,
//! notifications, how often jobs are polled. Kept in the local database, never on the server.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::app::App;
use crate::error::{Error, Result};
use crate::watch::Cadence;

/// How often running jobs are polled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(deny_unknown_fields)]
pub struct Polling {
    /// While a job runs and the window is visible (or a terminal watches). Default 2 s.
    pub active_seconds: u32,
    /// While a job runs and the window is hidden. Default 15 s.
    pub background_seconds: u32,
}

impl Default for Polling {
    fn default() -> Self {
        let cadence = Cadence::default();
        Self {
            active_seconds: u32::try_from(cadence.active_foreground.as_secs()).unwrap_or(2),
            background_seconds: u32::try_from(cadence.active_background.as_secs()).unwrap_or(15),
        }
    }
}

fn eighty() -> u8 {
    80
}

fn yes() -> bool {
    true
}

/// The window's colours: the system's, or always light or dark.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "snake_case")]
pub enum Theme {
    #[default]
    System,
    Light,
    Dark,
}

/// The preferences. Missing fields take their defaults, so older files keep working.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(deny_unknown_fields)]
pub struct Preferences {
    /// Where models are downloaded; `~/Downloads/BrightRun` (or the data folder) when `None`.
    #[serde(default)]
    pub download_dir: Option<PathBuf>,
    /// Dollars per month; no budget when `None`.
    #[serde(default)]
    pub monthly_budget: Option<f64>,
    /// Alert when this share of the budget is spent. Default 80 %.
    #[serde(default = "eighty")]
    pub budget_alert_percent: u8,
    /// Native notifications when a job ends. Default on.
    #[serde(default = "yes")]
    pub notifications: bool,
    #[serde(default)]
    pub polling: Polling,
    /// Closing the desktop window keeps the app watching from the tray. Default on.
    #[serde(default = "yes")]
    pub close_to_tray: bool,
    #[serde(default)]
    pub theme: Theme,
}

impl Default for Preferences {
    fn default() -> Self {
        Self {
            download_dir: None,
            monthly_budget: None,
            budget_alert_percent: eighty(),
            notifications: true,
            polling: Polling::default(),
            close_to_tray: true,
            theme: Theme::System,
        }
    }
}

impl Preferences {
    /// Where a model is downloaded unless the user names a folder.
    pub fn download_dir(&self, app: &App) -> PathBuf {
        self.download_dir.clone().unwrap_or_else(|| {
            std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(|h| PathBuf::from(h).join("Downloads/BrightRun"))
                .unwrap_or_else(|| app.data_dir().join("downloads"))
        })
    }

    /// The watcher's cadence: the chosen intervals while jobs run, the defaults' slower ones
    /// while none does (never faster than while one runs).
    pub fn cadence(&self) -> Cadence {
        let defaults = Cadence::default();
        let active = Duration::from_secs(u64::from(self.polling.active_seconds));
        let background = Duration::from_secs(u64::from(self.polling.background_seconds));
        Cadence {
            active_foreground: active,
            active_background: background,
            idle_foreground: defaults.idle_foreground.max(active),
            idle_background: defaults.idle_background.max(background),
            offline: defaults.offline,
        }
    }

    fn check(&self) -> Result<()> {
        if self.budget_alert_percent == 0 || self.budget_alert_percent > 100 {
            return Err(Error::InvalidInput(format!(
                "the budget alert must be between 1 and 100 % of the budget, got {}",
                self.budget_alert_percent
            )));
        }
        if let Some(budget) = self.monthly_budget
            && !(budget.is_finite() && budget > 0.0)
        {
            return Err(Error::InvalidInput(format!(
                "a monthly budget must be more than $0, got {budget}"
            )));
        }
        let Polling {
            active_seconds,
            background_seconds,
        } = self.polling;
        if !(1..=3600).contains(&active_seconds) || !(1..=3600).contains(&background_seconds) {
            return Err(Error::InvalidInput(
                "polling intervals must be between 1 s and 1 hour".into(),
            ));
        }
        if background_seconds < active_seconds {
            return Err(Error::InvalidInput(
                "polling in the background must not be faster than in view".into(),
            ));
        }
        if let Some(dir) = &self.download_dir
            && !dir.is_absolute()
        {
            return Err(Error::InvalidInput(format!(
                "the download folder must be an absolute path, got {}",
                dir.display()
            )));
        }
        Ok(())
    }
}

/// The preferences (the defaults until some are saved).
pub async fn get(app: &App) -> Result<Preferences> {
    Ok(app.db().preferences().await?.unwrap_or_default())
}

/// Saves the preferences, all of them, after checking them.
pub async fn set(app: &App, preferences: Preferences) -> Result<Preferences> {
    preferences.check()?;
    app.db().set_preferences(&preferences).await?;
    Ok(preferences)
}
