// The upload queue against a mocked shell (mockIPC): which commands it calls in which order, and
// the stage each answer leads to.

import { clearMocks, mockIPC } from "@tauri-apps/api/mocks";
import { afterEach, beforeEach, describe, expect, it } from "vitest";

import type { Dataset, UploadOutcome, ValidationReport, WireError } from "../bindings";
import { Uploads, type Upload } from "./uploads.svelte";

(globalThis as { window?: unknown }).window = globalThis;

function report(errors: number, format: string | null = null): ValidationReport {
  return {
    format,
    completion: "complete",
    bytes_read: 100,
    lines_read: 3,
    errors: [],
    warnings: [],
    error_count: errors,
    warning_count: 0,
    counts_by_code: {},
    statistics: {} as ValidationReport["statistics"],
  } as ValidationReport;
}

function dataset(status: string, updated_at: string): Dataset {
  return {
    id: "d-1",
    user_id: "u-1",
    name: "chats",
    description: null,
    status,
    storage_bucket: "lora-datasets",
    storage_path: "u-1/d-1/chats.jsonl",
    file_name: "chats.jsonl",
    file_size: 100,
    total_training_pairs: null,
    total_validation_pairs: null,
    total_tokens: null,
    avg_turns_per_conversation: null,
    avg_tokens_per_turn: null,
    validated_at: null,
    created_at: "2026-12-07T10:00:00Z",
    updated_at,
    deleted_at: null,
  };
}

const V4 = { kind: "format", format: "brightrun_lora_v4" };

/** The upload's refusal of a file with errors (the client's `Invalid`). */
const INVALID: WireError = {
  code: "validation_failed",
  message: "the file has 2 errors",
  retryable: false,
};

function outcome(row: Dataset): UploadOutcome {
  return {
    dataset_id: row.id,
    dataset: row,
    report: report(0),
    resumed_from: null,
    already_uploaded: false,
    bytes: 100,
  };
}

/** Resolves once `upload` reached a stage the queue stops at. */
async function settled(upload: Upload): Promise<void> {
  for (let i = 0; i < 200 && upload.active && upload.stage !== "processing"; i++) {
    await new Promise((resolve) => setTimeout(resolve, 0));
  }
}

let calls: string[];

beforeEach(() => {
  calls = [];
});

afterEach(() => clearMocks());

describe("Uploads", () => {
  it("uploads a file without errors and follows its dataset to ready", async () => {
    const uploads = new Uploads();
    mockIPC((cmd) => {
      calls.push(cmd);
      if (cmd === "inspect_dataset") return V4;
      if (cmd === "upload_dataset") {
        // The server's change arrives before the command's own answer.
        uploads.datasetChanged(dataset("ready", "2026-12-07T10:00:02Z"));
        return outcome(dataset("processing", "2026-12-07T10:00:01Z"));
      }
      throw new Error(`unexpected ${cmd}`);
    });
    const [upload] = uploads.add(["/data/chats.jsonl"]);
    await settled(upload!);
    // No check before the upload: the upload checks the file while it sends it.
    expect(calls).toEqual(["inspect_dataset", "upload_dataset"]);
    expect(upload!.stage).toBe("ready");
    expect(upload!.dataset?.status).toBe("ready");
  });

  it("moves a processing upload on when the server rejects its dataset", async () => {
    const uploads = new Uploads();
    mockIPC((cmd) =>
      cmd === "inspect_dataset" ? V4 : outcome(dataset("validating", "2026-12-07T10:00:01Z")),
    );
    const [upload] = uploads.add(["/data/chats.jsonl"]);
    await settled(upload!);
    expect(upload!.stage).toBe("processing");
    uploads.datasetChanged(dataset("error", "2026-12-07T10:00:03Z"));
    expect(upload!.stage).toBe("rejected");
    // An older row arriving late changes nothing.
    uploads.datasetChanged(dataset("validating", "2026-12-07T10:00:02Z"));
    expect(upload!.stage).toBe("rejected");
  });

  it("keeps the report of a file the upload refused for its errors", async () => {
    const uploads = new Uploads();
    mockIPC((cmd) => {
      calls.push(cmd);
      if (cmd === "inspect_dataset") return V4;
      if (cmd === "upload_dataset") throw INVALID;
      return report(2);
    });
    const [upload] = uploads.add(["/data/broken.jsonl"]);
    await settled(upload!);
    expect(calls).toEqual(["inspect_dataset", "upload_dataset", "validate_dataset"]);
    expect(upload!.stage).toBe("invalid");
    expect(upload!.report?.error_count).toBe(2);
  });

  it("shows the server's refusal when the file itself has no errors", async () => {
    const uploads = new Uploads();
    const refusal: WireError = {
      code: "validation_failed",
      message: "name must be 1 to 200 characters",
      retryable: false,
    };
    mockIPC((cmd) => {
      if (cmd === "inspect_dataset") return V4;
      if (cmd === "upload_dataset") throw refusal;
      return report(0);
    });
    const [upload] = uploads.add(["/data/chats.jsonl"]);
    await settled(upload!);
    expect(upload!.stage).toBe("failed");
    expect(upload!.error?.message).toBe(refusal.message);
  });

  it("offers a ShareGPT file a conversion instead of uploading it", async () => {
    const uploads = new Uploads();
    mockIPC((cmd) => {
      calls.push(cmd);
      return { kind: "format", format: "brightrun_lora_v3" };
    });
    const [upload] = uploads.add(["/data/v3.jsonl"]);
    await settled(upload!);
    expect(calls).toEqual(["inspect_dataset"]);
    expect(upload!.stage).toBe("sharegpt");
  });

  it("ends the session when the server refuses the token", async () => {
    const uploads = new Uploads();
    let expired = 0;
    uploads.onExpired = () => (expired += 1);
    const refused: WireError = {
      code: "auth_expired",
      message: "the session has expired",
      hint: "Sign in again.",
      retryable: false,
    };
    mockIPC((cmd) => {
      if (cmd === "inspect_dataset") return V4;
      throw refused;
    });
    const [upload] = uploads.add(["/data/chats.jsonl"]);
    await settled(upload!);
    expect(upload!.stage).toBe("failed");
    expect(upload!.error?.code).toBe("auth_expired");
    expect(expired).toBe(1);
  });

  it("processes files one after the other, in the order they came", async () => {
    const uploads = new Uploads();
    const paths: string[] = [];
    mockIPC((cmd, payload) => {
      const request = (payload as { request: { path: string } }).request;
      if (cmd === "inspect_dataset") {
        paths.push(request.path);
        return { kind: "not_json_lines" };
      }
      if (cmd === "upload_dataset") throw INVALID;
      if (cmd === "validate_dataset") return report(1);
      throw new Error(`unexpected ${cmd}`);
    });
    const added = uploads.add(["/data/a.jsonl", "/data/b.jsonl"]);
    for (const upload of added) await settled(upload);
    expect(paths).toEqual(["/data/a.jsonl", "/data/b.jsonl"]);
  });
});
