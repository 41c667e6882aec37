//! brightrun-desktop: the Tauri shell around `brightrun_client::app`.
//!
//! Glue only: each command in [`commands`] is a one-line adapter over an app-layer handler,
//! progress goes to the window over a `tauri::ipc::Channel`, app-wide changes are the named
//! events of [`events`], and errors cross as the wire error `{code, message, hint, retryable}`.
//! What the shell itself owns is what only a desktop process has: the project chosen at first
//! run ([`project`]), the local sandbox it starts and stops ([`sandbox`]), and the transfers the
//! window may cancel ([`shell`]). The TypeScript the window uses is generated from these
//! signatures ([`bindings`]).

pub mod bindings;
pub mod commands;
pub mod events;
pub mod project;
pub mod sandbox;
pub mod shell;

use std::sync::Arc;

use tauri::{Manager as _, RunEvent, Runtime};

use crate::events::Notice;
use crate::shell::Shell;

/// Registers the plugins, commands, events and state on `builder`: the same for the app and for
/// the mock-runtime tests, which give their own `settings`.
pub fn builder<R: Runtime>(
    builder: tauri::Builder<R>,
    settings: project::Settings,
) -> tauri::Builder<R> {
    let specta = bindings::specta_builder::<R>();
    builder
        .plugin(tauri_plugin_dialog::init())
        .invoke_handler(specta.invoke_handler())
        .setup(move |app| {
            specta.mount_events(app);
            let handle = app.handle().clone();
            let notify: shell::Notify = Arc::new(move |notice: Notice| notice.emit(&handle));
            app.manage(Shell::new(settings, notify));
            Ok(())
        })
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
    let app = builder(tauri::Builder::default(), settings)
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
