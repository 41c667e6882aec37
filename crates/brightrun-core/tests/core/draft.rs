//! Job drafts: a preset plus overrides, resolved against the server's catalogue and bounds.

use brightrun_core::{
    DraftError, GpuType, HyperparameterOverrides, JobDraft, PresetId, TrainingPreset,
};
use serde_json::json;
use uuid::Uuid;

fn presets() -> Vec<TrainingPreset> {
    let preset = |id: &str, lr: f64, epochs: u32| {
        serde_json::from_value::<TrainingPreset>(json!({
            "id": id, "display_name": id, "description": "",
            "hyperparameters": {"base_model": "mistralai/Mistral-7B-v0.1", "learning_rate": lr,
                                "batch_size": 8, "num_epochs": epochs, "lora_rank": 16,
                                "lora_alpha": 32, "lora_dropout": 0.1, "warmup_steps": 100},
            "active": true, "sort_order": 10, "created_at": "2026-11-22T05:02:50+00:00",
            "updated_at": "2026-11-22T05:02:50+00:00"
        }))
        .expect("a preset row")
    };
    vec![
        preset("balanced", 0.0002, 3),
        preset("aggressive", 0.0003, 5),
    ]
}

fn gpus() -> Vec<GpuType> {
    vec![
        serde_json::from_value(json!({
            "id": "A100-80GB", "display_name": "A100 80 GB", "memory_gb": 80,
            "price_per_gpu_hour": 3.0, "tokens_per_second_per_gpu": 3200, "max_gpus": 4,
            "active": true, "sort_order": 10, "created_at": "2026-11-22T05:02:50+00:00",
            "updated_at": "2026-11-22T05:02:50+00:00"
        }))
        .expect("a GPU row"),
    ]
}

fn draft(overrides: HyperparameterOverrides) -> JobDraft {
    JobDraft {
        dataset_id: Uuid::nil(),
        preset: PresetId::Balanced,
        gpu_type: "A100-80GB".into(),
        gpu_count: 2,
        overrides,
    }
}

#[test]
fn a_draft_is_its_preset_with_the_overrides_applied() {
    let input = draft(HyperparameterOverrides {
        num_epochs: Some(7),
        lora_rank: Some(8),
        ..Default::default()
    })
    .resolve(&presets(), &gpus())
    .expect("within bounds");
    let hp = &input.hyperparameters;
    assert_eq!((hp.num_epochs, hp.lora_rank), (7, 8), "the overrides win");
    assert_eq!(
        (hp.learning_rate, hp.lora_alpha, hp.warmup_steps),
        (0.0002, 32, Some(100)),
        "the rest is balanced's"
    );
    assert_eq!(input.preset_id, PresetId::Balanced, "the preset is named");
    assert_eq!(
        (
            input.gpu_config.num_gpus,
            input.gpu_config.cost_per_gpu_hour
        ),
        (2, 3.0),
        "the GPU choice from the catalogue"
    );
}

#[test]
fn later_overrides_win_and_unknown_keys_are_refused() {
    let file: HyperparameterOverrides =
        serde_json::from_value(json!({"num_epochs": 4, "learning_rate": 0.001}))
            .expect("a file of known keys");
    let flags = HyperparameterOverrides {
        num_epochs: Some(9),
        ..Default::default()
    };
    let merged = file.then(flags);
    assert_eq!(
        (merged.num_epochs, merged.learning_rate),
        (Some(9), Some(0.001)),
        "options win over the file; the file's other values stay"
    );
    let typo = serde_json::from_value::<HyperparameterOverrides>(json!({"learning_rte": 0.1}))
        .expect_err("a misspelt key");
    assert!(
        typo.to_string().contains("learning_rte"),
        "the error names the key: {typo}"
    );
    let draft_typo = serde_json::from_value::<JobDraft>(json!({
        "dataset_id": Uuid::nil(), "preset": "balanced", "gpu_type": "A100-80GB", "gpus": 2
    }))
    .expect_err("an unknown draft field");
    assert!(draft_typo.to_string().contains("gpus"), "{draft_typo}");
}

#[test]
fn every_value_out_of_bounds_is_named_before_anything_is_sent() {
    let error = draft(HyperparameterOverrides {
        learning_rate: Some(0.05),
        lora_dropout: Some(0.95),
        batch_size: Some(0),
        ..Default::default()
    })
    .resolve(&presets(), &gpus())
    .expect_err("out of bounds");
    let DraftError::OutOfBounds(problems) = &error else {
        panic!("bounds, not {error:?}");
    };
    let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(
        fields,
        ["learning_rate", "batch_size", "lora_dropout"],
        "each field, in the server's order"
    );
    assert!(
        error
            .to_string()
            .contains("hyperparameters.learning_rate must be a number in (0, 0.01], got 0.05"),
        "in the server's words: {error}"
    );
    let too_many = JobDraft {
        gpu_count: 5,
        ..draft(HyperparameterOverrides::default())
    };
    assert!(
        matches!(
            too_many.resolve(&presets(), &gpus()),
            Err(DraftError::GpuCount { max: 4, .. })
        ),
        "the catalogue's max_gpus"
    );
    let unknown = JobDraft {
        preset: PresetId::Conservative,
        ..draft(HyperparameterOverrides::default())
    };
    assert!(
        matches!(
            unknown.resolve(&presets(), &gpus()),
            Err(DraftError::UnknownPreset(_))
        ),
        "a preset the server does not offer"
    );
}
