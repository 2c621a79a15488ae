"""Recipes as data: a recipe dataclass (`TrainConfig`, `PretrainConfig`) to and from JSON and KEY=VALUE text, and the
comparison that decides whether a run folder's saved state belongs to the run being started."""

from __future__ import annotations

import dataclasses
import difflib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from simsearch.errors import RecipeError, SimSearchError

__all__ = ["RecipeError", "RunIdentity", "parse_assignments", "recipe_dict", "with_changes"]

R = TypeVar("R")


def recipe_dict(recipe: Any) -> dict[str, Any]:
    """The recipe as plain JSON data (tuples become lists), as a checkpoint and a run state keep it."""
    return json.loads(json.dumps(dataclasses.asdict(recipe)))  # type: ignore[no-any-return]


def parse_assignments(pairs: Iterable[str]) -> dict[str, Any]:
    """KEY=VALUE texts as a dict; VALUE is read as JSON when it parses (numbers, true/false, null, [lists]), else kept
    as a string; dashes in KEY become underscores. The command line and the benchmarks read recipes this way."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise RecipeError(f"expected KEY=VALUE, got {pair!r}")
        try:
            options[key.replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            options[key.replace("-", "_")] = value
    return options


def with_changes(recipe: R, changes: Mapping[str, Any]) -> R:
    """A copy of a recipe dataclass with `changes`: "field" replaces a field, "field.key" sets one key of a dict field
    (e.g. "loss_kwargs.margin"). A name that is no field is refused with the closest field names."""
    fields = {f.name for f in dataclasses.fields(recipe)}  # type: ignore[arg-type]
    replaced: dict[str, Any] = {}
    for name, value in changes.items():
        field_name, dot, key = name.partition(".")
        if field_name not in fields:
            close = difflib.get_close_matches(field_name, sorted(fields), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else f"; fields: {', '.join(sorted(fields))}"
            raise RecipeError(f"{type(recipe).__name__} has no field {field_name!r}{hint}")
        if not dot:
            replaced[field_name] = value
            continue
        current = replaced.get(field_name, getattr(recipe, field_name))
        if not isinstance(current, dict):
            raise RecipeError(f"{field_name} is not a dict of options: set it whole, not {name}")
        replaced[field_name] = {**current, key: value}
    return dataclasses.replace(recipe, **replaced)  # type: ignore[type-var]


@dataclass(frozen=True)
class RunIdentity:
    """What a resumed run must share with the run that wrote a saved state: its recipe (less the fields that may
    change between an interruption and its resumption) and a summary of its data.

    Attributes:
        recipe: `recipe_dict` of the run being started.
        data: its data summary, `{"train": {...}, "val": {...}}`.
        defaults: `recipe_dict` of the default recipe: a field a saved recipe lacks was added since, and that run
            used its default.
        resumable: recipe fields that may differ (epochs, device, workers...).
        data_keys: the keys of each data part that name what differs.
        error: the error type of the loop.
        start_over: how to start over, for the refusal's hint.
    """

    recipe: dict[str, Any]
    data: dict[str, Any]
    defaults: dict[str, Any]
    resumable: frozenset[str]
    data_keys: tuple[str, ...]
    error: type[SimSearchError]
    start_over: str

    def state_fields(self) -> dict[str, str]:
        """The state's copy of the recipe and data, as sorted JSON text."""
        return {"recipe": json.dumps(self.recipe, sort_keys=True), "data": json.dumps(self.data, sort_keys=True)}

    def saved_recipe(self, state: Mapping[str, Any]) -> dict[str, Any]:
        """The recipe a state was written with, its missing fields at their defaults."""
        return {**self.defaults, **json.loads(state.get("recipe", "{}"))}

    def check(self, state: Mapping[str, Any], path: Path) -> None:
        """Refuse a state of another recipe or of other data, naming what differs."""
        saved = self.saved_recipe(state)
        changed = sorted(
            k for k in set(saved) | set(self.recipe) if saved.get(k) != self.recipe.get(k) and k not in self.resumable
        )
        if changed:
            raise self.error(
                f"{path.parent} holds a run with another recipe ({', '.join(changed)} differ): "
                f"use another output folder, or {self.start_over} to start over"
            )
        saved_data = json.loads(state.get("data", "null"))  # absent in states written before it was kept
        if saved_data is not None and saved_data != self.data:
            differ = [
                f"{part} {key}"
                for part in ("train", "val")
                for key in self.data_keys
                if saved_data.get(part, {}).get(key) != self.data[part][key]
            ]
            raise self.error(
                f"{path.parent} holds a run on other data ({', '.join(differ)} differ): "
                f"use another output folder, or {self.start_over} to start over"
            )
