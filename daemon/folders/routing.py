"""Which recipes a file of the hot folder gets, and the names of every file they write.

Routes are tried in order; the first whose glob matches the file's path (relative to the
hot folder) gives its recipes, and a file no route matches gets `default`. The store
claims the seed's name for each input (`a/x.png`, see layout.py) and, through
`Routing.extra_names`, every other name its recipes derive from it, so two inputs never
share an output file whatever the recipes are.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from daemon.folders.layout import candidate_outputs, claim_key
from daemon.pipeline.recipe import DEFAULT_RECIPE, Recipe, OutputFile, output_files

if TYPE_CHECKING:  # rendering imports OpenCV; naming must not (cutout status imports settings)
    from daemon.pipeline.render import RecipeFiles


@functools.lru_cache(maxsize=256)
def glob_pattern(glob: str) -> re.Pattern[str]:
    """`glob` as a regular expression on a relative POSIX path: `**` spans folders, `*` and `?`
    stay inside one name; both sides are compared as claim keys are (NFC, case folded: the
    default macOS file system ignores case, and a name typed on a Mac may come from Linux
    decomposed)."""
    segments, parts = _folded(glob).strip("/").split("/"), []
    for index, segment in enumerate(segments):
        if segment == "**":
            parts.append("(?:[^/]+/)*" if index < len(segments) - 1 else ".*")
            continue
        body = re.escape(segment).replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        parts.append(body + "/")
    return re.compile("".join(parts).removesuffix("/"))


def _folded(text: str) -> str:
    return unicodedata.normalize("NFC", text).casefold()


def matches(glob: str, rel: PurePosixPath) -> bool:
    return glob_pattern(glob).fullmatch(_folded(rel.as_posix())) is not None


@dataclass(frozen=True, kw_only=True)
class Route:
    """Files whose path (relative to the hot folder) matches `match` get `recipes` (config: `routes:`)."""

    match: str
    """A glob on the relative path: `*` within one folder name, `**` any number of folders
    (`shop/**` is everything under shop/), matched ignoring case as macOS names are."""
    recipes: tuple[str, ...] = (DEFAULT_RECIPE,)
    """One recipe name, or a list: each writes its own files for every matching input."""


class Routing:
    """The recipes and routes of one config, answering per file."""

    def __init__(self, *, recipes: dict[str, Recipe], routes: Iterable[Route] = ()) -> None:
        self.recipes = recipes
        self.routes = tuple(routes)

    def recipe_names(self, rel: PurePosixPath) -> tuple[str, ...]:
        """The recipes of the first route that matches `rel`, else `default`."""
        return next((route.recipes for route in self.routes if matches(route.match, rel)), (DEFAULT_RECIPE,))

    def files(
        self, rel: PurePosixPath, *, claimed: PurePosixPath, chosen: tuple[str, ...] | None = None
    ) -> list[OutputFile]:
        """Every file the input `rel` (claimed name `claimed`) gets, in recipe order: of the recipes
        `chosen` for it (`cutout review redo --recipe`), else of its route."""
        return output_files(claimed, recipes=self.recipes, names=self._names(rel, chosen))

    def extra_names(
        self, rel: PurePosixPath, claimed: PurePosixPath, chosen: tuple[str, ...] | None = None
    ) -> list[PurePosixPath]:
        """The names besides `claimed` that the store must claim for `rel`."""
        key = claim_key(claimed)
        return [file.path for file in self.files(rel, claimed=claimed, chosen=chosen) if claim_key(file.path) != key]

    @property
    def name_deriver(
        self,
    ) -> Callable[[PurePosixPath, PurePosixPath, tuple[str, ...] | None], list[PurePosixPath]] | None:
        """`extra_names` for the store, or None when every recipe writes the seed's name alone."""
        used = set(self.recipes)  # every recipe: a redo may choose any of them for one file
        sample = PurePosixPath("a/x.png")
        seed_only = all([f.path for f in output_files(sample, recipes=self.recipes, names=(name,))] == [sample]
                        for name in used)
        return None if seed_only else self.extra_names

    def recipes_of(self, rel: PurePosixPath, chosen: tuple[str, ...] | None = None) -> list[Recipe]:
        return [self.recipes[name] for name in self._names(rel, chosen)]

    def _names(self, rel: PurePosixPath, chosen: tuple[str, ...] | None) -> tuple[str, ...]:
        """The recipes chosen for `rel` that the config still has, else its route's: a recipe
        removed from the config since a person chose it never blocks the queue."""
        known = tuple(name for name in chosen or () if name in self.recipes)
        return known or self.recipe_names(rel)

    def wants_source_depth(self) -> bool:
        """Whether any recipe keeps 16 bits, so inputs must be decoded with them."""
        return any(recipe.bit_depth != 8 for recipe in self.recipes.values())


def contents(files: Sequence[OutputFile], rendered: Sequence[RecipeFiles]) -> list[tuple[PurePosixPath, bytes]]:
    """Each file's name with its bytes: `files` and `rendered` come from the same recipes, in order."""
    data = [part.data for entry in rendered for part in (entry.output, entry.mask) if part is not None]
    return [(file.path, blob) for file, blob in zip(files, data, strict=True)]


def plan_files(inputs: Iterable[PurePosixPath], *, routing: Routing) -> dict[PurePosixPath, list[OutputFile]]:
    """Every input's files for a batch, names claimed in sorted path order with the store's rule:
    the first candidate (`x.png`, `x.jpg.png`, ...) whose names are all still free."""
    claimed: set[str] = set()
    plan: dict[PurePosixPath, list[OutputFile]] = {}
    for rel in sorted(inputs):
        base, keys = next((c, k) for c in candidate_outputs(rel) if not claimed & (k := _keys(rel, c, routing)))
        claimed |= keys
        plan[rel] = routing.files(rel, claimed=base)
    return plan


def _keys(rel: PurePosixPath, candidate: PurePosixPath, routing: Routing) -> set[str]:
    """The claim keys of every name `rel` would hold with `candidate` as its seed name."""
    return {claim_key(name) for name in (candidate, *routing.extra_names(rel, candidate))}


SEED_ROUTING = Routing(recipes={DEFAULT_RECIPE: Recipe()})
"""The seed's single output, for callers without a config (tests, benchmarks)."""


def unknown_recipe(name: str, *, recipes: Mapping[str, Recipe], key: str) -> str | None:
    """What is wrong with `name` as the recipe `key` names (`--recipe`, a route's `recipes`), or None."""
    return None if name in recipes else f"{key}: no recipe named {name!r} (known: {', '.join(sorted(recipes))})"


def route_problem(match: str, names: tuple[str, ...], *, recipes: dict[str, Recipe]) -> str | None:
    """Why a route cannot work, naming its key: an unknown recipe or two recipes on one file name."""
    if not match.strip("/") or match.startswith("/") or ".." in match.split("/"):
        return f"match: {match!r} must be a glob relative to the hot folder, like shop/**"
    if not names:
        return "recipes: names no recipe (give at least one, e.g. [default])"
    unknown = next(filter(None, (unknown_recipe(name, recipes=recipes, key="recipes") for name in names)), None)
    if unknown:
        return unknown
    files = output_files(PurePosixPath("x.png"), recipes=recipes, names=names)
    keys = [claim_key(file.path) for file in files]
    if len(set(keys)) != len(keys):
        return f"recipes: {', '.join(names)} would write files of the same name: give each a suffix or subfolder"
    return None
