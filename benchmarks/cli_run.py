"""The record of a fine-tuning run made with the command line (`simsearch train`, then `simsearch eval`), assembled
from the files those commands wrote, so that no figure is typed in by hand.

    simsearch train caltech101:train ... --out runs/x
    simsearch eval caltech101:test --model runs/x                    # runs/x/eval-caltech101-test.json
    simsearch eval caltech101:test --model runs/x --tta hflip        # runs/x/eval-caltech101-test-hflip.json
    simsearch eval caltech101:test --model tf_efficientnet_lite2 --out runs/off.json
    python -m benchmarks.cli_run runs/x --eval runs/x/eval-caltech101-test.json \\
        --eval runs/x/eval-caltech101-test-hflip.json --off-the-shelf runs/off.json \\
        --goal map@r=0.76 --goal recall@1=0.944 --command "simsearch train ..." --command "simsearch eval ..." \\
        --out benchmarks/results/caltech_cli_lite2.json

The eval record without test-time augmentation gives `test` and `goal_met`; one made with `--tta` gives
`test_with_tta[MODE]` and `goal_met_with_tta[MODE]`, so that both readings of one checkpoint sit side by side.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from benchmarks.record import environment

SCORES = ("recall@1", "recall@2", "recall@4", "recall@8", "map@r", "r_precision", "nmi")


def _read(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _goal(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"a goal is METRIC=VALUE, got {text!r}")
    return name, float(value)


def _scores(evaluation: dict[str, Any]) -> dict[str, float]:
    return {k: evaluation["metrics"][k] for k in SCORES if k in evaluation["metrics"]}


def build_record(
    run: Path,
    evaluation: dict[str, Any],
    *,
    off_the_shelf: dict[str, Any] | None,
    goals: dict[str, float],
    commands: list[str],
    note: str,
    device: str = "cpu",
    with_tta: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The record: recipe, data split and per-epoch history of the checkpoint, its test scores (plain, and with each
    test-time augmentation of `with_tta`), and where they stand against the off-the-shelf model and the goals."""
    if evaluation.get("tta"):
        raise ValueError(f"the first eval record must be made without --tta, not with {evaluation['tta']!r}")
    config = _read(run / "config.json")
    history = _read(run / "history.json")
    test = _scores(evaluation)
    rates = [h["samples_per_second"] for h in history if "samples_per_second" in h]
    record: dict[str, Any] = {
        "benchmark": f"fine-tuning through `simsearch train` ({config['backbone']}, {config['recipe']['loss']})",
        "protocol": evaluation.get("protocol"),
        "commands": commands,
        "recipe": config.get("recipe"),
        "data_config": config.get("data_config"),
        "data": config.get("data"),
        "best_epoch": config.get("metrics", {}).get("epoch"),
        "history": history,
        "train_samples_per_second": round(sum(rates) / len(rates), 1) if rates else None,
        "test": test,
    }
    flipped = {}
    for other in with_tta or []:
        if not other.get("tta"):
            raise ValueError("an extra eval record must be made with --tta")
        flipped[other["tta"]] = _scores(other)
    if flipped:
        record["test_with_tta"] = flipped
    if off_the_shelf is not None:
        record["off_the_shelf"] = {"model": off_the_shelf.get("model"), **_scores(off_the_shelf)}
    if goals:
        record["goal"] = goals

        def met(scores: dict[str, float]) -> bool:
            return all(scores.get(k, float("-inf")) >= v for k, v in goals.items())

        record["goal_met"] = met(test)
        if flipped:
            record["goal_met_with_tta"] = {mode: met(scores) for mode, scores in flipped.items()}
    record["environment"] = environment(device)
    record["note"] = note
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="the checkpoint folder `simsearch train --out` wrote")
    parser.add_argument(
        "--eval",
        type=Path,
        action="append",
        required=True,
        help="a JSON record `simsearch eval` wrote: first the plain one, then any made with --tta (repeatable)",
    )
    parser.add_argument("--off-the-shelf", type=Path, help="the eval record of the backbone before fine-tuning")
    parser.add_argument("--goal", action="append", type=_goal, default=[], help="METRIC=VALUE (repeatable)")
    parser.add_argument("--command", action="append", default=[], help="a command of the run, as typed (repeatable)")
    parser.add_argument("--note", default="", help="what a reader should know beside the numbers")
    parser.add_argument("--device", default="cpu", help="where train and eval ran (cpu, cuda)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    first, *others = [_read(path) for path in args.eval]
    record = build_record(
        args.run,
        first,
        off_the_shelf=_read(args.off_the_shelf) if args.off_the_shelf else None,
        goals=dict(args.goal),
        commands=args.command,
        note=args.note,
        device=args.device,
        with_tta=others,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    summary = {key: record.get(key) for key in ("test", "goal_met", "test_with_tta", "goal_met_with_tta")}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
