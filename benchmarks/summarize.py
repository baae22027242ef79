"""Condense bench_decoders.py result tables into one row per decoder for chosen shapes.

    python benchmarks/summarize.py benchmarks/results/cpu_peaked.md --V 151936 --dtype float32

Reads the markdown written by ``bench_decoders.py --out`` and prints, for each decoder,
ms/step, × floor and the speed-up over transformers' top-p + multinomial at every batch
size found, side by side (the numbers are copied, not re-measured).
"""

from __future__ import annotations

import argparse


def parse(path):
    """Rows of a bench_decoders table as dicts (decoder, B, V, dtype, t, lat, floor, hf)."""
    rows = []
    with open(path) as f:
        for line in f:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) != 10 or not cells[1].isdigit():
                continue
            rows.append(
                {
                    "decoder": cells[0], "B": int(cells[1]), "V": int(cells[2]), "dtype": cells[3],
                    "t": cells[4], "lat": cells[5], "floor": cells[6], "hf": cells[8],
                }
            )
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("table")
    ap.add_argument("--V", type=int, required=True)
    ap.add_argument("--dtype", default="float32")
    args = ap.parse_args(argv)
    rows = [r for r in parse(args.table) if r["V"] == args.V and r["dtype"] == args.dtype]
    Bs = sorted({r["B"] for r in rows})
    names = list(dict.fromkeys(r["decoder"] for r in rows))
    head = "| decoder | " + " | ".join(f"B={B}: ms/step | × floor | vs HF top-p" for B in Bs) + " |"
    print(head)
    print("|---|" + "---|---|---|" * len(Bs))
    for name in names:
        cells = []
        for B in Bs:
            r = next((r for r in rows if r["decoder"] == name and r["B"] == B), None)
            cells += [r["t"], r["floor"], r["hf"] + "×"] if r else ["–"] * 3
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
