"""Two-view benchmark: the same three-letter words drawn in two font families, a query in one family must find its
word among the other family's drawings. The default model off the shelf against the same model fine-tuned on other
words, through the command line as a user runs it (`simsearch train` and `simsearch eval` with --query-view and
--gallery-view on class folders of one image per view).

Run from the repo root:  nice -n 10 python -m benchmarks.twoview   (35 minutes on a busy 2-core CPU, load 11)

The fonts are Debian's (fonts-dejavu-core and fonts-liberation), found through fontconfig: DejaVu Serif for the query
view, Liberation Sans for the gallery view. Words are drawn once from a seeded generator and split, so the training
and test words are disjoint; each drawing gets its own size, slight rotation and offset, so no two drawings line up
pixel for pixel. Writes benchmarks/results/twoview.json and twoview.md (or --out), with the commands, the recipe,
the per-epoch history and every score; pictures of the words and of the run's history beside them.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from benchmarks import REPO
from benchmarks.record import write_record

#: The two views: a family fontconfig must find, and the style asked of it.
FONTS = {"serif": ("DejaVu Serif", "Book"), "sans": ("Liberation Sans", "Regular")}
QUERY_VIEW, GALLERY_VIEW = "serif", "sans"
FONT_PACKAGES = "fonts-dejavu-core fonts-liberation"
#: Drawing: the word's box fills this share of the side (drawn per image), within this rotation (degrees) and offset
#: (a share of the side).
FILL = (0.7, 0.9)
ROTATION = 4.0
OFFSET = 1 / 16
#: The fine-tuning recipe, as `simsearch train` options (DATA, the views and --out are added).
TRAIN_OPTIONS = (
    "--loss multi_similarity -p 32 -k 2 --backbone-lr-mult 1.0 --image-size 64 --crop-pct 1.0 "
    "--augment-option hflip=0 --augment-option scale=[0.8,1.0] --epochs 12 --val-fraction 0.1"
)


def find_fonts() -> dict[str, Path]:
    """Each view's font file, from fontconfig.

    Raises:
        SystemExit: fontconfig is missing or finds another family (the fonts are not installed).
    """
    found = {}
    for view, (family, style) in FONTS.items():
        try:
            answer = subprocess.run(
                ["fc-match", "-f", "%{family}|%{file}", f"{family}:style={style}"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        except (OSError, subprocess.CalledProcessError) as exc:
            raise SystemExit(f"fontconfig's fc-match is needed to find the fonts ({exc})") from None
        families, _, file = answer.partition("|")
        if family not in families.split(","):
            raise SystemExit(f"{family} is not installed (fontconfig offers {families}): apt install {FONT_PACKAGES}")
        found[view] = Path(file)
    return found


def draw_words(count: int, length: int, seed: int) -> list[str]:
    """`count` distinct lower-case words of `length` letters, in the order drawn."""
    rng = np.random.default_rng(seed)
    words: dict[str, None] = {}
    while len(words) < count:
        words["".join(rng.choice(list(string.ascii_lowercase), length))] = None
    return list(words)


def render(word: str, font_file: Path, side: int, rng: np.random.Generator) -> Image.Image:
    """`word` in black on white, `side` px square: sized to fill a random share of the side (widest letters taken
    as the measure, so every word of a font is drawn at one size per share), slightly rotated and moved."""
    fill = rng.uniform(*FILL)
    for points in range(side, 4, -1):
        font = ImageFont.truetype(str(font_file), points)
        left, top, right, bottom = font.getbbox("w" * len(word))
        if right - left <= side * fill and bottom - top <= side * fill:
            break
    canvas = Image.new("L", (2 * side, 2 * side), 255)
    draw = ImageDraw.Draw(canvas)
    left, top, right, bottom = draw.textbbox((0, 0), word, font=font)
    draw.text((side - (right - left) / 2 - left, side - (bottom - top) / 2 - top), word, font=font, fill=0)
    canvas = canvas.rotate(rng.uniform(-ROTATION, ROTATION), resample=Image.Resampling.BILINEAR, fillcolor=255)
    dx, dy = rng.integers(-round(side * OFFSET), round(side * OFFSET) + 1, 2)
    return canvas.crop((side // 2 + dx, side // 2 + dy, side // 2 + dx + side, side // 2 + dy + side))


def write_views(root: Path, words: Sequence[str], fonts: dict[str, Path], side: int, seed: int) -> Path:
    """`root/<word>/<view>.png` for every word and view: the item-folder layout of two-view data."""
    rng = np.random.default_rng(seed)
    for word in words:
        (root / word).mkdir(parents=True, exist_ok=True)
        for view, font_file in fonts.items():
            render(word, font_file, side, rng).save(root / word / f"{view}.png")
    return root


def _simsearch(args: list[str], log: Path | None = None) -> float:
    """Run `simsearch ARGS` as a user would (this checkout's CLI); the seconds it took."""
    started = time.perf_counter()
    command = [sys.executable, "-m", "cli.main", *args]
    if log is None:
        subprocess.run(command, cwd=REPO, check=True, stderr=subprocess.DEVNULL)
    else:
        with open(log, "w", encoding="utf-8") as err:
            subprocess.run(command, cwd=REPO, check=True, stderr=err)
    return time.perf_counter() - started


def _scores(record: dict[str, Any]) -> dict[str, float]:
    return {k: record["metrics"][k] for k in ("recall@1", "recall@10", "map@r")}


def _off_the_shelf_at(side: int, test: Path) -> dict[str, Any]:
    """The default model scored on the test words at the fine-tuned model's input size (its own is 224 px)."""
    from simsearch.data import open_views
    from simsearch.evaluation import evaluate
    from simsearch.models import load_embedder

    model = load_embedder("default", device="cpu")
    model.data_config = {**model.data_config, "input_size": (3, side, side), "crop_pct": 1.0}
    record = evaluate(model, open_views(test, (QUERY_VIEW, GALLERY_VIEW)), views=(QUERY_VIEW, GALLERY_VIEW), ks=(1, 10))
    return record.as_dict()


def _sample_picture(path: Path, root: Path, words: Sequence[str]) -> Path:
    """A strip of test words, each view in a row."""
    tiles = [[Image.open(root / word / f"{view}.png") for word in words] for view in (QUERY_VIEW, GALLERY_VIEW)]
    side = tiles[0][0].width
    strip = Image.new("L", (side * len(words), side * 2), 255)
    for row, images in enumerate(tiles):
        for column, image in enumerate(images):
            strip.paste(image, (column * side, row * side))
    strip.save(path)
    return path


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    fonts = find_fonts()
    words = draw_words(args.train_words + args.test_words, args.letters, args.seed)
    train_words, test_words = words[: args.train_words], words[args.train_words :]
    train_root = write_views(work / "train", train_words, fonts, args.side, args.seed + 1)
    test_root = write_views(work / "test", test_words, fonts, args.side, args.seed + 2)
    views = ["--query-view", QUERY_VIEW, "--gallery-view", GALLERY_VIEW]
    off_args = ["eval", str(test_root), *views, "--k", "1,10", "--baselines", "--out", str(work / "off.json")]
    run_dir = work / "run"
    train_args = ["train", str(train_root), *views, *shlex.split(args.train_options), "--out", str(run_dir)]
    tuned_args = [
        "eval",
        str(test_root),
        "--model",
        str(run_dir),
        *views,
        "--k",
        "1,10",
        "--out",
        str(work / "tuned.json"),
    ]
    seconds = {
        "off_the_shelf_eval": _simsearch(off_args),
        "train": _simsearch(train_args, work / "train.log"),
        "fine_tuned_eval": _simsearch(tuned_args),
    }
    off = json.loads((work / "off.json").read_text())
    tuned = json.loads((work / "tuned.json").read_text())
    config = json.loads((run_dir / "config.json").read_text())
    history = json.loads((run_dir / "history.json").read_text())
    at_side = _off_the_shelf_at(args.side, test_root)
    rows = [{"model": b["model"], "input": f"{args.side} px", **_scores(b)} for b in off.get("baselines", [])] + [
        {"model": f"{off['model']} (off the shelf)", "input": "224 px", **_scores(off)},
        {"model": f"{off['model']} (off the shelf)", "input": f"{args.side} px", **_scores(at_side)},
        {"model": "fine-tuned (multi-similarity)", "input": f"{args.side} px", **_scores(tuned)},
    ]
    figures = [_sample_picture(args.out_dir / "twoview_words.png", test_root, test_words[:8])]
    if (run_dir / "history.png").is_file():
        figures.append(Path(shutil.copy(run_dir / "history.png", args.out_dir / "twoview_history.png")))
    commands = ["simsearch " + shlex.join(a).replace(str(work), "WORK") for a in (off_args, train_args, tuned_args)]
    return {
        "record": {
            "benchmark": "two-view words: query in one font family, find the word among another family's drawings",
            "protocol": tuned["protocol"],
            "views": {view: {"family": FONTS[view][0], "style": FONTS[view][1]} for view in fonts},
            "data": {
                "letters": args.letters,
                "train_words": len(train_words),
                "test_words": len(test_words),
                "disjoint": not set(train_words) & set(test_words),
                "side_px": args.side,
                "fill": FILL,
                "rotation_degrees": ROTATION,
                "offset_share": OFFSET,
                "seed": args.seed,
            },
            "commands": commands,
            "recipe": config.get("recipe"),
            "split": {part: len(config["data"][part]["classes"]) for part in ("train", "val")},
            "best_epoch": config.get("metrics", {}).get("epoch"),
            "history": history,
            "train_log_first_lines": (work / "train.log").read_text().splitlines()[:3],
            "seconds": {k: round(v, 1) for k, v in seconds.items()},
            "off_the_shelf": _scores(off),
            "off_the_shelf_at_train_size": _scores(at_side),
            "baselines": {b["model"]: _scores(b) for b in off.get("baselines", [])},
            "fine_tuned": _scores(tuned),
        },
        "table": rows,
        "figures": figures,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-words", type=int, default=1500, help="words to fine-tune on (a tenth validates)")
    parser.add_argument("--test-words", type=int, default=500, help="other words to score on")
    parser.add_argument("--letters", type=int, default=3, help="letters a word")
    parser.add_argument("--side", type=int, default=64, help="drawing size in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-options", default=TRAIN_OPTIONS, help="`simsearch train` options of the recipe")
    parser.add_argument("--work", type=Path, help="folder for the drawings and the run [default: a temporary one]")
    parser.add_argument("--out-dir", type=Path, default=REPO / "benchmarks" / "results")
    return parser.parse_args(argv)


def _without_work(argv: list[str]) -> list[str]:
    """The arguments as the record shows them: the work folder is this machine's, not part of the recipe."""
    shown: list[str] = []
    for arg in argv:
        if shown and shown[-1] == "--work":
            shown[-1] = "--work WORK"
        elif arg.startswith("--work="):
            shown.append("--work WORK")
        else:
            shown.append(arg)
    return shown


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="simsearch-twoview-") as tmp:
        work = args.work or Path(tmp)
        result = run(args, work)
    parameters = {k: v for k, v in vars(args).items() if k not in ("work", "out_dir")}
    record = write_record(
        args.out_dir,
        "twoview",
        result,
        parameters=parameters,
        device="cpu",
        command=["python", "-m", "benchmarks.twoview", *_without_work(argv if argv is not None else sys.argv[1:])],
        started=started,
    )
    print({k: record[k] for k in ("off_the_shelf", "fine_tuned")})


if __name__ == "__main__":
    main()
