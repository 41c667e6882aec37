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
pub mod tray;

use std::sync::Arc;

use tauri::{AppHandle, Manager as _, RunEvent, Runtime};
use tauri_plugin_window_state::StateFlags;

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

/// When `run` began: start-up steps are logged (debug) against it.
static STARTED: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

/// Logs (debug) that start-up reached `step`, in milliseconds since `run` began.
pub fn startup_step(step: &str) {
    if let Some(started) = STARTED.get() {
        tracing::debug!(
            ms = started.elapsed().as_millis() as u64,
            "start-up: {step}"
        );
    }
}

/// The page is one local document: WebKit's document-viewer cache model keeps no back/forward
/// page cache and the smallest memory caches, where the default is sized for a browser.
#[cfg(target_os = "linux")]
fn viewer_cache_model<R: Runtime>(app: &tauri::App<R>) {
    if let Some(window) = app.get_webview_window("main") {
        let _ = window.with_webview(|webview| {
            use webkit2gtk::{WebContextExt as _, WebViewExt as _};
            if let Some(context) = webview.inner().context() {
                context.set_cache_model(webkit2gtk::CacheModel::DocumentViewer);
            }
        });
    }
}

/// The argument with which start-at-login launches the app: watching from the tray, no window.
const BACKGROUND: &str = "--background";

/// Runs the app until the user quits; stops the sandbox it started.
pub fn run() {
    STARTED.get_or_init(std::time::Instant::now);
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
    // One instance per data directory: a second launch shows and focuses the first, then
    // exits. Registered first, before anything else starts.
    let single = tauri_plugin_single_instance::Builder::new()
        .callback(|handle, _args, _cwd| alerts::open_window(handle, ""))
        .dbus_id(instance_id(settings.data_dir_override().as_deref()))
        .build();
    let app = builder(tauri::Builder::default().plugin(single))
        // The window's size and position, as the user left them.
        // The window's size and position, as the user left them (not whether it was shown: a
        // start at login opens none).
        .plugin(
            tauri_plugin_window_state::Builder::default()
                .with_state_flags(StateFlags::all() - StateFlags::VISIBLE)
                .build(),
        )
        // Start at login (a setting): the login session starts the app in the tray.
        .plugin(tauri_plugin_autostart::init(
            tauri_plugin_autostart::MacosLauncher::LaunchAgent,
            Some(vec![BACKGROUND]),
        ))
        .setup(move |app| {
            startup_step("setup");
            #[cfg(target_os = "linux")]
            viewer_cache_model(app);
            install(app.handle(), settings);
            let handle = app.handle().clone();
            tauri::async_runtime::spawn(async move { handle.state::<Shell>().warm_up().await });
            let tray = tray::install(app.handle());
            startup_step("tray");
            if !tray {
                tracing::info!("running without a tray: closing the window quits");
            }
            let shell = app.state::<Shell>();
            shell.set_tray(tray);
            // Started by the login session, with a tray to open it from: no window, and the
            // watcher at its background cadence.
            if tray && std::env::args().any(|a| a == BACKGROUND) {
                if let Some(window) = app.get_webview_window("main") {
                    window.hide()?;
                }
                shell.set_visibility(brightrun_client::watch::Visibility::Background);
            }
            Ok(())
        })
        .on_page_load(|_, load| {
            startup_step(match load.event() {
                tauri::webview::PageLoadEvent::Started => "page load started",
                tauri::webview::PageLoadEvent::Finished => "page loaded",
            })
        })
        .on_window_event(|window, event| {
            // Close-to-tray: the window hides and watching goes on at the background cadence.
            if let tauri::WindowEvent::CloseRequested { api, .. } = event
                && tray::hides_on_close(window.app_handle())
            {
                api.prevent_close();
                let _ = window.hide();
                window
                    .app_handle()
                    .state::<Shell>()
                    .set_visibility(brightrun_client::watch::Visibility::Background);
            }
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

/// The D-Bus name that keeps one app per data directory: the app's identifier for the default
/// one, with a digest of the path for another (`BRIGHTRUN_DATA_DIR`: a second profile, a test).
fn instance_id(data_dir: Option<&std::path::Path>) -> String {
    const IDENTIFIER: &str = "app.brightrun.desktop";
    let Some(dir) = data_dir else {
        return IDENTIFIER.to_owned();
    };
    // FNV-1a: stable across builds, which a second launch of a newer binary needs.
    let digest = dir
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        });
    format!("{IDENTIFIER}.profile{digest:016x}")
}

#[cfg(test)]
mod tests {
    use super::instance_id;

    #[test]
    fn each_data_directory_is_its_own_instance() {
        let a = instance_id(Some(std::path::Path::new("/home/me/a")));
        assert_eq!(a, instance_id(Some(std::path::Path::new("/home/me/a"))));
        assert_ne!(a, instance_id(Some(std::path::Path::new("/home/me/b"))));
        assert_eq!(instance_id(None), "app.brightrun.desktop");
        assert!(a.starts_with("app.brightrun.desktop.profile"));
    }
}
