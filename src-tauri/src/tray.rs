//! The system tray: an icon that shows whether jobs are running (a blue dot on the app's icon)
//! and a menu with the running jobs and their progress (updated in place), the latest outcomes
//! (a click opens that job), Open BrightRun, Pause/Resume watching and Quit. On Linux a click
//! on the icon itself is never delivered (tray-icon#104): everything is in the menu.
//!
//! Without a tray host library (libayatana-appindicator) building the tray fails or panics:
//! the app then runs without one, says so in the settings, and closing the window quits.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use brightrun_client::watch::JobAlert;
use brightrun_core::{JobStatus, TrainingJob};
use tauri::image::Image;
use tauri::menu::{Menu, MenuBuilder, MenuItem, MenuItemBuilder};
use tauri::tray::{TrayIcon, TrayIconBuilder};
use tauri::{AppHandle, Manager as _, Runtime};
use uuid::Uuid;

use crate::shell::Shell;

const TRAY_ID: &str = "brightrun";
/// Outcomes listed in the menu.
const LATEST: usize = 3;

/// What the tray shows.
#[derive(Debug, Default)]
struct Shown {
    /// Running jobs by id: their menu text.
    running: BTreeMap<Uuid, String>,
    /// The latest outcomes, newest first: (job, text).
    latest: Vec<(Uuid, String)>,
    paused: bool,
}

/// The items a menu was built with: running jobs, latest outcomes, paused.
type Shape = (Vec<Uuid>, Vec<Uuid>, bool);

impl Shown {
    /// The ids the menu has items for (a change rebuilds it; otherwise texts change in place).
    fn shape(&self) -> Shape {
        (
            self.running.keys().copied().collect(),
            self.latest.iter().map(|(id, _)| *id).collect(),
            self.paused,
        )
    }
}

/// The tray's state, managed by the app when there is a tray.
pub struct Tray<R: Runtime> {
    icon: TrayIcon<R>,
    shown: Mutex<Shown>,
    /// The items of the running jobs, to update their text in place.
    items: Mutex<BTreeMap<Uuid, MenuItem<R>>>,
    built_for: Mutex<Option<Shape>>,
    put: Mutex<Put>,
    idle: Image<'static>,
    busy: Image<'static>,
}

/// What is on the tray now, so that a poll which changes nothing visible costs nothing: on Linux
/// every `set_icon` writes a PNG file, and every text change goes over D-Bus to the tray host.
#[derive(Default)]
struct Put {
    busy: Option<bool>,
    tooltip: String,
    /// The running jobs' item texts.
    texts: BTreeMap<Uuid, String>,
}

/// Whether the window's close button hides it to the tray (the preference; on by default).
pub static CLOSE_TO_TRAY: AtomicBool = AtomicBool::new(true);

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The app's icon with a blue dot in its lower right corner: jobs are running.
fn with_dot(icon: &Image<'_>) -> Image<'static> {
    let (width, height) = (icon.width(), icon.height());
    let mut rgba = icon.rgba().to_vec();
    let radius = f64::from(width.min(height)) * 0.22;
    let (cx, cy) = (
        f64::from(width) - radius - 1.0,
        f64::from(height) - radius - 1.0,
    );
    for y in 0..height {
        for x in 0..width {
            let (dx, dy) = (f64::from(x) - cx, f64::from(y) - cy);
            let d = (dx * dx + dy * dy).sqrt();
            let at = ((y * width + x) * 4) as usize;
            if d <= radius {
                rgba[at..at + 4].copy_from_slice(&[0x25, 0x63, 0xeb, 0xff]);
            } else if d <= radius + 1.5 {
                rgba[at..at + 4].copy_from_slice(&[0xff, 0xff, 0xff, 0xff]);
            }
        }
    }
    Image::new_owned(rgba, width, height)
}

/// Builds the tray; `false` (and no tray) when this desktop cannot show one.
pub fn install<R: Runtime>(handle: &AppHandle<R>) -> bool {
    let Some(icon) = handle.default_window_icon().cloned() else {
        return false;
    };
    let idle = icon.clone().to_owned();
    let busy = with_dot(&icon);
    let menu = match build_menu(handle, &Shown::default()) {
        Ok((menu, _)) => menu,
        Err(e) => {
            tracing::warn!(error = %e, "no tray menu");
            return false;
        }
    };
    let builder = TrayIconBuilder::with_id(TRAY_ID)
        .icon(idle.clone())
        .tooltip("BrightRun")
        .menu(&menu)
        .show_menu_on_left_click(true)
        .on_menu_event(|handle, event| clicked(handle, event.id().as_ref()));
    // The appindicator library is loaded at run time; without it tray-icon panics.
    let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| builder.build(handle)));
    match built {
        Ok(Ok(icon)) => {
            handle.manage(Tray {
                icon,
                shown: Mutex::new(Shown::default()),
                items: Mutex::new(BTreeMap::new()),
                built_for: Mutex::new(None),
                put: Mutex::new(Put::default()),
                idle,
                busy,
            });
            true
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "no system tray on this desktop");
            false
        }
        Err(_) => {
            tracing::warn!("no system tray on this desktop (no appindicator library)");
            false
        }
    }
}

type Built<R> = (Menu<R>, BTreeMap<Uuid, MenuItem<R>>);

fn build_menu<R: Runtime>(handle: &AppHandle<R>, shown: &Shown) -> tauri::Result<Built<R>> {
    let mut menu = MenuBuilder::new(handle)
        .text("open", "Open BrightRun")
        .separator();
    let mut items = BTreeMap::new();
    if shown.running.is_empty() {
        let none = MenuItemBuilder::with_id("none", "No jobs running")
            .enabled(false)
            .build(handle)?;
        menu = menu.item(&none);
    }
    for (id, text) in &shown.running {
        let item = MenuItemBuilder::with_id(format!("job:{id}"), text).build(handle)?;
        menu = menu.item(&item);
        items.insert(*id, item);
    }
    if !shown.latest.is_empty() {
        menu = menu.separator();
        for (id, text) in &shown.latest {
            let item = MenuItemBuilder::with_id(format!("job:{id}"), text).build(handle)?;
            menu = menu.item(&item);
        }
    }
    let pause = if shown.paused {
        "Resume watching"
    } else {
        "Pause watching"
    };
    let menu = menu
        .separator()
        .text("pause", pause)
        .text("quit", "Quit BrightRun")
        .build()?;
    Ok((menu, items))
}

fn clicked<R: Runtime>(handle: &AppHandle<R>, id: &str) {
    match id {
        "open" => crate::alerts::open_window(handle, "#/jobs"),
        "quit" => handle.exit(0),
        "pause" => {
            let Some(tray) = handle.try_state::<Tray<R>>() else {
                return;
            };
            let paused = {
                let mut shown = lock(&tray.shown);
                shown.paused = !shown.paused;
                shown.paused
            };
            let shell = handle.state::<Shell>();
            if paused {
                shell.stop_watching();
            } else {
                let handle = handle.clone();
                tauri::async_runtime::spawn(async move {
                    if let Err(e) = handle.state::<Shell>().watch().await {
                        tracing::warn!(code = e.code().as_str(), "could not resume watching");
                    }
                });
            }
            refresh(handle);
        }
        other => {
            if let Some(job) = other.strip_prefix("job:") {
                crate::alerts::open_window(handle, &format!("#/jobs/{job}"));
            }
        }
    }
}

fn short(id: Uuid) -> String {
    id.simple().to_string()[..8].to_owned()
}

/// A job changed: running ones are listed with their progress, ended ones leave the list.
pub fn jobs_changed<R: Runtime>(handle: &AppHandle<R>, jobs: &[TrainingJob]) {
    let Some(tray) = handle.try_state::<Tray<R>>() else {
        return;
    };
    {
        let mut shown = lock(&tray.shown);
        for job in jobs {
            let active = matches!(
                job.status,
                JobStatus::Queued | JobStatus::Initializing | JobStatus::Running
            );
            if active {
                let text = format!(
                    "Job {} · {} {:.0}%",
                    short(job.id),
                    job.current_stage,
                    job.progress
                );
                shown.running.insert(job.id, text);
            } else {
                shown.running.remove(&job.id);
            }
        }
    }
    refresh(handle);
}

/// Outcomes: listed under the running jobs, newest first.
pub fn finished<R: Runtime>(handle: &AppHandle<R>, alerts: &[JobAlert]) {
    let Some(tray) = handle.try_state::<Tray<R>>() else {
        return;
    };
    {
        let mut shown = lock(&tray.shown);
        for alert in alerts {
            let what = if alert.status == JobStatus::Completed {
                "completed"
            } else {
                "failed"
            };
            let name = alert
                .dataset
                .clone()
                .unwrap_or_else(|| format!("Job {}", short(alert.job_id)));
            shown.latest.retain(|(id, _)| *id != alert.job_id);
            shown
                .latest
                .insert(0, (alert.job_id, format!("{name} {what}")));
        }
        shown.latest.truncate(LATEST);
    }
    refresh(handle);
}

/// Puts the state on the tray: the icon, and the menu (rebuilt when its items change, texts
/// updated in place otherwise).
fn refresh<R: Runtime>(handle: &AppHandle<R>) {
    let Some(tray) = handle.try_state::<Tray<R>>() else {
        return;
    };
    let shown = lock(&tray.shown);
    let mut put = lock(&tray.put);
    let running = shown.running.len();
    if put.busy != Some(running > 0) {
        let icon = if running > 0 { &tray.busy } else { &tray.idle };
        if tray.icon.set_icon(Some(icon.clone())).is_ok() {
            put.busy = Some(running > 0);
        }
    }
    let tooltip = match running {
        0 => "BrightRun".to_owned(),
        1 => "BrightRun — 1 job running".to_owned(),
        n => format!("BrightRun — {n} jobs running"),
    };
    if put.tooltip != tooltip && tray.icon.set_tooltip(Some(&tooltip)).is_ok() {
        put.tooltip = tooltip;
    }
    let shape = shown.shape();
    let mut built_for = lock(&tray.built_for);
    if built_for.as_ref() == Some(&shape) {
        let items = lock(&tray.items);
        for (id, text) in &shown.running {
            if put.texts.get(id) != Some(text)
                && let Some(item) = items.get(id)
                && item.set_text(text).is_ok()
            {
                put.texts.insert(*id, text.clone());
            }
        }
        return;
    }
    match build_menu(handle, &shown) {
        Ok((menu, items)) => {
            if tray.icon.set_menu(Some(menu)).is_ok() {
                *lock(&tray.items) = items;
                *built_for = Some(shape);
                put.texts = shown.running.clone();
            }
        }
        Err(e) => tracing::warn!(error = %e, "the tray menu could not be rebuilt"),
    }
}

/// Whether closing the window should hide it (a tray is there and the preference says so).
pub fn hides_on_close<R: Runtime>(handle: &AppHandle<R>) -> bool {
    handle.try_state::<Tray<R>>().is_some() && CLOSE_TO_TRAY.load(Ordering::Relaxed)
}
