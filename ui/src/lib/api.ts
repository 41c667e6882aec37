// The window's one way to the backend: the generated commands, with their `Result` turned into
// a value or a thrown `BackendError` carrying the wire error, so screens branch on `code`.

import { Channel } from "@tauri-apps/api/core";

import { commands, events, type ErrorCode, type Progress, type WireError } from "./bindings";

export { commands, events };

/** A failed command: the wire error `{code, message, hint, retryable}`. */
export class BackendError extends Error {
  readonly wire: WireError;

  constructor(wire: WireError) {
    super(wire.message);
    this.name = "BackendError";
    this.wire = wire;
  }

  get code(): ErrorCode {
    return this.wire.code;
  }
}

/** The wire error of anything thrown (a non-backend error reads as a local failure). */
export function wireOf(error: unknown): WireError {
  if (error instanceof BackendError) return error.wire;
  return {
    code: "local",
    message: error instanceof Error ? error.message : String(error),
    hint: null,
    retryable: false,
  };
}

/** What every generated command answers. */
type Outcome<T> = { status: "ok"; data: T } | { status: "error"; error: WireError };

/** The value of a command, or a thrown `BackendError`. */
export async function call<T>(result: Promise<Outcome<T>>): Promise<T> {
  const answer = await result;
  if (answer.status === "ok") return answer.data;
  throw new BackendError(answer.error);
}

/** A channel for one transfer's progress. */
export function progressChannel(onProgress: (p: Progress) => void): Channel<Progress> {
  const channel = new Channel<Progress>();
  channel.onmessage = onProgress;
  return channel;
}

let transfers = 0;

/** An id the shell knows a cancellable transfer by. */
export function transferId(prefix: string): string {
  transfers += 1;
  return `${prefix}-${Date.now().toString(36)}-${transfers}`;
}
