// Every screen has a route, so a notification, the tray or a list can open it: `#/datasets`,
// `#/datasets/<id>`, `#/settings`.

export type Route =
  | { name: "datasets" }
  | { name: "dataset"; id: string }
  | { name: "settings" };

export function parse(hash: string): Route {
  const parts = hash.replace(/^#\/?/, "").split("/").filter(Boolean);
  if (parts[0] === "datasets" && parts[1]) return { name: "dataset", id: decodeURIComponent(parts[1]) };
  if (parts[0] === "settings") return { name: "settings" };
  return { name: "datasets" };
}

export function href(route: Route): string {
  switch (route.name) {
    case "dataset":
      return `#/datasets/${encodeURIComponent(route.id)}`;
    case "settings":
      return "#/settings";
    default:
      return "#/datasets";
  }
}

export class Router {
  route = $state<Route>(parse(globalThis.location?.hash ?? ""));

  start(): void {
    globalThis.addEventListener?.("hashchange", () => {
      this.route = parse(globalThis.location.hash);
    });
  }

  go(route: Route): void {
    globalThis.location.hash = href(route);
    this.route = route;
  }
}
