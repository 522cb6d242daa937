"""Overlapping the CPU stages with the one model: decode ahead, encode behind.

    claim ─▶ [pool] read, decode, preprocess ─▶ [caller's thread] model ─▶ [pool] postprocess,
             composite, encode, then `on_done` (write, record)

The thread that calls `infer_next()` owns the model. At most `in_flight` images
are between claim and `on_done` at once, so memory stays flat however deep the
queue. `cutout watch` (worker.py) and `cutout process` (batch.py) both run their
images through this, so they write the same bytes as `process_image()`.

A slot that frees during a forward is filled at once: the pool thread whose
finish freed it claims the next image, so a long forward never leaves the pool
without work. It does so only while the last claim found work; once `claim`
comes back empty, and whenever the model thread is free to, only the model
thread's `top_up()` asks (an empty queue costs the store no claim per image).

`on_stage(key, name)` is told when an image's bytes start being worked on
(`decode`, `inference`, `finish`) and when it waits for the model (None): if the
process dies, only the images inside a stage can have been the cause. A decoded
image that the model is already waiting for goes straight on to `inference`,
without a None in between.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, Literal, TypeVar

import cv2
import numpy as np
import structlog

from daemon.pipeline.constants import ImageOptions, PipelineParams
from daemon.pipeline.matte import FloatArray, MatteModel
from daemon.pipeline.pipeline import Cutout, Prepared, StageTimer, finish, prepare, seed_recipes
from daemon.pipeline.recipe import Recipe

log = structlog.get_logger("cutout.stages")

K = TypeVar("K")
T = TypeVar("T")


@dataclass(frozen=True)
class Task(Generic[K]):
    """One image on its way through the stages; `key` is the caller's handle for it."""

    key: K
    path: Path
    timer: StageTimer
    prepared: Future[Prepared]
    awaited: threading.Event
    """Set when the model thread waits for this image's decode: it will not wait once decoded."""


def opencv_threads(*, pool_threads: int, cores: int | None) -> int:
    """OpenCV's threads per call beside a stage pool of `pool_threads`: the cores the pool leaves
    it, at least one. The pool gives each of its threads an image, so with a thread per core (the
    default) OpenCV's own threads only oversubscribe the cores, and they spin while they wait. On
    the 2-core VM a 24 MP decode, decontaminate and encode took 1013 ms of wall time per image
    with OpenCV's two threads against 840 with one, one image at a time, and 467 against 446 two
    at a time (BENCHMARKS.md, `benchmarks/opencv_threads.py`)."""
    return max(1, (cores or 1) // max(1, pool_threads))


def share_cores_with_opencv(*, pool_threads: int) -> None:
    """OpenCV's threads, for the whole process, set for a stage pool of `pool_threads` on this
    machine's cores (`opencv_threads`)."""
    cv2.setNumThreads(opencv_threads(pool_threads=pool_threads, cores=os.cpu_count()))


class Stages(Generic[K]):
    """The stage pipeline. Exactly one of `on_done` / `on_failed` runs per task (on a pool
    thread, or the caller's for a failure before the model); `on_failed` must not raise."""

    def __init__(
        self,
        *,
        model: MatteModel,
        params: PipelineParams,
        options: ImageOptions,
        in_flight: int,
        cpu_threads: int,
        claim: Callable[[], tuple[K, Path] | None],
        on_done: Callable[[Task[K], Prepared, Cutout], None],
        on_failed: Callable[[Task[K], BaseException], None],
        on_stage: Callable[[K, str | None], None] = lambda key, stage: None,
        recipes: Callable[[K], Sequence[Recipe]] | None = None,
        params_of: Callable[[K], PipelineParams] | None = None,
        model_of: Callable[[K], MatteModel] | None = None,
        flip_pass: bool = False,
        wake: threading.Event | None = None,
    ) -> None:
        self.model, self.params, self.options, self.claim = model, params, options, claim
        self.params_of = params_of or (lambda key: params)
        """The pipeline's numbers for one image (a model chosen for it has its own input size)."""
        self.model_of = model_of or (lambda key: model)
        self.flip_pass = flip_pass
        """Also run the model on the mirrored image, for the doubt score (`review.flip_pass`)."""
        self.recipes = recipes or (lambda key: seed_recipes(options))
        self.on_done, self.on_failed, self.on_stage = on_done, on_failed, on_stage
        self.wake = wake or threading.Event()
        """Set whenever a slot frees, or a pool thread's claim gives the model work."""
        share_cores_with_opencv(pool_threads=cpu_threads)
        self._pool = ThreadPoolExecutor(max_workers=cpu_threads, thread_name_prefix="cutout-cpu")
        self._cpu_threads = cpu_threads
        self._pool_tasks = 0
        """Tasks given to the pool and not yet over (queued or running)."""
        self._slots = threading.BoundedSemaphore(in_flight)
        self._active = 0
        self._lock = threading.Lock()
        self._claiming = threading.RLock()
        """Held by whoever claims (the model thread, or a pool thread refilling): one at a time, so
        `claim` sees a consistent `idle` and never runs twice at once. Reentrant: `claim` may ask `idle`."""
        self._last_claim: Literal["found", "empty", "unknown"] = "unknown"
        """What the last claim that answered said: work `found` (a freed slot is then refilled by
        the pool thread) or none left (`empty`: a batch may be through); `unknown` before any,
        and once a claim raised after one that found work."""
        self._in_model = False
        """Whether the model thread is in `infer_next`, waiting for a decode or in a forward: it
        cannot top up then, so a slot freed meanwhile is refilled by the pool thread that freed it."""
        self._closed = False
        self._ready: deque[Task[K]] = deque()

    def top_up(self) -> None:
        """Start decoding claimed images while slots are free and `claim` has work."""
        with self._claiming:
            if not self._closed:
                self._fill()

    def _fill(self) -> None:
        while self._slots.acquire(blocking=False):
            try:
                claimed = self.claim()
            except BaseException:  # the store away: the slot stays free for the next try
                self._slots.release()
                self._forget_found()
                raise
            self._last_claim = "empty" if claimed is None else "found"
            if claimed is None:
                self._slots.release()
                return
            self._start(*claimed)

    def _forget_found(self) -> None:
        """A claim raised: it says nothing of the queue, but refilling on the strength of an older
        `found` would call the failing store again from every freed slot."""
        if self._last_claim == "found":
            self._last_claim = "unknown"

    def decode_starts_now(self) -> bool:
        """Whether an image claimed now would start decoding at once (a pool thread is free)."""
        with self._lock:
            return self._pool_tasks < self._cpu_threads

    def _start(self, key: K, path: Path) -> None:
        timer, awaited = StageTimer(), threading.Event()
        future = self._submit(self._prepare, key, path, timer, awaited)
        with self._lock:
            self._active += 1
        self._ready.append(Task(key, path, timer, future, awaited))

    def _submit(self, work: Callable[..., T], *args: object) -> Future[T]:
        with self._lock:
            self._pool_tasks += 1
        return self._pool.submit(self._counted, work, *args)

    def _counted(self, work: Callable[..., T], *args: object) -> T:
        try:
            return work(*args)
        finally:
            with self._lock:
                self._pool_tasks -= 1

    def _prepare(self, key: K, path: Path, timer: StageTimer, awaited: threading.Event) -> Prepared:
        self.on_stage(key, "decode")
        prepared = prepare(path, params=self.params_of(key), timer=timer, options=self.options)
        if not awaited.is_set():
            self.on_stage(key, None)  # decoded: it waits for the model and can harm nothing
        return prepared

    def infer_next(self) -> bool:
        """Run the model on the oldest claimed image (waiting for its decode); False if none."""
        if not self._ready:
            return False
        task = self._ready.popleft()
        self._in_model = True
        try:
            task.awaited.set()
            prepared = task.prepared.result()
            self.on_stage(task.key, "inference")
            model = self.model_of(task.key)  # a chosen model loads here, on the thread that owns the models
            with task.timer.stage("inference"):
                matte = model.predict(prepared.batch)
            mirrored = self._mirrored(model, prepared.batch, timer=task.timer) if self.flip_pass else None
        except Exception as exc:
            self._in_model = False
            try:
                self.on_failed(task, exc)
            finally:
                self._release(refill=False)  # the model thread tops up itself, next
            return True
        self._in_model = False
        # Released once the pool has counted the finish out, so a refill's claim sees the thread free.
        self._submit(self._finish, task, prepared, matte, mirrored).add_done_callback(
            lambda finished: self._release(refill=True))
        return True

    @staticmethod
    def _mirrored(model: MatteModel, batch: FloatArray, *, timer: StageTimer) -> FloatArray:
        """The flip pass: the model on the image mirrored left to right, its matte mirrored back."""
        with timer.stage("flip_pass"):
            matte = model.predict(np.ascontiguousarray(batch[..., ::-1]))
        return np.ascontiguousarray(matte[..., ::-1])

    def _finish(self, task: Task[K], prepared: Prepared, matte: FloatArray, mirrored: FloatArray | None) -> None:
        """On a pool thread: the CPU stages after the model, then the caller's `on_done`."""
        try:
            self.on_stage(task.key, "finish")
            cutout = finish(prepared, matte, params=self.params_of(task.key), timer=task.timer,
                            recipes=self.recipes(task.key), mirrored=mirrored)
            self.on_done(task, prepared, cutout)
        except Exception as exc:  # on_failed decides: quarantine, retry, or report
            self.on_failed(task, exc)

    def _release(self, *, refill: bool) -> None:
        """A task is over: its slot is free, and (`refill`) claimed again at once if work is left."""
        try:
            with self._claiming:
                with self._lock:
                    self._active -= 1
                self._slots.release()
                if refill and self._last_claim == "found" and self._in_model and not self._closed:
                    self._refill()
        finally:
            self.wake.set()

    def _refill(self) -> None:
        try:
            self._fill()
        except Exception as exc:  # the store away: the model thread's own top-up asks next (and says why)
            self._forget_found()
            log.warning("claim_failed", error=f"{type(exc).__name__}: {exc}", action="the model thread claims next")

    @property
    def idle(self) -> bool:
        """Nothing claimed, decoding, in the model or finishing (nor being claimed)."""
        with self._claiming, self._lock:
            return self._active == 0

    @property
    def drained(self) -> bool:
        """Idle, and the last claim found no work: a batch is through (a slot that freed after a
        top-up found none free is not the end: its file is claimed next)."""
        with self._claiming:
            return self.idle and self._last_claim == "empty"

    def close(self) -> list[Task[K]]:
        """Hand back the claimed images the model has not seen; let the rest finish."""
        with self._claiming:
            self._closed = True
            handed_back = list(self._ready)
            self._ready.clear()
        for task in handed_back:
            task.prepared.cancel()
            self._release(refill=False)
        self._pool.shutdown(wait=True, cancel_futures=False)
        return handed_back
