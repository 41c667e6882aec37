// The dataset list: painted from the local cache at once (marked stale), then from the server;
// usable offline. Search and the status filter are applied by the app layer.

import { call, commands, events, wireOf } from "../api";
import type { Dataset, WireError } from "../bindings";

export class Datasets {
  items = $state<Dataset[]>([]);
  stale = $state(true);
  fetchedAt = $state<string | null>(null);
  /** The list has been shown at least once (cache or server): no skeleton any more. */
  loaded = $state(false);
  /** Why the last refresh failed (offline: the cached list is what is shown). */
  error = $state<WireError | null>(null);
  search = $state("");
  status = $state<string | null>(null);
  private refreshing: Promise<void> | null = null;
  /** Called with every row the server changed. */
  onChanged: (dataset: Dataset) => void = () => {};

  /** Listens for changes and paints the cached list; resolves then, while the server's list
   * is asked for. */
  async start(): Promise<void> {
    // The listener and the cached list go out together (start-up time); a change that lands
    // before the listener is in place is in the server's list that follows the cache.
    const listening = events.datasetChanged.listen(({ payload }) => {
      this.upsert(payload.dataset);
      this.onChanged(payload.dataset);
    });
    await Promise.all([listening, this.fetch("cache")]);
    void this.refresh();
  }

  /** The cache first, then the server. */
  async load(): Promise<void> {
    await this.fetch("cache");
    await this.refresh();
  }

  refresh(): Promise<void> {
    this.refreshing ??= this.fetch("server").finally(() => {
      this.refreshing = null;
    });
    return this.refreshing;
  }

  private async fetch(refresh: "cache" | "server"): Promise<void> {
    try {
      const listing = await call(
        commands.listDatasets({
          refresh,
          search: this.search.trim() || null,
          status: this.status,
        }),
      );
      this.items = listing.items;
      this.stale = listing.stale;
      this.fetchedAt = listing.fetched_at;
      this.loaded = true;
      if (refresh === "server") this.error = null;
    } catch (e) {
      this.error = wireOf(e);
      this.stale = true;
      this.loaded = true;
    }
  }

  /** A row the server changed (an event): replaced in place, or added at the top. */
  upsert(dataset: Dataset): void {
    if (dataset.deleted_at) {
      this.items = this.items.filter((d) => d.id !== dataset.id);
      return;
    }
    const at = this.items.findIndex((d) => d.id === dataset.id);
    if (at >= 0) {
      this.items[at] = dataset;
    } else {
      this.items = [dataset, ...this.items];
    }
  }

  remove(id: string): void {
    this.items = this.items.filter((d) => d.id !== id);
  }
}
