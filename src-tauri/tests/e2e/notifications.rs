//! A notification server for the end-to-end test: it owns `org.freedesktop.Notifications` on the
//! test's private session bus, records every `Notify` with the time it arrived, and clicks an
//! action the way a desktop does (the `ActionInvoked` signal).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use zbus::object_server::SignalEmitter;
use zbus::zvariant::OwnedValue;

const PATH: &str = "/org/freedesktop/Notifications";

/// One `Notify` call.
#[derive(Debug, Clone)]
pub struct Received {
    pub id: u32,
    pub app_name: String,
    pub summary: String,
    pub body: String,
    pub actions: Vec<String>,
    pub at: SystemTime,
}

#[derive(Default)]
struct Server {
    received: Arc<Mutex<Vec<Received>>>,
}

#[zbus::interface(name = "org.freedesktop.Notifications")]
impl Server {
    #[allow(clippy::too_many_arguments)]
    async fn notify(
        &self,
        app_name: String,
        _replaces_id: u32,
        _app_icon: String,
        summary: String,
        body: String,
        actions: Vec<String>,
        _hints: HashMap<String, OwnedValue>,
        _expire_timeout: i32,
    ) -> u32 {
        let mut received = self.received.lock().expect("lock");
        let id = u32::try_from(received.len()).unwrap_or(u32::MAX) + 1;
        received.push(Received {
            id,
            app_name,
            summary,
            body,
            actions,
            at: SystemTime::now(),
        });
        id
    }

    fn close_notification(&self, _id: u32) {}

    fn get_capabilities(&self) -> Vec<String> {
        vec!["actions".into(), "body".into()]
    }

    fn get_server_information(&self) -> (String, String, String, String) {
        (
            "brightrun-e2e".into(),
            "BrightRun".into(),
            "1".into(),
            "1.2".into(),
        )
    }

    #[zbus(signal)]
    async fn action_invoked(
        emitter: &SignalEmitter<'_>,
        id: u32,
        action_key: &str,
    ) -> zbus::Result<()>;
}

/// The server, serving until dropped.
pub struct Notifications {
    connection: zbus::Connection,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Notifications {
    pub async fn start() -> Self {
        let server = Server::default();
        let received = server.received.clone();
        let connection = zbus::connection::Builder::session()
            .expect("the session bus")
            .name("org.freedesktop.Notifications")
            .expect("the name")
            .serve_at(PATH, server)
            .expect("the object")
            .build()
            .await
            .expect("owns org.freedesktop.Notifications");
        Self {
            connection,
            received,
        }
    }

    /// Every notification so far, in order.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("lock").clone()
    }

    /// Clicks `action` of notification `id`.
    pub async fn invoke(&self, id: u32, action: &str) {
        let iface = self
            .connection
            .object_server()
            .interface::<_, Server>(PATH)
            .await
            .expect("the interface");
        Server::action_invoked(iface.signal_emitter(), id, action)
            .await
            .expect("ActionInvoked sent");
    }
}

/// The bus name that served the tray menu of each process: the app has more connections than
/// GTK's (each notification waiting for its action holds one), and those never answer a call
/// to the menu's path, so a scan costs a timeout for each. Asked first the next time.
static MENU_OWNER: std::sync::Mutex<Option<(u32, String)>> = std::sync::Mutex::new(None);

/// The tray menu of the process `pid` as `com.canonical.dbusmenu.GetLayout` gives it, in
/// GVariant text; `None` while it has none.
pub async fn tray_layout(pid: u32) -> Option<(String, String)> {
    let connection = zbus::Connection::session().await.ok()?;
    let bus = zbus::fdo::DBusProxy::new(&connection).await.ok()?;
    let known = MENU_OWNER
        .lock()
        .expect("lock")
        .clone()
        .filter(|(owner, _)| *owner == pid)
        .map(|(_, name)| name);
    let mut names: Vec<String> = known.iter().cloned().collect();
    names.extend(
        bus.list_names()
            .await
            .ok()?
            .into_iter()
            .map(|n| n.to_string()),
    );
    for name in names {
        if !name.starts_with(':') {
            continue;
        }
        let owner = zbus::names::BusName::try_from(name.as_str()).ok()?;
        if bus.get_connection_unix_process_id(owner).await.ok() != Some(pid) {
            continue;
        }
        let args = (0i32, -1i32, Vec::<String>::new());
        let layout = connection.call_method(
            Some(name.as_str()),
            TRAY_MENU,
            Some("com.canonical.dbusmenu"),
            "GetLayout",
            &args,
        );
        let reply = tokio::time::timeout(std::time::Duration::from_secs(2), layout).await;
        if let Ok(Ok(reply)) = reply {
            let body = reply.body();
            let body: zbus::zvariant::Structure<'_> = body.deserialize().ok()?;
            *MENU_OWNER.lock().expect("lock") = Some((pid, name.clone()));
            return Some((name, body.to_string()));
        }
    }
    None
}

/// Where tray-icon's appindicator exports the menu of the tray with id `brightrun`.
const TRAY_MENU: &str = "/org/ayatana/NotificationItem/tray_icon_tray_app_brightrun/Menu";

/// Clicks the tray menu item labelled `label` of the process `pid` (as a tray host does:
/// `Event … clicked`). The menu is rebuilt when its jobs change, which renumbers its items and
/// leaves a click on an old number unanswered: each try reads the menu afresh (3 at most).
pub async fn tray_click(pid: u32, label: &str) {
    for _ in 0..3 {
        let (owner, layout) = tray_layout(pid).await.expect("a tray menu");
        let at = layout
            .find(&format!("\"{label}\""))
            .unwrap_or_else(|| panic!("no {label:?} in the tray menu: {layout}"));
        let open = layout[..at].rfind("<(").expect("an item") + 2;
        let id: i32 = layout[open..]
            .split(',')
            .next()
            .and_then(|n| n.trim().parse().ok())
            .expect("an item id");
        let connection = zbus::Connection::session().await.expect("the bus");
        let args = (id, "clicked", zbus::zvariant::Value::from(0i32), 0u32);
        let click = connection.call_method(
            Some(owner.as_str()),
            TRAY_MENU,
            Some("com.canonical.dbusmenu"),
            "Event",
            &args,
        );
        if let Ok(answer) = tokio::time::timeout(std::time::Duration::from_secs(5), click).await {
            answer.expect("the click is delivered");
            return;
        }
    }
    panic!("the tray answered none of three clicks on {label:?}");
}
