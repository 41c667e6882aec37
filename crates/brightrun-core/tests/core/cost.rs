//! The client-side preview of the cost model: the server's formula, rounding and JSON shape.
//! (crates/brightrun-client/tests/client/api.rs compares it with the running server.)

use brightrun_core::{CostEstimate, CostEstimateInputs, CostModelError, GpuType, PresetId};
use serde_json::json;

fn a100() -> GpuType {
    serde_json::from_value(json!({
        "id": "A100-80GB", "display_name": "NVIDIA A100 80 GB", "memory_gb": 80,
        "price_per_gpu_hour": 3.0000, "tokens_per_second_per_gpu": 3200.00, "max_gpus": 8,
        "active": true, "sort_order": 20,
        "created_at": "2026-11-22T05:02:50.202212+00:00",
        "updated_at": "2026-11-22T05:02:50.202212+00:00"
    }))
    .expect("a gpu_types row")
}

fn inputs(tokens_per_epoch: u64, epochs: u32, gpu_count: u32) -> CostEstimateInputs {
    CostEstimateInputs::new(tokens_per_epoch, epochs, &a100(), gpu_count).expect("on offer")
}

#[test]
fn the_formula_scales_with_tokens_and_gpus() {
    // 36M tokens × 3 epochs ÷ (3200 × 2 × 0.9 = 5760 tokens/s) = 18,750 s = 5.2083 h, + 0.25 h.
    let estimate = inputs(36_000_000, 3, 2).estimate().expect("valid inputs");
    assert_eq!(estimate.scaling_efficiency, 0.9, "one doubling keeps 90 %");
    assert_eq!(
        estimate.effective_tokens_per_second, 5760.0,
        "3200 × 2 × 0.9"
    );
    assert_eq!(estimate.training_hours, 5.2083, "18,750 s, 4 decimals");
    assert_eq!(estimate.estimated_hours, 5.4583, "plus 0.25 h overhead");
    assert_eq!(estimate.gpu_hours, 10.9167, "both GPUs are billed");
    // 5.458333… h × $3 × 2 GPUs = 32.75, from the unrounded hours.
    assert_eq!(estimate.estimated_cost, 32.75, "cost in cents");
    assert_eq!(estimate.total_tokens, 108_000_000, "tokens × epochs");

    let more_data = inputs(72_000_000, 3, 2).estimate().expect("valid inputs");
    assert!(
        more_data.estimated_cost > estimate.estimated_cost,
        "more data must cost more (the spec's formula did not)"
    );
    let eight = inputs(36_000_000, 3, 8).estimate().expect("valid inputs");
    assert_eq!(eight.scaling_efficiency, 0.729, "three doublings: 0.9³");
    assert!(
        eight.estimated_hours < estimate.estimated_hours
            && eight.estimated_cost > estimate.estimated_cost,
        "more GPUs finish sooner but cost more: {eight:?}"
    );
}

#[test]
fn halfway_values_round_up_as_numeric_does() {
    // 19,200 tokens on one A100: 6 s of training, 0.2516… h, × $3 = $0.755 exactly.
    let estimate = inputs(19_200, 1, 1).estimate().expect("valid inputs");
    assert_eq!(estimate.estimated_cost, 0.76, "$0.755 rounds up, not down");
    // 576 tokens: 0.18 s = 0.00005 h exactly.
    let estimate = inputs(576, 1, 1).estimate().expect("valid inputs");
    assert_eq!(estimate.training_hours, 0.0001, "0.00005 h rounds up");
    assert_eq!(estimate.estimated_hours, 0.2501, "0.25005 h rounds up");
}

#[test]
fn the_rpc_answer_reads_and_writes_unchanged() {
    // An answer of estimate_training_cost as PostgREST sends it (numeric keeps its scale).
    let answer = json!({
        "epochs": 5, "currency": "USD", "gpu_type": "A100-80GB", "gpu_count": 3,
        "gpu_hours": 0.8013, "total_tokens": 500000, "estimated_cost": 2.40,
        "overhead_hours": 0.25, "training_hours": 0.0171, "estimated_hours": 0.2671,
        "tokens_per_epoch": 100000, "price_per_gpu_hour": 3.0000, "scaling_efficiency": 0.8462,
        "tokens_per_second_per_gpu": 3200.00, "effective_tokens_per_second": 8123.58,
        "dataset_id": "0b7a5d4e-1c2f-4e3a-8b9c-7d6e5f4a3b2c", "preset_id": "balanced"
    });
    let estimate: CostEstimate = serde_json::from_value(answer.clone()).expect("RPC shape");
    assert_eq!(
        estimate.preset_id,
        Some(PresetId::Balanced),
        "preset id maps"
    );
    assert_eq!(
        serde_json::to_value(&estimate).expect("serializes"),
        answer,
        "writes the same object back"
    );
    let mut preview = inputs(100_000, 5, 3).estimate().expect("valid inputs");
    preview.dataset_id = estimate.dataset_id;
    preview.preset_id = estimate.preset_id.clone();
    assert_eq!(
        preview, estimate,
        "the preview is the server's answer for 3 GPUs (a non-power-of-two efficiency)"
    );
}

#[test]
fn inputs_the_server_refuses_are_refused() {
    assert_eq!(
        CostEstimateInputs::new(1000, 1, &a100(), 9),
        Err(CostModelError::GpuCount {
            gpu_type: "A100-80GB".into(),
            max_gpus: 8,
            gpu_count: 9
        }),
        "more GPUs than the catalogue offers"
    );
    assert!(
        matches!(
            CostEstimateInputs::new(1000, 1, &a100(), 0),
            Err(CostModelError::GpuCount { .. })
        ),
        "zero GPUs"
    );
    assert_eq!(
        inputs(1000, 0, 1).estimate(),
        Err(CostModelError::Epochs(0)),
        "zero epochs"
    );
    assert_eq!(
        inputs(1000, 101, 1).estimate(),
        Err(CostModelError::Epochs(101)),
        "more than 100 epochs"
    );
    let mut stalled = inputs(1000, 1, 1);
    stalled.tokens_per_second_per_gpu = 0.0;
    assert!(
        matches!(stalled.estimate(), Err(CostModelError::NotPositive { .. })),
        "zero throughput never finishes"
    );
    let mut nan_price = inputs(1000, 1, 1);
    nan_price.price_per_gpu_hour = f64::NAN;
    assert!(nan_price.estimate().is_err(), "NaN price is refused");
}
