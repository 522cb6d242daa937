"""How likely a cut-out is wrong, from the model's own matte: one number in 0..1, and its parts.

The daemon runs unattended; a wrong cut-out is delivered as quietly as a good one unless
something says which ones deserve a look. Every part below reads the model's matte (its
probabilities, before the seed's clean-up) inside the image, at the model's resolution
(1088 pixels at most: the cost does not grow with the photo), and rises from 0 (looks like a
clean cut-out) to 1 (looks wrong) between two limits measured on the benchmark
(`python -m benchmarks.doubt`):

    fog        the share of the piece the clean-up keeps that is unsure (p < 0.9) away from
               its outline: a clean matte, even a soft one, is unsure only along its outline
    unstable   1 - IoU of the masks at p > 0.25 and p > 0.75 (SAM's stability score): a
               matte whose shape depends on the threshold was not sure of it
    borders    the subject running along three or four sides of the frame: most often the
               background taken for the subject
    area       the subject covering almost none, or almost all, of the frame
    pieces     the second largest piece of the subject against the largest (the clean-up keeps
               only the largest): two of a size, and it may have kept the wrong one. Halved
               when the piece dropped lies farther from the frame's centre than the one kept
               (subjects are framed near the centre: the clean-up most likely chose right)

Given the photo as the model saw it (every cut-out of the daemon and of `cutout process`):

    unfounded  the length of the subject's outline (in the subject's own widths) along which
               the photo looks the same on both sides: a true outline parts subject from backdrop, a
               cut through the subject or a blob of backdrop taken in runs through one of
               them. Each outline
               pixel's contrast (the photo's mean colour just inside against just outside) is
               weighed against the outline's own typical contrast (never less than the
               photo's own spread), so a low-contrast photo is judged against itself

With `review.flip_pass` on, the model also runs on the mirrored image, and one more part joins:

    flip       1 - IoU of the masks of the two passes (the mirrored one mirrored back): a network
               sure of a subject finds the same one in its mirror image; a confident mistake
               (a part cut off, background taken in, which no part above can see) often does not

Its limits (FLIP_LIMITS) are not measured: the benchmark's mattes are made, not predicted, and
measuring them needs the real network on real photos, which these machines cannot fetch.

The score is 1 - (1 - part_1) (1 - part_2) ...: any one clear sign is enough, and weaker signs
add up.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from daemon.pipeline.matte import FloatArray

UNSURE = (0.1, 0.9)
FOG_REACH = 0.02
"""How far from the outline (a share of the matte's longer side) unsure pixels still belong to
the edge: 22 pixels at the model's 1088 (a motion-blurred edge is about that wide). Measured:
1 % flags a quarter of the clean soft subjects, 2 % none (BENCHMARKS.md)."""
STABILITY = (0.25, 0.75)
LIMITS: dict[str, tuple[float, float]] = {
    "fog": (0.02, 0.1),
    "unstable": (0.3, 0.6),
    "borders": (2.0, 3.5),
    "area": (0.0, 1.0),
    "pieces": (0.25, 0.6),
    "unfounded": (0.2, 1.2),
}
"""Each part's value where it starts to count (0) and where it is certain (1)."""
FLIP_LIMITS = (0.03, 0.15)
"""`flip`: disagreement under 3 % of the subject is the ordinary wobble of a network at its edges
(test-time augmentation studies report over 97 % agreement on images it segments well); 15 %
is a different subject. Chosen, not measured (see above)."""
AREA_PLAUSIBLE = (0.01, 0.85)
"""The share of the frame a subject usually covers; `area` counts how far outside it is."""
FOUNDED = 0.25
"""An outline pixel is founded when the photo's contrast across it is at least this share of
the outline's typical contrast (see `_unfounded`)."""
SPREAD_FLOOR = 0.5
"""The outline's typical contrast is taken as at least this share of the photo's own spread."""
SIDES_REACH = 0.015
"""How far each side of the outline is looked at (a share of the matte's longer side): 16
pixels at the model's 1088, wider than a motion-blurred edge is soft."""
EPS = np.float32(1e-6)
BORDER_SHARE = 0.5
"""A side counts as touched when the subject covers this share of it."""
CENTRED_DISCOUNT = 0.5
"""`pieces` is multiplied by this when the piece the clean-up dropped lies farther from the
frame's centre than the one it kept. Halved, not dropped: two objects of a size still deserve a
look (BENCHMARKS.md)."""


@dataclass(frozen=True)
class Doubt:
    score: float
    parts: dict[str, float]
    """Each part's value in 0..1 before they are combined."""

    def rounded(self) -> Doubt:
        """As the store keeps it and every report shows it (three decimals): a score of 0.5004
        is doubtful everywhere or nowhere."""
        return Doubt(round(self.score, 3), {name: round(value, 3) for name, value in self.parts.items()})


def doubt(matte: FloatArray, *, image: FloatArray | None = None, mirrored: FloatArray | None = None) -> Doubt:
    """The doubt of one cut-out from the model's matte over the image (the padding removed), from
    `image` (H, W, channels: the photo as the model saw it, at the matte's size, any scale
    per channel), and from the matte of the mirrored image mirrored back, when the flip pass ran."""
    subject = matte > 0.5
    kept, second = _pieces(subject)
    outline = _outline(kept)
    raw = {
        "fog": _fog(matte, kept, outline),
        "unstable": 1.0 - _iou(matte > STABILITY[0], matte > STABILITY[1]),
        "borders": float(_sides_touched(subject)),
        "area": _area_outside(float(subject.mean())),
        "pieces": second,
    }
    if image is not None:
        raw["unfounded"] = _unfounded(image, kept, outline)
    parts = {name: _ramp(value, *LIMITS[name]) for name, value in raw.items()}
    if mirrored is not None:
        parts["flip"] = _ramp(1.0 - _iou(subject, mirrored > 0.5), *FLIP_LIMITS)
    return Doubt(score=1.0 - float(np.prod([1.0 - value for value in parts.values()])), parts=parts)


def _ramp(value: float, low: float, high: float) -> float:
    return float(np.clip((value - low) / (high - low), 0.0, 1.0))


def _outline(kept: np.ndarray) -> np.ndarray:
    """The kept piece's own pixels next to its outside (none along the frame's sides), as 0/1."""
    return np.asarray(kept.view(np.uint8) - cv2.erode(kept.view(np.uint8), np.ones((3, 3), np.uint8)))


def _fog(matte: FloatArray, kept: np.ndarray, edge: np.ndarray) -> float:
    """The share of the kept piece that is unsure away from its outline: a clean matte, even a
    soft one, is unsure only along its outline (elsewhere the clean-up drops whatever is unsure).
    A share of the piece, not of the outline: a head of hair's long outline must not dilute a
    fog over its face (a share is also the same at the model's 1088 and at 2048)."""
    away = cv2.distanceTransform(1 - edge, cv2.DIST_L2, 3) > FOG_REACH * max(matte.shape)
    unsure = (matte < UNSURE[1]) & kept & away
    return int(unsure.sum()) / max(int(kept.sum()), 1)


def _unfounded(image: FloatArray, kept: np.ndarray, outline: np.ndarray) -> float:
    """The length of outline where the photo looks the same on both sides, in the kept piece's
    own widths (the square root of its area), a pixel counting when its contrast is under
    FOUNDED x the outline's upper-quartile contrast. A length, not a share of the outline: a
    cut across a head of hair is as wrong however long the strands' outline around it. In the
    subject's widths, not the frame's: the same chord cuts off more of a small subject (0 for
    a flat photo)."""
    along, spread = _contrast_across(image, kept, at=outline.view(bool))
    typical = max(float(np.quantile(along, 0.75)), SPREAD_FLOOR * spread) if along.size else 0.0
    if not typical > 0:  # no outline, a flat photo (or one that is not a number)
        return 0.0
    return float(np.count_nonzero(along < FOUNDED * typical)) / max(float(np.sqrt(kept.sum())), 1.0)


def _contrast_across(image: FloatArray, kept: np.ndarray, *, at: np.ndarray) -> tuple[FloatArray, float]:
    """At the pixels `at`, the largest difference over the channels between the photo's mean
    colour on the kept piece and off it, each within a box SIDES_REACH of the side wide:
    averaged, a texture on either side cancels out and a soft edge counts as much as a sharp
    one. The box sums are linear, so off the piece is all of the box less on it. Also the
    photo's own spread at that scale (the largest channel's deviation of the box means): a
    floor for the outline's typical contrast, so that an outline wrong all the way round (a
    piece wholly inside the subject, or wholly on the backdrop) is not its own yardstick."""
    if image.ndim != 3 or image.shape[:2] != kept.shape:
        raise ValueError(f"the photo ({image.shape}) must be H x W x channels at the matte's size {kept.shape}")
    reach = max(3, round(SIDES_REACH * max(kept.shape))) | 1
    size = (reach, reach)
    inside = kept.astype(np.float32)
    photo = np.ascontiguousarray(image, np.float32)
    share_on = cv2.blur(inside, size)[at][:, np.newaxis]
    means = np.asarray(cv2.blur(photo, size), np.float32).reshape(*kept.shape, -1)
    on = np.asarray(cv2.blur(photo * inside[..., np.newaxis], size), np.float32).reshape(*kept.shape, -1)[at]
    difference = on / (share_on + EPS) - (means[at] - on) / (1 - share_on + EPS)
    spread = float(means[::4, ::4].std(axis=(0, 1)).max(initial=0.0))
    return np.asarray(np.abs(difference).max(axis=1, initial=0.0), np.float32), spread


def _pieces(subject: np.ndarray) -> tuple[np.ndarray, float]:
    """The largest piece of the subject (the one the clean-up keeps), and the second largest's
    area over its own: near 1, the clean-up had two subjects to choose from, and may have kept
    the wrong one. Halved when the second lies farther from the frame's centre than the first
    (the centre prior of saliency: a subject is framed near the middle, an intruder at the side)."""
    count, labels, stats, centroids = cv2.connectedComponentsWithStats(subject.view(np.uint8), connectivity=8)
    if count <= 1:
        return np.zeros_like(subject), 0.0
    # Largest first, ties in label order: the clean-up's argmax keeps the first of equals.
    by_area = 1 + np.argsort(-stats[1:, cv2.CC_STAT_AREA], kind="stable")
    kept = np.asarray(labels == by_area[0])
    if count <= 2:
        return kept, 0.0
    largest, second = by_area[:2]
    ratio = float(stats[second, cv2.CC_STAT_AREA] / stats[largest, cv2.CC_STAT_AREA])
    off_centre = [_off_centre(centroids[label], subject.shape) for label in (largest, second)]
    return kept, ratio * (CENTRED_DISCOUNT if off_centre[1] > off_centre[0] else 1.0)


def _off_centre(centroid: np.ndarray, shape: tuple[int, ...]) -> float:
    """How far a centroid (in pixel indices, OpenCV's) lies from the frame's centre, in frame
    sides along each axis: pixel i spans [i, i + 1), so the centre is at index (side - 1) / 2."""
    return float(np.hypot((centroid[0] + 0.5) / shape[1] - 0.5, (centroid[1] + 0.5) / shape[0] - 0.5))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = int((a | b).sum())
    return 1.0 if union == 0 else int((a & b).sum()) / union


def _sides_touched(subject: np.ndarray) -> int:
    sides = (subject[0], subject[-1], subject[:, 0], subject[:, -1])
    return sum(float(side.mean()) >= BORDER_SHARE for side in sides)


def _area_outside(share: float) -> float:
    """0 inside the plausible range, rising to 1 at an empty or a full frame."""
    low, high = AREA_PLAUSIBLE
    if share < low:
        return (low - share) / low
    return (share - high) / (1 - high) if share > high else 0.0
