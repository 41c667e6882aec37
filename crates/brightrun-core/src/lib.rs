//! BrightRun's domain core: the types every other crate shares (datasets, training jobs, metrics,
//! artifacts, costs, notifications, presets, the GPU catalogue), the JSONL dataset validator with
//! its statistics, the v3 (ShareGPT) → v4 (`messages`) converter, the client-side preview of the
//! cost model, and the chart renderer for training curves.
//!
//! What this crate must not do: any I/O of its own. No network, no files, no clock, no randomness,
//! no thread that outlives a call. Datasets arrive as any [`std::io::Read`] the caller opened,
//! results leave as values (reports, SVG strings, PNG bytes); time and randomness are passed in.
//! That keeps it pure, fast to test, and usable unchanged from the desktop app, the CLI and the
//! worker. (The validator checks lines on scoped threads, which have all ended when it returns;
//! `ValidationOptions::threads: Some(1)` starts none.)
//!
//! What it is not: the authority on money or state. Cost estimates and validation results here are
//! previews for speed; the server (PostgreSQL functions and the worker) decides.

mod text_enum;

pub mod artifact;
pub mod chart;
pub mod cost;
pub mod dataset;
pub mod draft;
pub mod model;
pub mod tokenizer;

pub use artifact::{
    ArtifactFile, ArtifactManifest, DATASET_EXTENSIONS, DATASET_MAX_BYTES, DATASETS_BUCKET,
    MODELS_BUCKET, PeftConfig,
};
pub use cost::{BudgetStatus, CostEstimate, CostEstimateInputs, CostModelError};
pub use dataset::{
    DatasetStatistics, FormatGuess, Issue, IssueCode, Severity, ValidationMode, ValidationOptions,
    ValidationReport, Validator, ValidatorError, detect_format, validate,
};
pub use draft::{DraftError, HyperparameterOverrides, JobDraft};
pub use model::*;
pub use tokenizer::{
    BpeOpenAiTokenizer, ByteTokenizer, ModelTokenizer, TiktokenTokenizer, Tokenizer,
};
