"""The ``harness`` command: one sub-command per pipeline stage, each reading its own params section."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console

from harness.errors import HarnessError
from harness.params import (
    DEFAULT_PARAMS,
    EmbedParams,
    RqvaeParams,
    SidParams,
    load_section,
)
from harness.sid.registry import SID_METHODS

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="minionerec-audit: run and audit MiniOneRec reproductions.")
err = Console(stderr=True)
out = Console()

ParamsOpt = typer.Option(DEFAULT_PARAMS, "--params", help="params.yaml to read this stage's section from")
UnpinnedOpt = typer.Option(False, "--allow-unpinned",
                           help="backend upstream: run an upstream/ checkout that is not the pinned commit or has "
                                "local changes (also MINIONEREC_ALLOW_UNPINNED=1); outputs record the commit")


def _path(flag: str, what: str):
    """An artifact path option: required, because dvc.yaml's cmd lines are the one place that names them."""
    return typer.Option(..., flag, help=what)


def _run(fn):
    from harness.console import quiet_libraries

    quiet_libraries()
    try:
        return fn()
    except HarnessError as e:
        err.print(f"[bold red]error:[/] {e}", markup=True, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


@app.command()
def data(out_dir: Path = _path("--out", "the canonical dataset folder to write"), params: Path = ParamsOpt,
         allow_unpinned: bool = UnpinnedOpt) -> None:
    """Build the canonical dataset (synthetic generator, an upstream-format data dir, or upstream's preprocessing)."""
    from harness.upstream import backends

    ds = _run(lambda: backends.run("data", load_section("data", params), out_dir, allow_unpinned=allow_unpinned))
    out.print(f"data: {len(ds.items)} items, {len(ds.interactions)} samples -> {out_dir}")


@app.command()
def embed(dataset_dir: Path = _path("--dataset", "the canonical dataset"),
          out_dir: Path = _path("--out", "where embeddings.npy and meta.json go"), params: Path = ParamsOpt,
          allow_unpinned: bool = UnpinnedOpt) -> None:
    """Embed every item's text once (cached by model files, settings and texts)."""
    from harness.upstream import backends

    m = _run(lambda: backends.run("embed", load_section("embed", params), dataset_dir, out_dir,
                                  allow_unpinned=allow_unpinned))
    out.print(f"embed: {m['items']} items × {m['dim']} dims ({m['source']}) -> {out_dir}")


@app.command()
def sid(dataset_dir: Path = _path("--dataset", "the canonical dataset"),
        embed_dir: Path = _path("--embed", "the embed stage's folder"),
        out_dir: Path = _path("--out", "where index.json, summary.json and the upstream export go"),
        params: Path = ParamsOpt, allow_unpinned: bool = UnpinnedOpt) -> None:
    """Assign semantic IDs to items (a registered builder, or the shipped index) and compare builders."""
    from harness.upstream import backends

    s = _run(lambda: backends.run("sid", load_section("sid", params), dataset_dir, embed_dir, out_dir,
                                  allow_unpinned=allow_unpinned))
    out.print(f"sid: {s['unique_sids']} distinct SIDs for {s['items']} items ({s['colliding_items']} colliding)")
    from tabulate import tabulate

    cols = ["method", "unique_share", "collision_groups", "largest_group", "codes_used_per_level",
            "perplexity_per_level", "nmi_level0_category"]
    print(tabulate([[("* " if r["selected"] else "") + r["method"], *(r[c] for c in cols[1:])]
                    for r in s["comparison"]], headers=cols))  # plain print: a table must not be re-wrapped


@app.command("build-sids")
def build_sids_cmd(
    item_json: Path = typer.Option(..., "--item-json", help="upstream-format CAT.item.json"),
    method: str = typer.Option(..., "--method", help=" | ".join(SID_METHODS)),
    out_dir: Path = typer.Option(..., "--out", help="output directory (only our files in it are replaced)"),
    levels: int = typer.Option(SidParams.model_fields["levels"].default, "--levels", min=1, max=8),
    codebook: int = typer.Option(SidParams.model_fields["codebook_size"].default, "--codebook", min=2),
    seed: int = typer.Option(SidParams.model_fields["seed"].default, "--seed"),
    iters: int = typer.Option(SidParams.model_fields["kmeans_iters"].default, "--iters", min=1,
                              help="k-means iterations per level"),
    epochs: int | None = typer.Option(None, "--epochs", min=1,
                                      help="rqvae / rqkmeans-plus training epochs (default: the CPU budget, "
                                           f"{RqvaeParams.model_fields['epochs'].default})"),
    embeddings: Path | None = typer.Option(None, "--embeddings", help="use this upstream-layout .npy (row i = item i)"),
    embed_model: str = typer.Option(EmbedParams.model_fields["model"].default, "--embed-model",
                                    help="minilm, or a local encoder directory"),
    pooling: str = typer.Option(EmbedParams.model_fields["pooling"].default, "--pooling", help="mean | last | cls"),
) -> None:
    """Build SIDs for an item file with one method; writes index.json, the info txt and sid_stats.json."""
    from pydantic import ValidationError

    from harness.params import EmbedParams, SidParams
    from harness.sid.build import build_sids

    train = {"epochs": epochs} if epochs else {}
    try:
        sid_p = SidParams(method=method, levels=levels, codebook_size=codebook, seed=seed, kmeans_iters=iters,
                          rqvae=train, rqkmeans_plus=train)
        embed_p = EmbedParams(model=embed_model, pooling=pooling, npy=str(embeddings) if embeddings else None)
    except ValidationError as e:
        first = e.errors()[0]
        err.print(f"error: --{first['loc'][0]} {first.get('input')!r}: {first['msg']}", highlight=False,
                  soft_wrap=True)
        raise typer.Exit(2) from None
    s = _run(lambda: build_sids(item_json, out_dir, sid_p, embed_p))
    print(f"{method}: {s['unique_sids']} unique SIDs for {s['items']} items ({s['colliding_items']} colliding), "
          f"codes used per level {s['codes_used_per_level']}, lengths {s['sid_length_distribution']}, "
          f"built in {s['build_seconds']} s (embedding {s['embed_seconds']} s) -> {out_dir}")


def _launched(stage: str, cli_args: list[str], params: Path, section) -> bool:
    """Runs ``harness <cli_args>`` under `accelerate launch` when the stage's params ask for several processes;
    True if it did."""
    from harness.launch import relaunch_if_needed

    code = _run(lambda: relaunch_if_needed(stage, cli_args, params, section.num_processes,
                                           getattr(section, "distributed", "ddp")))
    if code is None:
        return False
    if code:
        err.print(f"error: {stage}: the launched processes failed (exit {code})")
        raise typer.Exit(code)
    return True


@app.command()
def sft(dataset_dir: Path = _path("--dataset", "the canonical dataset"), sid_dir: Path = _path("--sid", "the sid stage's folder"),
        out_dir: Path = _path("--out", "where the fine-tuned model goes"), params: Path = ParamsOpt,
        allow_unpinned: bool = UnpinnedOpt) -> None:
    """Supervised fine-tuning on the task mixture (sft.num_processes > 1: under accelerate launch)."""
    from harness.upstream import backends

    p = _run(lambda: load_section("sft", params))
    args = ["sft", "--dataset", str(dataset_dir), "--sid", str(sid_dir), "--out", str(out_dir)]
    if backends.backend("sft", p) == "native" and _launched("sft", args, params, p):
        return
    log = _run(lambda: backends.run("sft", p, dataset_dir, sid_dir, out_dir, allow_unpinned=allow_unpinned))
    if log is not None:  # None on the other ranks of a launched run
        out.print(f"sft: {log['global_steps']} steps, train loss {log['train_loss']:.4f}")


@app.command()
def rl(dataset_dir: Path = _path("--dataset", "the canonical dataset"), sid_dir: Path = _path("--sid", "the sid stage's folder"),
       sft_dir: Path = _path("--sft", "the SFT model to start from"), out_dir: Path = _path("--out", "where the RL model goes"),
       params: Path = ParamsOpt, allow_unpinned: bool = UnpinnedOpt) -> None:
    """GRPO on the SFT model with constrained-beam groups and a rank-aware reward (rl.enabled: false skips it)."""
    from harness.upstream import backends

    p = _run(lambda: load_section("rl", params))
    args = ["rl", "--dataset", str(dataset_dir), "--sid", str(sid_dir), "--sft", str(sft_dir), "--out", str(out_dir)]
    if p.enabled and backends.backend("rl", p) == "native" and _launched("rl", args, params, p):
        return
    log = _run(lambda: backends.run("rl", p, dataset_dir, sid_dir, sft_dir, out_dir, allow_unpinned=allow_unpinned))
    if log is None:
        return
    if log["enabled"]:
        out.print(f"rl: {log['global_steps']} steps on {log['train_prompts']} prompts, reward ({log['reward']}) "
                  f"{log['mean_reward_first_steps']:.4f} in the first steps -> {log['mean_reward_last_steps']:.4f} "
                  "in the last")
    else:
        out.print("rl: disabled (rl.enabled: false); evaluate scores the SFT model only")


@app.command()
def evaluate(
    model: str = typer.Option(..., "--model", help="sft | rl: which model this is (its row in the results)"),
    dataset_dir: Path = _path("--dataset", "the canonical dataset"),
    sid_dir: Path = _path("--sid", "the sid stage's folder"),
    model_dir: Path = _path("--model-dir", "the model folder to score"),
    out_dir: Path = _path("--out", "where scores.json and predictions.json go"),
    params: Path = ParamsOpt,
    allow_unpinned: bool = UnpinnedOpt,
) -> None:
    """Constrained beam search on the test split for one model (evaluate.num_processes > 1: sharded)."""
    from harness.results import MODELS
    from harness.upstream import backends

    if model not in MODELS:
        err.print(f"error: --model {model!r}: expected one of {', '.join(MODELS)}")
        raise typer.Exit(2)
    p = _run(lambda: load_section("evaluate", params))
    has_model = (model_dir / "config.json").is_file()  # nothing to launch for a skipped stage
    launched_args = (["evaluate", "--model", model, "--dataset", str(dataset_dir), "--sid", str(sid_dir),
                      "--model-dir", str(model_dir), "--out", str(out_dir)]
                     + (["--allow-unpinned"] if allow_unpinned else []))
    if has_model and p.backend != "upstream" and _launched("evaluate", launched_args, params, p):
        return  # backend upstream shards itself, one evaluate.py per GPU
    s = _run(lambda: backends.run("evaluate", p, model, dataset_dir, sid_dir, model_dir, out_dir,
                                  allow_unpinned=allow_unpinned))
    if s is None:
        return
    if not s["scored"]:
        out.print(f"evaluate: {model} not scored ({model_dir} holds no model)")
        return
    from tabulate import tabulate

    from harness.report.model_tables import block_tables

    blocks = [(f"{model} ({s.get('evaluator', 'native')})", s["metrics"])]
    if "upstream" in s:
        blocks.append((f"{model} (upstream)", s["upstream"]["metrics"]))
    for header, rows in block_tables(blocks).values():
        print(tabulate(rows, headers=header, disable_numparse=True), end="\n\n")


@app.command()
def metrics(dataset_dir: Path = _path("--dataset", "the canonical dataset"),
            sid_dir: Path = _path("--sid", "the sid stage's folder"),
            eval_dir: Path = _path("--eval", "the evaluate stages' folder (one sub-folder per model)"),
            out_path: Path = _path("--out", "the metrics JSON to write"), params: Path = ParamsOpt) -> None:
    """Merge the models' scores with the baselines into reports/metrics.json and print the tables."""
    from tabulate import tabulate

    from harness.evaluate.metrics_stage import run_metrics
    from harness.report.model_tables import metric_tables

    m = _run(lambda: run_metrics(load_section("evaluate", params), dataset_dir, sid_dir, eval_dir, out_path))
    for header, rows in metric_tables(m).values():
        print(tabulate(rows, headers=header, disable_numparse=True), end="\n\n")


@app.command()
def audit(
    upstream_data: Path | None = typer.Option(None, "--upstream-data", help="audit an upstream-format data dir"),
    category: str | None = typer.Option(None, "--category", help="category name inside --upstream-data"),
    model: Path | None = typer.Option(None, "--model", help="model dir whose generation_config.json to audit"),
    dataset_dir: Path | None = typer.Option(None, "--dataset", help="the pipeline's canonical dataset (with --sid)"),
    sid_dir: Path | None = typer.Option(None, "--sid", help="the pipeline's sid stage folder (with --dataset)"),
    out_dir: Path = _path("--out", "where data.json, sid.json, ... go"),
    codebook_size: int | None = typer.Option(None, "--codebook-size", help="codes per level (default: inferred)"),
    fail_on: str = typer.Option("error", "--fail-on",
                                help="exit 1, after writing every output, when a finding of this severity or worse "
                                     "exists (error | warning | never: always exit 0, as the dvc stage does)"),
) -> None:
    """Audit data, SIDs and generation settings: an upstream-format dir, a model, or (--dataset, --sid, --model)
    the pipeline's own artifacts (the dvc stage). Exit 0: no finding at --fail-on or worse; 1: there are (one
    line each on stderr, with the file:line of its first rows); 2: unreadable or malformed input."""
    from harness.audit.findings import FAIL_ON, failing, finding_line
    from harness.audit.stage import audit_model, audit_upstream_dir, run_audit

    if fail_on not in FAIL_ON:
        err.print(f"error: --fail-on {fail_on!r}: expected one of {', '.join(FAIL_ON)}", highlight=False)
        raise typer.Exit(2)

    def go() -> dict:
        if upstream_data is not None:
            if not category:
                raise HarnessError("--upstream-data needs --category (e.g. Industrial_and_Scientific)")
            return audit_upstream_dir(upstream_data, category, out_dir, model, codebook_size)
        if dataset_dir is not None or sid_dir is not None:
            if dataset_dir is None or sid_dir is None or model is None:
                raise HarnessError("the pipeline audit needs --dataset, --sid and --model (see dvc.yaml's audit stage)")
            return run_audit(dataset_dir, sid_dir, model, out_dir)
        if model is not None:
            return audit_model(model, out_dir)
        raise HarnessError("nothing to audit: give --upstream-data DIR --category CAT, --model DIR, or the "
                           "pipeline's --dataset, --sid and --model")

    result = _run(go)
    print(result["summary"])
    bad = failing(result["findings"], fail_on)
    if bad:
        for f in bad:
            print(finding_line(f), file=sys.stderr)
        print(f"audit: {len(bad)} finding(s) at severity '{fail_on}' or worse (outputs written to {out_dir}; "
              "--fail-on never reports without failing)", file=sys.stderr)
        raise typer.Exit(1)


@app.command()
def score(
    predictions: Path = typer.Option(..., "--predictions", help="result JSON in upstream's format"),
    info: Path = typer.Option(..., "--info", help="upstream info file (SID<TAB>title<TAB>item_id)"),
    out_path: Path = typer.Option(..., "--out", help="where to write the metrics JSON"),
    calc_stdout: Path | None = typer.Option(None, "--calc-stdout",
                                            help="what upstream calc.py printed for the same files: must agree"),
) -> None:
    """Score an upstream-format result JSON exactly as upstream's calc.py does, plus collision-aware metrics."""
    from tabulate import tabulate

    from harness.evaluate.score import read_info_sids, read_predictions, score_records
    from harness.io import read_utf8, write_json

    def go() -> dict:
        m = score_records(read_predictions(predictions), read_info_sids(info))
        if calc_stdout is not None:
            from harness.upstream.calc_output import disagreements, parse_calc_stdout

            problems = disagreements(parse_calc_stdout(read_utf8(calc_stdout), calc_stdout), m)
            if problems:
                raise HarnessError(f"{calc_stdout}: calc.py's printed figures disagree with harness score on "
                                   f"{predictions}: " + "; ".join(problems))
            m["calc_py_agrees"] = True
        write_json(out_path, m)
        return m

    m = _run(go)
    from harness.metrics import cutoffs, key

    names = ("hr", "ndcg", "collision_aware_hr", "collision_aware_ndcg")
    rows = [[f"@{k}", *(m[key(name, k)] for name in names)] for k in cutoffs(m)]
    print(tabulate(rows, headers=["K", "HR", "NDCG", "collision-aware HR", "collision-aware NDCG"], floatfmt=".6f"))
    print(f"rows {m['rows']}, beams {m['beams']}, illegal (calc.py CC) {m['illegal_count']}, "
          f"legality {m['legality_rate']:.6f}, rows with repeated beams {m['duplicate_rows']} -> {out_path}")


@app.command()
def report(metrics_path: Path = _path("--metrics", "the metrics stage's JSON"),
           dataset_dir: Path = _path("--dataset", "the canonical dataset"), sid_dir: Path = _path("--sid", "the sid stage's folder"),
           embed_dir: Path = _path("--embed", "the embed stage's folder"), sft_dir: Path = _path("--sft", "the SFT model"),
           rl_dir: Path = _path("--rl", "the RL model folder"), audit_dir: Path = _path("--audit", "the audit stage's folder"),
           eval_dir: Path = _path("--eval", "the evaluate stages' folder"),
           out_dir: Path = _path("--out", "where report.md, report.html and plots/ go"), params: Path = ParamsOpt) -> None:
    """Render report.md and report.html from the pipeline's artifacts."""
    from harness.report.stage import run_report

    ctx = _run(lambda: run_report(load_section("report", params), metrics_path, dataset_dir, sid_dir, embed_dir,
                                  sft_dir, rl_dir, audit_dir, eval_dir, out_dir))
    out.print(ctx["verdict"], highlight=False)


@app.command()
def recommend(
    model: Path = typer.Option(Path("models/sft"), "--model", help="model dir (models/sft, models/rl, ...)"),
    history: str = typer.Option(..., "--history", help="'title or SID; title or SID; ...', oldest first"),
    k: int = typer.Option(10, "-k", "--k", help="how many recommendations"),
    dataset: Path = typer.Option(Path("data/dataset"), "--dataset", help="canonical dataset (titles)"),
    sids: Path = typer.Option(Path("data/sid"), "--sids", help="folder with the index.json the model was trained on"),
) -> None:
    """Top-K next items for a history: SIDs, titles (all items sharing a SID) and beam scores."""
    from tabulate import tabulate

    from harness.demo import Recommender

    def go():
        rec = Recommender(model, dataset, sids)
        return rec.recommend(rec.parse_history(history), k)

    rows = _run(go)
    print(tabulate([[r["rank"], r["sid"], " / ".join(r["titles"]), f"{r['score']:.3f}"] for r in rows],
                   headers=["#", "SID", "title(s)", "score (log-prob)"], disable_numparse=True))


@app.command()
def demo(
    model: list[Path] = typer.Option([Path("models/sft")], "--model",
                                     help="model dir; repeat to compare models side by side (--model models/sft "
                                          "--model models/rl)"),
    label: list[str] = typer.Option([], "--label", help="one name per --model (default: the folder names)"),
    host: str = typer.Option("127.0.0.1", "--host", help="loopback only: 127.0.0.1, localhost or ::1"),
    port: int = typer.Option(8000, "--port"),
    k: int = typer.Option(10, "-k", "--k", help="default number of recommendations"),
    dataset: Path = typer.Option(Path("data/dataset"), "--dataset", help="canonical dataset (titles, test rows)"),
    sids: Path = typer.Option(Path("data/sid"), "--sids",
                              help="folder with the index.json the models were trained on"),
) -> None:
    """A local web page: pick a test user or type a history, see each model's Top-K side by side (Ctrl-C stops it)."""
    from harness.demo import Comparison
    from harness.demo_page import serve

    server = _run(lambda: serve(Comparison.load(model, label, dataset, sids), host, port, k))
    names = ", ".join(str(m) for m in model)
    out.print(f"demo: http://{host}:{server.server_address[1]}/ (models {names}); Ctrl-C to stop", highlight=False)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@app.command()
def provenance(as_json: bool = typer.Option(False, "--json", help="print the record as JSON")) -> None:
    """Upstream pin vs checkout, the harness commit, dirty states, package versions, Python and hardware."""
    from harness.io import dumps_json
    from harness.provenance import provenance as record

    rec = _run(record)
    if as_json:
        print(dumps_json(rec), end="")
        return
    from tabulate import tabulate

    flat = [(k, v) for k, v in rec.items() if not isinstance(v, dict)]
    flat += [(f"packages.{k}", v) for k, v in rec["packages"].items()]
    flat += [(f"hardware.{k}", v) for k, v in rec["hardware"].items()]
    print(tabulate(flat, tablefmt="plain"))


@app.command("pull-model")
def pull_model(
    repo_id: str = typer.Argument(..., help="hub model id, org/name (e.g. Qwen/Qwen2.5-1.5B-Instruct)"),
    revision: str = typer.Option("main", "--revision", help="branch, tag or commit; the download is pinned to its "
                                                            "commit sha"),
    dest: Path = typer.Option(Path("base-models"), "--dest", help="where <org>__<name>-<commit[:12]>/ goes"),
    endpoint: str | None = typer.Option(None, "--endpoint", help="hub URL (default: $HF_ENDPOINT, else "
                                                                 "https://huggingface.co)"),
) -> None:
    """Download a base model (safetensors weights, config, tokenizer) pinned to a commit, with a manifest.json:
    the only command that goes online. Pickled weights and remote code are refused."""
    from harness.pull_model import MANIFEST, human_size, pull

    try:
        r = _run(lambda: pull(repo_id, revision, dest, endpoint, console=out))
    except KeyboardInterrupt:
        err.print("pull-model: interrupted; nothing was written")
        raise typer.Exit(130) from None
    if r.already:
        out.print(f"already pulled: {r.path} (commit {r.commit}, all {len(r.files)} files match its {MANIFEST})",
                  highlight=False, soft_wrap=True)
    else:
        out.print(f"{len(r.files)} files, {human_size(sum(f['size'] for f in r.files.values()))} -> {r.path}",
                  highlight=False, soft_wrap=True)
    out.print(f"{MANIFEST} sha256 {r.manifest_sha256}", highlight=False, soft_wrap=True)


profile_app = typer.Typer(no_args_is_help=True, add_completion=False,
                          help="Hardware-sized recipes in profiles/: list them, show one, or select and run one.")
app.add_typer(profile_app, name="profile")


@profile_app.command("list")
def profile_list() -> None:
    """The shipped profiles, with the hardware each is sized for."""
    from tabulate import tabulate

    from harness.profiles import available, load_profile

    rows = _run(lambda: [[n, (pr := load_profile(n)).hardware, pr.description] for n in available()])
    print(tabulate(rows, headers=["profile", "hardware", "what it runs"]))


@profile_app.command("show")
def profile_show(name: str = typer.Argument(..., help="a name from `harness profile list`")) -> None:
    """The `dvc exp run` command that selects the profile from the current params.yaml (nothing is run)."""
    import shlex

    print(shlex.join(_run(lambda: _profile_command(name))))


@profile_app.command("run")
def profile_run(name: str = typer.Argument(..., help="a name from `harness profile list`")) -> None:
    """Select a profile and run the pipeline: `dvc exp run -n NAME -S ...` in the workspace. params.yaml then
    holds the profile (committed params.yaml + its overrides); `dvc exp show` lists the run."""
    import subprocess

    from harness.profiles import check_no_interrupted_experiment

    _run(check_no_interrupted_experiment)
    cmd = _run(lambda: _profile_command(name))
    err.print(f"profile {name}: {cmd.count('-S')} params set, running dvc exp run", highlight=False)
    raise typer.Exit(subprocess.run(cmd).returncode)  # noqa: S603 - an argument list, no shell


def _profile_command(name: str) -> list[str]:
    from harness.params import DEFAULT_PARAMS, load_yaml
    from harness.profiles import committed_params, exp_command, load_profile

    return exp_command(load_profile(name), committed_params(), load_yaml(Path(DEFAULT_PARAMS)))


@app.command("record")
def record_cmd(
    name: str | None = typer.Argument(None, help="a profile from `harness profile list` (e.g. industrial-cpu)"),
    data_dir: str | None = typer.Option(None, "--data-dir",
                                        help="an upstream-format data dir to read instead of the profile's "
                                             "data.upstream.dir (its files are recorded by md5)"),
    force: bool = typer.Option(False, "--force", help="run every stage, none restored from DVC's run cache"),
    table_only: bool = typer.Option(False, "--table-only", help="only regenerate docs/reproductions/README.md"),
) -> None:
    """Run a profile as an experiment and keep it in docs/reproductions/NAME/: report, metrics, params changed,
    dvc.lock, commit, upstream pin, base model, data and predictions md5s, machine and times (clean checkout)."""
    if table_only:
        records_cmd()
        return
    if name is None:
        err.print("error: harness record NAME: which profile to record (`harness profile list`)")
        raise typer.Exit(2)
    from harness.record import record

    _run(lambda: record(name, Path("."), data_dir, force, say=lambda line: print(line, flush=True)))


@app.command("records")
def records_cmd() -> None:
    """Regenerate docs/reproductions/README.md from the records and list the stale ones (stage and reason)."""
    from harness.records import stale_stages, write_index

    root = Path(".").resolve()
    index, recs = _run(lambda: write_index(root))
    for folder, rec in recs:
        stale = _run(lambda rec=rec: stale_stages(rec, root))
        state = "matches today's code and params" if not stale else "STALE"
        print(f"{rec.name}: {state}")
        for stage, reasons in stale.items():
            print(f"  {stage}: {'; '.join(reasons)}")
    print(f"{len(recs)} record(s) -> {index.relative_to(root)}")


def main() -> None:  # pragma: no cover - console entry
    app(sys.argv[1:])


if __name__ == "__main__":  # pragma: no cover
    main()
