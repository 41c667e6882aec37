//! The cost model (PRODUCT.md "Cost model"), as a client-side preview of the server's estimate RPC:
//!
//! ```text
//! hours = tokens_per_epoch × epochs ÷ (throughput_per_gpu × gpus × scaling_efficiency) ÷ 3600
//!         + overhead_hours
//! cost  = hours × price_per_gpu_hour × gpus
//! ```
//!
//! Throughput, scaling efficiency, overhead and price are catalogue data on the server; the RPC
//! returns its inputs next to its outputs (one flat jsonb object), which is exactly
//! [`CostEstimate`], so the UI can show why the number is what it is.

use serde::{Deserialize, Serialize};

/// Everything the estimate depends on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CostEstimateInputs {
    /// Billable tokens in one pass over the training split.
    pub tokens_per_epoch: u64,
    pub epochs: u32,
    pub gpu_type: String,
    pub gpu_count: u32,
    pub throughput_tokens_per_sec_per_gpu: f64,
    /// Fraction (0, 1] of linear speed-up kept when adding GPUs (1.0 for one GPU).
    pub scaling_efficiency: f64,
    /// Fixed time per job: provisioning, model download, checkpointing.
    pub overhead_hours: f64,
    pub price_per_gpu_hour: f64,
}

/// The estimate RPC's answer: its inputs and its outputs in one flat object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CostEstimate {
    #[serde(flatten)]
    pub inputs: CostEstimateInputs,
    /// Wall-clock hours, overhead included.
    pub hours: f64,
    /// US dollars for all GPUs.
    pub cost: f64,
}

/// Inputs with which the formula has no meaning.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CostModelError {
    #[error("gpu_count must be at least 1")]
    NoGpus,
    #[error("{field} must be a finite number greater than zero, got {value}")]
    NotPositive { field: &'static str, value: f64 },
    #[error("scaling_efficiency must be in (0, 1], got {0}")]
    ScalingEfficiency(f64),
    #[error("{field} must be a finite number of zero or more, got {value}")]
    Negative { field: &'static str, value: f64 },
}

impl CostEstimateInputs {
    /// The same formula the server runs. Costs are not rounded here; see
    /// [`CostEstimate::cost_cents`].
    pub fn estimate(&self) -> Result<CostEstimate, CostModelError> {
        if self.gpu_count == 0 {
            return Err(CostModelError::NoGpus);
        }
        let positive = |field, value: f64| {
            if value.is_finite() && value > 0.0 {
                Ok(())
            } else {
                Err(CostModelError::NotPositive { field, value })
            }
        };
        positive(
            "throughput_tokens_per_sec_per_gpu",
            self.throughput_tokens_per_sec_per_gpu,
        )?;
        let non_negative = |field, value: f64| {
            if value.is_finite() && value >= 0.0 {
                Ok(())
            } else {
                Err(CostModelError::Negative { field, value })
            }
        };
        non_negative("price_per_gpu_hour", self.price_per_gpu_hour)?;
        non_negative("overhead_hours", self.overhead_hours)?;
        if !(self.scaling_efficiency > 0.0 && self.scaling_efficiency <= 1.0) {
            return Err(CostModelError::ScalingEfficiency(self.scaling_efficiency));
        }
        let gpus = f64::from(self.gpu_count);
        // u64 → f64 loses precision only above 2^53 tokens, far beyond any dataset.
        let tokens = self.tokens_per_epoch as f64 * f64::from(self.epochs);
        let tokens_per_hour =
            self.throughput_tokens_per_sec_per_gpu * gpus * self.scaling_efficiency * 3600.0;
        let hours = tokens / tokens_per_hour + self.overhead_hours;
        let cost = hours * self.price_per_gpu_hour * gpus;
        Ok(CostEstimate {
            inputs: self.clone(),
            hours,
            cost,
        })
    }
}

impl CostEstimate {
    /// The cost in whole cents, rounded half away from zero (what `numeric(10,2)` stores).
    pub fn cost_cents(&self) -> i64 {
        // Costs are bounded by realistic budgets, far inside i64.
        (self.cost * 100.0).round() as i64
    }
}
