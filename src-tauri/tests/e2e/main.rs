//! The desktop app end to end: the real binary under Xvfb, driven by WebDriver (tauri-driver +
//! WebKitWebDriver), in a private D-Bus session with an unlocked gnome-keyring, against the
//! stack and a worker. Run by `cargo xtask test`; screenshots go to `docs/screenshots/`.

mod alerts;
mod harness;
mod notifications;
mod story;
