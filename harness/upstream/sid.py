"""The ``sid`` stage's upstream adapter: the pinned rq/ script(s) build ``sid.method``'s index from the embed
stage's vectors (the other methods of ``sid.compare`` are still built natively, for the comparison table):

- rqkmeans: rqkmeans_faiss.py (faiss ResidualQuantizer; ``--uniform`` adds Sinkhorn rebalancing per level);
- rqkmeans-constrained: rqkmeans_constrained.py (k-means-constrained per level, codes +1, a dedup level);
- rqkmeans-plus: rqkmeans_constrained.py, then rqkmeans_plus.py (trains from its codebooks) and
  generate_indices_plus.py (codes +1, the dedup level);
- rqvae is refused: generate_indices.py has no command line (its dataset and checkpoint are hard-coded).

What upstream cannot do is refused before anything runs, naming the key and the upstream line; what it does
regardless of params is recorded in ``upstream_run.json`` as ``not_passed``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from harness.data.schema import Dataset
from harness.errors import HarnessError, ParamsError
from harness.params import SidParams
from harness.sid.index import read_index_json
from harness.sid.registry import SHIPPED, SID_METHODS
from harness.sid.tokens import parse_token
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

PARAMS = "params.yaml"
EMB = "{category}.emb-qwen-td.npy"  # the file name every rq/ script reads


def _embeddings(root: Path, category: str) -> Path:
    return root / EMB.format(category=category)


def refuse(p: SidParams) -> None:
    """What the chosen upstream builder cannot do, refused with the line that forbids it."""
    if p.method == SHIPPED:
        raise ParamsError(PARAMS, "sid.backend", "'shipped' builds nothing; use sid.backend: native")
    if not SID_METHODS[p.method].upstream:
        why = {"rqvae": ": upstream's rq/generate_indices.py has no command line (its dataset and checkpoint path "
                        "are hard-coded, H11/H20) and this project never edits upstream"}.get(p.method, "")
        runnable = " / ".join(m.name for m in SID_METHODS.values() if m.upstream)
        raise ParamsError(PARAMS, "sid.method", f"{p.method} with sid.backend: upstream is unsupported{why}. Use the "
                          f"native {p.method}, or {runnable} with the upstream backend")
    if p.method == "rqkmeans":
        if p.codebook_size & (p.codebook_size - 1):
            raise ParamsError(PARAMS, "sid.codebook_size", f"{p.codebook_size} is not a power of two: "
                              f"{source.line_of('rq/rqkmeans_faiss.py', 'nbits = int(np.log2')} takes "
                              f"nbits = int(log2 K), so faiss would use {2 ** int(math.log2(p.codebook_size))} codes")
        if p.levels > 5:
            raise ParamsError(PARAMS, "sid.levels", f"{p.levels}: {source.line_of('rq/rqkmeans_faiss.py', 'tpl = [')} "
                              "has token templates for 5 levels only (a 6th crashes with IndexError)")
    elif p.uniform:
        raise ParamsError(PARAMS, "sid.uniform", "only rqkmeans_faiss.py has --uniform")
    if p.method == "rqkmeans-plus" and p.levels != 3:
        raise ParamsError(PARAMS, "sid.levels", f"{p.levels} with rqkmeans-plus: "
                          f"{source.line_of('rq/generate_indices_plus.py', 'sk_epsilons=[')} builds the model with 3 "
                          "Sinkhorn epsilons, so any other number of levels is silently cut to 3 (its checkpoint is "
                          "loaded with strict=False)")


def fixed(p: SidParams) -> dict:
    """What the builder does whatever params say: (upstream's value, what it does, where)."""
    faiss, plus = "rq/rqkmeans_faiss.py", "rq/rqkmeans_plus.py"
    if p.method == "rqkmeans":
        return {"kmeans_iters": (None, f"trains faiss's ResidualQuantizer with its own defaults; --iters is parsed "
                                 f"but never used ({source.line_of(faiss, '--iters')})"),
                "seed": (None, "faiss's own fixed seed; with --uniform, estimate_tau samples with the unseeded global "
                         f"numpy RNG ({source.line_of(faiss, 'np.random.choice')}), so runs differ")}
    out: dict = {}
    if p.method == "rqkmeans-plus":
        out.update({
            "seed": (2024, f"fixes its seed at 2024 ({source.line_of(plus, 'seed = 2024')}); sid.seed reaches only "
                     "the constrained k-means that initialises it"),
            "rqkmeans_plus.layers": ([2048, 1024, 512, 256, 128, 64], "uses its default --layers 2048 1024 512 256 "
                                     "128 64 in both rqkmeans_plus.py and generate_indices_plus.py"),
            "rqkmeans_plus.weight_decay": (0.0, "uses weight decay 0"),
            "rqkmeans_plus.keep": ("collision", "generate_indices_plus.py reads best_collision_model.pth"),
            "rqkmeans_plus.beta": (0.25, "uses beta 0.25"),
            "rqkmeans_plus.quant_loss_weight": (1.0, "uses quant_loss_weight 1.0"),
        })
    return out


def commands(p: SidParams, python: str, root: Path, category: str, dim: int, device: str) -> list[Command]:
    """The rq/ scripts that build ``sid.method``'s index from ``{root}/{category}.emb-qwen-td.npy``."""
    npy = str(_embeddings(root, category).resolve())
    levels, k = str(p.levels), str(p.codebook_size)
    if p.method == "rqkmeans":
        return [Command([python, "rqkmeans_faiss.py", "--dataset", category, "--data_path", npy,
                         "--num_levels", levels, "--codebook_size", k, "--output_root", str(root.resolve())]
                        + (["--uniform"] if p.uniform else []), cwd="rq")]
    constrained = Command([python, "rqkmeans_constrained.py", "--root", str(root.resolve()), "--dataset", category,
                           "--k", k, "--l", levels, "--max_iter", str(p.kmeans_iters), "--seed", str(p.seed)],
                          cwd="rq")
    if p.method == "rqkmeans-constrained":
        return [constrained]
    t = p.rqkmeans_plus
    codebooks = str((root / f"{category}.codebooks_constrained.npz").resolve())
    return [constrained, Command(
        [python, "rqkmeans_plus.py", "--data_path", npy, "--pretrained_codebook_path", codebooks,
         "--num_emb_list", *[k] * p.levels, "--e_dim", str(dim), "--lr", str(t.lr), "--epochs", str(t.epochs),
         "--batch_size", str(t.batch_size), "--eval_step", str(t.eval_every), "--ckpt_dir",
         str((root / "rqkmeans_plus_ckpt").resolve()), "--device", device], cwd="rq")]


def generate_indices_plus(p: SidParams, python: str, root: Path, category: str, dim: int, ckpt: Path,
                          device: str) -> Command:
    """generate_indices_plus.py: writes {dirname(data_path)}/{category}.index.json (1-based + dedup level).

    Its bare ``torch.load`` cannot read the checkpoint under torch 2.6's ``weights_only=True`` default: rq/trainer.py
    saves it with pickle protocol 4 and an ``argparse.Namespace`` inside, which the weights-only unpickler refuses
    ("Unsupported operand 149"), so RQ-Kmeans+ never produces an index. ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``
    restores torch's old default for this one process: the file it loads was written moments before by
    rqkmeans_plus.py, in this run's private scratch folder."""
    return Command([python, "generate_indices_plus.py", "--data_path", str(_embeddings(root, category).resolve()),
                    "--ckpt_path", str(ckpt.resolve()), "--num_emb_list", *[str(p.codebook_size)] * p.levels,
                    "--e_dim", str(dim), "--device", device], cwd="rq", env={"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"})


def output(p: SidParams, root: Path, category: str) -> Path:
    if p.method == "rqkmeans":
        return root / category / f"{category}.faiss-rq.index.json"  # not the index.json convert expects (H11)
    return root / f"{category}.index.json"


def _codebook_sizes(index: dict[int, list[str]], p: SidParams) -> list[int]:
    """The given codebook size per level (the audit would otherwise infer it from the largest code, which upstream's
    1-based codes push to the next power of two), plus the largest dedup rank when there is a dedup level."""
    sizes = [p.codebook_size] * p.levels
    extra = [parse_token(t[p.levels])[1] for t in index.values() if len(t) > p.levels]
    return sizes + ([max(extra)] if extra else [])


def build(p: SidParams, allow_unpinned: bool = False):
    """The ``build_selected`` hook of ``harness.sid.run_sid``: runs the scripts and returns the index."""
    import torch

    def selected(emb: np.ndarray, ds: Dataset, out: Path) -> tuple[dict, list[int] | None, dict]:
        record, python, started = begin("sid", allow_unpinned)
        skipped = not_passed(p, fixed(p))
        warn_not_passed("sid", skipped)
        device = "cuda:0" if torch.cuda.is_available() else "cpu"
        dim = int(emb.shape[1])
        with workdir("sid") as work:
            np.save(_embeddings(work, ds.name), emb, allow_pickle=False)
            cmds = commands(p, python, work, ds.name, dim, device)
            logs = [work / f"{Path(c.argv[1]).stem}.log" for c in cmds]
            for c in cmds:
                source.check_flags(c.argv, f"rq/{c.argv[1]}")
            codes = [run_command(c, log) for c, log in zip(cmds, logs)]
            if p.method == "rqkmeans-plus":
                ckpts = sorted((work / "rqkmeans_plus_ckpt").glob("*/best_collision_model.pth"))
                if not ckpts:
                    raise HarnessError("rqkmeans_plus.py wrote no best_collision_model.pth under its --ckpt_dir (its "
                                       "first evaluation comes after sid.rqkmeans_plus.eval_every epochs)")
                cmds.append(generate_indices_plus(p, python, work, ds.name, dim, ckpts[-1], device))
                source.check_flags(cmds[-1].argv, "rq/generate_indices_plus.py")
                logs.append(work / "generate_indices_plus.log")
                codes.append(run_command(cmds[-1], logs[-1]))
            path = output(p, work, ds.name)
            if not path.is_file():
                raise HarnessError(f"upstream's {p.method} builder exited 0 but wrote no {path.name}")
            index = read_index_json(path, len(ds.items))
            info = finish(out, record, cmds, codes, started, logs, skipped)
        base = 0 if p.method == "rqkmeans" else 1
        return index, _codebook_sizes(index, p), {"upstream_commit": info["upstream_commit"], "code_base": base}

    return selected


def run(p: SidParams, dataset_dir: str | Path, embed_dir: str | Path,
        out_dir: str | Path, allow_unpinned: bool = False) -> dict:
    """Adapter of ``harness.sid.run_sid`` for ``sid.backend: upstream``."""
    from harness.sid.stage import run_sid

    refuse(p)
    return run_sid(p, dataset_dir, embed_dir, out_dir, build_selected=build(p, allow_unpinned))
