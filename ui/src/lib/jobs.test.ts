import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";

import type { HyperparameterConfig } from "./bindings";
import { debounce, draftOf, overrides, problemsByField, Redraw, secondsLeft, timeline } from "./jobs";

const BALANCED: HyperparameterConfig = {
  base_model: "mistralai/Mistral-7B-v0.1",
  learning_rate: 0.0002,
  batch_size: 8,
  num_epochs: 5,
  lora_rank: 16,
  lora_alpha: 32,
  lora_dropout: 0.1,
  warmup_steps: 200,
  weight_decay: 0.01,
};

describe("the job form", () => {
  it("sends only the values that differ from the preset", () => {
    expect(overrides(BALANCED, { ...BALANCED })).toEqual({});
    expect(overrides(BALANCED, { ...BALANCED, num_epochs: 2, lora_rank: 16 })).toEqual({ num_epochs: 2 });
    expect(
      overrides(BALANCED, { ...BALANCED, learning_rate: Number.NaN, gradient_accumulation_steps: 4 }),
      "an empty number input is not a value; a field the preset lacks is",
    ).toEqual({ gradient_accumulation_steps: 4 });
  });

  it("makes the draft the app layer checks and estimates", () => {
    const draft = draftOf({
      datasetId: "d1",
      presetId: "balanced",
      gpuType: "A100-80GB",
      gpuCount: 2,
      preset: BALANCED,
      values: { ...BALANCED, num_epochs: 3 },
    });
    expect(draft).toEqual({
      dataset_id: "d1",
      preset: "balanced",
      gpu_type: "A100-80GB",
      gpu_count: 2,
      overrides: { num_epochs: 3 },
    });
  });

  it("puts each problem beside its field", () => {
    const byField = problemsByField({
      hyperparameters: BALANCED,
      problems: [
        { field: "learning_rate", rule: "must be a number in (0, 0.01]" },
        { field: "gpu_count", rule: "must be between 1 and 8 for A100-80GB" },
        { field: "learning_rate", rule: "twice" },
      ],
      warnings: [],
      total_steps: 10,
    });
    expect(byField.learning_rate).toBe("must be a number in (0, 0.01]; twice");
    expect(byField.gpu_count).toContain("between 1 and 8");
    expect(problemsByField(null)).toEqual({});
  });
});

describe("the stage timeline", () => {
  it("marks the stages before the current one done", () => {
    const states = timeline({ status: "running", current_stage: "training" }).map((s) => s.state);
    expect(states).toEqual(["done", "done", "current", "pending", "pending", "pending"]);
  });

  it("shows where a job failed or was cancelled, and all done when completed", () => {
    expect(timeline({ status: "failed", current_stage: "validating" })[3]?.state).toBe("failed");
    expect(timeline({ status: "cancelled", current_stage: "queued" })[0]?.state).toBe("cancelled");
    expect(timeline({ status: "completed", current_stage: "completed" }).every((s) => s.state === "done")).toBe(true);
  });

  it("counts down to the estimated completion only while active", () => {
    const now = Date.parse("2026-12-07T12:00:00Z");
    expect(secondsLeft({ status: "running", estimated_completion_at: "2026-12-07T12:03:20Z" }, now)).toBe(200);
    expect(secondsLeft({ status: "completed", estimated_completion_at: "2026-12-07T12:03:20Z" }, now)).toBeNull();
    expect(secondsLeft({ status: "running", estimated_completion_at: "2026-12-07T11:00:00Z" }, now)).toBe(0);
  });
});

describe("chart updates", () => {
  it("never draw twice at once, and a burst of metrics during a draw makes one more draw", async () => {
    let inFlight = 0;
    let most = 0;
    let draws = 0;
    const gates: (() => void)[] = [];
    const redraw = new Redraw(async () => {
      inFlight += 1;
      most = Math.max(most, inFlight);
      draws += 1;
      await new Promise<void>((resolve) => gates.push(resolve));
      inFlight -= 1;
    });
    const first = redraw.request();
    for (let i = 0; i < 5; i++) void redraw.request();
    expect(draws).toBe(1);
    gates.shift()?.();
    await vi.waitFor(() => expect(draws).toBe(2));
    gates.shift()?.();
    await first;
    expect(draws, "five asks during the first draw became one").toBe(2);
    expect(most).toBe(1);
    const later = redraw.request();
    gates.shift()?.();
    await later;
    expect(draws, "a new ask after the queue drained draws again").toBe(3);
  });

  it("a failed draw does not stop the next one", async () => {
    let calls = 0;
    const redraw = new Redraw(async () => {
      calls += 1;
      if (calls === 1) throw new Error("offline");
    });
    await expect(redraw.request()).rejects.toThrow("offline");
    await redraw.request();
    expect(calls).toBe(2);
  });
});

describe("debounce", () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it("estimates once after the user stops typing", () => {
    const seen: number[] = [];
    const estimate = debounce((epochs: number) => seen.push(epochs), 300);
    estimate(1);
    estimate(12);
    vi.advanceTimersByTime(299);
    expect(seen).toEqual([]);
    estimate(3);
    vi.advanceTimersByTime(300);
    expect(seen).toEqual([3]);
    estimate(4);
    estimate.cancel();
    vi.advanceTimersByTime(1000);
    expect(seen).toEqual([3]);
  });
});
