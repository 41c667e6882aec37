import { describe, expect, it } from "vitest";

import type { Progress } from "./bindings";
import { DownloadProgress, peftSnippet } from "./downloads";

function p(item: string, bytes: number, total: number, phase: Progress["phase"] = "transferring"): Progress {
  return { phase, bytes, total, rate: 1000, eta_secs: null, resumed_from: 0, item };
}

describe("a model download", () => {
  it("shows each file and the total over the manifest", () => {
    const d = new DownloadProgress([
      { name: "adapter_model.safetensors", path: "a", size: 8000 },
      { name: "adapter_config.json", path: "b", size: 2000 },
    ]);
    expect(d.total).toBe(10_000);
    d.report(p("adapter_model.safetensors", 4000, 8000));
    expect(d.bytes).toBe(4000);
    expect(d.eta).toBe(6);
    d.report(p("adapter_config.json", 500, 2000));
    expect(d.files[0]?.done, "a report for the next file ends the previous one").toBe(true);
    expect(d.bytes).toBe(8500);
    d.report(p("adapter_config.json", 2000, 2000, "done"));
    expect(d.files.every((f) => f.done)).toBe(true);
    expect(d.bytes).toBe(d.total);
  });

  it("counts a resumed file from where it was", () => {
    const d = new DownloadProgress([{ name: "a.bin", path: "a", size: 100 }]);
    d.report({ ...p("a.bin", 60, 100), resumed_from: 50 });
    expect(d.bytes).toBe(60);
    d.finish();
    expect(d.bytes).toBe(100);
  });

  it("quotes paths in the PEFT snippet", () => {
    const code = peftSnippet("mistralai/Mistral-7B-v0.1", '/home/me/My "models"/run');
    expect(code).toContain('PeftModel.from_pretrained(base, "/home/me/My \\"models\\"/run")');
    expect(code).toContain('AutoModelForCausalLM.from_pretrained("mistralai/Mistral-7B-v0.1")');
  });
});

describe("the download's view", () => {
  it("is a copy, so each report draws anew", () => {
    const d = new DownloadProgress([{ name: "a.bin", path: "a", size: 100 }]);
    const before = d.view();
    d.report(p("a.bin", 40, 100));
    const after = d.view();
    expect(before.bytes).toBe(0);
    expect(after.bytes).toBe(40);
    expect(after.files).not.toBe(before.files);
  });
});
