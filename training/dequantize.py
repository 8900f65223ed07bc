"""Rebuild fp32 Hugging Face weights from the shipped int8 ONNX reader.

    python -m training.dequantize --out training/work-shipped/final

For a further training stage when the fp32 weights of the shipped model are gone (the
checkpoints are never committed). Every weight comes back as ``(q - zero_point) * scale``,
so it differs from the lost fp32 weight by at most half a quantisation step; the tensors
that were never quantised (biases, LayerNorm) come back exactly. ``make train`` does not
need this: it chains the stages from the fp32 weights it trains.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
MODEL_DIR = HERE.parent / "qa" / "reading" / "model"


def dequantized_weights(onnx_path: Path) -> dict[str, np.ndarray]:
    """The model's parameters by their Hugging Face names, as float32 arrays."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(onnx_path)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def dequantize(base: str) -> np.ndarray:
        q = inits[base + "_quantized"].astype(np.float32)
        return (q - inits[base + "_zero_point"].astype(np.float32)) * inits[base + "_scale"]

    weights = {name: value.astype(np.float32) for name, value in inits.items()
               if not name.endswith(("_quantized", "_scale", "_zero_point"))
               and (name.startswith("bert.") or name.startswith("qa_outputs."))}
    for name in inits:
        if name.endswith("_quantized") and name.startswith("bert.embeddings."):
            weights[name[: -len("_quantized")]] = dequantize(name[: -len("_quantized")])
    for node in graph.node:
        if node.op_type != "MatMulInteger":
            continue
        base = node.input[1][: -len("_quantized")]
        out, bias = node.output[0], None
        for _ in range(4):  # MatMulInteger -> Cast -> Mul (scales) -> Add (bias)
            nxt = consumers[out][0]
            if nxt.op_type == "Add":
                bias = next(i for i in nxt.input if i in inits and i.endswith(".bias"))
                break
            out = nxt.output[0]
        if bias is None:
            raise ValueError(f"no bias found after {node.name}")
        weights[bias[: -len(".bias")] + ".weight"] = dequantize(base).T.copy()
    return weights


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=MODEL_DIR / "reader.onnx")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    import shutil

    import torch
    from transformers import AutoConfig, BertForQuestionAnswering

    from training.train import base_model_path

    config = AutoConfig.from_pretrained(base_model_path())
    config.num_labels = 2
    model = BertForQuestionAnswering(config)
    weights = {k: torch.from_numpy(v) for k, v in dequantized_weights(args.model).items()}
    expected = {k for k in model.state_dict() if not k.endswith("position_ids")}
    missing, unexpected = expected - set(weights), set(weights) - expected
    if missing or unexpected:
        raise SystemExit(f"weights do not match the model: missing {sorted(missing)[:5]}, "
                         f"unexpected {sorted(unexpected)[:5]}")
    model.load_state_dict(weights, strict=False)
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out, safe_serialization=True)
    shutil.copyfile(args.model.parent / "tokenizer.json", args.out / "tokenizer.json")
    print(f"{len(weights)} tensors written to {args.out}")


if __name__ == "__main__":
    main()
