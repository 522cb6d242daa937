"""The worker's models: the daemon's own, and at most one other that a person chose for some
files (`cutout review redo --model birefnet-hr`).

The other model is loaded when the first file that asked for it reaches the model, on the
thread that owns the models, and let go when a file asks for yet another one: two extra
networks side by side would double the memory a Mac mini has to spare. Its input size is
its own (2048 for `birefnet-hr`), known from its name without loading it, so a file's decode
can start while the model loads.
"""

from __future__ import annotations

from collections.abc import Callable

from daemon.errors import CutoutError, ModelError
from daemon.pipeline.constants import PipelineParams
from daemon.pipeline.matte import MatteModel

Loader = Callable[[str], MatteModel]
"""A model by its name, as `model.name` takes it, on the daemon's device."""


class ModelShelf:
    """Which model, and which pipeline numbers, one file gets."""

    def __init__(
        self, *, model: MatteModel, params: PipelineParams, load: Loader | None = None,
        params_of: Callable[[str], PipelineParams] | None = None,
    ) -> None:
        self.model, self.params = model, params
        self._load, self._params_of = load, params_of
        self._other: tuple[str, MatteModel] | None = None
        self._numbers: dict[str, PipelineParams] = {}
        """Each chosen model's numbers, worked out (settings validated) once, not twice per image."""
        self.loads = 0
        """How many times another model was loaded (the log says which)."""

    def params_for(self, name: str | None) -> PipelineParams:
        """The daemon's numbers, with the input size of the model chosen for the file (`name`)."""
        if name is None:
            return self.params
        if self._params_of is None:
            raise self._cannot(name)
        if name not in self._numbers:
            try:
                self._numbers[name] = self._params_of(name)
            except CutoutError as exc:
                raise ModelError(f"the model {name} chosen for this file cannot be used: {exc}") from exc
        return self._numbers[name]

    def model_for(self, name: str | None) -> MatteModel:
        """The daemon's model, or the one chosen for the file, loaded now if it is not the one held."""
        if name is None:
            return self.model
        if self._load is None:
            raise self._cannot(name)
        if self._other is None or self._other[0] != name:
            self._other = None  # the one held goes first: never two extra models at once
            try:
                self._other = (name, self._load(name))
            except CutoutError as exc:
                raise ModelError(f"the model {name} chosen for this file could not be loaded: {exc}") from exc
            self.loads += 1
        return self._other[1]

    @staticmethod
    def _cannot(name: str) -> ModelError:
        return ModelError(f"the model {name} was chosen for this file, and this worker runs its own model only")
