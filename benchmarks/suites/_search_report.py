"""What the search suite (`search`) reports beside its record: the table rows, the goals read off the largest size,
and the recall against single-query QPS picture of each dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from indexes.tuning import TARGET_RECALL


def table_rows(name: str, size: dict[str, Any]) -> list[dict[str, Any]]:
    """One table row per (factory, params) of one size."""
    rows = []
    for f in size["factories"]:
        for r in f["sweep"]:
            rows.append(
                {
                    "dataset": name,
                    "n": size["n"],
                    "factory": f["factory"],
                    "params": r["search_params"],
                    "R@1": r["recall_at_1"],
                    "R@10": r["recall_at_10"],
                    "qps_1": r["qps_1"],
                    **{k: v for k, v in r.items() if k.startswith("qps_1_t")},
                    "qps_batch": next(v for k, v in r.items() if k.startswith("qps_") and not k.startswith("qps_1")),
                    "p50_ms": r["p50_ms"],
                    "p99_ms": r["p99_ms"],
                    "build_s": round(f["train_s"] + f["add_s"], 1),
                    "MiB": round(f["serialized_bytes"] / 2**20, 1),
                }
            )
    return rows


def goals(record: dict[str, Any]) -> dict[str, Any]:
    """Per dataset (and thread count): the speed-up at recall@10 0.95 and Flat against its bandwidth bound."""
    out = {}
    for name, entry in record["datasets"].items():
        largest = entry["sizes"][-1]
        for i, threads in enumerate(record["protocol"]["single_query_threads"]):
            suffix = "" if i == 0 else f"_t{threads}"
            best = largest.get("best_at_target" + suffix)
            bound = largest.get("flat_vs_bandwidth" + suffix)
            out[name + suffix] = {
                "n": largest["n"],
                "single_query_threads": threads,
                "speedup_at_recall_0.95": None if best is None else best["speedup_vs_flat"],
                "speedup_goal_met": None if best is None else best["speedup_vs_flat"] >= 100,
                "flat_over_bound": None if bound is None else bound["ratio"],
                "flat_goal_met": None if bound is None else bound["ratio"] <= 1.5,
            }
    return out


def plot(path: Path, name: str, sizes: list[dict[str, Any]]) -> Path:
    """Recall@10 against single-query QPS (log scale), one panel per size."""
    from benchmarks.record import figure

    with figure(path, width=5.0 * len(sizes), height=4.0, ncols=len(sizes)) as axes:
        for ax, size in zip(np.atleast_1d(axes), sizes, strict=True):
            for f in size["factories"]:
                xs = [r["qps_1"] for r in f["sweep"]]
                ys = [r["recall_at_10"] for r in f["sweep"]]
                ax.plot(xs, ys, marker="o", label=f["factory"])
            ax.axhline(TARGET_RECALL, color="grey", linestyle=":", linewidth=1)
            ax.set_xscale("log")
            ax.set_xlabel("single-query QPS (log)")
            ax.set_ylabel("recall@10 vs exact")
            ax.set_title(f"{name}, n={size['n']:,}")
            ax.legend(fontsize=7)
    return path
