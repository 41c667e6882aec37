import { describe, expect, it } from "vitest";

import type { TrainingJob } from "../bindings";
import { Jobs } from "./jobs.svelte";

function job(id: string, updated_at: string, progress = 0): TrainingJob {
  return { id, updated_at, progress, status: "running" } as unknown as TrainingJob;
}

describe("one poll's changed jobs", () => {
  it("replace the held rows in place, keep a newer held row, and add new jobs on top, newest first", () => {
    const jobs = new Jobs();
    jobs.items = [job("b", "2026-12-07T10:00:00Z"), job("a", "2026-12-07T10:00:00Z")];
    const before = jobs.items;
    jobs.upsertAll([
      job("a", "2026-12-07T10:00:02Z", 40),
      job("b", "2026-12-07T09:59:00Z", 99), // an older poll than the row held
      job("c", "2026-12-07T10:00:01Z"),
      job("d", "2026-12-07T10:00:03Z"),
    ]);
    expect(jobs.items.map((j) => j.id)).toEqual(["d", "c", "b", "a"]);
    expect(jobs.get("a")?.progress).toBe(40);
    expect(jobs.get("b")?.progress).toBe(0);
    expect(jobs.running).toBe(4);
    expect(jobs.items).not.toBe(before); // replaced, so the list's readers see the change

    const now = jobs.items;
    jobs.upsertAll([job("a", "2026-12-07T09:00:00Z")]);
    expect(jobs.items).toBe(now); // nothing newer: nothing to redraw
  });
});
