"""Writing experiment results: JSON, markdown tables, plots with confidence intervals, and
the run's conditions (machine load, CPU time, versions).

matplotlib is imported only by the plotting functions (the ``model`` extra).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import time
from pathlib import Path

import numpy as np

from .evaluate import Estimate

__all__ = ["RunClock", "as_estimate", "markdown_table", "save_json", "load_json", "plot_ci_lines"]


def as_estimate(x) -> Estimate:
    """An :class:`Estimate` from itself or from its JSON dict."""
    return x if isinstance(x, Estimate) else Estimate(x["mean"], x["lo"], x["hi"], x.get("n", 0))


def _jsonable(x):
    if isinstance(x, Estimate):
        return {"mean": x.mean, "lo": x.lo, "hi": x.hi, "n": x.n}
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    return x


def save_json(path, obj) -> Path:
    """Write ``obj`` (dicts, lists, numpy values, :class:`Estimate`) as indented JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_jsonable(obj), indent=1, sort_keys=False) + "\n")
    return path


def load_json(path):
    return json.loads(Path(path).read_text())


def _cell(v, pct):
    if isinstance(v, dict) and {"mean", "lo", "hi"} <= set(v):
        v = Estimate(v["mean"], v["lo"], v["hi"], v.get("n", 0))
    if isinstance(v, Estimate):
        if pct:
            return f"{100 * v.mean:.1f} [{100 * v.lo:.1f}, {100 * v.hi:.1f}]"
        return f"{v.mean:.3g} [{v.lo:.3g}, {v.hi:.3g}]"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def markdown_table(rows, columns, *, pct=True) -> str:
    """A markdown table of ``rows`` (dicts) with ``columns`` (keys, or ``(key, header)``
    pairs); :class:`Estimate` cells print as ``mean [lo, hi]`` (in % when ``pct``)."""
    cols = [(c, c) if isinstance(c, str) else tuple(c) for c in columns]
    lines = ["| " + " | ".join(h for _, h in cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(_cell(r.get(k, ""), pct) for k, _ in cols) + " |")
    return "\n".join(lines) + "\n"


class RunClock:
    """Wall time, CPU time (this process and its children) and the machine's load average
    over a run, plus versions: the conditions a reader needs to judge timings."""

    def __init__(self):
        self.t0 = time.perf_counter()
        self.cpu0 = self._cpu()
        self.load0 = os.getloadavg()

    @staticmethod
    def _cpu():
        s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime

    def info(self) -> dict:
        import jax

        try:
            commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                    check=False, cwd=Path(__file__).resolve().parent).stdout.strip()
        except OSError:
            commit = ""
        return {
            "wall_seconds": round(time.perf_counter() - self.t0, 1),
            "cpu_seconds": round(self._cpu() - self.cpu0, 1),
            "load_average_start": [round(x, 2) for x in self.load0],
            "load_average_end": [round(x, 2) for x in os.getloadavg()],
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "jax": jax.__version__,
            "backend": jax.default_backend(),
            "git_commit": commit,
        }


def plot_ci_lines(ax, x, series, *, xlabel=None, ylabel=None, title=None, pct=True, styles=None):
    """Lines with 95 % bands: ``series`` maps a label to a list of :class:`Estimate` (or
    their dicts), one per ``x``."""
    scale = 100.0 if pct else 1.0
    for label, ests in series.items():
        ests = [as_estimate(e) for e in ests]
        m = np.array([e.mean for e in ests]) * scale
        lo = np.array([e.lo for e in ests]) * scale
        hi = np.array([e.hi for e in ests]) * scale
        kw = (styles or {}).get(label, {})
        (line,) = ax.plot(x, m, marker="o", ms=3, label=label, **kw)
        ax.fill_between(x, lo, hi, alpha=0.08, color=line.get_color())
    if xlabel:
        ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
