//! The BrightRun desktop app.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

fn main() {
    brightrun_desktop::run();
}
