// The job list: painted from the local cache at once (marked stale), then from the server, then
// kept current by the shell's watcher (`JobsChanged` events, one per poll), which also brings the metrics the
// charts draw from and says when the server is out of reach.

import { call, commands, events, wireOf } from "../api";
import type { JobAlert, TrainingJob, WireError } from "../bindings";
import { isActive } from "../jobs";

export class Jobs {
  /** Replaced, never changed in place: rows arrive whole every poll, and a raw array spares the
   * page a deep reactive proxy of each (the shown window's CPU while jobs run). */
  items = $state.raw<TrainingJob[]>([]);
  stale = $state(true);
  loaded = $state(false);
  error = $state<WireError | null>(null);
  /** The watcher cannot reach the server (it retries by itself). */
  offline = $state(false);
  /** Outcomes announced while the window runs, newest first. */
  finished = $state<JobAlert[]>([]);
  /** Called with every poll's new metrics: `(jobIds)`. */
  private metricsListeners = new Set<(jobIds: string[]) => void>();

  running = $derived(this.items.filter((j) => isActive(j.status)).length);

  async start(): Promise<void> {
    await events.jobsChanged.listen(({ payload }) => this.upsertAll(payload.jobs));
    await events.metricsAdded.listen(({ payload }) => {
      for (const listener of this.metricsListeners) listener(payload.job_ids);
    });
    await events.jobFinished.listen(({ payload }) => {
      this.finished = [payload.alert, ...this.finished].slice(0, 20);
    });
    await events.connectionChanged.listen(({ payload }) => {
      this.offline = !payload.online;
    });
    await this.fetch("cache");
    // The watcher starts from what this machine last saw; it must begin before the list is
    // refreshed from the server, or outcomes that happened while the app was closed would look
    // already seen and never be announced.
    try {
      await call(commands.watchJobs());
    } catch (e) {
      this.error = wireOf(e);
    }
    await this.fetch("server");
  }

  /** Calls `listener(jobIds)` when metrics arrive; returns the unsubscribe. */
  onMetrics(listener: (jobIds: string[]) => void): () => void {
    this.metricsListeners.add(listener);
    return () => this.metricsListeners.delete(listener);
  }

  refresh(): Promise<void> {
    return this.fetch("server");
  }

  private async fetch(refresh: "cache" | "server"): Promise<void> {
    try {
      const listing = await call(commands.listJobs({ refresh, status: null }));
      this.items = listing.items;
      this.stale = listing.stale;
      this.loaded = true;
      if (refresh === "server") this.error = null;
    } catch (e) {
      this.error = wireOf(e);
      this.stale = true;
      this.loaded = true;
    }
  }

  /** A job the server changed: replaced in place, or added at the top. */
  upsert(job: TrainingJob): void {
    this.upsertAll([job]);
  }

  /** Jobs the server changed (one poll's), applied in one pass over the list. */
  upsertAll(jobs: TrainingJob[]): void {
    const items = [...this.items];
    const index = new Map(items.map((j, i) => [j.id, i]));
    const added: TrainingJob[] = [];
    let changed = false;
    for (const job of jobs) {
      const at = index.get(job.id);
      const held = at === undefined ? undefined : items[at];
      if (at === undefined || !held) {
        added.unshift(job);
        continue;
      }
      // The watcher may deliver an older poll after a command's answer: keep the newest.
      if (held.updated_at > job.updated_at) continue;
      items[at] = job;
      changed = true;
    }
    if (added.length > 0 || changed) this.items = [...added, ...items];
  }

  get(id: string): TrainingJob | undefined {
    return this.items.find((j) => j.id === id);
  }
}
