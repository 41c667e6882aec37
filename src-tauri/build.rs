//! Tauri's build step. The window's files come from `ui/dist` (built by `cargo xtask app`);
//! an empty folder stands in when it is missing, so `cargo clippy` and `cargo test` need no UI
//! build (GitButler does the same).
fn main() {
    let dist = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../ui/dist");
    if !dist.exists() {
        let _ = std::fs::create_dir_all(&dist);
    }
    tauri_build::build();
}
