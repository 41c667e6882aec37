// A model download as the window shows it: every file's progress (the app layer reports one
// file at a time, named by `item`) and the total over the manifest's sizes.

import type { ArtifactFile, Progress } from "./bindings";

export interface FileProgress {
  name: string;
  bytes: number;
  total: number;
  done: boolean;
}

/** What the window draws of a download at one moment (a plain value, so it can be state). */
export interface DownloadView {
  files: FileProgress[];
  bytes: number;
  total: number;
  rate: number | null;
  eta: number | null;
}

export class DownloadProgress {
  readonly files: FileProgress[];
  rate: number | null = null;
  private current: string | null = null;

  constructor(manifest: ArtifactFile[]) {
    this.files = manifest.map((f) => ({ name: f.name, bytes: 0, total: f.size ?? 0, done: false }));
  }

  /** Takes one report; a report for a new file marks the previous one done. */
  report(p: Progress): void {
    const name = p.item ?? this.current;
    if (name == null) return;
    if (this.current && this.current !== name) this.mark(this.current);
    this.current = name;
    let file = this.files.find((f) => f.name === name);
    if (!file) {
      file = { name, bytes: 0, total: p.total, done: false };
      this.files.push(file);
    }
    file.bytes = p.bytes;
    if (p.total > 0) file.total = p.total;
    if (p.phase === "done") file.done = true;
    this.rate = p.rate;
  }

  /** Everything finished (the command answered). */
  finish(): void {
    for (const f of this.files) {
      f.done = true;
      f.bytes = Math.max(f.bytes, f.total);
    }
  }

  private mark(name: string): void {
    const file = this.files.find((f) => f.name === name);
    if (file) {
      file.done = true;
      file.bytes = Math.max(file.bytes, file.total);
    }
  }

  get bytes(): number {
    return this.files.reduce((sum, f) => sum + f.bytes, 0);
  }

  get total(): number {
    return this.files.reduce((sum, f) => sum + f.total, 0);
  }

  /** A copy to draw. */
  view(): DownloadView {
    return {
      files: this.files.map((f) => ({ ...f })),
      bytes: this.bytes,
      total: this.total,
      rate: this.rate,
      eta: this.eta,
    };
  }

  /** Seconds left at the current rate. */
  get eta(): number | null {
    if (!this.rate || this.rate <= 0) return null;
    return Math.max(0, (this.total - this.bytes) / this.rate);
  }
}

/** Python that loads the adapter on its base model with PEFT. */
export function peftSnippet(baseModel: string, folder: string): string {
  const q = (s: string) => JSON.stringify(s);
  return [
    "from peft import PeftModel",
    "from transformers import AutoModelForCausalLM, AutoTokenizer",
    "",
    `base = AutoModelForCausalLM.from_pretrained(${q(baseModel)})`,
    `tokenizer = AutoTokenizer.from_pretrained(${q(baseModel)})`,
    `model = PeftModel.from_pretrained(base, ${q(folder)})`,
  ].join("\n");
}
