//! A hello-world Tauri 2 app: one window, one page that paints a list of 20 items and then says
//! so on stdout (`painted list`), as the BrightRun app does with `BRIGHTRUN_PAINT_MARKS`. The
//! desktop benchmarks (`cargo xtask bench desktop`) run it beside BrightRun as the anchor for
//! start-up time, memory and idle CPU.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

use std::io::Write as _;

/// Called by the page once its list is on screen.
#[tauri::command]
fn painted(what: String) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "painted {what}");
    let _ = out.flush();
}

fn main() {
    tauri::Builder::default()
        .invoke_handler(tauri::generate_handler![painted])
        .run(tauri::generate_context!())
        .unwrap_or_else(|e| {
            eprintln!("error: {e}");
            std::process::exit(1);
        });
}
