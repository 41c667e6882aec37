// The in-app notifications (the server's `notifications` rows): the list, the unread count the
// side bar shows, mark read. Refreshed when a job ends or a dataset changes, and on demand.

import { call, commands, events, wireOf } from "../api";
import type { Notification, WireError } from "../bindings";
import type { Route } from "../router.svelte";

export class Notifications {
  items = $state<Notification[]>([]);
  loaded = $state(false);
  error = $state<WireError | null>(null);
  unread = $derived(this.items.filter((n) => !n.read).length);

  async start(): Promise<void> {
    await events.jobFinished.listen(() => void this.load());
    await events.datasetChanged.listen(({ payload }) => {
      if (payload.dataset.status === "ready" || payload.dataset.status === "error") void this.load();
    });
    await this.load();
  }

  async load(): Promise<void> {
    try {
      this.items = await call(commands.listNotifications({ unread_only: false }));
      this.error = null;
    } catch (e) {
      this.error = wireOf(e);
    } finally {
      this.loaded = true;
    }
  }

  async markRead(ids: string[]): Promise<void> {
    const unread = ids.filter((id) => this.items.some((n) => n.id === id && !n.read));
    if (!unread.length) return;
    try {
      await call(commands.markNotificationsRead({ ids: unread }));
      this.items = this.items.map((n) => (unread.includes(n.id) ? { ...n, read: true } : n));
    } catch (e) {
      this.error = wireOf(e);
    }
  }
}

/** Where a click on a notification leads: its job or dataset. */
export function target(n: Pick<Notification, "metadata" | "action_url">): Route | null {
  const meta = (n.metadata ?? {}) as Record<string, unknown>;
  const id = (key: string) => (typeof meta[key] === "string" ? (meta[key] as string) : null);
  const job = id("job_id");
  if (job) return { name: "job", id: job };
  const dataset = id("dataset_id");
  if (dataset) return { name: "dataset", id: dataset };
  const url = n.action_url ?? "";
  const match = /\/(jobs|datasets|models)\/([0-9a-f-]{36})/.exec(url);
  if (match?.[1] === "jobs" && match[2]) return { name: "job", id: match[2] };
  if (match?.[1] === "datasets" && match[2]) return { name: "dataset", id: match[2] };
  if (match?.[1] === "models" && match[2]) return { name: "model", id: match[2] };
  return null;
}
