//! What a month cost, by type and job, against the user's monthly budget.

use brightrun_core::{BudgetStatus, MonthlyCostSummary};
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::app::{App, prefs};
use crate::error::Result;

/// Which month.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct CostMonth {
    /// Any day of the month; the current month (by the server's clock) when `None`.
    #[serde(default)]
    pub month: Option<NaiveDate>,
}

/// A month's costs and, with a budget set, how much of it is spent.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct CostReport {
    pub summary: MonthlyCostSummary,
    pub budget: Option<BudgetStatus>,
}

/// The month's totals (`monthly_cost_summary`: by type, by job, by GPU) and the budget.
pub async fn month(app: &App, request: CostMonth) -> Result<CostReport> {
    let summary = app.api().await?.monthly_cost_summary(request.month).await?;
    let prefs = prefs::get(app).await?;
    let budget = prefs.monthly_budget.and_then(|budget| {
        BudgetStatus::of(
            summary.total,
            budget,
            f64::from(prefs.budget_alert_percent) / 100.0,
        )
    });
    Ok(CostReport { summary, budget })
}
