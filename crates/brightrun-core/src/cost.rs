//! The cost model (PRODUCT.md "Cost model") exactly as the server runs it in
//! `lora_private.estimate_cost` (migrations/20261122000005_lora_functions.sql), so a form can show
//! an estimate without a round trip. The server's answer is the one that counts:
//! `estimate_training_cost` returns, and `create_training_job` snapshots, the same [`CostEstimate`].
//!
//! ```text
//! scaling_efficiency = 0.9 ^ log2(gpus)
//! training_hours     = tokens_per_epoch × epochs ÷ (tokens_per_second_per_gpu × gpus × scaling_efficiency) ÷ 3600
//! estimated_hours    = training_hours + 0.25 (overhead, billed for every GPU)
//! estimated_cost     = estimated_hours × price_per_gpu_hour × gpus
//! ```
//!
//! Outputs are rounded as the SQL rounds them (hours to 4 decimals, money to cents, half away from
//! zero), each from the unrounded values.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::model::{GpuType, PresetId};

/// Hours billed per job whatever its size: provisioning, base-model download, final evaluation,
/// adapter upload (`overhead_hours` in the SQL).
pub const OVERHEAD_HOURS: f64 = 0.25;
/// Share of per-GPU throughput kept with each doubling of the GPU count (`per_doubling_efficiency`).
pub const PER_DOUBLING_EFFICIENCY: f64 = 0.9;
/// Epochs the server accepts in an estimate.
pub const EPOCHS: std::ops::RangeInclusive<u32> = 1..=100;
/// The most GPUs any catalogue row may offer (`gpu_types.max_gpus between 1 and 64`).
pub const MAX_GPUS: u32 = 64;
/// The currency of every price and estimate.
pub const CURRENCY: &str = "USD";

/// The arguments of `lora_private.estimate_cost`: what the estimate depends on.
#[derive(Debug, Clone, PartialEq)]
pub struct CostEstimateInputs {
    /// Tokens one epoch processes ([`crate::Dataset::tokens_per_epoch`]).
    pub tokens_per_epoch: u64,
    pub epochs: u32,
    /// `gpu_types.id`.
    pub gpu_type: String,
    /// US dollars for one GPU for one hour.
    pub price_per_gpu_hour: f64,
    pub tokens_per_second_per_gpu: f64,
    pub gpu_count: u32,
}

/// What a job costs: the answer of `estimate_training_cost` and `training_jobs.cost_estimate`,
/// field for field as `lora_private.estimate_cost` builds it, inputs next to outputs so the UI can
/// show why the number is what it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct CostEstimate {
    pub tokens_per_epoch: u64,
    pub epochs: u32,
    /// `tokens_per_epoch × epochs`.
    pub total_tokens: u64,
    pub gpu_type: String,
    pub gpu_count: u32,
    pub tokens_per_second_per_gpu: f64,
    /// `0.9 ^ log2(gpu_count)`, 4 decimals.
    pub scaling_efficiency: f64,
    /// All GPUs together, 2 decimals.
    pub effective_tokens_per_second: f64,
    /// 4 decimals.
    pub training_hours: f64,
    pub overhead_hours: f64,
    /// Wall-clock hours, overhead included, 4 decimals.
    pub estimated_hours: f64,
    /// `estimated_hours × gpu_count`, 4 decimals.
    pub gpu_hours: f64,
    pub price_per_gpu_hour: f64,
    /// US dollars for all GPUs, in cents.
    pub estimated_cost: f64,
    pub currency: String,
    /// The dataset estimated for; `None` in a preview of a file not uploaded yet.
    pub dataset_id: Option<Uuid>,
    /// The preset the epochs came from, when they came from one.
    pub preset_id: Option<PresetId>,
}

/// Inputs the server would refuse, with its wording.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CostModelError {
    #[error("gpu_count must be between 1 and {max_gpus} for {gpu_type}, got {gpu_count}")]
    GpuCount {
        gpu_type: String,
        max_gpus: u32,
        gpu_count: u32,
    },
    #[error("epochs must be between 1 and 100, got {0}")]
    Epochs(u32),
    #[error("{field} must be a finite number greater than zero, got {value}")]
    NotPositive { field: &'static str, value: f64 },
}

impl CostEstimateInputs {
    /// The inputs the server takes for `gpu_count` GPUs of catalogue row `gpu`, refusing a count
    /// the row does not offer.
    pub fn new(
        tokens_per_epoch: u64,
        epochs: u32,
        gpu: &GpuType,
        gpu_count: u32,
    ) -> Result<Self, CostModelError> {
        if !(1..=gpu.max_gpus).contains(&gpu_count) {
            return Err(CostModelError::GpuCount {
                gpu_type: gpu.id.clone(),
                max_gpus: gpu.max_gpus,
                gpu_count,
            });
        }
        Ok(Self {
            tokens_per_epoch,
            epochs,
            gpu_type: gpu.id.clone(),
            price_per_gpu_hour: gpu.price_per_gpu_hour,
            tokens_per_second_per_gpu: gpu.tokens_per_second_per_gpu,
            gpu_count,
        })
    }

    /// The estimate `estimate_training_cost` returns for these inputs, `dataset_id` and
    /// `preset_id` left for the caller to fill in.
    pub fn estimate(&self) -> Result<CostEstimate, CostModelError> {
        if !(1..=MAX_GPUS).contains(&self.gpu_count) {
            return Err(CostModelError::GpuCount {
                gpu_type: self.gpu_type.clone(),
                max_gpus: MAX_GPUS,
                gpu_count: self.gpu_count,
            });
        }
        if !EPOCHS.contains(&self.epochs) {
            return Err(CostModelError::Epochs(self.epochs));
        }
        for (field, value) in [
            ("tokens_per_second_per_gpu", self.tokens_per_second_per_gpu),
            ("price_per_gpu_hour", self.price_per_gpu_hour),
        ] {
            if !(value.is_finite() && value > 0.0) {
                return Err(CostModelError::NotPositive { field, value });
            }
        }
        let gpus = f64::from(self.gpu_count);
        // The SQL's order of operations, so the unrounded values agree to the last bits.
        let efficiency = PER_DOUBLING_EFFICIENCY.powf(gpus.log2());
        let effective_throughput = self.tokens_per_second_per_gpu * gpus * efficiency;
        // u64 → f64 is exact below 2^53 tokens, far beyond any dataset.
        let training_hours =
            self.tokens_per_epoch as f64 * f64::from(self.epochs) / effective_throughput / 3600.0;
        let total_hours = training_hours + OVERHEAD_HOURS;
        Ok(CostEstimate {
            tokens_per_epoch: self.tokens_per_epoch,
            epochs: self.epochs,
            // Saturates only beyond 1.8e19 tokens.
            total_tokens: self.tokens_per_epoch.saturating_mul(u64::from(self.epochs)),
            gpu_type: self.gpu_type.clone(),
            gpu_count: self.gpu_count,
            tokens_per_second_per_gpu: self.tokens_per_second_per_gpu,
            scaling_efficiency: round_half_away(efficiency, 4),
            effective_tokens_per_second: round_half_away(effective_throughput, 2),
            training_hours: round_half_away(training_hours, 4),
            overhead_hours: OVERHEAD_HOURS,
            estimated_hours: round_half_away(total_hours, 4),
            gpu_hours: round_half_away(total_hours * gpus, 4),
            price_per_gpu_hour: self.price_per_gpu_hour,
            estimated_cost: round_half_away(total_hours * self.price_per_gpu_hour * gpus, 2),
            currency: CURRENCY.to_owned(),
            dataset_id: None,
            preset_id: None,
        })
    }
}

/// `round(value, places)` of PostgreSQL `numeric`: half away from zero. The server computes in
/// decimal, where a value like 0.755 is exactly halfway and rounds up; in binary it lands a hair
/// either side of halfway. A value within 1e-12 (relative; f64 arithmetic is good to about 1e-15)
/// of halfway is therefore taken as the tie it almost certainly is: integer token counts make true
/// ties common, while a value that close to halfway without being on it is vanishingly rare.
fn round_half_away(value: f64, places: i32) -> f64 {
    let scale = 10f64.powi(places);
    let scaled = value * scale;
    let below = scaled.trunc();
    let fraction = (scaled - below).abs();
    let rounded = if (fraction - 0.5).abs() <= 1e-12 * scaled.abs().max(1.0) {
        below + scaled.signum()
    } else {
        scaled.round()
    };
    rounded / scale
}

/// A month's spending against the user's budget.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct BudgetStatus {
    pub budget: f64,
    pub spent: f64,
    /// `spent / budget`.
    pub used: f64,
    /// The alert threshold (0–1 of the budget) was reached.
    pub alert: bool,
    /// More than the budget was spent.
    pub over: bool,
}

impl BudgetStatus {
    /// `spent` against a monthly `budget`, alerting from `alert_at` (a fraction, e.g. 0.8).
    /// `None` without a positive budget.
    pub fn of(spent: f64, budget: f64, alert_at: f64) -> Option<Self> {
        if !(budget.is_finite() && budget > 0.0) {
            return None;
        }
        let used = spent / budget;
        Some(Self {
            budget,
            spent,
            used,
            alert: used >= alert_at,
            over: spent > budget,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::round_half_away;

    #[test]
    fn rounding_is_numerics() {
        // 0.755 is 0.75499999999999989... in binary; numeric rounds it up.
        assert_eq!(round_half_away(0.755, 2), 0.76, "a decimal tie rounds up");
        assert_eq!(round_half_away(0.25005, 4), 0.2501, "at 4 places too");
        assert_eq!(round_half_away(-0.755, 2), -0.76, "away from zero");
        assert_eq!(round_half_away(0.754, 2), 0.75, "below halfway rounds down");
        assert_eq!(round_half_away(2.0, 2), 2.0, "whole numbers stay");
        assert_eq!(
            round_half_away(49_603.174_623_015_87, 4),
            49_603.174_6,
            "a large value is not mistaken for a tie"
        );
    }
}
