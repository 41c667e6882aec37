//! The hyperparameter bounds a draft is checked against before anything is sent
//! (`brightrun_core::HYPERPARAMETER_BOUNDS`) are the server's own: at each edge of each bound
//! the server's check (`lora_private.check_hyperparameters`) and the local one agree.

use brightrun_core::{HYPERPARAMETER_BOUNDS, HyperparameterConfig};
use serde_json::{Value, json};

use crate::support::db;

/// The server's verdict on `hp`, from the function `create_training_job` calls.
async fn server_accepts(pool: &sqlx::PgPool, hp: &Value) -> bool {
    sqlx::query("select lora_private.check_hyperparameters($1)")
        .bind(hp)
        .execute(pool)
        .await
        .is_ok()
}

#[tokio::test]
async fn local_and_server_bounds_agree_at_every_edge() {
    let pool = db().await;
    let base = json!({
        "base_model": "mistralai/Mistral-7B-v0.1", "learning_rate": 0.0002, "batch_size": 8,
        "num_epochs": 3, "lora_rank": 16, "lora_alpha": 32, "lora_dropout": 0.05,
        "warmup_steps": 10, "weight_decay": 0.01, "gradient_accumulation_steps": 1,
        "max_grad_norm": 1.0
    });
    assert!(
        server_accepts(&pool, &base).await,
        "the base configuration is valid"
    );
    let mut checked = 0;
    for bound in HYPERPARAMETER_BOUNDS {
        let step = if bound.whole {
            1.0
        } else {
            bound.max.min(1.0) / 1000.0
        };
        let mut values = vec![bound.min, bound.min + step, bound.max, bound.max + step];
        if bound.min - step >= 0.0 || !bound.whole {
            values.push(bound.min - step);
        }
        for value in values {
            let mut hp = base.clone();
            hp[bound.field] = if bound.whole {
                json!(value as i64)
            } else {
                json!(value)
            };
            let server = server_accepts(&pool, &hp).await;
            // A negative whole number does not fit the typed field at all: refused before any
            // bound is asked.
            let local = serde_json::from_value::<HyperparameterConfig>(hp.clone())
                .map(|config| config.problems().is_empty())
                .unwrap_or(false);
            assert_eq!(
                local, server,
                "{} = {value}: local says {local}, the server {server}",
                bound.field
            );
            checked += 1;
        }
    }
    for model in [
        "Qwen/Qwen2.5-0.5B-Instruct",
        "-leading-dash",
        "spaces are not ids",
        "",
    ] {
        let mut hp = base.clone();
        hp["base_model"] = json!(model);
        let local = serde_json::from_value::<HyperparameterConfig>(hp.clone())
            .map(|config| config.problems().is_empty())
            .unwrap_or(false);
        assert_eq!(
            local,
            server_accepts(&pool, &hp).await,
            "base_model {model:?}"
        );
        checked += 1;
    }
    assert!(
        checked >= 50,
        "every edge of every bound was compared ({checked})"
    );
    pool.close().await;
}
