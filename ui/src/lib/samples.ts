// A dataset's sample conversations (`sample_data`: the file's first lines, as they are) read as
// chat turns for the detail page, whichever of the two formats the file is in.

import type { Value } from "./bindings";

export type Turn = { role: "system" | "user" | "assistant" | "other"; text: string };

const ROLES: Record<string, Turn["role"]> = {
  system: "system",
  user: "user",
  human: "user",
  assistant: "assistant",
  gpt: "assistant",
};

function isObject(v: Value | undefined): v is { [key: string]: Value } {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** The conversations of `sample_data`: `messages` (role/content) or ShareGPT (from/value). */
export function conversations(sample: Value | null | undefined): Turn[][] {
  if (!Array.isArray(sample)) return [];
  return sample.filter(isObject).map((line) => {
    const messages = Array.isArray(line.messages)
      ? line.messages
      : Array.isArray(line.conversations)
        ? line.conversations
        : [];
    return messages.filter(isObject).map((m) => {
      const role = String(m.role ?? m.from ?? "");
      const text = m.content ?? m.value;
      return {
        role: ROLES[role] ?? "other",
        text: typeof text === "string" ? text : JSON.stringify(text ?? ""),
      };
    });
  });
}
