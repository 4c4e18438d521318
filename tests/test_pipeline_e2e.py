"""One real `dvc repro` of the whole pipeline on a CI-sized profile, then the DVC workflows a user relies on."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, stage_args

pytestmark = pytest.mark.e2e

TINY = {
    "data": {"synthetic": {"n_items": 80, "n_users": 200}},
    "sid": {"codebook_size": 8, "rqvae": {"epochs": 40, "eval_every": 10},
            "rqkmeans_plus": {"epochs": 40, "eval_every": 10}},
    "sft": {"epochs": 2, "model": {"hidden_size": 32, "num_layers": 1, "intermediate_size": 64,
                                   "tokenizer_vocab_size": 300}},
    "rl": {"max_prompts": 8, "num_generations": 4, "prompts_per_step": 2},
    "evaluate": {"num_beams": 20, "max_rows": 60},
}


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(base.get(k, {}), v) if isinstance(v, dict) else v
    return out


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("project")
    for name in ("harness", "report_templates", "checks", "configs"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "dvc.yaml", root)
    shutil.copy(REPO / "paper_targets.yaml", root)
    params = _merge(yaml.safe_load((REPO / "params.yaml").read_text()), TINY)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(root, "git", "init", "-q")
    sh(root, "dvc", "init", "-q")
    sh(root, "dvc", "config", "core.analytics", "false")
    sh(root, "git", "add", "-A")
    sh(root, "git", "commit", "-qm", "tiny pipeline")
    return root


def sh(cwd: Path, *cmd: str) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"{' '.join(cmd)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout + r.stderr


@pytest.fixture(scope="module")
def reproduced(project) -> Path:
    sh(project, "dvc", "repro")
    return project


def test_repro_writes_every_stage_output(reproduced):
    for path in ("data/dataset/items.jsonl", "data/dataset/interactions.jsonl", "data/embed/embeddings.npy",
                 "data/embed/meta.json", "data/sid/index.json", "data/sid/checkpoints/rqvae.safetensors",
                 "data/sid/upstream/info/synthetic_5_2016-10-2018-11.txt", "models/sft/config.json", "models/rl/config.json",
                 "models/sft/tokenizer.json", "reports/eval/sft/predictions.json", "reports/eval/rl/predictions.json",
                 "reports/eval/sft/scores.json", "reports/metrics.json",
                 "reports/report.md", "reports/report.html", "reports/audit/data.json", "reports/audit/sid.json",
                 "reports/audit/generation.json", "reports/audit/findings.json", "reports/audit/summary.md"):
        assert (reproduced / path).is_file(), path


def test_metrics_schema_and_predictions(reproduced):
    m = json.loads((reproduced / "reports/metrics.json").read_text())
    ks = (1, 3, 5, 10, 20)
    for block in (m["sft"], m["rl"], m["baselines"]["most_popular"], m["baselines"]["repeat_last"]):
        for k in ks:
            assert 0.0 <= block[f"ndcg@{k}"] <= block[f"hr@{k}"] <= 1.0
        assert "hr@50" not in block  # cut-offs above the beam count are not reported
        assert 0.0 <= block["legality_rate"] <= 1.0
    assert m["sft"]["legality_rate"] == 1.0 and m["sft"]["illegal_count"] == 0
    assert m["rl"]["legality_rate"] == 1.0
    assert m["protocol"]["rows"] == 60 and m["protocol"]["num_beams"] == 20
    assert m["protocol"]["generation"]["do_sample"] is False
    from harness.results import SCHEMAS

    for name, path in (("metrics.json", "reports/metrics.json"), ("scores.json", "reports/eval/sft/scores.json"),
                       ("scores.json", "reports/eval/rl/scores.json"),
                       ("unconstrained.json", "reports/eval/sft/unconstrained.json"),
                       ("exact.json", "reports/eval/sft/exact.json"), ("exact.json", "reports/eval/rl/exact.json"),
                       ("findings.json", "reports/audit/findings.json")):
        SCHEMAS[name].validate_python(json.loads((reproduced / path).read_text()))  # every key is in the contract
    preds = json.loads((reproduced / "reports/eval/sft/predictions.json").read_text())
    assert len(preds) == 60
    assert set(preds[0]) == {"input", "output", "predict"} and len(preds[0]["predict"]) == 20
    assert preds[0]["output"].endswith("\n")


def test_report_shows_model_baseline_and_audit(reproduced):
    html = (reproduced / "reports/report.html").read_text()
    md = (reproduced / "reports/report.md").read_text()
    for text in (html, md):
        assert "SFT (constrained beams)" in text and "SFT + RL (GRPO)" in text and "Most popular" in text
        assert "HR@10" in text and "After GRPO: HR@10" in text
        assert "Audit" in text and "collision-aware" in text
        # the SID builders side by side with the source's shipped index
        for method in ("rqkmeans (used)", "rqkmeans-constrained", "rqvae", "rqkmeans-plus", "shipped"):
            assert method in text, method
        assert "NMI level-1 vs category" in text


def test_exact_ranking_beside_the_beams_and_beyond_accuracy(reproduced):
    """The report's exact-vs-beam and beyond-accuracy sections, for both models and every baseline; and on the
    default's own SFT model, beam search with as many beams as the catalogue has SIDs prunes nothing, so it must
    return the exact ranking, in order and score for score."""
    import torch

    from harness.decode.constrained import catalogue_trie, constrained_beam_search
    from harness.decode.exact import PrefixLevels, exact_scores
    from harness.evaluate.baselines import BASELINES
    from harness.evaluate.protocol import TestProtocol
    from harness.params import EvaluateParams
    from harness.train.model import load_model

    m = json.loads((reproduced / "reports/metrics.json").read_text())
    assert set(m["exact"]) == {"sft", "rl"} and set(m["beyond_accuracy"]) == {"sft", "rl", *BASELINES}
    for e in m["exact"].values():
        assert e["rows"] == 60 and e["exact"]["hr@50"] >= e["exact"]["hr@20"] >= e["beam"]["hr@20"] - 1e-9
        assert 0 <= e["search_errors"] <= e["rows"] and 0 < e["beam_recall"]["beam_recall@10"] <= 1
    ranks = json.loads((reproduced / "reports/eval/sft/exact.json").read_text())["target_rank"]
    assert m["exact"]["sft"]["exact"]["hr@10"] == sum(r <= 10 for r in ranks) / len(ranks)
    md = (reproduced / "reports/report.md").read_text()
    for text in ("## Exact ranking vs beam search", "beam recall@10", "search errors", "## Beyond accuracy",
                 "coverage@10", "long-tail share@10", "test targets", "SASRec", "Item-to-item transition"):
        assert text in md, text

    t = TestProtocol(EvaluateParams(), reproduced / "data/dataset", reproduced / "data/sid")
    lm, tok = load_model(reproduced / "models/sft", torch.device("cpu"), torch.float32)
    sids = list(t.catalogue)
    levels = PrefixLevels.of([tok.convert_tokens_to_ids(t.index[items[0]]) for items in t.catalogue.values()])
    beams = constrained_beam_search(lm, tok, t.prompts[:3], catalogue_trie(tok, t.index, "sft"), len(sids), 3)
    for prompt, r in zip(t.prompts[:3], beams):
        score = exact_scores(lm, tok(prompt, add_special_tokens=False).input_ids, levels, tok.eos_token_id)
        order = torch.argsort(score, descending=True, stable=True)
        assert torch.allclose(torch.tensor(r.scores), score[order], atol=1e-4)
        top = ["".join(tok.convert_ids_to_tokens(b)) for b in r.sequences[:10]]
        assert top == [sids[j] for j in order[:10].tolist()]


def test_report_sections_plots_and_decoding_comparison(reproduced):
    md = (reproduced / "reports/report.md").read_text()
    for section in ("## Reproduced vs paper", "no figures for 'synthetic'", "## Examples", "## SFT vs SFT + RL",
                    "sign test p", "## Constrained vs unconstrained decoding", "## Experiments", "## Provenance",
                    "`dvc.lock`", "sft.seed=0"):
        assert section in md, section
    m = json.loads((reproduced / "reports/metrics.json").read_text())
    d = m["decoding"]["sft"]
    assert d["rows"] == 60 and d["constrained"]["legality_rate"] == 1.0
    assert d["constrained"]["hr@10"] == pytest.approx(
        json.loads((reproduced / "reports/eval/sft/unconstrained.json").read_text())["constrained"]["hr@10"])
    assert m["evaluated_by"]["sft"] == {"evaluator": "native", "upstream_commit": None, "prompts": "harness"}
    for png in ("hr_at_k", "ndcg_at_k", "sid_codes_per_level", "sft_loss", "rl_reward", "popularity_bias",
                "rl_diagnostics"):
        data = (reproduced / f"reports/plots/{png}.png").read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and f"plots/{png}.png" in md
    shown = json.loads(sh(reproduced, "dvc", "plots", "show", "--json"))["data"]
    assert {"HR@K", "NDCG@K", "SFT loss", "RL reward", "RL groups that can teach",
            "reports/plots/hr_at_k.png"} <= set(shown), set(shown)
    rl = json.loads((reproduced / "models/rl/training_log.json").read_text())
    steps = rl["global_steps"]  # TINY: 8 prompts, 2 per step; probe before, at step 8 (never reached), after
    assert [r["step"] for r in rl["probe"]] == [0, steps] and set(rl["probe"][0]) == {"step", "trained", "held_out"}
    # RL's own 8 examples, each (prompt, label) once: fewer when two draws share both, which SID collisions make
    # machine-dependent on TINY's small codebooks; 64 of the train rows whose prompt RL never sees
    from harness.data.schema import read_dataset
    from harness.params import RlParams
    from harness.sid.index import read_index_json
    from harness.train.rl import rl_examples

    ds = read_dataset(reproduced / "data/dataset")
    index = read_index_json(reproduced / "data/sid/index.json", len(ds.items))
    drawn, _ = rl_examples(ds, index, RlParams(**yaml.safe_load((reproduced / "params.yaml").read_text())["rl"]))
    trained = len(dict.fromkeys(zip(drawn["prompt"], drawn["target"])))
    assert len(drawn) == 8 and rl["probe_prompts"] == {"trained": trained, "held_out": 64}
    assert "### RL diagnostics" in md and "groups held the target" in md and "held out HR@10" in md
    assert f"{trained} of the prompts RL trains on, and 64 held-out train rows" in md
    assert not any(p.get("errors") for plot in shown.values() for p in (plot if isinstance(plot, list) else []))


def test_hostile_title_is_text_in_both_reports_and_runs_no_script_in_a_browser(reproduced, tmp_path, request):
    work = tmp_path / "hostile"
    shutil.copytree(reproduced, work, ignore=shutil.ignore_patterns(".dvc", ".git"))
    items = work / "data/dataset/items.jsonl"
    rows = [json.loads(line) for line in items.read_text().splitlines()]
    test_row = next(json.loads(line) for line in (work / "data/dataset/interactions.jsonl").read_text().splitlines()
                    if json.loads(line)["split"] == "test")
    rows[test_row["target"]]["title"] = "<script>document.title='pwned'</script>Evil"
    items.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (work / "params.yaml").write_text((work / "params.yaml").read_text().replace("experiments: true",
                                                                                 "experiments: false"))
    sh(work, "harness", *stage_args("report"))
    html, md = (work / "reports/report.html").read_text(), (work / "reports/report.md").read_text()
    assert "&lt;script&gt;document.title=&#39;pwned&#39;&lt;/script&gt;Evil" in html and "<script>" not in html
    assert "\\<script\\>document.title='pwned'\\</script\\>Evil" in md
    chromium = request.getfixturevalue("chromium")  # skips here on a user's machine, fails in CI, if absent
    dom = subprocess.run([*chromium, "--dump-dom", (work / "reports/report.html").as_uri()], capture_output=True,
                         text=True, timeout=120).stdout
    assert "<title>MiniOneRec reproduction report</title>" in dom and "pwned</title>" not in dom


def test_pipeline_audit_agrees_with_the_sid_stage(reproduced):
    sid = json.loads((reproduced / "reports/audit/sid.json").read_text())
    stage = json.loads((reproduced / "data/sid/summary.json").read_text())
    assert sid["unique_sids"] == stage["unique_sids"] and sid["colliding_items"] == stage["colliding_items"]
    assert sid["codebook_size_per_level"] == [8, 8, 8] and sid["codebook_size_source"] == "given"
    gen = json.loads((reproduced / "reports/audit/generation.json").read_text())
    assert gen["injected"] == {}  # our SFT checkpoint ships no sampling defaults


def test_second_repro_has_nothing_to_do(reproduced):
    out = sh(reproduced, "dvc", "repro")
    assert "Data and pipelines are up to date" in out
    status = sh(reproduced, "dvc", "status")
    assert "up to date" in status


def test_a_forced_rerun_gives_byte_identical_models_predictions_and_metrics(reproduced, tmp_path):
    """Determinism: every stage run again (``dvc repro --force``, in a copy) with the same seeds gives the same
    bytes. (The embed stage's encoder cache may answer for it: its vectors are checked by hash there.)"""
    again = tmp_path / "again"
    shutil.copytree(reproduced, again, symlinks=True)
    out = sh(again, "dvc", "repro", "--force")
    for stage in ("data", "sid", "sft", "rl", "evaluate@sft", "evaluate@rl", "metrics"):
        assert f"Running stage '{stage}'" in out, stage
    for path in ("data/dataset/interactions.jsonl", "data/sid/index.json", "models/sft/model.safetensors",
                 "models/rl/model.safetensors", "reports/eval/sft/predictions.json",
                 "reports/eval/rl/predictions.json", "reports/metrics.json"):
        assert (again / path).read_bytes() == (reproduced / path).read_bytes(), path


def test_one_params_key_reruns_only_the_stages_that_read_it(reproduced):
    params = reproduced / "params.yaml"
    original = params.read_text()
    doc = yaml.safe_load(original)
    doc["evaluate"]["num_beams"] = 10
    params.write_text(yaml.safe_dump(doc, sort_keys=False))
    try:
        changed = set(json.loads(sh(reproduced, "dvc", "status", "--json")))
        assert {"evaluate@sft", "evaluate@rl"} <= changed <= {"evaluate@sft", "evaluate@rl", "metrics"}
        would_run = set(re.findall(r"Running stage '([^']+)'", sh(reproduced, "dvc", "repro", "--dry")))
        assert {"evaluate@sft", "evaluate@rl"} <= would_run
        assert not would_run & {"data", "embed", "sid", "sft", "rl"}
    finally:
        params.write_text(original)
    assert "up to date" in sh(reproduced, "dvc", "status")


def test_a_deleted_or_edited_output_is_detected_and_rebuilt(reproduced):
    metrics = reproduced / "reports/metrics.json"
    before = metrics.read_bytes()
    metrics.unlink()
    assert "deleted" in sh(reproduced, "dvc", "status")
    sh(reproduced, "dvc", "repro")
    assert metrics.read_bytes() == before
    audit = reproduced / "reports/audit/data.json"
    before = audit.read_bytes()
    audit.write_text('{"edited": true}\n')
    assert "modified" in sh(reproduced, "dvc", "status")
    out = sh(reproduced, "dvc", "repro")
    # rebuilt by running the stage, or restored from DVC's run cache: either way the true output is back
    assert ("Running stage 'audit'" in out or "Stage 'audit' is cached" in out) and audit.read_bytes() == before
    assert "up to date" in sh(reproduced, "dvc", "status")


def test_metrics_show(reproduced):
    shown = json.loads(sh(reproduced, "dvc", "metrics", "show", "--json"))
    data = next(iter(shown.values()))["data"]["reports/metrics.json"]["data"]
    assert "hr@10" in data["sft"]


def test_exp_run_with_a_param_override_is_listed(reproduced):
    sh(reproduced, "git", "add", "-A")
    sh(reproduced, "git", "commit", "-qm", "baseline run")
    out = sh(reproduced, "dvc", "exp", "run", "-S", "evaluate.num_beams=10", "-n", "beams10")
    # only the stages downstream of the changed section run again
    assert "Stage 'sft' didn't change, skipping" in out and "Running stage 'evaluate@sft'" in out
    shown = json.loads(sh(reproduced, "dvc", "exp", "show", "--json"))
    exps = [e for entry in shown for ex in (entry.get("experiments") or []) for e in ex["revs"]]
    named = [e for e in exps if e.get("name") == "beams10"]
    assert named, f"experiment not listed: {[e.get('name') for e in exps]}"
    data = named[0]["data"]
    assert data["params"]["params.yaml"]["data"]["evaluate"]["num_beams"] == 10
    assert "hr@10" in data["metrics"]["reports/metrics.json"]["data"]["sft"]


def test_exp_run_switches_the_sid_method_for_the_whole_pipeline(reproduced):
    sh(reproduced, "git", "add", "-A")
    sh(reproduced, "git", "commit", "-qm", "before the sid ablation")
    out = sh(reproduced, "dvc", "exp", "run", "-S", "sid.method=rqkmeans-constrained", "-S", "rl.enabled=false",
             "-n", "constrained")  # RL off: the SFT model shows the whole pipeline took the new index
    assert "Stage 'embed' didn't change, skipping" in out and "Running stage 'sft'" in out
    summary = json.loads((reproduced / "data/sid/summary.json").read_text())
    assert summary["method"] == "rqkmeans-constrained" and summary["unique_share"] == 1.0
    index = json.loads((reproduced / "data/sid/index.json").read_text())
    longest = max(len(t) for t in index.values())
    metrics = json.loads((reproduced / "reports/metrics.json").read_text())
    assert metrics["sft"]["legality_rate"] == 1.0  # variable-length SIDs decode whole (H10)
    audit = json.loads((reproduced / "reports/audit/sid.json").read_text())
    assert audit["colliding_items"] == 0 and audit["levels"] == longest


def test_rl_rollout_groups_are_distinct_catalogue_beams(reproduced):
    from types import SimpleNamespace

    from harness.data.schema import read_dataset
    from harness.decode.constrained import SidTrie
    from harness.params import RlParams
    from harness.sid.index import read_index_json
    from harness.sid.tokens import sid_string
    from harness.train.model import load_model
    from harness.train.rl import make_rollout, rl_examples

    ds = read_dataset(reproduced / "data/dataset")
    index = read_index_json(reproduced / "data/sid/index.json", len(ds.items))
    model, tok = load_model(reproduced / "models/sft")
    trie = SidTrie([tok.convert_tokens_to_ids(index[i]) for i in sorted(index)], tok.eos_token_id)
    prompts = rl_examples(ds, index, RlParams(max_prompts=3))[0]["prompt"]
    trainer = SimpleNamespace(model=model, accelerator=SimpleNamespace(unwrap_model=lambda m: m))
    out = make_rollout(tok, trie, 4)([p for p in prompts for _ in range(4)], trainer)
    assert len(out["completion_ids"]) == 12 and out["beam_rank"] == [0, 1, 2, 3] * 3
    catalogue = {sid_string(t) for t in index.values()}
    for g in range(3):
        sids = ["".join(tok.convert_ids_to_tokens(c[:-1])) for c in out["completion_ids"][4 * g:4 * g + 4]]
        assert len(set(sids)) == 4 and set(sids) <= catalogue  # G distinct, legal SIDs
    assert all(c[-1] == tok.eos_token_id for c in out["completion_ids"])


def test_rl_with_the_rule_reward(reproduced, tmp_path):
    from harness.params import RlParams
    from harness.train.rl import run_rl

    log = run_rl(RlParams(max_prompts=4, num_generations=4, prompts_per_step=1, reward="rule", probe_prompts=4,
                          probe_every=2), reproduced / "data/dataset", reproduced / "data/sid",
                 reproduced / "models/sft", tmp_path / "rl")
    assert log["reward"] == "rule" and log["global_steps"] == 4
    assert [r["step"] for r in log["probe"]] == [0, 2, 4] and log["probe_prompts"] == {"trained": 4, "held_out": 4}
    # every group either holds the target (rewards 1, 0, 0, 0: some variance) or not (all 0: none), so trl's
    # zero-variance share and the target share derived from the rule reward must add up to 1 at every step
    assert len(log["diagnostics"]) == 4
    for d in log["diagnostics"]:
        assert d["zero_std_groups"] + d["target_groups"] == pytest.approx(1.0), d
    # the probe only reads the policy: the same run without it trains the same weights, byte for byte
    run_rl(RlParams(max_prompts=4, num_generations=4, prompts_per_step=1, reward="rule", probe_prompts=0),
           reproduced / "data/dataset", reproduced / "data/sid", reproduced / "models/sft", tmp_path / "rl0")
    assert (tmp_path / "rl0/model.safetensors").read_bytes() == (tmp_path / "rl/model.safetensors").read_bytes()
    logged = {k for h in log["log_history"] for k in h}
    assert "rewards/rule/mean" in logged and not any("ndcg_rule" in k for k in logged)
    assert (tmp_path / "rl" / "config.json").is_file()


def test_exp_run_without_rl_reports_sft_only(reproduced):
    sh(reproduced, "git", "add", "-A")
    sh(reproduced, "git", "commit", "-qm", "before the sft-only run")
    out = sh(reproduced, "dvc", "exp", "run", "-S", "rl.enabled=false", "-n", "sft-only")
    assert "Stage 'sft' didn't change, skipping" in out
    assert "Stage 'evaluate@sft' didn't change, skipping" in out  # foreach: only the RL model is re-scored
    m = json.loads((reproduced / "reports/metrics.json").read_text())
    assert m["rl"] is None and "hr@10" in m["sft"]
    assert not (reproduced / "reports/eval/rl/predictions.json").exists()
    assert json.loads((reproduced / "reports/eval/rl/scores.json").read_text())["scored"] is False
    assert "RL: not run" in (reproduced / "reports/report.md").read_text()


def test_profile_run_selects_a_profile_and_records_the_experiment(reproduced):
    (reproduced / "profiles").mkdir(exist_ok=True)
    (reproduced / "profiles" / "rule-reward.yaml").write_text(yaml.safe_dump(
        {"description": "the rule reward", "hardware": "any CPU", "params": {"rl": {"enabled": True, "reward": "rule"}}}))
    sh(reproduced, "git", "add", "-A")
    sh(reproduced, "git", "commit", "-qm", "before the profile run")
    committed = yaml.safe_load((reproduced / "params.yaml").read_text())
    out = sh(reproduced, "harness", "profile", "run", "rule-reward")
    assert "Stage 'sft' didn't change, skipping" in out and "Running stage 'rl'" in out
    params = yaml.safe_load((reproduced / "params.yaml").read_text())
    assert params["rl"]["reward"] == "rule" and params["rl"]["enabled"] is True
    assert {**params["rl"], "reward": committed["rl"]["reward"], "enabled": committed["rl"]["enabled"]} == committed["rl"]
    log = json.loads((reproduced / "models/rl/training_log.json").read_text())
    assert log["reward"] == "rule"
    shown = json.loads(sh(reproduced, "dvc", "exp", "show", "--json"))
    names = [e.get("name") for entry in shown for ex in (entry.get("experiments") or []) for e in ex["revs"]]
    assert "rule-reward" in names
    # the report lists the experiments (refreshed on demand: experiments are git refs, not stage inputs)
    sh(reproduced, "git", "checkout", "--", "params.yaml")  # the workspace back at the committed params
    sh(reproduced, "dvc", "repro", "-f", "-s", "report")
    md = (reproduced / "reports/report.md").read_text()
    assert "| rule-reward" in md and "rl.reward=rule" in md
