"""``simplex-decode verify SPEC``: solve a decoder's problem with the library and with cvxpy.

For each row of the logits (``--logits FILE.npy``, or synthetic rows: a Gaussian bulk with a
few lifted tokens, like a language model's step) it reports

* ``|q - q_cvxpy|_1``: the L1 distance between the library's ``q`` (float32, as a user
  gets it) and the cvxpy optimum of the same Objective (float64, Clarabel);
* ``f(q_cvxpy) - f(q)``: the objective the library's ``q`` loses against cvxpy's, both
  evaluated in float64 (negative: cvxpy's answer is the worse one, within its tolerance);
* the certificate, for separable objectives: the KKT residual of ``q`` (0 exactly at the
  optimum; an L1 distance in probability units, see
  :func:`simplex_decode.analysis.kkt_residual`) and, when the library's solver is
  :class:`~simplex_decode.Exact`, the duality gap it certifies (float32, as it runs).

The exit status is 0 when every row agrees within ``--tol`` (L1), 1 when one does not —
expected for solvers that stop early by design, such as the paper's mirror ascent with
J = 5 steps, whose distance to the optimum is exactly what this command shows.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .describe import describe_objective
from .spec import CLIError, build_decoder, error_text

__all__ = ["sample_logits", "run_verify"]


def sample_logits(rows: int, vocab: int, seed: int) -> np.ndarray:
    """float32 ``(rows, vocab)``: a Gaussian bulk (std 2) with a few tokens lifted by 4–8,
    like a language model's next-token logits."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, vocab)) * 2.0
    for r in range(rows):
        top = rng.choice(vocab, size=min(6, vocab), replace=False)
        x[r, top] += rng.uniform(4.0, 8.0, size=top.size)
    return x.astype(np.float32)


def _load_logits(path: str) -> np.ndarray:
    try:
        x = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise CLIError(f"--logits: cannot read {path!r} as a .npy array: {e}") from None
    if x.ndim not in (1, 2) or x.shape[-1] < 1 or not np.issubdtype(x.dtype, np.floating):
        raise CLIError(f"--logits: expected a float array of shape (V,) or (rows, V), got {x.dtype} {x.shape}")
    return np.atleast_2d(x).astype(np.float32)


def _fmt(x: float) -> str:
    return f"{x:.2e}" if np.isfinite(x) else str(x)


def run_verify(args) -> int:
    import jax

    from .. import analysis, reference
    from ..decoder import checked
    from ..solvers.auto import Auto
    from ..solvers.exact import Exact
    from ..status import Status

    try:
        decoder = build_decoder(args.spec)
    except ValueError as e:
        raise CLIError(str(e)) from None
    try:
        import cvxpy  # noqa: F401
    except ImportError:
        raise CLIError("verify needs cvxpy: pip install 'simplex_decode[reference]'") from None
    if args.logits:
        logits, source = _load_logits(args.logits), f"from {args.logits}"
    else:
        logits, source = sample_logits(args.rows, args.vocab, args.seed), f"synthetic, seed {args.seed}"
    obj = decoder.objective
    solver = decoder.solver.select(obj) if isinstance(decoder.solver, Auto) else decoder.solver
    if isinstance(solver, Exact):  # the same solver, asked for its certificate too (q is unchanged)
        decoder = type(decoder)(obj, solver=dataclasses.replace(solver, certificate=True))
    try:
        # jitted with the on-device checks on: as a user's jitted step runs it, and a
        # parameter that does not fit the logits raises
        sol = jax.device_get(checked(jax.jit(lambda d, x: d.solve(x)))(decoder, logits))
        q_ref = reference.solve(obj, logits)
    except ValueError as e:
        raise CLIError(error_text(e)) from None
    q = np.asarray(sol.q, np.float64)
    status = np.asarray(sol.status)
    with jax.enable_x64(True):
        value = jax.jit(lambda o, x, qs: jax.vmap(lambda qq: o.value(qq, o.prepare(x)))(qs))
        f, f_ref = np.asarray(value(obj, logits.astype(np.float64), np.stack([q, q_ref])))
        kkt = np.asarray(analysis.kkt_residual(obj, logits.astype(np.float64), q)) if obj.separable else None
    gap = np.asarray(sol.stats["duality_gap"]) if "duality_gap" in sol.stats else None

    print(f"decoder: {args.spec}")
    for label, text in describe_objective(decoder):
        print(f"  {label:<9}{text}")
    print(f"logits: {logits.shape[0]} rows x {logits.shape[1]} tokens ({source}); library in float32, "
          "cvxpy (Clarabel) and the values below in float64")
    head = f"{'row':>4}  {'status':<10} {'|q - q_cvxpy|_1':>16} {'f(q_cvxpy) - f(q)':>18}"
    head += f" {'KKT residual':>13}" if kkt is not None else ""
    head += f" {'duality gap':>12}" if gap is not None else ""
    print(head)
    l1 = np.abs(q - q_ref).sum(-1)
    for r in range(logits.shape[0]):
        line = f"{r:>4}  {Status(int(status[r])).name:<10} {_fmt(l1[r]):>16} {_fmt(f_ref[r] - f[r]):>18}"
        line += f" {_fmt(kkt[r]):>13}" if kkt is not None else ""
        line += f" {_fmt(gap[r]):>12}" if gap is not None else ""
        print(line)
    worst = float(l1.max())
    ok = bool(np.all(status == Status.OK)) and worst <= args.tol
    if ok:
        print(f"agrees with cvxpy: max |q - q_cvxpy|_1 = {_fmt(worst)} <= --tol {args.tol:g}")
        return 0
    print(f"DISAGREES with cvxpy: max |q - q_cvxpy|_1 = {_fmt(worst)} > --tol {args.tol:g}"
          + (" (the solver stops after a fixed number of steps: this is its distance to the optimum)"
             if getattr(solver, "tol", 0) is None and hasattr(solver, "steps") else ""))
    return 1
