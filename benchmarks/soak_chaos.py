"""What the soak run does to the hot folder, and the ledger of every input it made.

The chaos is a set of independent random (Poisson) streams: drops of good and bad
files written in every way studios write them, renames, backup-style readers,
`cutout status` calls, and SIGKILL / SIGTERM of the daemon. Every file it creates
is written down in the `Ledger` with the name it ends under and whether it was
meant to be good, so the end check knows exactly what each input should become.

Expectations, and why:

* a good input ends with exactly one cutout at its final relative path (`x.jpg` ->
  `x.png`) and stays in the hot folder (`originals: keep`);
* a bad input ends in quarantine at its final relative path with `<name>.error.json`;
  only the generator's intent makes a file bad, never the daemon's verdict;
* a file renamed inside the hot folder is an input under its *new* name only. Its
  old name may keep a cutout made before the rename (a stale output: the daemon
  keeps cutouts, it never deletes them when an original goes) and needs none;
  it never gets a quarantine entry, since the file is no longer there to move.
  When the daemon quarantined a bad file before the rename could happen, the
  rename fails and the file keeps its old name as its final one.
"""

from __future__ import annotations

import os
import random
import shlex
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import cv2
import numpy as np
import numpy.typing as npt

from benchmarks.endtoend import child_env, cutout_command
from benchmarks.images import encode, ensure_image
from benchmarks.machine import REPO
from benchmarks.soak_daemon import Supervisor, jobs_in_stage, log_events

SEEDS = (101, 102, 103, 104, 105, 106)
"""Base photos (2 MP, generated once, cached); every good file is a distinct crop and scale of one."""
SUBFOLDERS = ("", "", "", "shoot-a", "shoot-b/selects", "Client Ü/day 2")
"""Where drops land: mostly the top level, some in (Unicode, spaced) subfolders."""
GOOD_KINDS: dict[str, int] = {
    "atomic": 30, "plain": 20, "slow": 10, "empty-then-write": 6, "old-mtime": 5, "folder": 4,
}
"""How good files arrive, by weight: exporter temp+rename, a plain write, a slow network copy in
chunks, a copy that creates the file and writes later (`exec 3>f; sleep; cat >&3`), a `mv` from
elsewhere that keeps an old mtime, and a whole folder moved in."""
BAD_KINDS: dict[str, tuple[int, str]] = {
    "garbage": (4, "undecodable"), "truncated": (3, "truncated"), "black": (4, "no_foreground"),
    "empty": (1, "undecodable"), "raw": (2, "unsupported"),
}
"""Bad files (weight, the reason they should get): random bytes named .jpg, a JPEG or PNG cut short
that stays so, an all-black image (the stand-in's matte is brightness, so no subject), an empty
file that stays empty, random bytes named like a camera RAW file."""
BAD_SHARE = 0.15
RECENT_S = 2.5
"""A rename (by the rename stream) of a file younger than this counts as early."""
RENAME_SOON_SHARE = 0.1
"""Share of the quick drops (temp+rename, plain write) renamed 0-1.2 s after their last byte:
before the daemon could have settled them (1 s settle), or while it reads them."""

Rgb = npt.NDArray[np.uint8]


@dataclass
class Entry:
    """One input the soak created."""

    rel: str
    """Its relative path in the hot folder now (POSIX)."""
    good: bool
    kind: str
    reason: str | None
    """The quarantine reason a bad file should get (a different reason is reported, not failed)."""
    written_at: float | None = None
    """time.monotonic() once fully written; None while a writer is still at it."""
    former: list[str] = field(default_factory=list)
    """Names it had before renames."""
    pinned: bool = False
    """Never renamed: where it is is the point (a file behind a planted link)."""


class Ledger:
    """Every input made, thread-safe: writer threads finish entries while the chaos renames others."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[Entry] = []
        self._serial = 0

    def name(self, *, kind: str, folder: str, suffix: str) -> str:
        """A fresh relative path: serials keep every stem unique, so no two inputs share an output name."""
        with self._lock:
            self._serial += 1
            serial = self._serial
        return (PurePosixPath(folder) / f"{kind}-{serial:05d}{suffix}").as_posix()

    def add(self, entry: Entry) -> Entry:
        with self._lock:
            self._entries.append(entry)
        return entry

    def written(self, entry: Entry) -> None:
        with self._lock:
            entry.written_at = time.monotonic()

    def pick_for_rename(self, rng: random.Random, *, early: bool) -> Entry | None:
        """A fully written input: a recent one (not settled yet) when `early`, else any."""
        now = time.monotonic()
        with self._lock:
            done = [e for e in self._entries if e.written_at is not None and not e.pinned]
            recent = [e for e in done if now - (e.written_at or 0.0) < RECENT_S]
        pool = recent if early and recent else done
        return rng.choice(pool) if pool else None

    def renamed(self, entry: Entry, new_rel: str) -> None:
        with self._lock:
            entry.former.append(entry.rel)
            entry.rel = new_rel

    def entries(self) -> list[Entry]:
        with self._lock:
            return list(self._entries)


class Pictures:
    """Image bytes: distinct good photos (a random crop and scale of a cached base photo) and bad files."""

    def __init__(self, *, cache: Path, rng: np.random.Generator) -> None:
        self.rng = rng
        self.bases: list[Rgb] = []
        for seed in SEEDS:
            path = ensure_image(cache, 2, "jpg", seed=seed).path
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if bgr is None:
                raise RuntimeError(f"cannot read the cached base photo {path}")
            self.bases.append(np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), np.uint8))

    def photo(self) -> Rgb:
        """85-100 % of a base photo on each side (the subject stays whole), scaled to 0.3-0.8."""
        base = self.bases[int(self.rng.integers(len(self.bases)))]
        h, w = base.shape[:2]
        ch, cw = int(h * self.rng.uniform(0.85, 1.0)), int(w * self.rng.uniform(0.85, 1.0))
        top, left = int(self.rng.integers(0, h - ch + 1)), int(self.rng.integers(0, w - cw + 1))
        scale = float(self.rng.uniform(0.3, 0.8))
        crop = base[top : top + ch, left : left + cw]
        size = (max(64, int(cw * scale)), max(64, int(ch * scale)))
        return np.asarray(cv2.resize(crop, size, interpolation=cv2.INTER_AREA), np.uint8)

    def good(self, fmt: str) -> bytes:
        return encode_any(self.photo(), fmt)

    def bad(self, kind: str) -> tuple[bytes, str]:
        """(bytes, file suffix) of a bad file of `kind`."""
        if kind == "garbage":
            return self.noise(), ".jpg"
        if kind == "raw":
            return self.noise(), str(self.rng.choice([".nef", ".cr2", ".arw"]))
        if kind == "empty":
            return b"", ".jpg"
        if kind == "black":
            fmt = "jpg" if self.rng.random() < 0.7 else "png"
            h, w = int(self.rng.integers(300, 900)), int(self.rng.integers(300, 900))
            return encode_any(np.zeros((h, w, 3), np.uint8), fmt), f".{fmt}"
        if kind == "truncated":
            fmt = "jpg" if self.rng.random() < 0.7 else "png"
            data = encode_any(self.photo(), fmt)
            return data[: int(len(data) * self.rng.uniform(0.3, 0.8))], f".{fmt}"
        raise ValueError(f"unknown bad kind {kind!r}")

    def noise(self) -> bytes:
        return bytes(self.rng.integers(0, 256, int(self.rng.integers(2_000, 200_000)), dtype=np.uint8))


def encode_any(rgb: Rgb, fmt: str) -> bytes:
    """JPEG and PNG as the benchmarks write them; TIFF through OpenCV (uncompressed, as exporters do)."""
    if fmt in ("jpg", "png"):
        return encode(rgb, fmt)
    ok, data = cv2.imencode(f".{fmt}", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError(f"OpenCV could not encode {fmt}")
    return bytes(data.tobytes())


# --- Ways of writing a file ----------------------------------------------------------------------
def write_atomic_like_an_exporter(path: Path, data: bytes) -> None:
    """Hidden temp name in the same folder, then rename (Capture One, Lightroom, `rsync`)."""
    temp = path.with_name(f".{path.name}.soak-part")
    temp.write_bytes(data)
    os.replace(temp, path)


def write_slowly(path: Path, data: bytes, *, rng: random.Random) -> None:
    """A slow network copy: 3-6 chunks with 1-4 s pauses; the file is visible and incomplete meanwhile."""
    chunks = rng.randint(3, 6)
    step = max(1, len(data) // chunks)
    with open(path, "wb") as handle:
        for start in range(0, len(data), step):
            handle.write(data[start : start + step])
            handle.flush()
            if start + step < len(data):
                time.sleep(rng.uniform(1.0, 4.0))


def write_empty_then_content(path: Path, source: Path, *, pause: float) -> None:
    """`exec 3>f; sleep; cat src >&3`: the file exists, empty, for `pause` seconds (SMB copies do this)."""
    script = f"exec 3>{shlex.quote(str(path))}; sleep {pause:.2f}; cat {shlex.quote(str(source))} >&3"
    subprocess.run(["bash", "-c", script], check=True)


@dataclass(frozen=True)
class Rates:
    """Mean events per second of each stream (0 = off)."""

    drop: float
    rename: float
    read: float
    status: float
    kill: float
    term: float
    fill: float = 0.0
    """The state folder's disk made full for 5-15 s."""
    plant: float = 0.0
    """A link planted in the output folder, and a photo dropped behind it."""
    second: float = 0.0
    """A second `cutout watch` on the same folders (in the signal-free segment only)."""


class Chaos:
    """Runs the random streams against one hot folder until told to stop."""

    def __init__(
        self, *, hot: Path, output: Path, staging: Path, state: Path, ledger: Ledger, pictures: Pictures,
        supervisor: Supervisor, rng: random.Random, rates: Rates, config: Path, state_disk: Path | None = None,
    ) -> None:
        self.hot, self.output, self.staging, self.state = hot, output, staging, state
        self.config, self.state_disk = config, state_disk
        self.link_targets: list[Path] = []
        """Folders that links planted in the output folder point to: nothing may ever appear in them."""
        self.fill_windows: list[tuple[float, float]] = []
        """(start, end) wall-clock times the state disk was full: the daemon's store-away events then are expected."""
        self._full = threading.Event()
        self.ledger, self.pictures, self.supervisor, self.rng, self.rates = ledger, pictures, supervisor, rng, rates
        self.counts: Counter[str] = Counter()
        self.problems: list[str] = []
        """What went wrong on the soak's own side or in a reader (`cutout status` failing, say)."""
        self._threads: list[threading.Thread] = []
        self._reader: threading.Thread | None = None
        self._lock = threading.Lock()
        self._aimed: threading.Thread | None = None
        self._started_logs: set[Path] = set()
        self._signals_until = 0.0

    # --- the scheduler ---------------------------------------------------------------------------
    def run(self, *, until: float, signals_until: float, progress: Callable[[], None]) -> None:
        """Until time.monotonic() reaches `until`; kills and SIGTERMs only before `signals_until`
        (the steady segment after it measures one long life's memory)."""
        streams: dict[str, tuple[float, Callable[[], None]]] = {
            "drop": (self.rates.drop, self.drop), "rename": (self.rates.rename, self.rename),
            "read": (self.rates.read, self.read_everything), "status": (self.rates.status, self.status),
            "kill": (self.rates.kill, self.kill), "term": (self.rates.term, self.term),
            "fill": (self.rates.fill if self.state_disk else 0.0, self.fill_state),
            "plant": (self.rates.plant, self.plant_link), "second": (self.rates.second, self.second_daemon),
        }
        self._signals_until = signals_until
        now = time.monotonic()
        due = {name: now + self.rng.expovariate(rate) for name, (rate, _) in streams.items() if rate > 0}
        next_progress = now + 60.0
        while True:
            name = min(due, key=due.__getitem__)
            wake = min(due[name], until, next_progress)
            time.sleep(max(0.0, wake - time.monotonic()))
            now = time.monotonic()
            if now >= until:
                break
            if now >= next_progress:
                progress()
                next_progress += 60.0
                continue
            if name not in ("kill", "term") or now < signals_until:
                if name in ("kill", "term") and self._full.is_set():
                    self.count(f"{name}:while-full-skipped")  # a start on a full state disk is not this check
                elif name == "second" and now < signals_until:
                    self.count("second:before-steady-skipped")  # a killed first daemon's claim would be stale
                else:
                    self._guarded(name, streams[name][1])
            if now >= signals_until:
                self.supervisor.startup_chaos.clear()
            due[name] = now + self.rng.expovariate(streams[name][0])

    def _guarded(self, name: str, action: Callable[[], None]) -> None:
        try:
            action()
        except Exception as exc:  # the soak's own failure: noted, and the run goes on
            self.problems.append(f"{name}: {type(exc).__name__}: {exc}")

    def finish(self) -> None:
        """Wait for every writer and reader still at work."""
        for thread in [*self._threads, *([self._aimed] if self._aimed else [])]:
            thread.join(timeout=120)
        if self._reader is not None:
            self._reader.join(timeout=300)

    def _background(self, name: str, work: Callable[[], None]) -> None:
        def body() -> None:
            self._guarded(name, work)

        thread = threading.Thread(target=body, name=f"soak-{name}", daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counts[key] += n

    # --- drops -----------------------------------------------------------------------------------
    def drop(self) -> None:
        if self.rng.random() < BAD_SHARE:
            self.drop_bad()
        else:
            self.drop_good()

    def drop_good(self) -> None:
        kind = self.rng.choices(list(GOOD_KINDS), weights=list(GOOD_KINDS.values()))[0]
        if kind == "folder":
            self.drop_folder()
            return
        fmt = self.rng.choices(["jpg", "png", "tif"], weights=[70, 22, 8])[0] if kind in ("atomic", "plain") else \
            self.rng.choices(["jpg", "png"], weights=[75, 25])[0]
        data = self.pictures.good(fmt)
        entry = self._entry(kind=kind, good=True, reason=None, suffix=f".{fmt}")
        path = self.hot / entry.rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if kind == "atomic":
            self._write(entry, lambda: write_atomic_like_an_exporter(path, data))
        elif kind == "plain":
            self._write(entry, lambda: path.write_bytes(data))
        elif kind == "old-mtime":
            self._finish_write(entry, lambda: self._move_in_old(path, data))
        elif kind == "slow":
            rng = random.Random(self.rng.random())
            self._background("slow", lambda: self._finish_write(entry, lambda: write_slowly(path, data, rng=rng)))
        else:
            source = self.staging / f"src-{Path(entry.rel).name}"
            source.write_bytes(data)
            pause = self.rng.uniform(1.0, 4.0)

            def copy() -> None:
                write_empty_then_content(path, source, pause=pause)
                source.unlink()

            self._background("empty-then-write", lambda: self._finish_write(entry, copy))

    def drop_bad(self) -> None:
        kind = self.rng.choices(list(BAD_KINDS), weights=[w for w, _ in BAD_KINDS.values()])[0]
        data, suffix = self.pictures.bad(kind)
        entry = self._entry(kind=kind, good=False, reason=BAD_KINDS[kind][1], suffix=suffix)
        path = self.hot / entry.rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if self.rng.random() < 0.5:
            self._write(entry, lambda: write_atomic_like_an_exporter(path, data))
        else:
            self._write(entry, lambda: path.write_bytes(data))

    def drop_folder(self) -> None:
        """A folder of 2-4 photos made outside the hot folder, then moved in by one rename."""
        name = Path(self.ledger.name(kind="batch", folder="", suffix="")).name
        made = self.staging / name
        made.mkdir(parents=True)
        parent = self.rng.choice(SUBFOLDERS)
        entries = []
        for _ in range(self.rng.randint(2, 4)):
            fmt = self.rng.choice(["jpg", "png"])
            rel = self.ledger.name(kind="folder", folder=(PurePosixPath(parent) / name).as_posix(), suffix=f".{fmt}")
            entry = Entry(rel=rel, good=True, kind="folder", reason=None)
            (made / PurePosixPath(entry.rel).name).write_bytes(self.pictures.good(fmt))
            entries.append(entry)
        (self.hot / parent).mkdir(parents=True, exist_ok=True)
        os.rename(made, self.hot / parent / name)
        for entry in entries:
            self.ledger.written(self.ledger.add(entry))
        self.count("drop:folder", len(entries))

    def _entry(self, *, kind: str, good: bool, reason: str | None, suffix: str) -> Entry:
        rel = self.ledger.name(kind=kind, folder=self.rng.choice(SUBFOLDERS), suffix=suffix)
        self.count(f"drop:{kind}")
        return self.ledger.add(Entry(rel=rel, good=good, kind=kind, reason=reason))

    def _write(self, entry: Entry, write: Callable[[], object]) -> None:
        """Write now; RENAME_SOON_SHARE of the files are then renamed within 1.2 s, in the background
        (the entry is not finished until then, so the rename stream leaves it alone)."""
        if self.rng.random() >= RENAME_SOON_SHARE:
            self._finish_write(entry, write)
            return
        pause, new_rel = self.rng.uniform(0.0, 1.2), self._new_name(entry)

        def body() -> None:
            write()
            time.sleep(pause)
            self._rename(entry, new_rel, counter="rename:soon")
            self.ledger.written(entry)

        self._background("rename-soon", body)

    def _finish_write(self, entry: Entry, write: Callable[[], object]) -> None:
        write()
        self.ledger.written(entry)

    def _move_in_old(self, path: Path, data: bytes) -> None:
        """`mv` from another folder of the same disk: the file arrives whole, its mtime an hour old."""
        source = self.staging / f"mv-{path.name}"
        source.write_bytes(data)
        old = time.time() - 3600
        os.utime(source, (old, old))
        os.rename(source, path)

    # --- renames, readers, status ------------------------------------------------------------------
    def rename(self) -> None:
        """Rename a finished input: half of the time one not settled yet; a third into another folder."""
        early = self.rng.random() < 0.5
        entry = self.ledger.pick_for_rename(self.rng, early=early)
        if entry is None:
            return
        young = entry.written_at is not None and time.monotonic() - entry.written_at < RECENT_S
        self._rename(entry, self._new_name(entry), counter="rename:early" if young else "rename:late")

    def _new_name(self, entry: Entry) -> str:
        """A fresh name with the same extension: a third of the time in another folder."""
        old = PurePosixPath(entry.rel)
        folder = self.rng.choice(SUBFOLDERS) if self.rng.random() < 0.33 else old.parent.as_posix()
        return self.ledger.name(kind="renamed", folder=folder, suffix=old.suffix)

    def _rename(self, entry: Entry, new_rel: str, *, counter: str) -> None:
        (self.hot / new_rel).parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(self.hot / entry.rel, self.hot / new_rel)
        except FileNotFoundError:  # a bad file the daemon already quarantined: it keeps its name
            self.count("rename:missed")
            return
        self.ledger.renamed(entry, new_rel)
        self.count(counter)

    def read_everything(self) -> None:
        """A backup or indexer: read every original and every cutout, one pass at a time."""
        if self._reader is not None and self._reader.is_alive():
            self.count("read:skipped")
            return

        def body() -> None:
            files, size = 0, 0
            for root in (self.hot, self.output):
                for folder, _, names in os.walk(root):
                    for name in names:
                        try:
                            with open(os.path.join(folder, name), "rb") as handle:
                                while chunk := handle.read(1 << 20):
                                    size += len(chunk)
                        except OSError:
                            continue  # renamed or quarantined meanwhile
                        files += 1
            self.count("read:passes")
            self.count("read:files", files)

        self._reader = threading.Thread(target=lambda: self._guarded("read", body), name="soak-reader", daemon=True)
        self._reader.start()

    def status(self) -> None:
        """`cutout status --state S --json` while the daemon works: must answer, never exit 78."""

        def body() -> None:
            done = subprocess.run(cutout_command("status", "--state", str(self.state), "--json"), cwd=REPO,
                                  env=child_env(), capture_output=True, text=True, timeout=120, check=False)
            self.count("status:calls")
            if done.returncode != 0:
                self.count("status:failed")
                self.problems.append(f"cutout status exited {done.returncode}: {done.stderr.strip()[-500:]}")

        self._background("status", body)

    # --- the third round's hazards -------------------------------------------------------------------
    def fill_state(self) -> None:
        """The state folder's disk (a small tmpfs of its own) full for 5-15 s: files that settle
        meanwhile must be counted, then queued once space returns, none lost."""
        if self.state_disk is None or self._full.is_set():
            return
        hold = self.rng.uniform(5.0, 15.0)

        def body() -> None:
            filler = self.state_disk / "soak-filler" if self.state_disk else Path()
            if not self._quiet_life():
                self.count("fill:skipped")  # no started daemon to fill the disk under: a start is not this check
                return
            self._full.set()
            began = time.time()
            try:
                fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
                try:
                    while True:
                        os.write(fd, bytes(1 << 16))
                except OSError:
                    pass  # ENOSPC: full
                finally:
                    os.close(fd)
                time.sleep(hold)
            finally:
                filler.unlink(missing_ok=True)
                self._full.clear()
                self.fill_windows.append((began, time.time()))
            self.count("fill")

        self._background("fill", body)

    def _quiet_life(self) -> bool:
        """Within 30 s: a daemon that has started (its recovery over), with no signal about to land."""
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline:
            life = self.supervisor.current()
            if life is not None and self._has_started(life.log) and not (self._aimed and self._aimed.is_alive()):
                return True
            time.sleep(0.2)
        return False

    def plant_link(self) -> None:
        """A folder of the output replaced by a link to a folder elsewhere, and a photo dropped where
        its cut-out would go through that link: it must be quarantined (output_blocked), with
        nothing ever written elsewhere."""
        folder = PurePosixPath(self.ledger.name(kind="linked", folder="", suffix="")).name
        elsewhere = self.staging / "elsewhere" / folder
        elsewhere.mkdir(parents=True)
        self.output.mkdir(parents=True, exist_ok=True)
        (self.output / folder).symlink_to(elsewhere)
        self.link_targets.append(elsewhere)
        entry = self.ledger.add(Entry(rel=self.ledger.name(kind="linked", folder=folder, suffix=".jpg"), good=False,
                                      kind="linked", reason="output_blocked", pinned=True))
        path = self.hot / entry.rel
        path.parent.mkdir(parents=True, exist_ok=True)
        self._finish_write(entry, lambda: write_atomic_like_an_exporter(path, self.pictures.good("jpg")))
        self.count("plant")

    def second_daemon(self) -> None:
        """`cutout watch` with a state folder of its own on the same hot and output folders: it must
        be refused (exit 2, naming the first) before it touches a file."""
        if self.supervisor.current() is None:
            return
        index = self.counts["second:started"] + 1
        self.count("second:started")
        config = self.staging / f"second-{index}.yaml"
        state = self.staging / f"second-state-{index}"
        config.write_text(self.config.read_text().replace(f"state: {self.state}", f"state: {state}"))

        def body() -> None:
            second = subprocess.Popen(cutout_command("watch", "--config", str(config)), cwd=REPO, env=child_env(),
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            try:
                _, err = second.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                second.kill()
                _, err = second.communicate()
            if second.returncode == 2 and "is already claimed by cutout watch" in err:
                self.count("second:refused")
                return
            self.count("second:not-refused")
            self.problems.append(f"a second daemon on the same folders was not refused: exit {second.returncode}, "
                                 f"{err.strip()[-300:]}")

        self._background("second", body)

    # --- signals -----------------------------------------------------------------------------------
    def kill(self) -> None:
        """Half of the kills at a random moment; the other half aimed at a moment when a job is
        inside a stage (the worst one: the start-up recovery must tell suspects from bystanders)."""
        if self.rng.random() < 0.5:
            self.count("kill" if self.supervisor.send(signal.SIGKILL) else "kill:no-daemon")
        elif self._aimed is None or not self._aimed.is_alive():
            self._aimed = threading.Thread(target=lambda: self._guarded("kill", self._aimed_kill),
                                           name="soak-aimed-kill", daemon=True)
            self._aimed.start()

    def _aimed_kill(self) -> None:
        """Within 10 s (and before the signals stop): SIGKILL once a started daemon has a job in a stage."""
        deadline = min(time.monotonic() + 10.0, self._signals_until)
        while time.monotonic() < deadline:
            life = self.supervisor.current()
            if life is not None and self._has_started(life.log) and not self._full.is_set():
                in_stage = jobs_in_stage(self.state)
                if in_stage and self.supervisor.send(signal.SIGKILL, note="in-stage"):
                    self.count("kill:in-stage-alone" if in_stage == 1 else "kill:in-stage-several")
                    return
            time.sleep(0.05)
        if time.monotonic() < self._signals_until and not self._full.is_set():
            self.count("kill" if self.supervisor.send(signal.SIGKILL) else "kill:no-daemon")

    def _has_started(self, log: Path) -> bool:
        """Its start-up recovery is over: before it, stages in the queue are the dead process's."""
        if log not in self._started_logs and log_events(log, "daemon_started"):
            self._started_logs.add(log)
        return log in self._started_logs

    def term(self) -> None:
        self.count("term" if self.supervisor.send(signal.SIGTERM) else "term:no-daemon")
