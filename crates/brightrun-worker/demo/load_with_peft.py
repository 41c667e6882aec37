#!/usr/bin/env python3
"""Loads an adapter written by the candle trainer with Hugging Face `peft` and checks it.

Optional (not part of the test suite; needs `pip install torch transformers peft safetensors`,
which `cargo xtask bench trainer` installs into a private virtualenv and then runs this on a fresh
adapter):

    cargo run --release -p brightrun-worker --example train_demo -- /tmp/demo
    python3 crates/brightrun-worker/demo/load_with_peft.py /tmp/demo/adapter

or on an adapter a job produced: `brightrun models download JOB_ID --to DIR`, then this on DIR.

ADAPTER_DIR holds adapter_model.safetensors, adapter_config.json, the tokenizer files and
brightrun_adapter.json (which names the cached base model directory, a Hugging Face
LlamaForCausalLM). The script fails unless
  1. every LoRA tensor PEFT expects was loaded from the file (none left at its init value),
  2. the tokenizer's chat template gives the same ids as the trainer, and
  3. PEFT computes the trainer's own losses on a fixed probe conversation, with the adapter
     (adapted_loss) and with it disabled (base_loss) -- so the adapter really is applied.
"""

import json
import sys
from pathlib import Path

import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoTokenizer, LlamaForCausalLM


def masked_loss(model, ids, trainable):
    input_ids = torch.tensor([ids[:-1]])
    targets = torch.tensor(ids[1:])
    mask = torch.tensor(trainable[1:], dtype=torch.float32)
    with torch.no_grad():
        logits = model(input_ids=input_ids).logits[0]
    nll = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    return float((nll * mask).sum() / mask.sum())


def main():
    adapter_dir = Path(sys.argv[1])
    info = json.loads((adapter_dir / "brightrun_adapter.json").read_text())
    base = LlamaForCausalLM.from_pretrained(info["base_model_dir"], torch_dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(adapter_dir))
    model.eval()

    saved = load_file(str(adapter_dir / "adapter_model.safetensors"))
    state = model.state_dict()
    for name, tensor in saved.items():
        key = name.replace(".lora_A.weight", ".lora_A.default.weight").replace(
            ".lora_B.weight", ".lora_B.default.weight"
        )
        assert key in state, f"PEFT has no parameter for {name} (prefix mismatch?)"
        assert torch.equal(state[key], tensor), f"{name} was not loaded"
    expected = sum(1 for k in state if ".lora_" in k)
    assert expected == len(saved), f"PEFT has {expected} LoRA tensors, the file {len(saved)}"

    probe = info["probe"]
    tokenizer = AutoTokenizer.from_pretrained(str(adapter_dir))
    ids = tokenizer.apply_chat_template(probe["messages"], tokenize=True)
    if hasattr(ids, "keys"):  # transformers >= 5 returns a BatchEncoding by default
        ids = ids["input_ids"]
    assert list(ids) == probe["ids"], f"chat template ids differ:\n{list(ids)}\n{probe['ids']}"

    # Trainable: the assistant turn's content and its closing token, as the trainer marked them.
    trainable = probe["trainable"]

    adapted = masked_loss(model, probe["ids"], trainable)
    with model.disable_adapter():
        base_loss = masked_loss(model, probe["ids"], trainable)
    print(f"adapted loss: peft {adapted:.5f}, trainer {probe['adapted_loss']:.5f}")
    print(f"base loss:    peft {base_loss:.5f}, trainer {probe['base_loss']:.5f}")
    assert abs(adapted - probe["adapted_loss"]) < 1e-3, "adapted loss differs"
    assert abs(base_loss - probe["base_loss"]) < 1e-3, "base loss differs"
    assert abs(adapted - base_loss) > 1e-3, "the adapter changes nothing"
    print("OK: PEFT loads the adapter and reproduces the trainer's losses")


if __name__ == "__main__":
    main()
