"""Render upstream's evaluation prompts with upstream's own code, for the native decoder.

Run by the *upstream* interpreter from the checkout root (it imports nothing from this package): upstream's
``data.EvalSidDataset`` tokenises every row of a test CSV exactly as its evaluate.py does, and the prompt
token ids are written as JSON. Scoring an upstream-trained model with the native decoder on these prompts
isolates the decoder (constraint, generation settings, precision) from the prompt wording (H5).

Usage: python export_prompts.py --model DIR --test-csv CSV --category CAT --out prompts.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--test-csv", required=True)
    ap.add_argument("--category", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    sys.path.insert(0, os.getcwd())  # the upstream checkout root
    from transformers import AutoTokenizer

    import data as upstream_data  # upstream's data.py

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    dataset = upstream_data.EvalSidDataset(train_file=args.test_csv, tokenizer=tokenizer, max_len=2560,
                                           category=args.category, test=True, seed=42)
    prompts = [[int(t) for t in dataset[i]["input_ids"]] for i in range(len(dataset))]
    tmp = args.out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"eos_token_id": tokenizer.eos_token_id, "prompts": prompts}, f)
    os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
