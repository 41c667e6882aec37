// Every screen has a route, so a notification, the tray or a list can open it: `#/datasets`,
// `#/datasets/<id>`, `#/jobs`, `#/jobs/<id>`, `#/jobs/new?dataset=<id>` or `?clone=<job id>`,
// `#/models`, `#/models/<id>`, `#/costs`, `#/notifications`, `#/settings`.

export type Route =
  | { name: "datasets" }
  | { name: "dataset"; id: string }
  | { name: "jobs" }
  | { name: "job"; id: string }
  | { name: "new-job"; dataset: string | null; clone: string | null }
  | { name: "compare"; ids: string[] }
  | { name: "models" }
  | { name: "model"; id: string }
  | { name: "costs" }
  | { name: "notifications" }
  | { name: "settings" };

/** The side bar's sections; a route belongs to one. */
export type Section = "datasets" | "jobs" | "models" | "costs" | "notifications" | "settings";

export function section(route: Route): Section {
  switch (route.name) {
    case "dataset":
      return "datasets";
    case "job":
    case "new-job":
    case "compare":
      return "jobs";
    case "model":
      return "models";
    default:
      return route.name;
  }
}

export function parse(hash: string): Route {
  const [path, query = ""] = hash.replace(/^#\/?/, "").split("?");
  const parts = (path ?? "").split("/").filter(Boolean).map(decodeURIComponent);
  const params = new URLSearchParams(query);
  switch (parts[0]) {
    case "datasets":
      return parts[1] ? { name: "dataset", id: parts[1] } : { name: "datasets" };
    case "jobs":
      if (parts[1] === "new") {
        return { name: "new-job", dataset: params.get("dataset"), clone: params.get("clone") };
      }
      if (parts[1] === "compare") {
        const ids = (params.get("ids") ?? "").split(",").filter(Boolean);
        return { name: "compare", ids };
      }
      return parts[1] ? { name: "job", id: parts[1] } : { name: "jobs" };
    case "models":
      return parts[1] ? { name: "model", id: parts[1] } : { name: "models" };
    case "costs":
      return { name: "costs" };
    case "notifications":
      return { name: "notifications" };
    case "settings":
      return { name: "settings" };
    default:
      return { name: "datasets" };
  }
}

export function href(route: Route): string {
  const id = (s: string) => encodeURIComponent(s);
  switch (route.name) {
    case "dataset":
      return `#/datasets/${id(route.id)}`;
    case "job":
      return `#/jobs/${id(route.id)}`;
    case "new-job": {
      const params = new URLSearchParams();
      if (route.dataset) params.set("dataset", route.dataset);
      if (route.clone) params.set("clone", route.clone);
      const query = params.toString();
      return query ? `#/jobs/new?${query}` : "#/jobs/new";
    }
    case "compare":
      return `#/jobs/compare?ids=${route.ids.map(id).join(",")}`;
    case "model":
      return `#/models/${id(route.id)}`;
    default:
      return `#/${route.name}`;
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
