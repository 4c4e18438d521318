"""The argument lists that run upstream's scripts, built from params.yaml (spec §6). Pure functions: nothing
here touches the disk except to check that a required input exists, so every command is testable without an
upstream checkout.

Paths are made absolute, because each script runs from its own folder inside the checkout. Flags upstream
does not accept are never passed (H6: evaluate.sh's --temperature/--guidance_scale make fire exit 2), and
placeholder or relative-default paths (H20) are always replaced by real ones or refused.
"""

from __future__ import annotations

from pathlib import Path

from harness.errors import ParamsError
from harness.params import DataParams, EmbedParams, EvaluateParams, RlParams, SftParams, SidParams
from harness.upstream.runner import Command

# Keys of the category dict in upstream's sft.py / rl.py: any other name is a KeyError there (H20).
CATEGORIES = ("Industrial_and_Scientific", "Office_Products")
EMB_NAME = "qwen"  # amazon_text2emb.py writes {root}/{dataset}.emb-{plm_name}-td.npy
PARAMS = "params.yaml"


def _abs(path: str | Path) -> str:
    return str(Path(path).expanduser().resolve())


def _flag(value: bool) -> str:
    return "True" if value else "False"  # fire parses these as booleans


def need_category(category: str, key: str) -> None:
    if category not in CATEGORIES:
        raise ParamsError(PARAMS, key, f"upstream's scripts only know the categories {', '.join(CATEGORIES)} (a "
                          f"hard-coded dict, H20); this dataset is {category!r}. Use data.source: upstream with one "
                          "of them, or the native backend")


def preprocess(p: DataParams, python: str, out_dir: Path) -> Command:
    """data/amazon18_data_process.py on raw Amazon-2018 files (§1.1); the time zone is pinned (H15)."""
    pp = p.preprocess
    for key in ("reviews_file", "metadata_file"):
        value = getattr(pp, key)
        if not value:
            raise ParamsError(PARAMS, f"data.preprocess.{key}", "required with data.backend: upstream (upstream "
                              "would otherwise guess a ../ path relative to its data/ folder, H20)")
        if not Path(value).expanduser().is_file():
            raise ParamsError(PARAMS, f"data.preprocess.{key}", f"{value}: file not found")
    k = str(pp.user_k)
    return Command([python, "amazon18_data_process.py", "--dataset", pp.category, "--user_k", k, "--item_k", k,
                    "--st_year", str(pp.st_year), "--st_month", str(pp.st_month), "--ed_year", str(pp.ed_year),
                    "--ed_month", str(pp.ed_month), "--metadata_file", _abs(pp.metadata_file),
                    "--reviews_file", _abs(pp.reviews_file), "--output_path", _abs(out_dir)],
                   cwd="data", env={"TZ": pp.tz})


def text2emb(p: EmbedParams, python: str, model_dir: Path, root: Path, category: str) -> Command:
    """rq/text2emb/amazon_text2emb.py under accelerate (§1.2): reads {root}/{category}.item.json."""
    return Command([python, "-m", "accelerate.commands.launch", "--num_processes", str(p.upstream.num_processes),
                    "amazon_text2emb.py", "--dataset", category, "--root", _abs(root),
                    "--plm_checkpoint", _abs(model_dir), "--plm_name", EMB_NAME,
                    "--max_sent_len", str(p.upstream.max_sent_len)], cwd="rq/text2emb")


def embeddings_file(root: Path, category: str) -> Path:
    return root / f"{category}.emb-{EMB_NAME}-td.npy"


def sid_builders(p: SidParams, python: str, root: Path, category: str, dim: int, device: str) -> list[Command]:
    """The rq/ scripts that build ``sid.method``'s index from ``{root}/{category}.emb-qwen-td.npy`` (§1.3)."""
    npy = _abs(embeddings_file(root, category))
    levels, k = str(p.levels), str(p.codebook_size)
    if p.method == "rqkmeans":
        return [Command([python, "rqkmeans_faiss.py", "--dataset", category, "--data_path", npy,
                         "--num_levels", levels, "--codebook_size", k, "--output_root", _abs(root)]
                        + (["--uniform"] if p.uniform else []), cwd="rq")]
    constrained = Command([python, "rqkmeans_constrained.py", "--root", _abs(root), "--dataset", category,
                           "--k", k, "--l", levels, "--max_iter", str(p.kmeans_iters), "--seed", str(p.seed)],
                          cwd="rq")
    if p.method == "rqkmeans-constrained":
        return [constrained]
    if p.method == "rqkmeans-plus":
        t = p.rqkmeans_plus
        codebooks = _abs(root / f"{category}.codebooks_constrained.npz")
        return [constrained, Command(
            [python, "rqkmeans_plus.py", "--data_path", npy, "--pretrained_codebook_path", codebooks,
             "--num_emb_list", *[k] * p.levels, "--e_dim", str(dim), "--lr", str(t.lr), "--epochs", str(t.epochs),
             "--batch_size", str(t.batch_size), "--eval_step", str(t.eval_every), "--ckpt_dir",
             _abs(root / "rqkmeans_plus_ckpt"), "--device", device], cwd="rq")]
    if p.method == "rqvae":
        raise ParamsError(PARAMS, "sid.method", "rqvae with sid.backend: upstream is unsupported: upstream's "
                          "generate_indices.py has no command line (its dataset and checkpoint path are hard-coded, "
                          "H11/H20) and this project never edits upstream. Use the native rqvae, or rqkmeans / "
                          "rqkmeans-constrained / rqkmeans-plus with the upstream backend")
    raise ParamsError(PARAMS, "sid.method", f"{p.method!r} has no upstream builder (shipped: use sid.backend: native)")


def generate_indices_plus(p: SidParams, python: str, root: Path, category: str, dim: int, ckpt: Path,
                          device: str) -> Command:
    """rq/generate_indices_plus.py: writes {dirname(data_path)}/{category}.index.json (1-based + dedup level)."""
    return Command([python, "generate_indices_plus.py", "--data_path", _abs(embeddings_file(root, category)),
                    "--ckpt_path", _abs(ckpt), "--num_emb_list", *[str(p.codebook_size)] * p.levels,
                    "--e_dim", str(dim), "--device", device], cwd="rq")


def sid_output(p: SidParams, root: Path, category: str) -> Path:
    if p.method == "rqkmeans":
        return root / category / f"{category}.faiss-rq.index.json"  # not the index.json convert expects (H11)
    return root / f"{category}.index.json"


def sft(p: SftParams, python: str, base_model: Path, files: dict[str, Path], out_dir: Path, category: str) -> Command:
    """sft.py under torchrun (§1.5). Upstream's global batch = batch_size; each rank takes micro_batch_size and
    accumulates batch_size / micro / world_size, so both are derived from the native knobs."""
    need_category(category, "sft.backend")
    world = p.num_processes
    return Command([python, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(world), "sft.py",
                    "--base_model", _abs(base_model), "--train_file", _abs(files["train"]),
                    "--eval_file", _abs(files["valid"]), "--output_dir", _abs(out_dir), "--sample", "-1",
                    "--seed", str(p.seed), "--batch_size", str(p.batch_size * p.gradient_accumulation_steps * world),
                    "--micro_batch_size", str(p.batch_size), "--num_epochs", str(p.epochs),
                    "--learning_rate", str(p.learning_rate), "--cutoff_len", str(p.max_length),
                    "--category", category, "--sid_index_path", _abs(files["index"]),
                    "--item_meta_path", _abs(files["item"]), "--freeze_LLM", "False",
                    "--train_from_scratch", "False"], env={"NCCL_IB_DISABLE": "1"})


def rl(p: RlParams, python: str, sft_model: Path, files: dict[str, Path], out_dir: Path, category: str,
       zero2_config: Path | None) -> Command:
    """rl.py under accelerate launch with rl.sh's fixed choices (§1.6): beam-search groups, no test decode
    during training (H3), the reward and KL from params."""
    need_category(category, "rl.backend")
    launch = [python, "-m", "accelerate.commands.launch", "--num_processes", str(p.num_processes)]
    if zero2_config is not None:
        launch += ["--config_file", _abs(zero2_config)]
    return Command([*launch, "rl.py", "--model_path", _abs(sft_model), "--seed", str(p.seed),
                    "--train_file", _abs(files["train"]), "--eval_file", _abs(files["valid"]),
                    "--info_file", _abs(files["info"]), "--category", category,
                    "--train_batch_size", str(p.prompts_per_step * p.num_generations), "--eval_batch_size", "128",
                    "--gradient_accumulation_steps", str(p.gradient_accumulation_steps),
                    "--num_train_epochs", str(p.epochs), "--learning_rate", str(p.learning_rate),
                    "--beta", str(p.beta), "--num_generations", str(p.num_generations), "--temperature", "1.0",
                    "--beam_search", "True", "--test_during_training", "False",
                    "--sync_ref_model", _flag(p.sync_ref_model), "--reward_type", p.reward, "--eval_step", "0.0999",
                    "--output_dir", _abs(out_dir), "--sid_index_path", _abs(files["index"]),
                    "--item_meta_path", _abs(files["item"])])


def evaluate_shard(p: EvaluateParams, python: str, model_dir: Path, info: Path, category: str, shard_csv: Path,
                   result_json: Path, gpu: int | None) -> Command:
    """One evaluate.py shard as evaluate.sh runs it, minus the two flags it does not accept (H6). An exit
    code of 2 is still tolerated, but only once the caller has found the result JSON."""
    return Command([python, "-u", "evaluate.py", "--base_model", _abs(model_dir), "--info_file", _abs(info),
                    "--category", category, "--test_data_path", _abs(shard_csv),
                    "--result_json_data", _abs(result_json), "--batch_size", str(p.batch_size),
                    "--num_beams", str(p.num_beams), "--max_new_tokens", "256", "--length_penalty", "0.0"],
                   env={"CUDA_VISIBLE_DEVICES": str(gpu)} if gpu is not None else {}, accept_exit=(0, 2))


def calc(python: str, result_json: Path, info: Path) -> Command:
    """calc.py prints HR/NDCG and CC to stdout only (§1.7): the log is what gets parsed."""
    return Command([python, "calc.py", "--path", _abs(result_json), "--item_path", _abs(info)])


def export_prompts(python: str, model_dir: Path, test_csv: Path, category: str, out: Path) -> Command:
    """This project's exporter, run by upstream's interpreter: upstream's own EvalSidDataset renders the
    evaluation prompts (token ids), so the native decoder can score an upstream model on its own prompts."""
    script = Path(__file__).with_name("export_prompts.py")
    return Command([python, _abs(script), "--model", _abs(model_dir), "--test-csv", _abs(test_csv),
                    "--category", category, "--out", _abs(out)])
