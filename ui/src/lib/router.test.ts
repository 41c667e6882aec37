import { describe, expect, it } from "vitest";

import { href, parse, type Route, section } from "./router.svelte";

const ID = "5f0c2b1e-0000-4000-8000-000000000001";
const OTHER = "5f0c2b1e-0000-4000-8000-000000000002";

describe("routes", () => {
  it("round-trip through the hash", () => {
    const routes: Route[] = [
      { name: "datasets" },
      { name: "dataset", id: ID },
      { name: "jobs" },
      { name: "job", id: ID },
      { name: "new-job", dataset: ID, clone: null },
      { name: "new-job", dataset: null, clone: ID },
      { name: "new-job", dataset: null, clone: null },
      { name: "compare", ids: [ID, OTHER] },
      { name: "models" },
      { name: "model", id: ID },
      { name: "costs" },
      { name: "notifications" },
      { name: "settings" },
    ];
    for (const route of routes) {
      expect(parse(href(route))).toEqual(route);
    }
  });

  it("fall back to the dataset list", () => {
    expect(parse("")).toEqual({ name: "datasets" });
    expect(parse("#/nowhere")).toEqual({ name: "datasets" });
  });

  it("put every detail under its list's section", () => {
    expect(section({ name: "job", id: ID })).toBe("jobs");
    expect(section({ name: "new-job", dataset: ID, clone: null })).toBe("jobs");
    expect(section({ name: "model", id: ID })).toBe("models");
    expect(section({ name: "dataset", id: ID })).toBe("datasets");
    expect(section({ name: "costs" })).toBe("costs");
  });
});
