"""``simplex-decode plot SPEC``: a decoder's map on the 2-simplex (three tokens), as a PNG.

With three tokens every distribution is a point of a triangle (the corners are the
one-hot distributions, the centre the uniform one), so a decoder — a map from the model's
logits to the distribution ``q*`` it samples from — can be drawn whole. The model's
distribution ``p`` enters as logits ``log p``. Three panels:

1. **p → q\\***: arrows from a grid of model distributions ``p`` to ``q*(log p)``, each
   ``q*`` coloured by its support size (how many of the three tokens it keeps);
2. **support and entropy of q\\***: for every ``p`` of a fine grid, ``|supp q*|`` (colour)
   and contours of ``H(q*)`` (nats) — where truncation rules cut a token and sparse maps
   reach a face;
3. **paths**: ``q*(β·log p)`` for ``β`` from 0.02 (flat scores) to 20 (confident ones)
   for a few ``p``, with ``β = 1`` marked — how ``q*`` moves as the model grows sure.

Decoders whose parameters need more than three tokens (``top_k(k=50)``, Best-of-K's
``top_m = 8``) are refused with the library's error; give them values that fit
(``top_k(k=2)``, ``best_of_k(k=4, lam=0.5, beta=0.5, top_m=2)``).
"""

from __future__ import annotations

import numpy as np

from .output import check_out, write_png
from .spec import CLIError, build_decoder, error_text

__all__ = ["simplex_grid", "to_xy", "run_plot"]

_SQ3 = np.sqrt(3.0) / 2.0


def simplex_grid(n: int) -> np.ndarray:
    """Interior points ``(N, 3)`` of the 2-simplex on a triangular grid with ``n`` steps."""
    pts = np.array([(i, j, n - i - j) for i in range(n + 1) for j in range(n + 1 - i)], np.float64)
    return (pts + 0.5) / (n + 1.5)


def to_xy(q: np.ndarray) -> np.ndarray:
    """Barycentric ``(..., 3)`` → plane ``(..., 2)``: token 0 bottom left, 1 bottom right, 2 top."""
    q = np.asarray(q, np.float64)
    return np.stack([q[..., 1] + 0.5 * q[..., 2], _SQ3 * q[..., 2]], axis=-1)


def _solve(decoder, logits):
    import jax

    from ..decoder import checked

    # checked: parameters that do not fit V = 3 raise (unchecked under jit they could not)
    sol = checked(jax.jit(lambda d, x: d.solve(x)))(decoder, np.asarray(logits, np.float32))
    q, status = jax.device_get((sol.q, sol.status))
    return np.asarray(q, np.float64), np.asarray(status) == 0


def _triangle(ax, title):
    corners = to_xy(np.eye(3))
    ax.plot(*np.vstack([corners, corners[:1]]).T, color="black", lw=1)
    for i, (x, y) in enumerate(corners):
        ax.annotate(f"token {i}", (x, y), textcoords="offset points", xytext=(0, -14 if y == 0 else 6),
                    ha="center", fontsize=8)
    ax.set_aspect("equal")
    ax.set_xlim(-0.08, 1.08)
    ax.set_ylim(-0.1, 0.95)
    ax.axis("off")
    ax.set_title(title, fontsize=9)


def run_plot(args) -> int:
    try:
        decoder = build_decoder(args.spec)
    except ValueError as e:
        raise CLIError(str(e)) from None
    out = check_out(args.out)
    try:
        import matplotlib  # noqa: F401
        from matplotlib.colors import BoundaryNorm, ListedColormap
        from matplotlib.figure import Figure
    except ImportError:
        raise CLIError("plot needs matplotlib: pip install 'simplex_decode[model]'") from None

    coarse, fine = simplex_grid(10), simplex_grid(70)
    betas = np.geomspace(0.02, 20.0, 80)
    starts = np.array([[0.5, 0.3, 0.2], [0.2, 0.45, 0.35], [0.38, 0.34, 0.28], [0.15, 0.15, 0.7]])
    paths = (betas[None, :, None] * np.log(starts)[:, None, :]).reshape(-1, 3)
    try:
        q_coarse, ok_c = _solve(decoder, np.log(coarse))
        q_fine, ok_f = _solve(decoder, np.log(fine))
        q_path, ok_p = _solve(decoder, paths)
    except ValueError as e:
        raise CLIError(f"{error_text(e)} (plot evaluates the decoder on 3-token logits: choose parameters that fit)") from None
    q_path = q_path.reshape(len(starts), len(betas), 3)
    ok_p = ok_p.reshape(len(starts), len(betas))

    colours = ListedColormap(["tab:red", "tab:orange", "tab:blue"])
    norm = BoundaryNorm([0.5, 1.5, 2.5, 3.5], 3)
    fig = Figure(figsize=(15, 5.4), dpi=100)
    axes = fig.subplots(1, 3)

    ax = axes[0]
    _triangle(ax, "p → q*  (arrow from the model's p to the decoder's q*)")
    a, b = to_xy(coarse[ok_c]), to_xy(q_coarse[ok_c])
    ax.quiver(a[:, 0], a[:, 1], b[:, 0] - a[:, 0], b[:, 1] - a[:, 1], angles="xy", scale_units="xy", scale=1,
              width=0.004, color="0.45")
    ax.scatter(*a.T, s=6, color="0.3")
    ax.scatter(*b.T, s=14, c=(q_coarse[ok_c] > 1e-7).sum(-1), cmap=colours, norm=norm, zorder=3)

    ax = axes[1]
    _triangle(ax, "|supp q*| (colour) and H(q*) in nats (contours), over the model's p")
    xy = to_xy(fine[ok_f])
    supp = (q_fine[ok_f] > 1e-7).sum(-1)
    sc = ax.scatter(*xy.T, c=supp, cmap=colours, norm=norm, s=9, marker="h", linewidths=0)
    qf = np.clip(q_fine[ok_f], 1e-300, 1.0)
    ent = -(q_fine[ok_f] * np.log(qf)).sum(-1)
    if np.ptp(ent) > 1e-6:
        cs = ax.tricontour(xy[:, 0], xy[:, 1], ent, levels=6, colors="black", linewidths=0.7)
        ax.clabel(cs, fontsize=7, fmt="%.2f")
    cbar = fig.colorbar(sc, ax=axes[:2], ticks=[1, 2, 3], shrink=0.6, location="bottom", pad=0.02)
    cbar.set_label("tokens kept by q*", fontsize=8)

    ax = axes[2]
    _triangle(ax, "q*(β·log p) for β from 0.02 to 20 (dot: β = 1, ring: p)")
    one = int(np.argmin(np.abs(np.log(betas))))
    for i, p0 in enumerate(starts):
        pts = to_xy(q_path[i][ok_p[i]])
        line = ax.plot(*pts.T, lw=1.5, color=("tab:purple", "tab:green", "tab:brown", "tab:pink")[i])[0]
        if ok_p[i, one]:
            ax.scatter(*to_xy(q_path[i, one]), color=line.get_color(), s=30, zorder=3)
        ax.scatter(*to_xy(p0), facecolors="none", edgecolors=line.get_color(), s=40, zorder=3)
    bad = int((~ok_c).sum() + (~ok_f).sum() + (~ok_p).sum())
    note = f"; {bad} grid points had no valid q* and are left out" if bad else ""
    fig.suptitle(f"simplex-decode plot: {args.spec}{note}", fontsize=10)
    write_png(fig, out)
    print(f"plot of {args.spec} on the 2-simplex written to {out}")
    return 0
