import { describe, expect, it } from "vitest";

import { href, parse } from "./router.svelte";

describe("routes", () => {
  it("round-trip through the hash", () => {
    for (const route of [
      { name: "datasets" } as const,
      { name: "dataset", id: "5f0c2b1e-0000-4000-8000-000000000001" } as const,
      { name: "settings" } as const,
    ]) {
      expect(parse(href(route))).toEqual(route);
    }
  });

  it("fall back to the dataset list", () => {
    expect(parse("")).toEqual({ name: "datasets" });
    expect(parse("#/nowhere")).toEqual({ name: "datasets" });
  });
});
