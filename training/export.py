"""Export the trained reader to ONNX, quantise it to int8, and record an fp32 sample.

    python -m training.export [--work training/work]

Writes ``qa/reading/model/reader.onnx`` (int8, dynamic quantisation by onnxruntime) and
``tokenizer.json``; ``fp32_sample.json`` holds the fp32 export's best spans on a fixed sample
of validation questions, which the tests compare with the int8 model's.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
from pathlib import Path

from training import data as data_mod

HERE = Path(__file__).resolve().parent
MODEL_DIR = HERE.parent / "qa" / "reading" / "model"
SAMPLE_SIZE = 48


def export_fp32(final: Path, dest: Path) -> None:
    import torch
    from transformers import BertForQuestionAnswering

    model = BertForQuestionAnswering.from_pretrained(final, attn_implementation="eager")
    model.eval()
    ids = torch.ones((2, 32), dtype=torch.long)
    dims = {0: "batch", 1: "tokens"}
    with torch.no_grad():
        torch.onnx.export(
            model, (ids, torch.ones_like(ids), torch.zeros_like(ids)), str(dest),
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["start_logits", "end_logits"],
            dynamic_axes={"input_ids": dims, "attention_mask": dims, "token_type_ids": dims,
                          "start_logits": dims, "end_logits": dims},
            opset_version=17, dynamo=False,
        )


def sample_questions(n: int = SAMPLE_SIZE) -> list[dict]:
    """A fixed sample of validation questions with their own paragraph (never trained on)."""
    _, val = data_mod.split(data_mod.read_all(check=False))
    rng = random.Random(0)
    picked = rng.sample([ex for ex in val if ex.source != "covidqa"], n)
    return [{"question": ex.question, "context": ex.context} for ex in picked]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=HERE / "work")
    ap.add_argument("--out", type=Path, default=MODEL_DIR,
                    help="where the int8 model goes (a candidate's folder, to judge it first)")
    args = ap.parse_args(argv)
    model_dir = args.out
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from qa.reading.trained import SpanModel

    final = args.work / "final"
    out = args.work / "export"
    out.mkdir(parents=True, exist_ok=True)
    fp32 = out / "reader.fp32.onnx"
    export_fp32(final, fp32)
    model_dir.mkdir(parents=True, exist_ok=True)
    tmp = model_dir / "reader.onnx.tmp"
    quantize_dynamic(str(fp32), str(tmp), weight_type=QuantType.QInt8, per_channel=True)
    os.replace(tmp, model_dir / "reader.onnx")
    shutil.copyfile(final / "tokenizer.json", model_dir / "tokenizer.json")
    shutil.copyfile(final / "tokenizer.json", out / "tokenizer.json")

    reference = SpanModel(out, model_file=fp32.name)
    sample = sample_questions()
    for item in sample:
        span = reference.best_spans(item["question"], [item["context"]])[0]
        item["fp32"] = None if span is None else {
            "start": span.start, "end": span.end, "margin": round(span.margin, 4)}
    recorded = {"max_length": reference.max_length, "questions": sample}
    sample_tmp = model_dir / "fp32_sample.json.tmp"
    sample_tmp.write_text(json.dumps(recorded, indent=1, ensure_ascii=False))
    os.replace(sample_tmp, model_dir / "fp32_sample.json")
    size = (model_dir / "reader.onnx").stat().st_size
    print(f"int8 model: {size / 1e6:.1f} MB; fp32 sample of {len(sample)} questions written")


if __name__ == "__main__":
    main()
