// Where the window stands: choosing a project, signed out, or signed in (perhaps offline, on the
// account signed in last). Every screen reads it; the shell's SessionChanged event moves it.

import { call, commands, events, wireOf } from "../api";
import type { Account, ProjectStatus, WireError } from "../bindings";

export type Phase = "starting" | "first-run" | "signed-out" | "signed-in";

export class Session {
  phase = $state<Phase>("starting");
  project = $state<ProjectStatus | null>(null);
  account = $state<Account | null>(null);
  /** The server could not be reached when last asked. */
  offline = $state(false);
  /** What stopped the last action, for the screen that started it. */
  error = $state<WireError | null>(null);
  busy = $state(false);

  /** Reads the project and the session; listens for changes made elsewhere in the window. */
  async start(): Promise<void> {
    // Listening and the first questions go out together: each is a round trip to the shell,
    // and nothing announces a session change before the window has asked.
    const listening = events.sessionChanged.listen(({ payload }) => {
      this.account = payload.account;
      this.phase = payload.account ? "signed-in" : "signed-out";
    });
    await Promise.all([listening, this.load()]);
  }

  async load(): Promise<void> {
    this.error = null;
    try {
      // Asked together (start-up time); the session's answer counts only once a project is chosen.
      const session = call(commands.sessionStatus());
      session.catch(() => {});
      const project = await call(commands.projectStatus());
      this.project = project;
      if (!project.chosen) {
        this.phase = "first-run";
        return;
      }
      const status = await session;
      this.account = status.account;
      this.offline = status.offline;
      this.phase = status.account ? "signed-in" : "signed-out";
    } catch (e) {
      this.error = wireOf(e);
      this.phase = this.project?.chosen ? "signed-out" : "first-run";
    }
  }

  /** Runs `work` as the current action: busy while it runs, its error kept for the screen. */
  private async act(work: () => Promise<void>): Promise<boolean> {
    this.busy = true;
    this.error = null;
    try {
      await work();
      return true;
    } catch (e) {
      this.error = wireOf(e);
      return false;
    } finally {
      this.busy = false;
    }
  }

  chooseSandbox(): Promise<boolean> {
    return this.act(async () => {
      await call(commands.chooseSandbox());
      await this.load();
    });
  }

  chooseProject(url: string, anonKey: string): Promise<boolean> {
    return this.act(async () => {
      await call(commands.chooseProject(url.trim(), anonKey.trim()));
      await this.load();
    });
  }

  signIn(email: string, password: string): Promise<boolean> {
    return this.act(async () => {
      this.account = await call(commands.signIn({ email, password }));
      this.offline = false;
      this.phase = "signed-in";
    });
  }

  /** Signs up; `confirm` when the project sent a confirmation email instead of signing in. */
  async signUp(email: string, password: string): Promise<"signed-in" | "confirm" | "failed"> {
    let outcome: "signed-in" | "confirm" | "failed" = "failed";
    await this.act(async () => {
      const answer = await call(commands.signUp({ email, password }));
      if (answer.outcome === "signed_in") {
        this.account = answer.account;
        this.phase = "signed-in";
        outcome = "signed-in";
      } else {
        outcome = "confirm";
      }
    });
    return outcome;
  }

  signOut(): Promise<boolean> {
    return this.act(async () => {
      await call(commands.signOut());
      this.account = null;
      this.phase = "signed-out";
    });
  }

  /** A command failed with `auth_expired`: show the sign-in sheet over the current screen. */
  expired(): void {
    this.phase = "signed-out";
  }
}
