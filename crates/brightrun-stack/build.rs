//! `sqlx::migrate!` embeds migrations/ at compile time; Cargo does not watch that directory by
//! itself, so a new or edited migration would otherwise leave a stale stack binary.
fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
