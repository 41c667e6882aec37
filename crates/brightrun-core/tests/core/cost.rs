//! The client-side preview of the cost model.

use brightrun_core::{CostEstimate, CostEstimateInputs, CostModelError};
use serde_json::json;

fn inputs() -> CostEstimateInputs {
    CostEstimateInputs {
        tokens_per_epoch: 36_000_000,
        epochs: 3,
        gpu_type: "A100-80GB".to_owned(),
        gpu_count: 2,
        throughput_tokens_per_sec_per_gpu: 2_500.0,
        scaling_efficiency: 0.8,
        overhead_hours: 0.25,
        price_per_gpu_hour: 3.0,
    }
}

#[test]
fn the_formula_scales_with_tokens_and_gpus() {
    let estimate = inputs().estimate().expect("valid inputs");
    // 108M tokens ÷ (2500 × 2 × 0.8 × 3600 = 14.4M tokens/h) = 7.5 h, + 0.25 h overhead.
    assert!(
        (estimate.hours - 7.75).abs() < 1e-9,
        "hours = 7.75, got {}",
        estimate.hours
    );
    // 7.75 h × $3 × 2 GPUs.
    assert!(
        (estimate.cost - 46.5).abs() < 1e-9,
        "cost = 46.5, got {}",
        estimate.cost
    );
    assert_eq!(estimate.cost_cents(), 4650, "cents round");
    let mut bigger = inputs();
    bigger.tokens_per_epoch *= 2;
    let more = bigger.estimate().expect("valid inputs");
    assert!(
        more.cost > estimate.cost,
        "more data must cost more (the spec's formula did not)"
    );
}

#[test]
fn the_rpc_answer_reads_as_inputs_plus_outputs() {
    let answer = json!({
        "tokens_per_epoch": 36000000, "epochs": 3, "gpu_type": "A100-80GB", "gpu_count": 2,
        "throughput_tokens_per_sec_per_gpu": 2500, "scaling_efficiency": 0.8,
        "overhead_hours": 0.25, "hours": 7.75, "price_per_gpu_hour": 3.0, "cost": 46.5
    });
    let estimate: CostEstimate = serde_json::from_value(answer.clone()).expect("RPC shape");
    assert_eq!(
        estimate.inputs,
        inputs(),
        "inputs are flattened next to the outputs"
    );
    assert_eq!(
        serde_json::to_value(&estimate).expect("serializes"),
        json!({
            "tokens_per_epoch": 36000000, "epochs": 3, "gpu_type": "A100-80GB", "gpu_count": 2,
            "throughput_tokens_per_sec_per_gpu": 2500.0, "scaling_efficiency": 0.8,
            "overhead_hours": 0.25, "hours": 7.75, "price_per_gpu_hour": 3.0, "cost": 46.5
        }),
        "writes the same flat object"
    );
    let preview = estimate.inputs.estimate().expect("valid inputs");
    assert!(
        (preview.cost - estimate.cost).abs() < 1e-9,
        "preview agrees with the server answer"
    );
}

#[test]
fn meaningless_inputs_are_refused() {
    let mut no_gpus = inputs();
    no_gpus.gpu_count = 0;
    assert_eq!(
        no_gpus.estimate(),
        Err(CostModelError::NoGpus),
        "zero GPUs divide by zero"
    );
    let mut stalled = inputs();
    stalled.throughput_tokens_per_sec_per_gpu = 0.0;
    assert!(
        matches!(stalled.estimate(), Err(CostModelError::NotPositive { .. })),
        "zero throughput never finishes"
    );
    let mut super_linear = inputs();
    super_linear.scaling_efficiency = 1.5;
    assert!(
        matches!(
            super_linear.estimate(),
            Err(CostModelError::ScalingEfficiency(_))
        ),
        "efficiency above 1 is not physical"
    );
    let mut nan_price = inputs();
    nan_price.price_per_gpu_hour = f64::NAN;
    assert!(nan_price.estimate().is_err(), "NaN price is refused");
}
