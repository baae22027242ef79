"""How large are the sets threshold rules keep, on real logits? (What the windows must hold.)

    python benchmarks/logit_stats.py                 # SmolLM2-135M-Instruct on bench_decoders.TEXT

For each (temperature, p) prints the median / 90th percentile / max size of the top-p
nucleus over every position of the text, and the fraction of rows whose nucleus exceeds
the first candidate window's 256 candidates and the second tier's 1024 blocks.
"""

from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from bench_decoders import smollm2_rows  # noqa: E402


def nucleus_size(row, t, p):
    x = row.astype(np.float64) / t
    q = np.exp(x - x.max())
    q /= q.sum()
    return int(np.searchsorted(np.cumsum(np.sort(q)[::-1]), p) + 1)


def main():
    rows = smollm2_rows()
    print(f"SmolLM2-135M-Instruct, {rows.shape[0]} positions, V = {rows.shape[1]}\n")
    print("| temperature | p | median | p90 | max | > 256 | > 1024 |\n|---|---|---|---|---|---|---|")
    for t, p in ((0.7, 0.9), (1.0, 0.9), (1.0, 0.95)):
        n = np.array([nucleus_size(r, t, p) for r in rows])
        print(f"| {t} | {p} | {np.median(n):.0f} | {np.percentile(n, 90):.0f} | {n.max()} | "
              f"{100 * np.mean(n > 256):.1f} % | {100 * np.mean(n > 1024):.1f} % |")


if __name__ == "__main__":
    main()
