"""The ``embed`` stage's upstream adapter: the pinned rq/text2emb/amazon_text2emb.py on ``embed.model`` (masked
mean pooling in fp16, texts of 2,000+ characters blanked: H16); the matrix it saves becomes
``data/embed/embeddings.npy``, as ``harness.embed.run_embed`` writes it."""

from __future__ import annotations

from pathlib import Path

from harness.data.schema import read_dataset
from harness.data.upstream_format import write_item_json
from harness.embed.encoder import resolve_model
from harness.embed.stage import load_npy
from harness.errors import ParamsError
from harness.io import atomic_dir, write_json, write_npy
from harness.params import EmbedParams
from harness.upstream import source
from harness.upstream.runner import (
    Command,
    begin,
    finish,
    not_passed,
    run_command,
    warn_not_passed,
    workdir,
)

SCRIPT = "rq/text2emb/amazon_text2emb.py"
EMB_NAME = "qwen"  # the script writes {root}/{dataset}.emb-{plm_name}-td.npy
FIXED = {  # what the script does whatever params say
    "pooling": ("mean", "always mean-pools the last hidden state over the attention mask"),
    "dtype": ("float16", "always loads the encoder in float16"),
    "normalize": (False, "never normalises the vectors"),
    "max_length": (2048, "cuts texts at --max_sent_len tokens (embed.upstream.max_sent_len)"),
    "batch_size": (1024, "encodes 1,024 texts per batch and process"),
}


def text2emb_command(p: EmbedParams, python: str, model_dir: Path, root: Path, category: str) -> Command:
    return Command([python, "-m", "accelerate.commands.launch", "--num_processes", str(p.upstream.num_processes),
                    "amazon_text2emb.py", "--dataset", category, "--root", str(root.resolve()),
                    "--plm_checkpoint", str(Path(model_dir).resolve()), "--plm_name", EMB_NAME,
                    "--max_sent_len", str(p.upstream.max_sent_len)], cwd="rq/text2emb")


def _max_positions(model_dir: Path) -> int | None:
    import json

    cfg = Path(model_dir) / "config.json"
    value = json.loads(cfg.read_text(encoding="utf-8")).get("max_position_embeddings") if cfg.is_file() else None
    return value if isinstance(value, int) else None


def embeddings_file(root: Path, category: str) -> Path:
    return root / f"{category}.emb-{EMB_NAME}-td.npy"


def run(p: EmbedParams, dataset_dir: str | Path, out_dir: str | Path,
        allow_unpinned: bool = False) -> dict:
    """Adapter of ``harness.embed.run_embed`` for ``embed.backend: upstream``."""
    if p.npy:
        raise ParamsError("params.yaml", "embed.npy", "an existing matrix and backend upstream exclude each "
                          "other: set embed.npy: null to let upstream's text2emb compute the vectors")
    ds = read_dataset(Path(dataset_dir))
    model_dir = resolve_model(p.model)
    positions = _max_positions(model_dir)
    if positions is not None and p.upstream.max_sent_len > positions:
        raise ParamsError("params.yaml", "embed.upstream.max_sent_len", f"{p.upstream.max_sent_len} tokens, but the "
                          f"encoder has {positions} positions: {source.line_of(SCRIPT, 'max_length=args.max_sent_len')} "
                          "pads every batch to its longest text, cut at this length, so a longer text crashes there")
    record, python, started = begin("embed", allow_unpinned)
    skipped = not_passed(p, FIXED)
    warn_not_passed("embed", skipped)
    with workdir("embed") as work, atomic_dir(out_dir) as tmp:
        write_item_json(work / f"{ds.name}.item.json", ds.items)
        cmd = text2emb_command(p, python, model_dir, work, ds.name)
        source.check_flags(cmd.argv, SCRIPT)
        codes = [run_command(cmd, work / "text2emb.log")]
        arr = load_npy(embeddings_file(work, ds.name), len(ds.items))
        info = finish(tmp, record, [cmd], codes, started, [work / "text2emb.log"], skipped)
        meta = {"source": "upstream", "model": str(model_dir), "items": len(ds.items), "dim": int(arr.shape[1]),
                "upstream": info}
        write_npy(tmp / "embeddings.npy", arr)
        write_json(tmp / "meta.json", meta)
    return meta
