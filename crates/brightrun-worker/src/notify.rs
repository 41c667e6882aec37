//! The notification rows the worker writes (PRODUCT.md "Notifications"): which job or dataset,
//! what happened and what to do next. Text carries no token, key or storage path.

use serde_json::{Value, json};
use uuid::Uuid;

/// A notification before it has a user.
#[derive(Debug, Clone, PartialEq)]
pub struct Draft {
    /// `notifications.type`.
    pub kind: &'static str,
    pub title: String,
    pub message: String,
    pub priority: &'static str,
    pub action_url: String,
    pub metadata: Value,
}

impl Draft {
    pub async fn insert(&self, tx: &mut sqlx::PgConnection, user_id: Uuid) -> sqlx::Result<()> {
        sqlx::query(
            "insert into public.notifications (user_id, type, title, message, priority, action_url, metadata)
             values ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(user_id)
        .bind(self.kind)
        .bind(&self.title)
        .bind(&self.message)
        .bind(self.priority)
        .bind(&self.action_url)
        .bind(&self.metadata)
        .execute(tx)
        .await?;
        Ok(())
    }
}

/// Cuts `text` to at most `max` characters, on a character boundary.
fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

fn money(amount: f64) -> String {
    format!("${amount:.2}")
}

pub fn job_complete(
    job_id: Uuid,
    artifact_id: Option<Uuid>,
    dataset_name: &str,
    final_loss: f64,
    cost: f64,
) -> Draft {
    Draft {
        kind: "job_complete",
        title: clip(&format!("LoRA job finished: {dataset_name}"), 200),
        message: format!(
            "LoRA job on '{dataset_name}' finished — loss {final_loss:.2}, {}. Download the adapter.",
            money(cost)
        ),
        priority: "medium",
        action_url: format!("/jobs/{job_id}"),
        metadata: json!({
            "job_id": job_id, "artifact_id": artifact_id, "status": "completed",
            "final_loss": final_loss, "final_cost": cost,
        }),
    }
}

pub fn job_failed(job_id: Uuid, dataset_name: &str, error: &str) -> Draft {
    Draft {
        kind: "job_failed",
        title: clip(&format!("LoRA job failed: {dataset_name}"), 200),
        message: format!(
            "LoRA job on '{dataset_name}' failed: {}. Check the error on the job page, adjust \
             the settings or dataset, and start it again.",
            clip(error, 1000)
        ),
        priority: "high",
        action_url: format!("/jobs/{job_id}"),
        metadata: json!({ "job_id": job_id, "status": "failed" }),
    }
}

pub fn dataset_ready(dataset_id: Uuid, name: &str, pairs: i64, tokens: i64) -> Draft {
    Draft {
        kind: "dataset_ready",
        title: clip(&format!("Dataset ready: {name}"), 200),
        message: format!(
            "'{name}' passed validation: {pairs} training pairs, {tokens} tokens. Start a \
             training job with it."
        ),
        priority: "low",
        action_url: format!("/datasets/{dataset_id}"),
        metadata: json!({ "dataset_id": dataset_id, "status": "ready" }),
    }
}

pub fn dataset_error(dataset_id: Uuid, name: &str, errors: u64, first: &str) -> Draft {
    let what = if errors == 1 {
        "1 error".to_owned()
    } else {
        format!("{errors} errors")
    };
    Draft {
        kind: "dataset_error",
        title: clip(&format!("Dataset failed validation: {name}"), 200),
        message: format!(
            "'{name}' has {what} (first: {}). Fix the file and upload it again.",
            clip(first, 300)
        ),
        priority: "medium",
        action_url: format!("/datasets/{dataset_id}"),
        metadata: json!({ "dataset_id": dataset_id, "status": "error", "errors": errors }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_keeps_short_text_and_cuts_long_text_on_a_char_boundary() {
        assert_eq!(clip("abc", 5), "abc", "short text is unchanged");
        let cut = clip(&"é".repeat(300), 200);
        assert!(
            cut.chars().count() <= 200,
            "clipped text fits the column: {}",
            cut.chars().count()
        );
    }

    #[test]
    fn job_complete_says_what_happened_and_what_next() {
        let d = job_complete(Uuid::nil(), None, "support-bot v3", 0.8234, 3.4061);
        assert_eq!(
            d.message,
            "LoRA job on 'support-bot v3' finished — loss 0.82, $3.41. Download the adapter.",
            "PRODUCT.md wording"
        );
    }
}
