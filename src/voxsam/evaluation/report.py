"""Reports of an evaluation run: per target × click CSV, Markdown summary, JSON, Dice-vs-clicks plots.

Aggregation: mean ± sample-free standard deviation (numpy `std`, ddof=0) over targets, per dataset ×
label × click count, per dataset (all its targets pooled) and overall (all targets of all datasets
pooled). HD95 is averaged over finite values only; the number of infinite values (an empty prediction)
is reported beside it. Only targets with status "ok" enter the numbers; errors and skipped inputs are
listed with their reasons.

Outcome: "complete" when every planned target was evaluated, "partial" when some failed (an error or a
missing record, or a case whose label map could not be read), "failed" when none was; `failed` lists the
failures (dataset, case, labels, reason). `voxsam eval` exits 0, 1 and 2 for these (docs/reliability.md).

Depends on `plan` (settings, targets) only: the runner calls it, it never calls the runner.
"""
from __future__ import annotations

import csv
import json
import logging
import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from voxsam.evaluation.plan import EvalConfig, Plan, config_as_dict
from voxsam.io.atomic import atomic_path

log = logging.getLogger(__name__)

CSV_COLUMNS = ["dataset", "case", "label", "label_name", "click", "dice", "iou", "nsd", "hd95", "seconds"]
METRICS = ("dice", "iou", "nsd", "hd95", "seconds")

__all__ = ["write_report", "aggregate", "outcome_of", "CSV_COLUMNS"]

# skip reasons (plan.py) of a case that was asked for but could not be read: a failure, not a filter
_UNREADABLE_LABEL = ("label unreadable", "label map ")


def _rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for rec in records:
        if rec.get("status") != "ok":
            continue
        for row in rec.get("rows", []):
            out.append({k: rec[k] for k in ("dataset", "case", "label", "label_name")} | row)
    return out


def _stats(values: list[float]) -> dict[str, Any]:
    arr = np.asarray(values, dtype=np.float64)
    finite = arr[np.isfinite(arr)]
    return {
        "mean": float(finite.mean()) if finite.size else None,
        "std": float(finite.std()) if finite.size else None,
        "median": float(np.median(finite)) if finite.size else None,
        "n": int(arr.size),
        "n_inf": int(np.count_nonzero(np.isinf(arr))),
    }


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Statistics per (dataset, label), per dataset ("all") and overall, for each click count.

    Returns a list of {"dataset", "label", "label_name", "click", "n", <metric>: {mean, std, median, n, n_inf}}.
    """
    groups: dict[tuple[str, Any, str, int], list[dict[str, Any]]] = {}
    for r in rows:
        for key in (
            (r["dataset"], r["label"], r["label_name"], r["click"]),
            (r["dataset"], "all", "all", r["click"]),
            ("overall", "all", "all", r["click"]),
        ):
            groups.setdefault(key, []).append(r)

    def order(key: tuple[str, Any, str, int]) -> tuple[int, str, int, int, int]:
        ds, label, _, click = key
        return (ds == "overall", ds, label == "all", label if isinstance(label, int) else 0, click)

    out = []
    for key in sorted(groups, key=order):
        ds, label, name, click = key
        members = groups[key]
        entry: dict[str, Any] = {"dataset": ds, "label": label, "label_name": name, "click": click, "n": len(members)}
        for m in METRICS:
            entry[m] = _stats([float(r[m]) for r in members])
        out.append(entry)
    return out


def _fmt(stat: dict[str, Any], digits: int = 3, inf_note: bool = False) -> str:
    if stat["mean"] is None:
        return "inf" if stat["n_inf"] else "–"
    text = f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"
    if inf_note and stat["n_inf"]:
        text += f" ({stat['n_inf']} inf)"
    return text


def _markdown(summary: dict[str, Any]) -> str:
    s = summary["settings"]
    clicks = s["clicks"]
    lines = [
        "# Evaluation summary",
        "",
        f"- engine: `{s['engine']}`" + (f" (checkpoint `{s['checkpoint']}`)" if s.get("checkpoint") else "")
        + (f", options `{json.dumps(s['engine_options'])}`" if s.get("engine_options") else ""),
        f"- protocol: `{s['protocol']}`, interactions reported: {', '.join(map(str, clicks))}, seed {s['seed']}",
        f"- outcome: **{summary['outcome']}**"
        + (f" ({len(summary['failed'])} failure(s), listed under Errors and Skipped inputs)" if summary["failed"] else ""),
        f"- targets evaluated: {summary['counts']['ok']} (errors {summary['counts']['error']}, "
        f"missing {summary['counts']['missing']}, skipped inputs {len(summary['skipped'])}, "
        f"filtered {summary['counts']['filtered']})",
        f"- metrics: Dice, NSD at {s['nsd_tolerance_mm']:g} mm, HD95 (mm, max of the two one-way 95th percentiles, "
        "MONAI's definition); mean ± std over targets; `all` pools the targets of a dataset, `overall` of every dataset",
        "",
    ]
    groups = summary["groups"]
    keys: list[tuple[str, Any, str]] = []
    for g in groups:
        k = (g["dataset"], g["label"], g["label_name"])
        if k not in keys:
            keys.append(k)
    by_key = {(g["dataset"], g["label"], g["click"]): g for g in groups}
    for metric, title, digits in (
        ("dice", "Dice", 3),
        ("nsd", f"NSD ({s['nsd_tolerance_mm']:g} mm)", 3),
        ("hd95", "HD95 (mm)", 1),
        ("seconds", "Seconds per interaction", 2),
    ):
        lines += [f"## {title}", ""]
        lines.append("| dataset | label | n | " + " | ".join(f"{c} click{'s' if c > 1 else ''}" for c in clicks) + " |")
        lines.append("|---|---|---:|" + "---:|" * len(clicks))
        for ds, label, name in keys:
            cells = []
            n = 0
            for c in clicks:
                g = by_key.get((ds, label, c))
                if g is None:
                    cells.append("–")
                    continue
                n = g["n"]
                cells.append(_fmt(g[metric], digits, inf_note=metric == "hd95"))
            label_text = "all" if label == "all" else f"{name} ({label})"
            bold = "**" if label == "all" else ""
            lines.append(f"| {bold}{ds}{bold} | {bold}{label_text}{bold} | {n} | " + " | ".join(cells) + " |")
        lines.append("")
    if summary["errors"]:
        lines += ["## Errors", "", "| dataset | case | label | reason |", "|---|---|---|---|"]
        for e in summary["errors"]:
            lines.append(f"| {e['dataset']} | {e['case']} | {e['label']} | {_md_cell(e['reason'])} |")
        lines.append("")
    if summary["skipped"]:
        lines += ["## Skipped inputs", "", "| dataset | case | label | reason |", "|---|---|---|---|"]
        for e in summary["skipped"]:
            lines.append(
                f"| {e['dataset']} | {e['case'] or '(all)'} | {e['label'] if e['label'] is not None else '(all)'} | {_md_cell(e['reason'])} |"
            )
        lines.append("")
    if summary["filtered"]:
        lines += ["## Filtered targets", ""]
        for reason, count in summary["filtered"].items():
            lines.append(f"- {count} × {reason}")
        lines.append("")
    plots = summary.get("plots") or []
    if plots:
        lines += ["## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in plots] + [""]
    return "\n".join(lines)


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _plot(out: Path, dataset: str, groups: list[dict[str, Any]], settings: dict[str, Any]) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - matplotlib is a dependency
        log.warning("matplotlib missing: no plot")
        return None
    series: dict[tuple[Any, str], list[tuple[int, float, float]]] = {}
    for g in groups:
        if g["dataset"] != dataset or g["dice"]["mean"] is None:
            continue
        series.setdefault((g["label"], g["label_name"]), []).append((g["click"], g["dice"]["mean"], g["dice"]["std"]))
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    labelled = [k for k in series if k[0] != "all"]
    for label, name in labelled[:20]:
        pts = sorted(series[(label, name)])
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", linewidth=1, alpha=0.8, label=f"{name} ({label})")
    if ("all", "all") in series:
        pts = sorted(series[("all", "all")])
        ax.errorbar(
            [p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts],
            color="black", linewidth=2.2, marker="s", capsize=3, label="all targets (± std)",
        )
    ax.set_xlabel("interactions")
    ax.set_ylabel("Dice")
    ax.set_ylim(0, 1)
    ax.set_xticks(sorted({p[0] for pts in series.values() for p in pts}))
    ax.grid(alpha=0.3)
    ax.set_title(f"{dataset}: {settings['engine']} / {settings['protocol']}")
    ax.legend(fontsize=7, loc="lower right", ncol=2 if len(labelled) > 8 else 1)
    fig.tight_layout()
    name = f"dice_vs_clicks_{''.join(ch if ch.isalnum() or ch in '-_.' else '_' for ch in dataset)}.png"
    try:
        with atomic_path(out / name) as tmp:
            fig.savefig(tmp)
    finally:
        plt.close(fig)
    return name


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return "inf" if obj > 0 else ("-inf" if obj < 0 else None)
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return _json_safe(obj.item())
    return obj


def write_report(out: Path, plan: Plan, records: list[dict[str, Any]], config: EvalConfig) -> dict[str, Any]:
    """Write results.csv, summary.md, summary.json and the plots into `out`; return the summary dict."""
    out = Path(out)
    rows = _rows(records)
    with atomic_path(out / "results.csv") as tmp, tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: (f"{r[k]:.6g}" if isinstance(r[k], float) else r[k]) for k in CSV_COLUMNS})

    groups = aggregate(rows)
    status = Counter(r.get("status") for r in records)
    skipped = [s for s in plan.skipped if s.kind == "skipped"]
    filtered = Counter(_filter_reason(s.reason) for s in plan.skipped if s.kind == "filtered")
    # one line per (case, reason): a bad case (e.g. a label off its image grid) fails all its labels alike
    by_reason: dict[tuple[str, str, str], list[str]] = {}
    for r in records:
        if r.get("status") in ("error", "missing"):
            by_reason.setdefault((r["dataset"], r["case"], r.get("reason", "")), []).append(str(r["label"]))
    errors = [
        {"dataset": ds, "case": case, "label": ", ".join(labels), "reason": reason}
        for (ds, case, reason), labels in by_reason.items()
    ]
    summary: dict[str, Any] = {
        "settings": config.result_settings(),
        "config": config_as_dict(config),
        "datasets": plan.datasets,
        "counts": {
            "planned": len(plan.targets),
            "ok": status.get("ok", 0),
            "error": status.get("error", 0),
            "missing": status.get("missing", 0),
            "filtered": sum(filtered.values()),
        },
        "groups": groups,
        "errors": errors,
        "skipped": [{"dataset": s.dataset, "case": s.case_id, "label": s.label, "reason": s.reason} for s in skipped],
        "filtered": dict(filtered),
    }
    summary["failed"] = errors + [
        {"dataset": s.dataset, "case": s.case_id, "label": "(all)", "reason": s.reason}
        for s in skipped
        if s.case_id is not None and s.label is None and s.reason.startswith(_UNREADABLE_LABEL)
    ]
    summary["outcome"] = outcome_of(summary)
    plots = []
    for ds in sorted({g["dataset"] for g in groups if g["dataset"] != "overall"}):
        name = _plot(out, ds, groups, summary["settings"])
        if name:
            plots.append(name)
    summary["plots"] = plots
    with atomic_path(out / "summary.md") as tmp:
        tmp.write_text(_markdown(summary))
    with atomic_path(out / "summary.json") as tmp:
        tmp.write_text(json.dumps(_json_safe(summary), indent=1))
    log.info("report written to %s (%d targets ok)", out, summary["counts"]["ok"])
    return summary


def outcome_of(summary: dict[str, Any]) -> str:
    """"complete" (nothing failed), "partial" (some targets evaluated, some failed) or "failed" (none evaluated)."""
    if summary["counts"]["ok"] == 0 and (summary["counts"]["planned"] or summary["failed"]):
        return "failed"
    return "partial" if summary["failed"] else "complete"


def _filter_reason(reason: str) -> str:
    if "min-voxels" in reason:
        return "fewer voxels than --min-voxels"
    if "slices" in reason:
        return "slice extent outside --slice-range"
    return reason
