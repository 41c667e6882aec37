#!/usr/bin/env python3
"""The peer of the candle trainer benchmark: the same LoRA job in PyTorch + Hugging Face PEFT.

    python3 crates/brightrun-worker/demo/peft_peer.py OUT_DIR [--threads 1]

OUT_DIR is what `cargo run --release -p brightrun-worker --example train_demo -- OUT_DIR` wrote:
`encoded.json` holds the token ids and loss masks the candle trainer used, its settings and the
base model directory (a Hugging Face LlamaForCausalLM). This script trains the same adapter the
way a Python user would -- PEFT LoRA on q_proj/v_proj, torch AdamW, transformers' cosine schedule
with warmup, gradient clipping, the same batch size, epochs and per-epoch validation -- on the
CPU, and writes `OUT_DIR/peft_run.json` with steps/s, tokens/s and the loss curve, measured the
same way as `candle_run.json`: steps/s over the training stage (validation passes included),
tokens/s as the median per step of non-padding input ids / step time.

Needs `pip install torch transformers peft safetensors` (`cargo xtask bench trainer` installs
them into a private virtualenv).
"""

import argparse
import json
import random
import statistics
import time
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaForCausalLM, get_cosine_schedule_with_warmup

PAD = 261  # <|pad|>, as the candle tokenizer defines it


def batches(examples, size):
    for i in range(0, len(examples), size):
        yield examples[i : i + size]


def collate(batch):
    """Right-padded inputs (all ids but the last) and targets (all but the first) with masks."""
    length = max(len(e["ids"]) for e in batch) - 1
    inputs, attention, targets, weights = [], [], [], []
    for e in batch:
        ids, trainable = e["ids"], e["trainable"]
        n = len(ids) - 1
        pad = length - n
        inputs.append(ids[:-1] + [PAD] * pad)
        attention.append([1] * n + [0] * pad)
        targets.append(ids[1:] + [PAD] * pad)
        weights.append([1.0 if t else 0.0 for t in trainable[1:]] + [0.0] * pad)
    return (
        torch.tensor(inputs),
        torch.tensor(attention),
        torch.tensor(targets),
        torch.tensor(weights),
        sum(len(e["ids"]) - 1 for e in batch),
    )


def masked_loss(model, batch):
    inputs, attention, targets, weights, _ = batch
    logits = model(input_ids=inputs, attention_mask=attention).logits
    nll = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none"
    )
    weights = weights.reshape(-1)
    return (nll * weights).sum() / weights.sum().clamp(min=1.0)


def evaluate(model, examples, size):
    model.eval()
    total, count = 0.0, 0.0
    with torch.no_grad():
        for chunk in batches(examples, size):
            b = collate(chunk)
            n = float(b[3].sum())
            total += float(masked_loss(model, b)) * n
            count += n
    model.train()
    return total / max(count, 1.0)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(42)
    random.seed(42)

    job = json.loads((args.out_dir / "encoded.json").read_text())
    hp = job["hyperparameters"]
    train, validation = job["train"], job["validation"]
    base = LlamaForCausalLM.from_pretrained(job["base_model_dir"], dtype=torch.float32)
    config = LoraConfig(
        r=hp["lora_rank"],
        lora_alpha=hp["lora_alpha"],
        lora_dropout=hp["lora_dropout"],
        target_modules=["q_proj", "v_proj"],
        bias="none",
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(base, config)
    model.train()
    size = hp["batch_size"]
    epochs = hp["num_epochs"]
    steps_per_epoch = (len(train) + size - 1) // size
    total = steps_per_epoch * epochs
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=hp["learning_rate"],
        weight_decay=hp.get("weight_decay") or 0.0,
    )
    schedule = get_cosine_schedule_with_warmup(optimizer, hp.get("warmup_steps") or 0, total)
    clip = hp.get("max_grad_norm")

    losses, epoch_of, tokens_per_second = [], [], []
    started = time.perf_counter()
    for epoch in range(1, epochs + 1):
        order = train[:]
        random.shuffle(order)
        for chunk in batches(order, size):
            t0 = time.perf_counter()
            b = collate(chunk)
            loss = masked_loss(model, b)
            loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            tokens_per_second.append(b[4] / (time.perf_counter() - t0))
            losses.append(loss.item())
            epoch_of.append(epoch)
        if validation:
            evaluate(model, validation, size)
    seconds = time.perf_counter() - started
    last_epoch = [l for l, e in zip(losses, epoch_of) if e == epochs]
    report = {
        "backend": f"pytorch {torch.__version__} + peft, CPU, {args.threads} thread(s)",
        "optimizer_steps": len(losses),
        "train_seconds": seconds,
        "steps_per_second": len(losses) / seconds,
        "tokens_per_second_median": statistics.median(tokens_per_second),
        "first_step_loss": losses[0],
        "final_train_loss": sum(last_epoch) / len(last_epoch),
        "final_validation_loss": evaluate(model, validation, size) if validation else None,
        "losses": losses,
    }
    (args.out_dir / "peft_run.json").write_text(json.dumps(report, indent=2))
    print(
        f"peft: {len(losses)} steps in {seconds:.2f} s ({report['steps_per_second']:.1f} steps/s, "
        f"median {report['tokens_per_second_median']:.0f} tokens/s); "
        f"loss {losses[0]:.3f} -> {report['final_train_loss']:.3f} (last epoch)"
    )


if __name__ == "__main__":
    main()
