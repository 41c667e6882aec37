// The logic of the job screens that is not drawing: the form's fields and the draft they make,
// the trade-offs of each preset in words, the stage timeline, and the chart redraw queue.
// Bounds and prices are never decided here: the app layer checks a draft (`check_job`) and the
// server estimates it (`estimate_job`).

import type {
  DraftCheck,
  HyperparameterConfig,
  HyperparameterOverrides,
  JobDraft,
  TrainingJob,
} from "./bindings";

type Key = keyof HyperparameterConfig;

export interface Field {
  key: Key;
  label: string;
  kind: "int" | "float" | "text";
  /** The input's step (what the arrow keys change). */
  step?: number;
  help: string;
}

/** The form's fields, in the order an engineer reads them. */
export const FIELDS: Field[] = [
  { key: "base_model", label: "Base model", kind: "text", help: "Hugging Face model id" },
  { key: "num_epochs", label: "Epochs", kind: "int", step: 1, help: "Passes over the training split" },
  { key: "learning_rate", label: "Learning rate", kind: "float", step: 0.00005, help: "Peak, after warm-up" },
  { key: "batch_size", label: "Batch size", kind: "int", step: 1, help: "Conversations per step" },
  { key: "lora_rank", label: "LoRA rank", kind: "int", step: 1, help: "Adapter capacity" },
  { key: "lora_alpha", label: "LoRA alpha", kind: "int", step: 1, help: "Scale; usually 2 × rank" },
  { key: "lora_dropout", label: "LoRA dropout", kind: "float", step: 0.01, help: "0 to 0.5" },
  { key: "warmup_steps", label: "Warm-up steps", kind: "int", step: 10, help: "About 10 % of the run" },
  { key: "weight_decay", label: "Weight decay", kind: "float", step: 0.01, help: "Regularisation" },
  {
    key: "gradient_accumulation_steps",
    label: "Gradient accumulation",
    kind: "int",
    step: 1,
    help: "Batches per optimizer step",
  },
  { key: "max_grad_norm", label: "Max grad norm", kind: "float", step: 0.1, help: "Gradient clipping" },
];

/** The preset's values that the form changed: only these are sent as overrides. */
export function overrides(
  preset: HyperparameterConfig,
  values: HyperparameterConfig,
): HyperparameterOverrides {
  const changed: Record<string, unknown> = {};
  for (const { key } of FIELDS) {
    const value = values[key];
    if (value === undefined || value === null || (typeof value === "number" && Number.isNaN(value))) {
      continue;
    }
    if (value !== preset[key]) changed[key] = value;
  }
  return changed as HyperparameterOverrides;
}

/** The draft the form describes. */
export function draftOf(form: {
  datasetId: string;
  presetId: string;
  gpuType: string;
  gpuCount: number;
  preset: HyperparameterConfig;
  values: HyperparameterConfig;
}): JobDraft {
  return {
    dataset_id: form.datasetId,
    preset: form.presetId,
    gpu_type: form.gpuType,
    gpu_count: form.gpuCount,
    overrides: overrides(form.preset, form.values),
  };
}

/** The check's problems by field, for the inputs to show beside them. */
export function problemsByField(check: DraftCheck | null): Record<string, string> {
  const out: Record<string, string> = {};
  for (const p of check?.problems ?? []) out[p.field] = out[p.field] ? `${out[p.field]}; ${p.rule}` : p.rule;
  return out;
}

/** What each preset trades, in words (the numbers come from the server's preset). */
export const TRADE_OFFS: Record<string, { summary: string; risk: string }> = {
  conservative: {
    summary: "Shortest run · lowest cost",
    risk: "Least risk of over-fitting; may under-fit a large set",
  },
  balanced: { summary: "Moderate run · moderate cost", risk: "Good default for most datasets" },
  aggressive: {
    summary: "Longest run · highest cost",
    risk: "Learns most; may over-fit a small set",
  },
  custom: {
    summary: "Time and cost follow your epochs",
    risk: "Starts from balanced; you set every value",
  },
};

export type StageState = "done" | "current" | "pending" | "failed" | "cancelled";

/** The stage timeline of a job: queued → initializing → training → validating → saving → done. */
export const STAGES = ["queued", "initializing", "training", "validating", "saving", "completed"] as const;

export function timeline(job: Pick<TrainingJob, "status" | "current_stage">): {
  stage: (typeof STAGES)[number];
  state: StageState;
}[] {
  const at = Math.max(0, STAGES.indexOf(job.current_stage as (typeof STAGES)[number]));
  return STAGES.map((stage, i) => {
    let state: StageState;
    if (job.status === "completed") state = "done";
    else if (i < at) state = "done";
    else if (i > at) state = "pending";
    else if (job.status === "failed") state = "failed";
    else if (job.status === "cancelled") state = "cancelled";
    else state = "current";
    return { stage, state };
  });
}

/** Queued, initializing or running: it may still change (and be cancelled). */
export function isActive(status: string): boolean {
  return status === "queued" || status === "initializing" || status === "running";
}

/** Seconds until the server's estimated completion, or null. */
export function secondsLeft(job: Pick<TrainingJob, "estimated_completion_at" | "status">, now = Date.now()): number | null {
  if (!isActive(job.status) || !job.estimated_completion_at) return null;
  const left = (new Date(job.estimated_completion_at).getTime() - now) / 1000;
  return Number.isFinite(left) ? Math.max(0, left) : null;
}

/** A job's name in lists: its dataset's name (when known) and a short id. */
export function jobName(job: Pick<TrainingJob, "id" | "dataset_id">, datasetName?: string | null): string {
  const short = job.id.slice(0, 8);
  return datasetName ? `${datasetName} · ${short}` : `Job ${short}`;
}

/**
 * Runs `draw` when asked, never two at once: asks that arrive during a draw become one more
 * draw after it. A running job's metrics arrive every few seconds; charts never pile up.
 */
export class Redraw {
  private running: Promise<void> | null = null;
  private again = false;

  constructor(private readonly draw: () => Promise<void>) {}

  request(): Promise<void> {
    if (this.running) {
      this.again = true;
      return this.running;
    }
    this.running = (async () => {
      try {
        do {
          this.again = false;
          await this.draw();
        } while (this.again);
      } finally {
        this.running = null;
      }
    })();
    return this.running;
  }
}

/** Calls `fn` once `ms` after the last call (the estimate while the user types). */
export function debounce<A extends unknown[]>(fn: (...args: A) => void, ms: number): ((...args: A) => void) & { cancel(): void } {
  let timer: ReturnType<typeof setTimeout> | null = null;
  const run = (...args: A) => {
    if (timer) clearTimeout(timer);
    timer = setTimeout(() => {
      timer = null;
      fn(...args);
    }, ms);
  };
  run.cancel = () => {
    if (timer) clearTimeout(timer);
    timer = null;
  };
  return run;
}
