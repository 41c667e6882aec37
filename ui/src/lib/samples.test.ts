import { describe, expect, it } from "vitest";

import { conversations } from "./samples";

describe("sample conversations", () => {
  it("read both formats as turns", () => {
    const turns = conversations([
      { messages: [{ role: "system", content: "Be brief." }, { role: "user", content: "Hi" }, { role: "assistant", content: "Hello" }] },
      { conversations: [{ from: "human", value: "2+2?" }, { from: "gpt", value: "4" }] },
    ]);
    expect(turns).toEqual([
      [
        { role: "system", text: "Be brief." },
        { role: "user", text: "Hi" },
        { role: "assistant", text: "Hello" },
      ],
      [
        { role: "user", text: "2+2?" },
        { role: "assistant", text: "4" },
      ],
    ]);
  });

  it("skip what is not a conversation", () => {
    expect(conversations(null)).toEqual([]);
    expect(conversations({ messages: [] })).toEqual([]);
    expect(conversations([42, { messages: "no" }])).toEqual([[]]);
  });
});
