#!/usr/bin/env python3
"""The PyTorch + PEFT LoRA trainer on Ray Train: a training entrypoint for GPU clusters.

It keeps the training entrypoint contract (crates/brightrun-worker/src/entrypoint.rs): the job
in the environment variable BRIGHTRUN_TRAIN_SPEC, one JSON event per line on stdout (tagged
"brightrun": 1), the adapter's files uploaded through the signed URLs of the tickets document.
The worker ships this directory and runs it on a Ray cluster whose Python has
`ray[default,train] torch transformers peft safetensors`:

    brightrun-worker --backend ray --ray-address http://HEAD:8265 \\
        --ray-package entrypoints/ray-peft --ray-entrypoint "python train.py"

This process (the Ray job's driver, 1 CPU) downloads and splits the dataset, then runs a
`TorchTrainer` whose workers train PEFT LoRA (q_proj, v_proj; AdamW; warmup + cosine; gradient
clipping and accumulation; DDP across workers). The rank-0 worker streams every optimizer step
and validation pass to the driver through a Ray queue actor, and at the end hands it the adapter
directory's files; the driver prints the events, uploads the files and prints `done`.

Scaling: on a cluster with GPUs, one worker per GPU of the job's `gpu_config.gpu_count` (at most
the cluster's GPU count), bf16 where the GPU supports it. Without GPUs it still runs, on the CPU:
`BRIGHTRUN_RAY_NUM_WORKERS` workers (default 1) of `BRIGHTRUN_RAY_CPUS_PER_WORKER` CPUs
(default 1).

Optional environment (inherited from the cluster's `ray start` environment):
  BRIGHTRUN_BASE_MODEL_DIR   a directory of local base models by Hugging Face id:
                             `$DIR/<owner>/<name>` (config.json, weights, tokenizer) is loaded
                             instead of `from_pretrained("<owner>/<name>")` from the Hub. On a
                             multi-node cluster it must be at the same path on every node.
  BRIGHTRUN_RAY_NUM_WORKERS  workers (overrides gpu_count on GPU clusters)
  BRIGHTRUN_RAY_USE_GPU      1: ask for GPUs even if the cluster shows none yet (autoscaling);
                             0: train on CPUs whatever the cluster has
  BRIGHTRUN_RAY_CPUS_PER_WORKER
  BRIGHTRUN_MAX_SEQ_LEN      longest sequence trained on, in tokens (default 2048; never more
                             than the model's max_position_embeddings)
  BRIGHTRUN_DTYPE            float32 | bfloat16 | float16 (default: bfloat16 on GPUs that
                             support it, float32 otherwise)
  BRIGHTRUN_GRADIENT_CHECKPOINTING=1   recompute activations in the backward pass
"""

import json
import math
import os
import random
import re
import shutil
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request

VERSION = 1
SPEC_ENV = "BRIGHTRUN_TRAIN_SPEC"

# A fixed conversation on which brightrun_adapter.json records the base and adapted losses
# (the candle trainer's probe), so that demo/load_with_peft.py can check an external load.
PROBE = [
    {"role": "user", "content": "How do I reset my password?"},
    {
        "role": "assistant",
        "content": "Open Settings, choose Account, then click Reset password. We will email you a link.",
    },
]

SEED = 42
HOLDOUT_PERCENT = 10
# The server's bounds (brightrun-core HYPERPARAMETER_BOUNDS): (min, max, min exclusive, whole).
BOUNDS = {
    "learning_rate": (0.0, 0.01, True, False),
    "batch_size": (1, 256, False, True),
    "num_epochs": (1, 100, False, True),
    "lora_rank": (1, 256, False, True),
    "lora_alpha": (1, 1024, False, True),
    "lora_dropout": (0.0, 0.9, False, False),
    "warmup_steps": (0, 100_000, False, True),
    "weight_decay": (0.0, 1.0, False, False),
    "gradient_accumulation_steps": (1, 1024, False, True),
    "max_grad_norm": (0.0, 100.0, True, False),
}
# brightrun-core's `is_model_id`.
MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,199}")
REQUIRED = ("base_model", "learning_rate", "batch_size", "num_epochs", "lora_rank", "lora_alpha", "lora_dropout")


class Failure(Exception):
    """Why the run failed, and whether another attempt can help."""

    def __init__(self, message, retryable):
        super().__init__(message)
        self.message = message
        self.retryable = retryable


def permanent(message):
    return Failure(message, False)


def retryable(message):
    return Failure(message, True)


def event_line(event, **fields):
    return json.dumps({"brightrun": VERSION, "event": event, **fields})


def emit(event, **fields):
    sys.stdout.write(event_line(event, **fields) + "\n")
    sys.stdout.flush()


def log(message):
    print(f"ray-peft: {message}", file=sys.stderr, flush=True)


# --- The dataset: JSONL conversations, split as the platform's validator splits them ---------

_M64 = (1 << 64) - 1
_P32_1, _P32_2, _P32_3 = 0x9E3779B1, 0x85EBCA77, 0xC2B2AE3D
_P64_1, _P64_2, _P64_3 = 0x9E3779B185EBCA87, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9
_P64_4, _P64_5 = 0x85EBCA77C2B2AE63, 0x27D4EB2F165667C5
_SECRET = bytes.fromhex(
    "b8fe6c3923a44bbe7c01812cf721ad1cded46de9839097db7240a4a4b7b3671f"
    "cb79e64eccc0e578825ad07dccff7221b8084674f743248ee03590e6813a264c"
    "3c2852bb91c300cb88d0658b1b532ea371644897a20df94e3819ef46a9deacd8"
    "a8fa763fe39c343ff9dcbbc7c70b4f1d8a51e04bcdb45931c89f7ec9d9787364"
    "eac5ac8334d3ebc3c581a0fffa1363eb170ddd51b7f0da49d316552629d4689e"
    "2b16be587d47a1fc8ff8b8d17ad031ce45cb3a8f95160428afd7fbcabb4b407e"
)


def _u64(b, i):
    return int.from_bytes(b[i : i + 8], "little")


def _u32(b, i):
    return int.from_bytes(b[i : i + 4], "little")


def _fold(a, b):
    p = a * b
    return (p ^ (p >> 64)) & _M64


def _avalanche(h):
    h ^= h >> 37
    h = (h * 0x165667919E3779F9) & _M64
    return h ^ (h >> 32)


def _xxh64_avalanche(h):
    h ^= h >> 33
    h = (h * _P64_2) & _M64
    h ^= h >> 29
    h = (h * _P64_3) & _M64
    return h ^ (h >> 32)


def _mix16(data, i, s):
    return _fold(_u64(data, i) ^ _u64(_SECRET, s), _u64(data, i + 8) ^ _u64(_SECRET, s + 8))


def _xxh3_64_pure(data):
    """XXH3-64 with seed 0 (what brightrun-core's `line_hash` uses), in plain Python."""
    n = len(data)
    s = _SECRET
    if n == 0:
        return _xxh64_avalanche(_u64(s, 56) ^ _u64(s, 64))
    if n <= 3:
        combo = (data[0] << 16) | (data[n >> 1] << 24) | data[n - 1] | (n << 8)
        return _xxh64_avalanche(combo ^ (_u32(s, 0) ^ _u32(s, 4)))
    if n <= 8:
        keyed = (_u32(data, n - 4) + (_u32(data, 0) << 32)) ^ (_u64(s, 8) ^ _u64(s, 16))
        h = keyed & _M64
        rot = lambda v, r: ((v << r) | (v >> (64 - r))) & _M64  # noqa: E731
        h ^= rot(h, 49) ^ rot(h, 24)
        h = (h * 0x9FB21C651E98DF25) & _M64
        h ^= ((h >> 35) + n) & _M64
        h = (h * 0x9FB21C651E98DF25) & _M64
        return h ^ (h >> 28)
    if n <= 16:
        lo = _u64(data, 0) ^ (_u64(s, 24) ^ _u64(s, 32))
        hi = _u64(data, n - 8) ^ (_u64(s, 40) ^ _u64(s, 48))
        swapped = int.from_bytes(lo.to_bytes(8, "little"), "big")
        return _avalanche((n + swapped + hi + _fold(lo, hi)) & _M64)
    if n <= 128:
        acc = (n * _P64_1) & _M64
        if n > 32:
            if n > 64:
                if n > 96:
                    acc += _mix16(data, 48, 96) + _mix16(data, n - 64, 112)
                acc += _mix16(data, 32, 64) + _mix16(data, n - 48, 80)
            acc += _mix16(data, 16, 32) + _mix16(data, n - 32, 48)
        acc += _mix16(data, 0, 0) + _mix16(data, n - 16, 16)
        return _avalanche(acc & _M64)
    if n <= 240:
        acc = (n * _P64_1) & _M64
        for i in range(8):
            acc += _mix16(data, 16 * i, 16 * i)
        acc = _avalanche(acc & _M64)
        for i in range(8, n // 16):
            acc += _mix16(data, 16 * i, 16 * (i - 8) + 3)
        acc += _mix16(data, n - 16, 136 - 17)
        return _avalanche(acc & _M64)
    # Long input: 64-byte stripes into 8 accumulators, scrambled after every block.
    acc = [_P32_3, _P64_1, _P64_2, _P64_3, _P64_4, _P32_2, _P64_5, _P32_1]
    keys = [[_u64(s, off + 8 * j) for j in range(8)] for off in range(0, 192 - 64 + 1, 8)]

    def accumulate(offset, key):
        for j in range(8):
            v = _u64(data, offset + 8 * j)
            k = v ^ key[j]
            acc[j ^ 1] = (acc[j ^ 1] + v) & _M64
            acc[j] = (acc[j] + (k & 0xFFFFFFFF) * (k >> 32)) & _M64

    stripes = (192 - 64) // 8
    block = 64 * stripes
    blocks = (n - 1) // block
    scramble = [_u64(s, 192 - 64 + 8 * j) for j in range(8)]
    for b in range(blocks):
        for st in range(stripes):
            accumulate(b * block + st * 64, keys[st])
        for j in range(8):
            a = acc[j]
            acc[j] = (((a ^ (a >> 47)) ^ scramble[j]) * _P32_1) & _M64
    for st in range(((n - 1) - block * blocks) // 64):
        accumulate(blocks * block + st * 64, keys[st])
    accumulate(n - 64, [_u64(s, 192 - 64 - 7 + 8 * j) for j in range(8)])
    result = (n * _P64_1) & _M64
    for j in range(4):
        result += _fold(acc[2 * j] ^ _u64(s, 11 + 16 * j), acc[2 * j + 1] ^ _u64(s, 11 + 16 * j + 8))
    return _avalanche(result & _M64)


try:  # The C implementation when the cluster has it; the same numbers.
    import xxhash

    def xxh3_64(data):
        return xxhash.xxh3_64_intdigest(data)

except ImportError:
    xxh3_64 = _xxh3_64_pure


def _conversation(value, fmt):
    """(turns, split) of one JSON line, or None when it is not a conversation; turns are
    (role, content, trainable)."""
    if not isinstance(value, dict):
        return None
    v3 = fmt == "brightrun_lora_v3"
    list_key, role_key, content_key = ("conversations", "from", "value") if v3 else ("messages", "role", "content")
    roles = {"system": "system", "human" if v3 else "user": "user", "gpt" if v3 else "assistant": "assistant"}
    items = value.get(list_key)
    if not isinstance(items, list):
        return None
    turns = []
    for item in items:
        if not isinstance(item, dict):
            return None
        role = roles.get(item.get(role_key)) if isinstance(item.get(role_key), str) else None
        content = item.get(content_key)
        if role is None or not isinstance(content, str):
            return None
        weight = item.get("weight", 1)
        if isinstance(weight, bool) or weight not in (0, 1):
            return None
        turns.append((role, content, role == "assistant" and weight != 0))
    split = value.get("split")
    if split is not None and split not in ("train", "validation"):
        return None
    return turns, split


def parse_dataset(path, fmt):
    """Training and validation conversations: by "split" marks when any line has one, otherwise
    by the validator's hash holdout (XXH3-64 of the line's bytes, modulo 100, below 10)."""
    rows, skipped, any_mark = [], 0, False
    with open(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            if not line.endswith(b"\n") and len(line) > 10 * 1024 * 1024:
                skipped += 1
                continue
            line = line[:-1] if line.endswith(b"\n") else line
            line = line[:-1] if line.endswith(b"\r") else line
            if number == 1 and line.startswith(b"\xef\xbb\xbf"):
                line = line[3:]
            if not line.strip():
                continue
            try:
                parsed = _conversation(json.loads(line), fmt)
            except (ValueError, UnicodeDecodeError):
                parsed = None
            if parsed is None:
                skipped += 1
                continue
            turns, split = parsed
            any_mark |= split is not None
            rows.append((turns, split, xxh3_64(line) % 100 < HOLDOUT_PERCENT))
    train, validation = [], []
    for turns, split, held_out in rows:
        (validation if (split == "validation" if any_mark else held_out) else train).append(turns)
    return train, validation, skipped


# --- Settings ------------------------------------------------------------------------------


def check_settings(hp):
    problems = [f"hyperparameters.{k} is missing" for k in REQUIRED if hp.get(k) is None]
    base = hp.get("base_model")
    if base is not None and not (isinstance(base, str) and MODEL_ID.fullmatch(base)):
        problems.append('hyperparameters.base_model must be a model id like "mistralai/Mistral-7B-v0.1"')
    for field, (lo, hi, lo_exclusive, whole) in BOUNDS.items():
        value = hp.get(field)
        if value is None:
            continue
        ok = (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and math.isfinite(value)
            and value <= hi
            and (value > lo or (not lo_exclusive and value == lo))
            and (not whole or float(value).is_integer())
        )
        if not ok:
            kind = "whole number" if whole else "number"
            opening = "(" if lo_exclusive else "["
            problems.append(f"hyperparameters.{field} must be a {kind} in {opening}{lo}, {hi}], got {value!r}")
    if problems:
        raise permanent("invalid training settings: " + "; ".join(problems))


def scaling(gpu_config, cluster_gpus):
    """(num_workers, use_gpu, cpus_per_worker) for this cluster."""
    override = os.environ.get("BRIGHTRUN_RAY_NUM_WORKERS")
    cpus = int(os.environ.get("BRIGHTRUN_RAY_CPUS_PER_WORKER") or 1)
    force = os.environ.get("BRIGHTRUN_RAY_USE_GPU")
    if force == "1":  # e.g. an autoscaling cluster that has no GPU node yet: ask and wait
        return max(1, int(override or (gpu_config or {}).get("gpu_count") or 1)), True, cpus
    if cluster_gpus >= 1 and force != "0":
        wanted = int(override or (gpu_config or {}).get("gpu_count") or 1)
        workers = max(1, min(wanted, int(cluster_gpus)))
        if workers < wanted:
            log(f"the job asks for {wanted} GPUs and the cluster has {int(cluster_gpus)}: training on {workers}")
        return workers, True, cpus
    return max(1, int(override or 1)), False, cpus


# --- HTTP: the dataset in, the adapter out ---------------------------------------------------

BACKOFF = (0, 1, 2, 4, 8)


def download(url, to):
    last = ""
    for wait in BACKOFF:
        time.sleep(wait)
        try:
            with urllib.request.urlopen(url, timeout=60) as r, open(to, "wb") as f:
                shutil.copyfileobj(r, f, 1 << 20)
            return
        except urllib.error.HTTPError as e:
            if 400 <= e.code < 500:
                raise retryable(f"the dataset URL was refused (HTTP {e.code}): it may have expired")
            last = f"HTTP {e.code}"
        except (OSError, urllib.error.URLError) as e:
            last = str(e)
    raise retryable(f"downloading the dataset failed: {last}")


def tickets(url):
    last = ""
    for wait in BACKOFF:
        time.sleep(wait)
        try:
            with urllib.request.urlopen(url, timeout=60) as r:
                return json.load(r)
        except urllib.error.HTTPError as e:
            last = f"HTTP {e.code}"
        except (OSError, ValueError) as e:
            last = str(e)
    raise retryable(f"fetching the upload tickets failed: {last}")


def upload_all(tickets_url, files):
    """PUTs each file to its ticket (fetched again before every try: the worker renews them),
    then reports it. A file without a ticket is left out."""
    import hashlib

    for path in files:
        name = os.path.basename(path)
        data = open(path, "rb").read()
        sha256 = hashlib.sha256(data).hexdigest()
        last, sent = "", False
        for wait in BACKOFF:
            time.sleep(wait)
            url = tickets(tickets_url).get("files", {}).get(name)
            if url is None:
                log(f"no upload ticket for {name}; left out")
                break
            content_type = "application/json" if name.endswith(".json") else "application/octet-stream"
            request = urllib.request.Request(url, data=data, method="PUT", headers={"content-type": content_type})
            try:
                with urllib.request.urlopen(request, timeout=300) as r:
                    r.read()
                sent = True
                break
            except urllib.error.HTTPError as e:
                last = f"HTTP {e.code}: {e.read()[:300].decode('utf-8', 'replace')}"
            except OSError as e:
                last = str(e)
        else:
            raise retryable(f"uploading {name} failed: {last}")
        if sent:
            emit("artifact", name=name, size=len(data), sha256=sha256)


# --- Training (runs in the Ray Train workers) ----------------------------------------------


def resolve_base_model(name, local_root):
    """A local directory for `name` under BRIGHTRUN_BASE_MODEL_DIR, or the Hub id itself."""
    if local_root and ".." not in name.split("/"):
        candidate = os.path.join(local_root, name)
        if os.path.isfile(os.path.join(candidate, "config.json")):
            return candidate
    return name


def encode(tokenizer, turns, max_len):
    """Token ids of a conversation through the tokenizer's chat template, and which of them are
    trained on: the assistant turns' content and the template's closing tokens after it."""
    messages = [{"role": r, "content": c} for r, c, _ in turns]
    spans = []
    if getattr(tokenizer, "chat_template", None):

        def render(msgs, generation_prompt=False):
            return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=generation_prompt)

        text = render(messages)
        cursor = 0
        for i, (role, content, trainable) in enumerate(turns):
            if not trainable:
                continue
            start = end = None
            try:
                before = render(messages[:i], True)
                upto = render(messages[: i + 1])
                if text.startswith(upto) and upto.startswith(before):
                    start, end = len(before), len(upto)
            except Exception:  # a template that refuses a partial conversation
                pass
            if start is None:  # a template that rewrites earlier turns: find the content
                start = text.find(content, cursor)
                if start < 0:
                    continue
                end = start + len(content)
            spans.append((start, end))
            cursor = end
    else:
        eos = tokenizer.eos_token or ""
        text = ""
        for role, content, trainable in turns:
            text += f"<|{role}|>\n"
            start = len(text)
            text += content + (eos if role == "assistant" else "") + "\n"
            if trainable:
                spans.append((start, len(text)))
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        trainable = [any(s <= a < e for s, e in spans) and b > a for a, b in enc["offset_mapping"]]
    else:  # no offsets: tokenize the pieces between span edges
        edges = sorted({0, len(text), *[p for span in spans for p in span]})
        ids, trainable = [], []
        for a, b in zip(edges, edges[1:]):
            piece = tokenizer(text[a:b], add_special_tokens=False)["input_ids"]
            inside = any(s <= a < e for s, e in spans)
            ids += piece
            trainable += [inside] * len(piece)
    return ids[:max_len], trainable[:max_len]


def train_loop(config):
    """One Ray Train worker: PEFT LoRA with DDP; rank 0 reports through the queue."""
    import ray
    import ray.train
    import ray.train.torch
    import torch
    import torch.distributed as dist
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    queue = config["queue"]

    def send(kind, **fields):
        if rank == 0:
            queue.put({"kind": kind, **fields})

    try:
        hp = config["hyperparameters"]
        data = ray.get(config["data"])
        device = ray.train.torch.get_device()
        cuda = device.type == "cuda"
        if not cuda:
            torch.set_num_threads(max(1, int(config["cpus_per_worker"])))
        torch.manual_seed(SEED)
        random.seed(SEED)
        distributed = world > 1 and dist.is_available() and dist.is_initialized()

        def all_sum(values):
            t = torch.tensor(values, dtype=torch.float64, device=device)
            if distributed:
                dist.all_reduce(t)
            return t.tolist()

        dtype_name = os.environ.get("BRIGHTRUN_DTYPE") or (
            "bfloat16" if cuda and torch.cuda.is_bf16_supported() else "float32"
        )
        dtype = getattr(torch, dtype_name)
        source = resolve_base_model(hp["base_model"], config["base_model_root"])
        log(f"rank {rank}/{world}: loading {source} ({dtype_name}) on {device}")
        try:
            tokenizer = AutoTokenizer.from_pretrained(source)
            base = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
        except Exception as e:
            missing = any(type(x).__name__ in ("RepositoryNotFoundError", "GatedRepoError") for x in _chain(e))
            raise Failure(f"loading the base model {hp['base_model']} failed: {e}", not missing) from e
        limits = [int(os.environ.get("BRIGHTRUN_MAX_SEQ_LEN") or 2048)]
        limits.append(getattr(base.config, "max_position_embeddings", None) or limits[0])
        max_len = max(2, min(limits))
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)

        def encode_all(conversations):
            out = []
            for turns in conversations:
                ids, trainable = encode(tokenizer, turns, max_len)
                if any(trainable[1:]):
                    out.append((ids, trainable))
            return out

        train = encode_all(data["train"])
        validation = encode_all(data["validation"])
        if not train:
            raise permanent(
                f"no training conversation has a trainable assistant token within the first {max_len} tokens"
            )

        if os.environ.get("BRIGHTRUN_GRADIENT_CHECKPOINTING") == "1":
            base.config.use_cache = False
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        lora = LoraConfig(
            r=int(hp["lora_rank"]),
            lora_alpha=int(hp["lora_alpha"]),
            lora_dropout=float(hp["lora_dropout"]),
            target_modules=["q_proj", "v_proj"],
            bias="none",
            task_type="CAUSAL_LM",
        )
        peft_model = get_peft_model(base, lora)
        peft_model.train()
        model = ray.train.torch.prepare_model(peft_model)

        bs = int(hp["batch_size"])
        epochs = int(hp["num_epochs"])
        per_micro = bs * world
        micro_per_epoch = -(-len(train) // per_micro)
        accumulation = max(1, min(int(hp.get("gradient_accumulation_steps") or 1), micro_per_epoch))
        steps_per_epoch = -(-micro_per_epoch // accumulation)
        total_steps = steps_per_epoch * epochs
        warmup = min(int(hp.get("warmup_steps") or 0), max(total_steps - 1, 0))
        peak = float(hp["learning_rate"])

        def lr_factor(step):  # the candle trainer's schedule: linear warmup, then cosine to 0
            if step < warmup:
                return (step + 1) / warmup
            progress = (step - warmup) / max(total_steps - warmup, 1)
            return 0.5 * (1.0 + math.cos(math.pi * progress))

        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=peak, weight_decay=float(hp.get("weight_decay") or 0.0))
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
        clip = float(hp.get("max_grad_norm") or 1.0)

        def collate(batch):
            length = max(len(ids) for ids, _ in batch) - 1
            inputs, attention, targets, weights = [], [], [], []
            for ids, trainable in batch:
                n = len(ids) - 1
                pad = length - n
                inputs.append(ids[:-1] + [pad_id] * pad)
                attention.append([1] * n + [0] * pad)
                targets.append(ids[1:] + [pad_id] * pad)
                weights.append([1.0 if t else 0.0 for t in trainable[1:]] + [0.0] * pad)
            as_tensor = lambda x, dt: torch.tensor(x, dtype=dt, device=device)  # noqa: E731
            return (
                as_tensor(inputs, torch.long),
                as_tensor(attention, torch.long),
                as_tensor(targets, torch.long),
                as_tensor(weights, torch.float32),
                sum(len(ids) - 1 for ids, _ in batch),
            )

        def nll_sum(m, b):
            inputs, attention, targets, weights, _ = b
            logits = m(input_ids=inputs, attention_mask=attention).logits
            nll = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), reduction="none"
            )
            return (nll * weights.reshape(-1)).sum()

        def evaluate(m, examples):
            m.eval()
            total = count = 0.0
            with torch.no_grad():
                mine = examples[rank::world]
                for i in range(0, len(mine), bs):
                    b = collate(mine[i : i + bs])
                    total += float(nll_sum(m, b))
                    count += float(b[3].sum())
            m.train()
            total, count = all_sum([total, count])
            return total / max(count, 1.0)

        inner = peft_model  # without DDP's wrapper: evaluation and saving are per rank
        send("event", line=event_line("stage", stage="training"))
        step = 0
        last_epoch_nll = last_epoch_targets = 0.0
        for epoch in range(1, epochs + 1):
            order = list(range(len(train)))
            random.Random(SEED * 1000 + epoch).shuffle(order)
            if world > 1:  # every rank gets a full micro-batch: wrap around
                order += order[: micro_per_epoch * per_micro - len(order)]
            # Micro-batch k: examples k·bs·world … of the epoch's order, this rank's bs of them.
            micro = [
                order[k * per_micro : (k + 1) * per_micro][rank * bs : (rank + 1) * bs]
                for k in range(micro_per_epoch)
            ]
            last_epoch_nll = last_epoch_targets = 0.0
            for first in range(0, len(micro), accumulation):
                started = time.perf_counter()
                batches = [collate([train[i] for i in idx]) for idx in micro[first : first + accumulation]]
                (targets,) = all_sum([sum(float(b[3].sum()) for b in batches)])
                local_nll = 0.0
                for j, b in enumerate(batches):
                    last = j == len(batches) - 1
                    sync = model.no_sync() if distributed and not last and hasattr(model, "no_sync") else _nothing()
                    with sync:
                        loss = nll_sum(model, b)
                        # DDP averages gradients over ranks: scale so the sum is the mean per target.
                        (loss * world / max(targets, 1.0)).backward()
                    local_nll += float(loss.detach())
                torch.nn.utils.clip_grad_norm_(params, clip)
                lr = schedule.get_last_lr()[0]
                optimizer.step()
                schedule.step()
                optimizer.zero_grad(set_to_none=True)
                nll, tokens = all_sum([local_nll, float(sum(b[4] for b in batches))])
                step += 1
                last_epoch_nll += nll
                last_epoch_targets += targets
                seconds = max(time.perf_counter() - started, 1e-9)
                send(
                    "event",
                    line=event_line(
                        "step",
                        epoch=epoch,
                        step=step,
                        total_steps=total_steps,
                        loss=nll / max(targets, 1.0),
                        learning_rate=lr,
                        tokens_per_second=tokens / seconds,
                    ),
                )
            if epoch < epochs and validation:
                send("event", line=event_line("validation", step=step, loss=evaluate(inner, validation)))
        final_validation = None
        if validation:
            send("event", line=event_line("stage", stage="validating"))
            final_validation = evaluate(inner, validation)
            send("event", line=event_line("validation", step=step, loss=final_validation))
        if rank == 0:
            send("event", line=event_line("stage", stage="saving"))
            files = save_adapter(inner, tokenizer, hp, config, source, max_len, device, collate, nll_sum)
            send(
                "adapter",
                files=files,
                final_train_loss=last_epoch_nll / max(last_epoch_targets, 1.0),
                final_validation_loss=final_validation,
            )
    except Failure as f:
        send("error", message=f.message, retryable=f.retryable)
        raise
    except Exception as e:
        send("error", message=f"training failed: {type(e).__name__}: {e}", retryable=True)
        raise


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *_):
        return False


def _chain(e):
    while e is not None:
        yield e
        e = e.__cause__ or e.__context__


def save_adapter(model, tokenizer, hp, config, source, max_len, device, collate, nll_sum):
    """The adapter directory's files, {name: bytes}: PEFT's save_pretrained, the tokenizer and
    brightrun_adapter.json (the run and a probe for external checks)."""
    import torch

    out = tempfile.mkdtemp(prefix="brightrun-adapter-")
    try:
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        # Name the Hub model, not this node's directory, so the adapter applies to it elsewhere.
        config_path = os.path.join(out, "adapter_config.json")
        with open(config_path) as f:
            adapter_config = json.load(f)
        adapter_config["base_model_name_or_path"] = hp["base_model"]
        with open(config_path, "w") as f:
            json.dump(adapter_config, f, indent=2, sort_keys=True)
        probe = [(m["role"], m["content"], m["role"] == "assistant") for m in PROBE]
        ids, trainable = encode(tokenizer, probe, max_len)

        def probe_loss():
            model.eval()
            with torch.no_grad():
                b = collate([(ids, trainable)])
                loss = float(nll_sum(model, b)) / max(float(b[3].sum()), 1.0)
            model.train()
            return loss

        adapted = probe_loss()
        with model.disable_adapter():
            base_loss = probe_loss()
        info = {
            "backend": "ray-peft",
            "job_id": config["job_id"],
            "attempt": config["attempt"],
            "requested_base_model": hp["base_model"],
            "base_model": hp["base_model"],
            "base_model_dir": source,
            "max_seq_len": max_len,
            "device": str(device),
            "world_size": config["world_size"],
            "probe": {
                "messages": PROBE,
                "ids": ids,
                "trainable": trainable,
                "base_loss": base_loss,
                "adapted_loss": adapted,
            },
        }
        with open(os.path.join(out, "brightrun_adapter.json"), "w") as f:
            json.dump(info, f, indent=2)
        files = {}
        for name in sorted(os.listdir(out)):
            path = os.path.join(out, name)
            if os.path.isfile(path):
                with open(path, "rb") as f:
                    files[name] = f.read()
        return files
    finally:
        shutil.rmtree(out, ignore_errors=True)


# --- The driver ----------------------------------------------------------------------------


def run(work):
    raw = os.environ.get(SPEC_ENV)
    if raw is None:
        raise permanent(f"{SPEC_ENV} is not set")
    try:
        spec = json.loads(raw)
        hp, dataset, tickets_url = spec["hyperparameters"], spec["dataset"], spec["artifacts"]["tickets_url"]
    except (ValueError, KeyError, TypeError) as e:
        raise permanent(f"{SPEC_ENV} is not a training input: {e!r}")
    if spec.get("version") != VERSION:
        raise permanent(f"training input version {spec.get('version')} is not supported (this is version {VERSION})")
    emit("stage", stage="initializing")
    check_settings(hp)

    path = os.path.join(work, "dataset.jsonl")
    download(dataset["url"], path)
    train, validation, skipped = parse_dataset(path, dataset.get("format", "brightrun_lora_v4"))
    if skipped:
        log(f"skipped {skipped} lines that are not conversations")
    if not train:
        raise permanent("the dataset has no training conversations")
    log(f"{len(train)} training and {len(validation)} validation conversations")

    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.util.queue import Empty, Queue

    ray.init(log_to_driver=True)
    workers, use_gpu, cpus = scaling(spec.get("gpu_config"), ray.cluster_resources().get("GPU", 0))
    log(f"Ray Train: {workers} worker(s), {'1 GPU' if use_gpu else 'no GPU'} and {cpus} CPU(s) each")

    queue = Queue(actor_options={"num_cpus": 0})
    config = {
        "hyperparameters": hp,
        "data": ray.put({"train": train, "validation": validation}),
        "queue": queue,
        "base_model_root": os.environ.get("BRIGHTRUN_BASE_MODEL_DIR"),
        "cpus_per_worker": cpus,
        "job_id": spec.get("job_id"),
        "attempt": spec.get("attempt"),
        "world_size": workers,
    }
    trainer = TorchTrainer(
        train_loop,
        train_loop_config=config,
        scaling_config=ScalingConfig(
            num_workers=workers,
            use_gpu=use_gpu,
            resources_per_worker={"CPU": cpus, **({"GPU": 1} if use_gpu else {})},
        ),
        run_config=RunConfig(
            name=f"brightrun-{spec.get('job_id')}-a{spec.get('attempt')}",
            storage_path=os.path.join(work, "ray-train"),
            failure_config=FailureConfig(max_failures=0),
        ),
    )
    outcome = {}

    def fit():
        try:
            outcome["result"] = trainer.fit()
        except BaseException as e:  # noqa: BLE001 -- handed to the main thread
            outcome["error"] = e

    thread = threading.Thread(target=fit, name="fit", daemon=True)
    thread.start()
    adapter, reported = None, None

    def handle(message):
        nonlocal adapter, reported
        kind = message.get("kind")
        if kind == "event":
            sys.stdout.write(message["line"] + "\n")
            sys.stdout.flush()
        elif kind == "adapter":
            adapter = message
        elif kind == "error":
            reported = Failure(message["message"], message["retryable"])

    while thread.is_alive():
        try:
            handle(queue.get(block=True, timeout=0.5))
        except Empty:
            pass
    while True:
        try:
            handle(queue.get_nowait())
        except Empty:
            break
    if reported is not None:
        raise reported
    if "error" in outcome:
        e = outcome["error"]
        raise retryable(f"Ray Train failed: {type(e).__name__}: {e}")
    if adapter is None:
        raise retryable("training ended without an adapter")

    out = os.path.join(work, "adapter")
    os.makedirs(out, exist_ok=True)
    paths = []
    # The weights and config first; names without a ticket are left out by upload_all.
    for name in sorted(adapter["files"], key=lambda n: (not n.startswith("adapter_"), n)):
        p = os.path.join(out, name)
        with open(p, "wb") as f:
            f.write(adapter["files"][name])
        paths.append(p)
    upload_all(tickets_url, paths)
    emit("done", final_train_loss=adapter["final_train_loss"], final_validation_loss=adapter["final_validation_loss"])


def main():
    work = tempfile.mkdtemp(prefix="brightrun-ray-peft-")
    try:
        run(work)
        code = 0
    except Failure as f:
        log(f.message)
        emit("error", message=f.message, retryable=f.retryable)
        code = 1
    except BaseException as e:  # noqa: BLE001 -- every failure ends with an error event
        traceback.print_exc()
        emit("error", message=f"{type(e).__name__}: {e}", retryable=True)
        code = 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    try:
        import ray

        if ray.is_initialized():
            ray.shutdown()
    except Exception:
        pass
    sys.exit(code)


if __name__ == "__main__":
    main()
