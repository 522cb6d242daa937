"""Turn a result dict into the printed tables, the target verdicts, the JSON file and BENCHMARKS.md.

One renderer serves both the terminal and the Markdown file, so the table in
BENCHMARKS.md is exactly what the run printed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchmarks.machine import slug
from benchmarks.stages import PIPELINE_STAGES, SUBSTEPS

THROUGHPUT_TARGET = 0.9
"""cutout watch >= 0.9 x min(model-only rate, CPU-stage rate on all cores beside the model's own CPU)."""
OVERHEAD_TARGET = 1.1
"""The daemon's CPU per image, less the model's, <= 1.1 x the bare CPU stages'."""
CPU_RATIO_TARGET = 1.3
"""CPU time per 24 MP image outside the model <= 1.3 x the decode + encode floor."""
RSS_GROWTH_TARGET = 0.10
"""RSS at image 200 within 10 % of RSS at image 50."""
RSS_MIN_IMAGES = 200
REFERENCE_MP = 24
BEGIN, END = "<!-- latest-results:begin -->", "<!-- latest-results:end -->"

Row = Sequence[str]


# --- Rendering ---------------------------------------------------------------------------------
def render(headers: Row, rows: Sequence[Row], *, markdown: bool) -> str:
    """An aligned plain-text table, or a Markdown one (numbers right-aligned)."""
    if markdown:
        align = ["---"] + ["---:"] * (len(headers) - 1)
        lines = [headers, align, *rows]
        return "\n".join("| " + " | ".join(cell.replace("|", "/") for cell in line) + " |" for line in lines)
    widths = [max(len(str(line[i])) for line in [headers, *rows]) for i in range(len(headers))]
    fmt = "  ".join(["{:<%d}" % widths[0]] + ["{:>%d}" % w for w in widths[1:]])
    rule = "  ".join("-" * w for w in widths)
    return "\n".join([fmt.format(*headers), rule, *(fmt.format(*row) for row in rows)])


def _ms(timing: dict[str, float] | None) -> str:
    """'wall / cpu' milliseconds, the cell format of the stage table."""
    if not timing:
        return "-"
    return f"{timing['wall_ms']:.0f} / {timing['cpu_ms']:.0f}"


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


# --- Sections ------------------------------------------------------------------------------------
def stage_table(result: dict[str, Any], *, markdown: bool) -> str:
    sizes = result["stages"]
    level = result["config"]["png_compression"]
    headers = ["stage (ms: wall / CPU, median)"] + [f"{s['megapixels']} MP" for s in sizes]
    rows: list[Row] = []
    formats = list(sizes[0]["formats"])

    def per_size(label: str, pick: Any) -> None:
        rows.append([label] + [pick(s) for s in sizes])

    per_size("input size " + "/".join(formats), lambda s: " / ".join(_mb(s["formats"][f]["file_bytes"]) for f in formats))
    for fmt in formats:
        per_size(f"load = read + decode ({fmt})", lambda s, f=fmt: _ms(s["formats"][f]["stages"]["load"]))
    main = formats[0]
    per_size("preprocess (resize, pad, normalise)", lambda s: _ms(s["formats"][main]["stages"]["preprocess"]))
    per_size(f"inference ({result['config']['model_label']})", lambda s: _ms(s["formats"][main]["stages"]["inference"]))
    for step in SUBSTEPS[:5]:
        per_size(f"  postprocess: {step}", lambda s, st=step: _ms(s["substeps"][st]))
    per_size("postprocess total (finish())", lambda s: _ms(s["formats"][main]["stages"]["postprocess"]))
    for step in SUBSTEPS[5:]:
        label = f"  composite: {step}" + (f" (level {level})" if step == "PNG encode" else "")
        per_size(label, lambda s, st=step: _ms(s["substeps"][st]))
    per_size("composite total (finish())", lambda s: _ms(s["formats"][main]["stages"]["composite"]))
    per_size("save (atomic write + fsync)", lambda s: _ms(s["formats"][main]["stages"]["save"]))
    for fmt in formats:
        per_size(f"TOTAL outside the model ({fmt})", lambda s, f=fmt: _ms(s["formats"][f]["outside_model"]))
    for fmt in formats:
        per_size(f"FLOOR decode + PNG encode, full image ({fmt})", lambda s, f=fmt: _ms(s["formats"][f]["floor"]["total"]))
    for fmt in formats:
        per_size(f"CPU outside model / floor CPU ({fmt})",
                 lambda s, f=fmt: f"{s['formats'][f]['outside_model']['cpu_ms'] / s['formats'][f]['floor']['total']['cpu_ms']:.2f}")
    per_size("cutout size, PNG bytes", lambda s: "{}x{}, {}".format(*s["formats"][main]["crop"], _mb(s["formats"][main]["output_bytes"])))
    same = all(s["substeps_match_postprocess"] for s in sizes)
    note = (f"\n\nSub-steps timed one by one on the same matte; they {'reproduce' if same else 'do NOT reproduce'} "
            "postprocess() exactly. Floor = read + cv2.imdecode + cv2.imencode PNG of the whole 3-channel image at the "
            "configured level. CPU counts all threads (OpenCV runs some steps on several).")
    return render(headers, rows, markdown=markdown) + note


def sweep_table(result: dict[str, Any], *, markdown: bool) -> str:
    sweep = result["png_sweep"]
    headers = ["PNG level", "row filter", "bytes", "of raw RGBA", "encode wall ms", "encode CPU ms"]
    chosen = result["config"]["png_compression"]
    rows = [[f"{r['level']}" + (" (configured)" if r["level"] == chosen and r["filter"] == "adaptive" else ""),
             r["filter"], _mb(r["bytes"]), f"{100 * r['ratio']:.1f} %", f"{r['wall_ms']:.0f}", f"{r['cpu_ms']:.0f}"]
            for r in sweep["levels"]]
    note = ("\n\nadaptive = libpng's default (tries every filter on every row); SUB/UP/PAETH = one fixed filter "
            "(OpenCV IMWRITE_PNG_FILTER, which the daemon does not set today). Every row decodes to the same pixels.")
    return render(headers, rows, markdown=markdown) + note


def throughput_table(result: dict[str, Any], *, markdown: bool) -> str:
    t = result["throughput"]
    bound = t["bound"]
    headers = ["end-to-end, " + t["label"], "images/s", "of bound"]

    def row(label: str, rate: float) -> Row:
        return [label, f"{rate:.3f}", f"{rate / bound:.2f}" if bound else "-"]

    rows = [
        row(f"model-only forward rate ({t['model']['forwards']} forwards)", t["model"]["rate"]),
        *([row("CPU stages, one image at a time (stage table)", t["cpu_one_thread_rate"])]
          if t.get("cpu_one_thread_rate") else []),
        row(f"CPU stages on all cores ({t['cpu']['threads']} threads, {t['cpu']['images']} images)", t["cpu"]["rate"]),
        *([row(f"CPU stages beside the model's own CPU ({1000 * t['model']['cpu_s_per_forward']:.0f} ms per forward)",
               t["cpu_beside_model_rate"])] if "cpu_beside_model_rate" in t else []),
        row("bound = min(model, CPU stages beside it)", bound),
        row(f"cutout process ({t['process']['images']} images, sequential)", t["process"]["rate"]),
        row(f"cutout watch ({t['watch']['images']} images, first drop -> last output)", t["watch"]["rate"]),
        row("cutout watch, first output -> last output", t["watch"]["rate_first_to_last_output"]),
    ]
    return render(headers, rows, markdown=markdown)


def latency_table(result: dict[str, Any], *, markdown: bool) -> str:
    lat = result["latency"]
    headers = ["single file on an idle daemon", "drop -> output s", f"minus settle ({lat['settle_seconds']} s)"]
    rows = [[label, f"{v['drop_to_output_s']:.2f}", f"{v['minus_settle_s']:.2f}"]
            for label, v in lat.items() if isinstance(v, dict)]
    return render(headers, rows, markdown=markdown)


def memory_table(result: dict[str, Any], *, markdown: bool) -> str:
    m = result["memory"]
    headers = ["daemon memory (RSS)", "value"]
    change = f"{100 * m['change']:+.1f} %" if m["change"] is not None else "-"
    rows = [
        ["images in the run / in flight (worker.in_flight)", f"{m['images']} / {m['in_flight']}"],
        [f"RSS at image {m['early_image']}", f"{m['rss_early_mb']:.0f} MB"],
        [f"RSS at image {m['images']}", f"{m['rss_end_mb']:.0f} MB"],
        [f"change, image {m['early_image']} -> {m['images']}", change],
        ["trend from there on", f"{m['slope_mb_per_100_images']:+.1f} MB per 100 images"],
        ["peak RSS sampled during the burst", f"{m['peak_sampled_mb']:.0f} MB" if m["peak_sampled_mb"] else "-"],
        ["peak RSS of the process (VmHWM)", f"{m['peak_hwm_mb']:.0f} MB" if m["peak_hwm_mb"] else "-"],
    ]
    return render(headers, rows, markdown=markdown)


def targets_table(result: dict[str, Any], *, markdown: bool) -> str:
    headers = ["target", "measured", "verdict"]
    rows = [[t["target"], t["measured"], t["verdict"]] for t in result["targets"]]
    table = render(headers, rows, markdown=markdown)
    notes = [f"- {t['target']}: {t['why']}" for t in result["targets"] if t.get("why")]
    return table + ("\n\n" + "\n".join(notes) if notes else "")


# --- Targets ----------------------------------------------------------------------------------
def evaluate_targets(result: dict[str, Any]) -> list[dict[str, str]]:
    overhead = _overhead_target(result)
    return [_throughput_target(result), *([overhead] if overhead else []), _cpu_ratio_target(result), _rss_target(result)]


def _overhead_target(result: dict[str, Any]) -> dict[str, str] | None:
    """The daemon's CPU per image outside the model against the bare CPU stages: what watching,
    queueing, claiming, telemetry and the rest cost per file."""
    t = result["throughput"]
    daemon, forward = t["watch"].get("daemon_cpu_s_per_image"), t["model"].get("cpu_s_per_forward")
    if daemon is None or forward is None:
        return None
    outside, bare = daemon - forward, t["cpu"]["cpu_s_per_image"]
    ratio, need = outside / bare, OVERHEAD_TARGET * bare
    verdict = "met" if ratio <= OVERHEAD_TARGET else f"MISSED by {1000 * (outside - need):.0f} ms CPU ({ratio:.2f}x)"
    why = (f"the daemon used {1000 * daemon:.0f} ms CPU per image, {1000 * forward:.0f} of them in the model's"
           f" forward (measured alone): {1000 * (outside - bare):+.0f} ms per file around the CPU stages")
    return {"target": f"daemon CPU per image outside the model <= {OVERHEAD_TARGET} x the bare CPU stages",
            "measured": f"{1000 * outside:.0f} / {1000 * bare:.0f} ms = {ratio:.2f}", "verdict": verdict, "why": why}


def _throughput_target(result: dict[str, Any]) -> dict[str, str]:
    t = result["throughput"]
    bound, rate = t["bound"], t["watch"]["rate"]
    need = THROUGHPUT_TARGET * bound
    ratio = rate / bound if bound else 0.0
    limiter = "the model" if t["model"]["rate"] <= t.get("cpu_beside_model_rate", t["cpu"]["rate"]) else "the CPU stages"
    verdict = "met" if rate >= need else f"MISSED by {need - rate:.3f} images/s ({ratio:.3f} of bound, need {THROUGHPUT_TARGET})"
    watch = t["watch"]
    busy = watch.get("inference_seconds_total", 0.0) / watch["seconds"] if watch["seconds"] else 0.0
    why = f"bound set by {limiter}; the model thread was busy {100 * busy:.0f} % of the burst"
    if watch.get("daemon_cpu_s_per_image") is not None:
        why += (f"; the daemon used {watch['daemon_cpu_s_per_image']:.2f} CPU s per image (the bare CPU stages: "
                f"{t['cpu']['cpu_s_per_image']:.2f}) and kept the cores {100 * watch['daemon_cpu_busy']:.0f} % busy")
    why += f"; in-daemon mean stage ms: {_fmt_means(watch.get('daemon_stage_means_ms', {}))}"
    return {"target": f"watch >= {THROUGHPUT_TARGET} x min(model, CPU stages beside it)",
            "measured": f"{rate:.3f} / {bound:.3f} = {ratio:.3f}", "verdict": verdict, "why": why}


def _fmt_means(means: dict[str, float]) -> str:
    return ", ".join(f"{stage} {ms:.0f}" for stage, ms in means.items())


def _cpu_ratio_target(result: dict[str, Any]) -> dict[str, str]:
    sizes = {s["megapixels"]: s for s in result["stages"]}
    mp = REFERENCE_MP if REFERENCE_MP in sizes else max(sizes)
    size = sizes[mp]
    fmt = next(iter(size["formats"]))
    outside, floor = size["formats"][fmt]["outside_model"]["cpu_ms"], size["formats"][fmt]["floor"]["total"]["cpu_ms"]
    ratio = outside / floor
    label = f"CPU outside model <= {CPU_RATIO_TARGET} x floor at {REFERENCE_MP} MP"
    if mp != REFERENCE_MP:
        label += f" (measured at {mp} MP: {REFERENCE_MP} MP not in this run)"
    verdict = "met" if ratio <= CPU_RATIO_TARGET else f"MISSED by {outside - CPU_RATIO_TARGET * floor:.0f} ms CPU ({ratio:.2f}x)"
    heavy = sorted(size["substeps"].items(), key=lambda kv: -kv[1]["cpu_ms"])[:3]
    why = f"{fmt}: largest CPU sub-steps: " + ", ".join(f"{name} {v['cpu_ms']:.0f} ms" for name, v in heavy)
    why += f"; load {size['formats'][fmt]['stages']['load']['cpu_ms']:.0f} ms vs floor decode {size['formats'][fmt]['floor']['decode']['cpu_ms']:.0f} ms"
    return {"target": label, "measured": f"{outside:.0f} / {floor:.0f} ms = {ratio:.2f}", "verdict": verdict, "why": why}


def _rss_target(result: dict[str, Any]) -> dict[str, str]:
    m = result["memory"]
    label = f"RSS flat (within {100 * RSS_GROWTH_TARGET:.0f} %) from image 50 to image 200"
    measured = f"{m['rss_early_mb']:.0f} -> {m['rss_end_mb']:.0f} MB ({100 * (m['change'] or 0):+.1f} %)"
    if m["images"] < RSS_MIN_IMAGES:
        return {"target": label, "measured": measured + f" over {m['images']} images",
                "verdict": f"not checked (needs >= {RSS_MIN_IMAGES} images)", "why": ""}
    change = m["change"] or 0.0
    verdict = "met" if change <= RSS_GROWTH_TARGET else f"MISSED by {100 * (change - RSS_GROWTH_TARGET):.1f} points"
    why = f"{m['in_flight']} images in flight; trend {m['slope_mb_per_100_images']:+.1f} MB per 100 images"
    return {"target": label, "measured": measured, "verdict": verdict, "why": why}


# --- The whole report ------------------------------------------------------------------------------
def sections(result: dict[str, Any], *, markdown: bool) -> list[tuple[str, str]]:
    return [
        ("Per-stage time at each size", stage_table(result, markdown=markdown)),
        (f"PNG compression levels at {result['png_sweep']['megapixels']} MP (the cutout of a "
         f"{result['png_sweep']['megapixels']} MP photo)", sweep_table(result, markdown=markdown)),
        ("Throughput", throughput_table(result, markdown=markdown)),
        ("Latency", latency_table(result, markdown=markdown)),
        ("Memory over the burst", memory_table(result, markdown=markdown)),
        ("Targets", targets_table(result, markdown=markdown)),
    ]


def machine_line(result: dict[str, Any]) -> str:
    m = result["machine"]
    return (f"{m['cpu_model']}, {m['usable_cpus']} of {m['cpu_count']} CPUs, {m['ram_gib']} GiB RAM, "
            f"device {m['device']}; torch {m['torch']}, OpenCV {m['opencv']}, numpy {m['numpy']}, "
            f"Python {m['python']}; commit {m['git']}")


def interference_line(result: dict[str, Any]) -> str:
    """How much CPU other processes took while this ran: a busy machine skews every number."""
    shares = [(p["others_cpu_share"], p["phase"]) for p in result["phases"] if p.get("others_cpu_share") is not None]
    if not shares:
        return f"load average at start {result['load_at_start']} (no /proc/stat: other processes not measured)"
    worst, phase = max(shares)
    mean = sum(s for s, _ in shares) / len(shares)
    warn = "  WARNING: not an idle machine" if worst > 0.05 else ""
    return (f"CPU used by other processes: mean {100 * mean:.0f} % of the cores over the phases, worst "
            f"{100 * worst:.0f} % ({phase}); load average at start {result['load_at_start']}{warn}")


def text_report(result: dict[str, Any]) -> str:
    parts = [f"cutout benchmark, {result['timestamp']}", machine_line(result), f"model: {result['config']['model_label']}",
             interference_line(result)]
    for title, body in sections(result, markdown=False):
        parts += ["", f"== {title} ==", body]
    return "\n".join(parts)


def markdown_report(result: dict[str, Any], *, json_name: str) -> str:
    parts = [f"Run of {result['timestamp']} ([`benchmarks/results/{json_name}`](benchmarks/results/{json_name})"
             f"{', quick mode' if result['config']['quick'] else ''}):", "",
             f"- machine: {machine_line(result)}", f"- model: {result['config']['model_label']}",
             f"- {interference_line(result)}",
             f"- command: `{result['config']['command']}`"]
    for title, body in sections(result, markdown=True):
        parts += ["", f"### {title}", "", body]
    return "\n".join(parts)


# --- Files -----------------------------------------------------------------------------------------
def write_json(result: dict[str, Any], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = folder / f"{stamp}-{slug(result['machine'])}{'-quick' if result['config']['quick'] else ''}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    return path


def update_benchmarks_md(path: Path, result: dict[str, Any], *, json_path: Path, template: str) -> None:
    """Replace the latest-results block (between the markers); create the file from the template."""
    text = path.read_text() if path.exists() else template
    if BEGIN not in text or END not in text:
        text = text.rstrip() + f"\n\n## Latest results\n\n{BEGIN}\n{END}\n"
    block = f"{BEGIN}\n{markdown_report(result, json_name=json_path.name)}\n{END}"
    text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    path.write_text(text)
