// Files dropped or picked, one after the other: uploaded at once with progress while the
// upload checks them (the last chunk waits for the verdict); a file with errors leaves nothing
// on the server and keeps its report; a ShareGPT (v3) file, known by its first lines, is
// offered a one-click conversion first. Uploads interrupted by a
// quit, a crash or a cut are listed at the next start and resume from the server's offset.

import { call, commands, progressChannel, transferId, wireOf } from "../api";
import type { Dataset, Progress, ValidationReport, WireError } from "../bindings";

export type Stage =
  | "waiting"
  | "validating"
  | "invalid"
  | "sharegpt"
  | "converting"
  | "uploading"
  | "processing"
  | "ready"
  | "rejected"
  | "failed"
  | "cancelled";

let next = 0;

export class Upload {
  readonly id: string;
  path = $state("");
  stage = $state<Stage>("waiting");
  report = $state<ValidationReport | null>(null);
  progress = $state<Progress | null>(null);
  error = $state<WireError | null>(null);
  dataset = $state<Dataset | null>(null);
  /** The transfer the shell can cancel, while one runs. */
  transfer: string | null = null;
  /** Resumed from an earlier run. */
  resumed = $state(false);

  constructor(path: string) {
    next += 1;
    this.id = `upload-${next}`;
    this.path = path;
  }

  get name(): string {
    return this.path.split(/[\\/]/).pop() ?? this.path;
  }

  get active(): boolean {
    return ["waiting", "validating", "converting", "uploading", "processing"].includes(this.stage);
  }
}

/** The extensions a dataset may have (the shell checks again, with the size). */
export function isDatasetFile(path: string): boolean {
  return /\.(jsonl|ndjson|jsonlines)$/i.test(path);
}

export class Uploads {
  items = $state<Upload[]>([]);
  private running = false;
  private latest = new Map<string, Dataset>();
  /** Called with every dataset row an upload produced or the server changed. */
  onDataset: (dataset: Dataset) => void = () => {};
  /** Called when a command says the session is over. */
  onExpired: () => void = () => {};

  /** Queues files; they are processed in order. */
  add(paths: string[]): Upload[] {
    const added = paths.map((p) => new Upload(p));
    // Newest first on screen; the queue takes the oldest waiting one.
    this.items = [...[...added].reverse(), ...this.items];
    void this.pump();
    return added;
  }

  /** Lists and resumes the uploads an earlier run left unfinished. */
  async resumeInterrupted(): Promise<void> {
    try {
      const interrupted = await call(commands.interruptedUploads());
      for (const earlier of interrupted.filter((u) => u.file_present)) {
        if (this.items.some((u) => u.path === earlier.path && u.active)) continue;
        const [upload] = this.add([earlier.path]);
        if (upload) upload.resumed = true;
      }
    } catch (e) {
      if (wireOf(e).code === "auth_expired") this.onExpired();
    }
  }

  /** A dataset changed on the server: the upload it came from moves on. The change can
   * arrive before the upload's own answer does, so the newest row per dataset is kept. */
  datasetChanged(dataset: Dataset): void {
    const known = this.latest.get(dataset.id);
    if (known && known.updated_at > dataset.updated_at) return;
    this.latest.set(dataset.id, dataset);
    for (const upload of this.items) {
      if (upload.dataset?.id === dataset.id) this.follow(upload, dataset);
    }
  }

  private follow(upload: Upload, dataset: Dataset): void {
    upload.dataset = dataset;
    if (dataset.status === "ready") upload.stage = "ready";
    else if (dataset.status === "error") upload.stage = "rejected";
  }

  async cancel(upload: Upload): Promise<void> {
    if (upload.transfer) {
      await call(commands.cancelTransfer(upload.transfer));
    } else if (upload.stage === "waiting") {
      upload.stage = "cancelled";
    }
  }

  dismiss(upload: Upload): void {
    this.items = this.items.filter((u) => u !== upload);
  }

  retry(upload: Upload): void {
    upload.stage = "waiting";
    upload.error = null;
    void this.pump();
  }

  /** ShareGPT → messages, then upload the converted file. */
  async convertAndUpload(upload: Upload): Promise<void> {
    upload.stage = "converting";
    try {
      const converted = await call(
        commands.convertDataset({ input: upload.path, output: null, overwrite: false }),
      );
      upload.path = converted.output;
      upload.report = null;
      upload.stage = "waiting";
      void this.pump();
    } catch (e) {
      upload.error = wireOf(e);
      upload.stage = "failed";
    }
  }

  /** Uploads a ShareGPT file as it is (the server accepts it). */
  uploadAsIs(upload: Upload): void {
    void this.upload(upload);
  }

  private async pump(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      for (;;) {
        const upload = [...this.items].reverse().find((u) => u.stage === "waiting");
        if (!upload) break;
        await this.process(upload);
      }
    } finally {
      this.running = false;
    }
  }

  /** A quick look at the file's first lines (a ShareGPT file is offered conversion), then the
   * upload, which checks the whole file while it sends it. A file with errors uploads nothing;
   * its full report is then fetched for the screen. */
  private async process(upload: Upload): Promise<void> {
    upload.stage = "validating";
    upload.error = null;
    upload.progress = null;
    try {
      const guess = await call(commands.inspectDataset({ path: upload.path }));
      if (guess.kind === "format" && guess.format === "brightrun_lora_v3") {
        upload.stage = "sharegpt";
        return;
      }
    } catch (e) {
      this.failed(upload, e);
      return;
    }
    await this.upload(upload);
  }

  /** The whole report of a file the upload refused as invalid, for the screen; `refusal` stands
   * when the file itself has no errors (the server refused something else). */
  private async explain(upload: Upload, refusal: unknown): Promise<void> {
    upload.stage = "validating";
    upload.progress = null;
    const transfer = transferId("validate");
    upload.transfer = transfer;
    try {
      const report = await call(
        commands.validateDataset(
          { path: upload.path },
          transfer,
          progressChannel((p) => (upload.progress = p)),
        ),
      );
      upload.report = report;
      if (report.error_count > 0) upload.stage = "invalid";
      else this.failed(upload, refusal);
    } catch (e) {
      this.failed(upload, e);
    } finally {
      upload.transfer = null;
    }
  }

  private async upload(upload: Upload): Promise<void> {
    upload.stage = "uploading";
    upload.progress = null;
    const transfer = transferId("upload");
    upload.transfer = transfer;
    try {
      const outcome = await call(
        commands.uploadDataset(
          { path: upload.path, name: null, description: null, new: false },
          transfer,
          progressChannel((p) => (upload.progress = p)),
        ),
      );
      upload.report = outcome.report;
      upload.resumed ||= (outcome.resumed_from ?? 0) > 0;
      upload.stage = outcome.already_uploaded ? "ready" : "processing";
      if (outcome.dataset) {
        this.onDataset(outcome.dataset);
        this.datasetChanged(outcome.dataset);
        const newest = this.latest.get(outcome.dataset.id) ?? outcome.dataset;
        this.follow(upload, newest);
      }
    } catch (e) {
      if (wireOf(e).code === "validation_failed") {
        await this.explain(upload, e);
        return;
      }
      this.failed(upload, e);
    } finally {
      upload.transfer = null;
    }
  }

  private failed(upload: Upload, e: unknown): void {
    const wire = wireOf(e);
    upload.error = wire;
    upload.stage = wire.code === "cancelled" ? "cancelled" : "failed";
    if (wire.code === "auth_expired") this.onExpired();
  }

  /** Bytes moved and to move over the active uploads, for the status bar. */
  get totals(): { active: number; bytes: number; total: number } {
    const active = this.items.filter((u) => u.stage === "uploading" || u.stage === "validating");
    return {
      active: active.length,
      bytes: active.reduce((n, u) => n + (u.progress?.bytes ?? 0), 0),
      total: active.reduce((n, u) => n + (u.progress?.total ?? 0), 0),
    };
  }
}
