import { describe, expect, it } from "vitest";

import { target } from "./notifications.svelte";
import { resolveTheme } from "./prefs.svelte";

const JOB = "5f0c2b1e-0000-4000-8000-000000000001";
const DATASET = "5f0c2b1e-0000-4000-8000-000000000002";

describe("a notification's click", () => {
  it("opens the job or dataset it is about", () => {
    expect(target({ metadata: { job_id: JOB, status: "completed" }, action_url: `/jobs/${JOB}` })).toEqual({
      name: "job",
      id: JOB,
    });
    expect(target({ metadata: { dataset_id: DATASET }, action_url: null })).toEqual({ name: "dataset", id: DATASET });
    expect(target({ metadata: null, action_url: `/datasets/${DATASET}` })).toEqual({ name: "dataset", id: DATASET });
    expect(target({ metadata: null, action_url: "https://example.com" })).toBeNull();
  });
});

describe("the theme", () => {
  it("follows the system unless the settings choose one", () => {
    expect(resolveTheme("system", true)).toBe("dark");
    expect(resolveTheme("system", false)).toBe("light");
    expect(resolveTheme("light", true)).toBe("light");
    expect(resolveTheme("dark", false)).toBe("dark");
  });
});
