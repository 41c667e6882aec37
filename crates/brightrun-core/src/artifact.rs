//! What a trained adapter is made of: the manifest in `model_artifacts.artifacts`, written once
//! by the worker when it stores the files and read by every client that lists or downloads them.
//!
//! The manifest lists each file with its object path, size and SHA-256 (what a download is
//! checked against), the base model and the LoRA settings of the adapter (its
//! `adapter_config.json`), and keeps the spec's keys (`adapter_model_path`, `file_sizes`, ...)
//! for readers of the original shape. Object paths, never URLs.

use serde::{Deserialize, Serialize};

/// The bucket trained adapters are stored in (private, 5 GB per object).
pub const MODELS_BUCKET: &str = "lora-models";
/// The bucket datasets are uploaded to (private, 500 MB per object).
pub const DATASETS_BUCKET: &str = "lora-datasets";
/// The largest dataset the datasets bucket takes (its `file_size_limit`: 500 MiB). Checked
/// before any work so a file that would be refused is refused at once; the server decides.
pub const DATASET_MAX_BYTES: u64 = 524_288_000;
/// File name extensions of JSONL datasets.
pub const DATASET_EXTENSIONS: [&str; 3] = ["jsonl", "ndjson", "jsonlines"];

/// One stored file of an adapter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct ArtifactFile {
    /// The file's name (to save it under, once sanitised).
    pub name: String,
    /// The object path in the manifest's bucket.
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Lowercase hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
}

/// The LoRA settings of an adapter, as its `adapter_config.json` (PEFT's `LoraConfig`) says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct PeftConfig {
    #[serde(default)]
    pub peft_type: Option<String>,
    #[serde(default)]
    pub task_type: Option<String>,
    /// The model the adapter applies to (a Hugging Face id).
    pub base_model_name_or_path: String,
    pub r: u32,
    pub lora_alpha: u32,
    #[serde(default)]
    pub lora_dropout: f64,
    #[serde(default)]
    pub target_modules: Vec<String>,
}

/// Byte sizes of the spec's three files.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct ArtifactFileSizes {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter_model: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter_config: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<u64>,
}

/// SHA-256 digests of the spec's three files.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct ArtifactDigests {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter_model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter_config: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<String>,
}

fn models_bucket() -> String {
    MODELS_BUCKET.to_owned()
}

/// `model_artifacts.artifacts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct ArtifactManifest {
    #[serde(default = "models_bucket")]
    pub bucket: String,
    /// The folder of this attempt's files, ending in `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Every file, with size and digest. Empty only in rows of the spec's shape.
    #[serde(default)]
    pub files: Vec<ArtifactFile>,
    /// The model the adapter applies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peft: Option<PeftConfig>,
    // The spec's keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter_model_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter_config_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_sizes: Option<ArtifactFileSizes>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<ArtifactDigests>,
}

/// Which of the spec's roles a file plays, by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    AdapterModel,
    AdapterConfig,
    Tokenizer,
}

impl Role {
    fn of(name: &str) -> Option<Self> {
        if name == "adapter_config.json" {
            Some(Self::AdapterConfig)
        } else if name.starts_with("adapter_model") {
            Some(Self::AdapterModel)
        } else if name.starts_with("tokenizer") {
            Some(Self::Tokenizer)
        } else {
            None
        }
    }

    /// `tokenizer.json` is the tokenizer when there are several tokenizer files.
    fn preferred(self, name: &str) -> bool {
        match self {
            Self::AdapterModel => name == "adapter_model.safetensors",
            Self::AdapterConfig => true,
            Self::Tokenizer => name == "tokenizer.json",
        }
    }
}

impl ArtifactManifest {
    /// The manifest of `files` stored under `prefix` in `bucket`, for an adapter with the LoRA
    /// settings `peft`; the spec's keys are filled from the files' names.
    pub fn new(
        bucket: impl Into<String>,
        prefix: impl Into<String>,
        files: Vec<ArtifactFile>,
        peft: PeftConfig,
    ) -> Self {
        let mut manifest = Self {
            bucket: bucket.into(),
            prefix: Some(prefix.into()),
            base_model: Some(peft.base_model_name_or_path.clone()),
            peft: Some(peft),
            adapter_model_path: None,
            adapter_config_path: None,
            tokenizer_path: None,
            file_sizes: None,
            sha256: None,
            files: Vec::new(),
        };
        let mut sizes = ArtifactFileSizes::default();
        let mut digests = ArtifactDigests::default();
        for role in [Role::AdapterModel, Role::AdapterConfig, Role::Tokenizer] {
            let candidates = files.iter().filter(|f| Role::of(&f.name) == Some(role));
            let chosen = candidates
                .clone()
                .find(|f| role.preferred(&f.name))
                .or_else(|| candidates.clone().next());
            let Some(file) = chosen else { continue };
            let (path, size, digest) = match role {
                Role::AdapterModel => (
                    &mut manifest.adapter_model_path,
                    &mut sizes.adapter_model,
                    &mut digests.adapter_model,
                ),
                Role::AdapterConfig => (
                    &mut manifest.adapter_config_path,
                    &mut sizes.adapter_config,
                    &mut digests.adapter_config,
                ),
                Role::Tokenizer => (
                    &mut manifest.tokenizer_path,
                    &mut sizes.tokenizer,
                    &mut digests.tokenizer,
                ),
            };
            *path = Some(file.path.clone());
            *size = file.size;
            digest.clone_from(&file.sha256);
        }
        manifest.file_sizes = Some(sizes);
        manifest.sha256 = Some(digests);
        manifest.files = files;
        manifest
    }

    /// The files to download: the listed ones, or for a row of the spec's shape one per
    /// `*_path` key with its size and digest when recorded.
    pub fn download_files(&self) -> Vec<ArtifactFile> {
        if !self.files.is_empty() {
            return self.files.clone();
        }
        let sizes = self.file_sizes.clone().unwrap_or_default();
        let digests = self.sha256.clone().unwrap_or_default();
        [
            (
                &self.adapter_model_path,
                sizes.adapter_model,
                digests.adapter_model,
            ),
            (
                &self.adapter_config_path,
                sizes.adapter_config,
                digests.adapter_config,
            ),
            (&self.tokenizer_path, sizes.tokenizer, digests.tokenizer),
        ]
        .into_iter()
        .filter_map(|(path, size, sha256)| {
            let path = path.as_ref()?;
            Some(ArtifactFile {
                name: path.rsplit(['/', '\\']).next().unwrap_or(path).to_owned(),
                path: path.clone(),
                size,
                sha256: sha256.map(|d| d.to_ascii_lowercase()),
                content_type: None,
            })
        })
        .collect()
    }

    /// Total bytes of the files whose size is known.
    pub fn total_size(&self) -> u64 {
        self.download_files().iter().filter_map(|f| f.size).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, size: u64) -> ArtifactFile {
        ArtifactFile {
            name: name.to_owned(),
            path: format!("u/j/attempt-1/{name}"),
            size: Some(size),
            sha256: Some(format!("{size:064x}")),
            content_type: Some("application/octet-stream".into()),
        }
    }

    fn peft() -> PeftConfig {
        PeftConfig {
            peft_type: Some("LORA".into()),
            task_type: Some("CAUSAL_LM".into()),
            base_model_name_or_path: "HuggingFaceTB/SmolLM2-135M-Instruct".into(),
            r: 8,
            lora_alpha: 32,
            lora_dropout: 0.05,
            target_modules: vec!["q_proj".into(), "v_proj".into()],
        }
    }

    #[test]
    fn a_new_manifest_fills_the_spec_keys_from_the_files() {
        let manifest = ArtifactManifest::new(
            MODELS_BUCKET,
            "u/j/attempt-1/",
            vec![
                file("adapter_model.safetensors", 100),
                file("adapter_config.json", 10),
                file("tokenizer_config.json", 5),
                file("tokenizer.json", 50),
            ],
            peft(),
        );
        assert_eq!(
            manifest.adapter_model_path.as_deref(),
            Some("u/j/attempt-1/adapter_model.safetensors"),
            "the adapter's path"
        );
        assert_eq!(
            manifest.tokenizer_path.as_deref(),
            Some("u/j/attempt-1/tokenizer.json"),
            "tokenizer.json wins over the other tokenizer files"
        );
        assert_eq!(
            manifest.file_sizes.as_ref().and_then(|s| s.tokenizer),
            Some(50),
            "the spec's sizes follow the chosen files"
        );
        assert_eq!(
            manifest.base_model.as_deref(),
            Some("HuggingFaceTB/SmolLM2-135M-Instruct"),
            "the base model comes from the PEFT config"
        );
        assert_eq!(
            manifest.download_files().len(),
            4,
            "every file is downloaded"
        );
        assert_eq!(manifest.total_size(), 165, "sizes add up");
        let json = serde_json::to_value(&manifest).expect("serializes");
        let back: ArtifactManifest = serde_json::from_value(json).expect("reads back");
        assert_eq!(back, manifest, "what the worker writes, clients read");
    }

    #[test]
    fn a_row_of_the_specs_shape_lists_its_three_files() {
        let manifest: ArtifactManifest = serde_json::from_value(serde_json::json!({
            "adapter_model_path": "u/j/adapter_model.safetensors",
            "adapter_config_path": "u/j/adapter_config.json",
            "tokenizer_path": "u/j/tokenizer.json",
            "file_sizes": {"adapter_model": 1, "adapter_config": 2, "tokenizer": 3},
            "sha256": {"adapter_model": "AA", "adapter_config": "bb", "tokenizer": "cc"}
        }))
        .expect("the spec's shape reads");
        assert_eq!(manifest.bucket, MODELS_BUCKET, "the default bucket");
        let files = manifest.download_files();
        let names: Vec<_> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "adapter_model.safetensors",
                "adapter_config.json",
                "tokenizer.json"
            ],
            "one file per *_path key"
        );
        assert_eq!(
            files[0].sha256.as_deref(),
            Some("aa"),
            "digests are lowercased"
        );
        assert_eq!(files[2].size, Some(3), "sizes from file_sizes");
        let empty: ArtifactManifest =
            serde_json::from_value(serde_json::json!({})).expect("an empty object reads");
        assert!(empty.download_files().is_empty(), "and lists nothing");
    }
}
