"""Tables and ratios from bench/gpu_suite.sh's JSON lines (the figures for bench/RESULTS.md):

    python bench/summarize.py OUT_DIR        # reads env.json, partA.jsonl, partB.jsonl

Throughput: jaxcnn images/s over torch eager and torch.compile, per model and phase (goal
>= 1.3x torch.compile). Speedrun: every run's test accuracy and seconds, jaxcnn beside
airbench94, with the means (goal: mean accuracy >= 90.7% in less mean time). Top-k:
seconds per search and the ratio (goal >= 3.5x). Failed or skipped steps are listed."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

GOALS = {"throughput": 1.3, "speedrun_accuracy": 0.907, "topk": 3.5}


def read_jsonl(path: Path) -> list[dict]:
    """The JSON-object lines of `path` (other lines skipped); [] when it is missing."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return out


def _fmt(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def _goal(met: bool, smoke: bool) -> str:
    return "n/a (smoke)" if smoke else ("met" if met else "missed")


def throughput_table(records: list[dict], smoke: bool = False) -> list[str]:
    """Markdown rows: model, phase, images/s of each implementation and the ratios."""
    rows = {}
    for r in records:
        if "images_per_second" not in r:
            continue
        key = (r["model"], r["phase"])
        impl = "jaxcnn" if r.get("framework") == "jaxcnn" else f"torch {r.get('mode')}"
        first = r.get("compile_and_first_call_seconds", r.get("first_call_seconds"))
        rows.setdefault(key, {})[impl] = (r["images_per_second"], first)
    if not rows:
        return []
    lines = ["| model | phase | jaxcnn img/s (first call s) | torch eager img/s | "
             "torch.compile img/s (first call s) | jaxcnn / eager | jaxcnn / compile | goal |",
             "|---|---|---|---|---|---|---|---|"]
    for (model, phase), impls in rows.items():
        j, e, c = (impls.get(k, (None, None)) for k in ("jaxcnn", "torch eager",
                                                        "torch compile"))
        r_e = j[0] / e[0] if j[0] and e[0] else None
        r_c = j[0] / c[0] if j[0] and c[0] else None
        goal = "-" if r_c is None else _goal(r_c >= GOALS["throughput"], smoke)
        lines.append(f"| {model} | {phase} | {_fmt(j[0])} ({_fmt(j[1])}) | {_fmt(e[0])} | "
                     f"{_fmt(c[0])} ({_fmt(c[1])}) | {_fmt(r_e, 2)} | {_fmt(r_c, 2)} | {goal} |")
    return lines


def speedrun_table(records: list[dict], smoke: bool = False) -> list[str]:
    """Markdown rows: each run's accuracy and seconds, then the means and the goal."""
    runs: dict[str, list[dict]] = {}
    for r in records:
        if r.get("bench") == "speedrun" and "seconds" in r:
            runs.setdefault(r["impl"], []).append(r)
    if not runs:
        return []
    lines = ["| implementation | runs | test accuracy (TTA) per run | mean | seconds per run "
             "(compile excluded) | mean s | compile s |", "|---|---|---|---|---|---|---|"]
    means = {}
    for impl, rs in runs.items():
        accs = [r["tta_val_acc"] for r in rs]
        secs = [r["seconds"] for r in rs]
        means[impl] = (statistics.mean(accs), statistics.mean(secs))
        compile_s = rs[0].get("compile_seconds", rs[0].get("warmup_call_seconds"))
        lines.append(f"| {impl} | {len(rs)} | {', '.join(f'{a:.4f}' for a in accs)} | "
                     f"{means[impl][0]:.4f} | {', '.join(f'{s:.3f}' for s in secs)} | "
                     f"{means[impl][1]:.3f} | {_fmt(compile_s, 2)} |")
    if "jaxcnn" in means and "airbench94" in means:
        acc, sec = means["jaxcnn"]
        ok = acc >= GOALS["speedrun_accuracy"] and sec < means["airbench94"][1]
        lines.append("")
        lines.append(f"jaxcnn mean {acc:.4f} in {sec:.3f} s vs airbench94 "
                     f"{means['airbench94'][0]:.4f} in {means['airbench94'][1]:.3f} s: time "
                     f"ratio {means['airbench94'][1] / sec:.2f}x; goal (>= "
                     f"{GOALS['speedrun_accuracy']:.3f} in less time) "
                     f"{_goal(ok, smoke)}.")
    return lines


def topk_table(records: list[dict], smoke: bool = False) -> list[str]:
    """Markdown rows: seconds and TFLOP/s of each top-k implementation and the ratio."""
    rs = [r for r in records if "impl" in r and "tflops" in r]
    if not rs:
        return []
    lines = ["| implementation | device | seconds | TFLOP/s | fraction of peak | first call s |",
             "|---|---|---|---|---|---|"]
    for r in rs:
        lines.append(f"| {r['impl']} | {r['device']} | {r['seconds']} | {r['tflops']} | "
                     f"{r.get('fraction_of_nominal_peak')} | {r.get('first_call_seconds')} |")
    jax_r = next((r for r in rs if r["impl"].startswith("jaxcnn")), None)
    torch_r = next((r for r in rs if r["impl"].startswith("torch")), None)
    if jax_r and torch_r:
        ratio = torch_r["seconds"] / jax_r["seconds"]
        lines += ["", f"jaxcnn top-k is {ratio:.2f}x torch matmul + topk (goal >= "
                  f"{GOALS['topk']}: {_goal(ratio >= GOALS['topk'], smoke)}); top-1 "
                  f"agreement {torch_r.get('top1_agreement_with_jax')}."]
    return lines


def summarize(out: Path) -> str:
    """The whole markdown summary of one gpu_suite run."""
    env = json.loads((out / "env.json").read_text()) if (out / "env.json").exists() else {}
    a, b = read_jsonl(out / "partA.jsonl"), read_jsonl(out / "partB.jsonl")
    lines = [f"# gpu_suite results ({env.get('date', '?')}, smoke={env.get('smoke')})", "",
             f"GPU: {env.get('gpu') or 'none'}; jax: {env.get('jax')}; torch: {env.get('torch')};"
             f" git {env.get('git')}; {env.get('uptime')}", ""]
    smoke = bool(env.get("smoke"))
    for title, table in (("Throughput (part A)", throughput_table(a, smoke)),
                         ("CIFAR-10 speedrun (part B)", speedrun_table(b, smoke)),
                         ("Top-k (part B)", topk_table(b, smoke))):
        if table:
            lines += [f"## {title}", "", *table, ""]
    steps = [r for r in a + b if "step" in r]
    bad = [r for r in steps if r.get("rc", 0) != 0 or "skipped" in r]
    lines += ["## Steps", ""] + [
        f"- {r['step']}: " + (f"skipped ({r['skipped']})" if "skipped" in r else
                              f"rc {r['rc']}, {r['seconds']} s of {r['limit']} s")
        for r in steps]
    if bad:
        lines += ["", f"{len(bad)} step(s) failed or were skipped: see partA.log / partB.log."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    print(summarize(Path(args[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
