// The local preferences, shared by the screens that use them, and the theme they choose: the
// resolved light or dark lands on <html data-theme>, which app.css and the charts follow.

import { call, commands, wireOf } from "../api";
import type { Preferences, Theme, WireError } from "../bindings";

const dark = globalThis.matchMedia?.("(prefers-color-scheme: dark)");

/** The theme to draw in, for a preference and whether the system is dark. */
export function resolveTheme(preference: Theme, systemDark: boolean): "light" | "dark" {
  if (preference === "system") return systemDark ? "dark" : "light";
  return preference;
}

export class Prefs {
  value = $state<Preferences | null>(null);
  error = $state<WireError | null>(null);
  /** What the window draws in now. */
  theme = $state<"light" | "dark">(dark?.matches ? "dark" : "light");

  constructor() {
    this.apply();
    dark?.addEventListener("change", () => this.apply());
  }

  async load(): Promise<void> {
    try {
      this.value = await call(commands.getPreferences());
      this.error = null;
      this.apply();
    } catch (e) {
      this.error = wireOf(e);
    }
  }

  /** Saves a change; the stored preferences come back. */
  async set(change: Partial<Preferences>): Promise<void> {
    if (!this.value) return;
    try {
      this.value = await call(commands.setPreferences({ ...this.value, ...change }));
      this.error = null;
      this.apply();
    } catch (e) {
      this.error = wireOf(e);
    }
  }

  private apply(): void {
    this.theme = resolveTheme(this.value?.theme ?? "system", dark?.matches ?? false);
    if (globalThis.document) document.documentElement.dataset.theme = this.theme;
  }
}
