//! brightrun-desktop: the Tauri shell around `brightrun_client::app`.
//!
//! Glue only: each command in [`commands`] is a one-line adapter over an app-layer handler,
//! progress goes to the window over a `tauri::ipc::Channel`, app-wide changes are the named
//! events of [`events`], and errors cross as the wire error `{code, message, hint, retryable}`.
//! What the shell itself owns is what only a desktop process has: the project chosen at first
//! run ([`project`]), the local sandbox it starts and stops ([`sandbox`]), and the transfers the
//! window may cancel ([`shell`]). The TypeScript the window uses is generated from these
//! signatures ([`bindings`]).

pub mod alerts;
pub mod bindings;
pub mod commands;
pub mod events;
pub mod project;
pub mod sandbox;
pub mod shell;

use std::sync::Arc;

use tauri::{AppHandle, Manager as _, RunEvent, Runtime};

use crate::events::Notice;
use crate::shell::Shell;

/// Registers the plugins and the commands on `builder`: the same for the app and for the
/// mock-runtime tests.
pub fn builder<R: Runtime>(builder: tauri::Builder<R>) -> tauri::Builder<R> {
    builder
        .plugin(tauri_plugin_dialog::init())
        .invoke_handler(bindings::specta_builder::<R>().invoke_handler())
}

/// Gives a built app its events and its state (the [`Shell`], with `settings`): at setup in
/// the app, right after `build` in the mock-runtime tests, which never run a setup hook.
pub fn install<R: Runtime>(handle: &AppHandle<R>, settings: project::Settings) {
    bindings::specta_builder::<R>().mount_events(handle);
    let emitter = handle.clone();
    let notify: shell::Notify = Arc::new(move |notice: Notice| notice.emit(&emitter));
    handle.manage(Shell::new(settings, notify));
}

/// Runs the app until the user quits; stops the sandbox it started.
pub fn run() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let settings = project::Settings::from_process().unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(1);
    });
    let app = builder(tauri::Builder::default())
        .setup(move |app| {
            install(app.handle(), settings);
            Ok(())
        })
        .build(tauri::generate_context!())
        .unwrap_or_else(|e| {
            eprintln!("error: cannot start BrightRun: {e}");
            std::process::exit(1);
        });
    app.run(|handle, event| {
        if let RunEvent::Exit = event {
            handle.state::<Shell>().shut_down();
        }
    });
}
