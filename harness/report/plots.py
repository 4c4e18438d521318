"""The report's figures: PNGs drawn with matplotlib, and the JSON series behind them, which ``dvc plots show``
renders through the ``plots:`` section of dvc.yaml."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from harness.evaluate.baselines import BASELINES  # noqa: E402
from harness.io import write_json  # noqa: E402
from harness.metrics import cutoffs, key  # noqa: E402

PNG_META = {"Software": None}  # no version string in the files: same data, same bytes
# always present in the JSON (null when not run): the two models, then every registered baseline
SERIES = ("SFT", "SFT + RL", *(b.label for b in BASELINES.values()))


def short_label(label: str) -> str:
    """'SFT (constrained beams)' -> 'SFT'; a row scored by upstream's evaluate.py keeps that fact."""
    short = label.split(" (")[0].split(",")[0]
    return short + " (upstream eval)" if "upstream evaluate.py" in label else short


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata=PNG_META)
    plt.close(fig)


def metrics_at_k(blocks: list[tuple[str, dict]], out: Path) -> list[str]:
    """HR@K and NDCG@K curves, one line per model and baseline; ``metrics_at_k.json`` holds one row per K."""
    ks = cutoffs(blocks[0][1])
    rows = []
    for k in ks:
        row: dict = {"k": k, **{f"{s} {m}": None for s in SERIES for m in ("HR", "NDCG")}}
        for label, m in blocks:
            short = short_label(label)
            row[f"{short} HR"] = m[key("hr", k)]
            row[f"{short} NDCG"] = m[key("ndcg", k)]
        rows.append(row)
    write_json(out / "metrics_at_k.json", rows)
    files = []
    for metric, name in (("hr", "hr_at_k.png"), ("ndcg", "ndcg_at_k.png")):
        fig, ax = plt.subplots(figsize=(6, 3.6))
        for label, m in blocks:
            ax.plot(ks, [m[f"{metric}@{k}"] for k in ks], marker="o", label=label)
        ax.set_xscale("log")
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.set_xlabel("K")
        ax.set_ylabel(f"{metric.upper()}@K")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        _save(fig, out / name)
        files.append(name)
    return files


def codes_per_level(comparison: list[dict], out: Path) -> str:
    """Codes used per level for every SID builder (an underused first level is a finding, H9)."""
    fig, ax = plt.subplots(figsize=(6, 3.2))
    width = 0.8 / max(1, len(comparison))
    for i, row in enumerate(comparison):
        used = row["codes_used_per_level"]
        ax.bar([lv + i * width for lv in range(len(used))], used, width=width, label=row["method"])
    ax.set_xlabel("SID level")
    ax.set_ylabel("codes used")
    levels = max(len(r["codes_used_per_level"]) for r in comparison)
    ax.set_xticks([lv + 0.4 - width / 2 for lv in range(levels)], [str(lv + 1) for lv in range(levels)])
    ax.legend(fontsize=7)
    _save(fig, out / "sid_codes_per_level.png")
    return "sid_codes_per_level.png"


def training_curves(sft_history: list[dict], rl_history: list[dict], out: Path) -> list[str]:
    """SFT train and valid loss by step; RL mean reward by step (when RL ran and logged rewards)."""
    loss = [{"step": h["step"], "loss": h["loss"]} for h in sft_history if "loss" in h and "step" in h]
    valid = [{"step": h["step"], "eval_loss": h["eval_loss"]} for h in sft_history if "eval_loss" in h]
    reward = [{"step": h["step"], "reward": h["reward"]} for h in rl_history if "reward" in h and "step" in h]
    write_json(out / "sft_loss.json", loss)
    write_json(out / "sft_valid_loss.json", valid)
    write_json(out / "rl_reward.json", reward)
    files = []
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot([r["step"] for r in loss], [r["loss"] for r in loss], label="train loss")
    if valid:
        ax.plot([r["step"] for r in valid], [r["eval_loss"] for r in valid], marker="o", label="valid loss")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    _save(fig, out / "sft_loss.png")
    files.append("sft_loss.png")
    fig, ax = plt.subplots(figsize=(6, 3.2))
    if reward:
        ax.plot([r["step"] for r in reward], [r["reward"] for r in reward])
    else:  # the file always exists, so dvc.yaml can declare it
        ax.text(0.5, 0.5, "RL not run (rl.enabled: false)", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("mean reward")
    ax.grid(alpha=0.3)
    _save(fig, out / "rl_reward.png")
    files.append("rl_reward.png")
    return files


def rl_diagnostics(rl_training: dict, out: Path) -> str:
    """Four panels by optimiser step: reward mean and spread; the share of groups holding the target beside
    the share with zero reward variance (which teach nothing); KL to the reference and gradient norm; and the
    policy probe's HR@K on fixed train prompts. The series are also written for ``dvc plots``."""
    diag = rl_training.get("diagnostics") or []
    probe = rl_training.get("probe") or []
    k = rl_training.get("probe_k")
    write_json(out / "rl_diagnostics.json", diag)
    write_json(out / "rl_probe.json", [{"step": r["step"], **{name: v[f"hr@{k}"] for name, v in r.items()
                                                            if name != "step"}} for r in probe])  # HR@probe_k
    fig, axes = plt.subplots(2, 2, figsize=(9, 5.6))
    if not diag:
        for ax in axes.flat:
            ax.set_axis_off()
        axes[0][0].text(0.5, 0.5, "no RL diagnostics (RL not run, or a log without them)", ha="center",
                        va="center", transform=axes[0][0].transAxes)
    else:
        steps = [d["step"] for d in diag]

        def series(key):
            return [d.get(key, float("nan")) for d in diag]

        ax = axes[0][0]
        mean, std = series("reward_mean"), series("reward_std")
        ax.plot(steps, mean, label="reward mean")
        ax.fill_between(steps, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)], alpha=0.2,
                        label="± std")
        ax.set_ylabel("reward")
        ax = axes[0][1]
        ax.plot(steps, series("target_groups"), label="groups holding the target")
        ax.plot(steps, series("zero_std_groups"), label="groups with zero reward variance")
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel("share of groups")
        ax = axes[1][0]
        ax.plot(steps, series("kl"), label="KL to reference")
        ax.set_ylabel("KL")
        twin = ax.twinx()
        twin.plot(steps, series("grad_norm"), color="tab:orange", label="grad norm")
        twin.set_ylabel("grad norm")
        twin.legend(fontsize=7, loc="upper right")
        ax = axes[1][1]
        for name in [n for n in (probe[0] if probe else {}) if n != "step"]:
            ax.plot([r["step"] for r in probe], [r[name][f"hr@{k}"] for r in probe], marker="o",
                    label=f"{name.replace('_', ' ')} prompts")
        ax.set_ylabel(f"policy HR@{k}" if probe else "no policy probe")
        for ax in axes.flat:
            ax.set_xlabel("optimiser step")
            ax.grid(alpha=0.3)
        for ax in (axes[0][0], axes[0][1], axes[1][0], axes[1][1]):
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    _save(fig, out / "rl_diagnostics.png")
    return "rl_diagnostics.png"


def popularity_bias(popularity: dict, labels: dict[str, str], out: Path) -> str:
    """Recommendation frequency against item popularity: for each popularity group of catalogue SIDs (least
    popular first, equal numbers of SIDs), the share of each ranker's Top-K that falls in it, beside the share
    of test targets that do. A ranker above the targets' line on the right recommends the head too often."""
    curves, bins = popularity["curves"], popularity["bins"]
    x = list(range(1, bins + 1))
    write_json(out / "popularity.json", [{"group": g, **{labels.get(n, n): c[g - 1] for n, c in curves.items()}}
                                         for g in x])
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, c in curves.items():
        style = dict(color="black", linestyle="--", linewidth=2) if name == "targets" else dict(marker="o")
        ax.plot(x, c, label=labels.get(name, name), **style)
    ax.set_yscale("symlog", linthresh=0.01)
    ax.set_xticks(x)
    ax.set_xlabel("popularity group of catalogue SIDs (1 = least popular tenth)")
    ax.set_ylabel(f"share of Top-{popularity['k']} recommendations")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    _save(fig, out / "popularity_bias.png")
    return "popularity_bias.png"
