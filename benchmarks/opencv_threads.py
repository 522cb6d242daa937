"""OpenCV's own threads inside the stage pool: what they cost, per image.

    python -m benchmarks.opencv_threads            # 24 MP, 8 images a round, 3 rounds
    python -m benchmarks.opencv_threads --images 4 --rounds 1

The daemon's CPU stages run on a pool with one thread per core (`worker.cpu_threads`), each
thread on its own image. OpenCV also splits many of its calls over a pool of its own. This
runs the heavy CPU stages of a 24 MP cut-out (JPEG decode, `decontaminate`, PNG encode) on a
pool of 1 and of 2 threads, with OpenCV's threads at their default and at one, the four
settings taking turns in every round, and prints wall and CPU milliseconds per image (the
median over rounds). `daemon.work.stages.opencv_threads()` is what the daemon chose from it:
the cores its pool leaves OpenCV, one beside the default pool of a thread per core.
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np

from benchmarks.decontaminate import BACKDROPS, Scene, fur, subject_colour
from daemon.pipeline.composite import encode_bgra
from daemon.pipeline.constants import PipelineParams
from daemon.pipeline.decontaminate import decontaminated

SHAPE = (4000, 6000)


def stages_of_one_image(jpeg: np.ndarray, alpha: np.ndarray, params: PipelineParams) -> None:
    colour = np.asarray(cv2.imdecode(jpeg, cv2.IMREAD_COLOR), np.uint8)
    clean = decontaminated(colour, alpha)
    encode_bgra(np.dstack([clean, alpha]), compression=params.png_compression, png_filter=params.png_filter)


def per_image(*, pool_threads: int, opencv_threads: int, images: int, work: tuple[np.ndarray, np.ndarray]) -> tuple[float, float]:
    """Wall and CPU milliseconds per image of `images` images through a pool of `pool_threads`."""
    default = cv2.getNumThreads()
    cv2.setNumThreads(opencv_threads)
    try:
        with ThreadPoolExecutor(max_workers=pool_threads) as pool:
            list(pool.map(lambda _: stages_of_one_image(*work, PipelineParams()), range(pool_threads)))  # warm
            wall, cpu = time.perf_counter(), time.process_time()
            list(pool.map(lambda _: stages_of_one_image(*work, PipelineParams()), range(images)))
            return (time.perf_counter() - wall) * 1000 / images, (time.process_time() - cpu) * 1000 / images
    finally:
        cv2.setNumThreads(default)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(3)
    scene = Scene("fur / green 24 MP", subject_colour(SHAPE, rng), fur(SHAPE, rng, sharpness=600),
                  np.broadcast_to(np.array(BACKDROPS["green"], np.float64), (*SHAPE, 3)))
    jpeg = cv2.imencode(".jpg", cv2.cvtColor(scene.photo, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])[1]
    work = (jpeg, scene.alpha8)
    default = cv2.getNumThreads()
    settings = [(pool, opencv) for pool in (1, 2) for opencv in (default, 1)]
    found: dict[tuple[int, int], list[tuple[float, float]]] = {setting: [] for setting in settings}
    for _ in range(args.rounds):
        for pool, opencv in settings:
            found[(pool, opencv)].append(per_image(pool_threads=pool, opencv_threads=opencv, images=args.images, work=work))
    print(f"24 MP decode + decontaminate + PNG encode, {args.images} images a round, median of {args.rounds} rounds")
    print("| stage pool | OpenCV threads | wall ms per image | CPU ms per image |")
    print("|---:|---:|---:|---:|")
    for (pool, opencv), runs in found.items():
        wall, cpu = (statistics.median(run[i] for run in runs) for i in (0, 1))
        print(f"| {pool} | {opencv}{' (default)' if opencv == default and opencv != 1 else ''} | {wall:.0f} | {cpu:.0f} |")


if __name__ == "__main__":
    main()
