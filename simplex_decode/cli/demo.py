"""``simplex-decode demo``: one prompt, six decoders, the real model, side by side.

On the default model (SmolLM2-135M-Instruct) the demo samples ``K`` completions of one
prompt with greedy (temperature 0), temperature, top-p, min-p, Best-of-K solved the paper's
way (mirror ascent, J = 5 steps from p) and Best-of-K solved exactly, all through
:func:`simplex_decode.generate`, and reports per decoder:

* the completions in full (wrapped; identical ones counted; those that reached
  ``--max-new-tokens`` before an end-of-turn token are marked);
* per-step statistics of the distribution ``q`` each step sampled from, averaged over
  every generated step of every sample: entropy ``H(q)``, support size ``|supp q|``,
  ``KL(q ‖ p)`` to the model's own softmax ``p``; the number of distinct answers;
* ``τ_eff``: the temperature whose ``softmax(logits/τ)`` is closest to the decoder's ``q``
  on the prompt's first step (:func:`simplex_decode.analysis.effective_temperature`). For
  Best-of-K it is set beside the temperature the same objective has with its coverage
  term off (β = 0), in closed form: ``q ∝ p·exp(c·s)`` with ``c = 1/λ`` at the optimum and
  ``c_J = (1 − (1 − ηλ)^J)/λ`` after J mirror steps — which is why Best-of-K at the
  paper's settings looks near-greedy;
* timing, after compilation: the median wall time of one decode step of the ``K`` rows
  (model forward pass + decoder + sampler; the first step, which includes compilation and
  the prefill, is left out), the resulting tokens/s, and the decoder alone: one jitted
  call that solves and samples ``K`` rows of the first step's logits (median of 10 calls,
  dispatch included; ``simplex-decode bench`` measures it amortised in a loop).

The plot (PNG) shows entropy and support size per step, distinct answers, and the step time
split into the decoder and the rest. It is written to a temporary file first and renamed
(mode ``0666`` less the umask).
"""

from __future__ import annotations

import time
from collections import Counter

import numpy as np

from . import model as model_loading
from .model import check_context
from .output import check_out, progress, terminal_width, wrap, write_png
from .spec import CLIError, build_decoder

__all__ = ["DEFAULT_PROMPT", "DEMO_DECODERS", "DecoderRun", "reading", "run_demo", "summarise", "write_plot"]

DEFAULT_PROMPT = "Suggest a name for a new coffee shop. Reply with the name only."

#: (label, SPEC) of the decoders the demo compares; SPECs go through the CLI's safe parser.
#: Greedy is written as temperature 0: the same Objective as temperature(t=0.8), so the two
#: share one compilation of the generation loop (a new float parameter never recompiles).
DEMO_DECODERS = (
    ("greedy", "temperature(t=0.0)"),
    ("temperature", "temperature(t=0.8)"),
    ("top-p", "top_p(p=0.9, temperature=0.8)"),
    ("min-p", "min_p(p=0.1, temperature=0.8)"),
    ("BoK mirror J=5", "best_of_k(k=8, lam=0.2, beta=0.02, temperature=0.8, solver='mirror', steps=5)"),
    ("BoK exact", "best_of_k(k=8, lam=0.2, beta=0.02, temperature=0.8)"),
)


class DecoderRun:
    """One decoder's samples and statistics (arrays per sample ``(K,)`` or per step ``(K, T)``)."""

    def __init__(self, label, spec, texts, lengths, finished, entropy, support, kl, step_seconds,
                 tau_eff=float("nan"), decoder_seconds=float("nan"), tau_beta0=None, vocab_size=None):
        self.label, self.spec, self.texts = label, spec, list(texts)
        self.lengths = np.asarray(lengths)
        self.finished = np.asarray(finished, bool)
        self.entropy, self.support, self.kl = np.asarray(entropy), np.asarray(support), np.asarray(kl)
        self.step_seconds = np.asarray(step_seconds, np.float64)  # decode steps 2..n, wall time each
        self.tau_eff = float(tau_eff)
        self.decoder_seconds = float(decoder_seconds)
        self.tau_beta0 = tau_beta0  # None, or (τ with the coverage term off, c, how c is computed)
        self.vocab_size = vocab_size

    @property
    def valid(self):
        return np.arange(self.entropy.shape[1])[None, :] < self.lengths[:, None]

    def _mean(self, x) -> float:
        v = self.valid
        return float(x[v].mean()) if v.any() else float("nan")

    def mean_entropy(self) -> float:
        return self._mean(self.entropy)

    def mean_support(self) -> float:
        return self._mean(self.support)

    def mean_kl(self) -> float:
        return self._mean(self.kl)

    def per_step(self, x):
        """Mean over the samples still generating at each step (NaN once none is)."""
        v = self.valid
        n = v.sum(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n > 0, (x * v).sum(0) / np.maximum(n, 1), np.nan)

    def distinct(self) -> int:
        return len({_answer(t) for t in self.texts})

    def step_ms(self) -> float:
        """Median wall time of a decode step after compilation, in ms (NaN with < 1 step)."""
        return float(np.median(self.step_seconds) * 1e3) if self.step_seconds.size else float("nan")

    def tokens_per_s(self) -> float:
        """Tokens emitted by the K rows per second over the timed steps (2..n)."""
        if not self.step_seconds.size:
            return float("nan")
        n = self.step_seconds.size
        emitted = (np.arange(1, n + 1)[None, :] < self.lengths[:, None]).sum()
        return float(emitted / self.step_seconds.sum())


def _answer(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    first = lines[0] if lines else ""
    return first.strip(" \"'`*.!?,;:").lower()


def _num(x: float, spec: str = ".2f") -> str:
    return format(x, spec) if np.isfinite(x) else "n/a"


def reading(run: DecoderRun) -> str:
    """A one-line reading of what the decoder did, from its measured statistics."""
    K = len(run.texts)
    if run.mean_support() == 1.0 and run.mean_entropy() == 0.0:
        same = "so all its samples are the same text" if run.distinct() == 1 else f"{run.distinct()}/{K} distinct"
        return f"argmax at every step: q is one-hot (H = 0, one token), {same}."
    V = f" of {run.vocab_size}" if run.vocab_size else ""
    text = (f"q keeps {run.mean_support():.1f}{V} tokens per step on average, H(q) = {run.mean_entropy():.2f} nats, "
            f"KL(q‖p) = {run.mean_kl():.2f}; it is closest to temperature τ_eff = {_num(run.tau_eff, '.3f')} on "
            f"step 1; {run.distinct()}/{K} distinct answers.")
    if run.tau_beta0 is not None:
        tau0, c, how = run.tau_beta0
        text += (f" With its coverage term off (β = 0) this objective is exactly temperature {tau0:.3f} "
                 f"(q ∝ p·exp(c·s), c = {how} = {c:.2f}); coverage moves τ_eff by {run.tau_eff - tau0:+.3f}")
        text += (", so at these settings Best-of-K samples like temperature "
                 f"{run.tau_eff:.2f} — near-greedy." if run.tau_eff < 0.35 else ".")
    return text


def beta_zero_temperature(decoder):
    """``(τ0, c, how)`` for a Best-of-K-like decoder — KL to the model plus coverage, one
    scalar temperature ``t`` — whose coverage-free objective is exactly a temperature:
    ``q ∝ p·exp(c·s)``, ``s = logits/t`` ⇒ ``τ0 = 1/(1 + c/t)``, with ``c = 1/λ`` at the
    optimum and ``c_J = (1 − (1 − ηλ)^J)/λ`` after J mirror steps of size η. None otherwise."""
    from ..scores import Temperature
    from ..solvers.auto import Auto
    from ..solvers.exact import Exact
    from ..solvers.mirror import Mirror
    from ..terms import KL, Coverage

    obj = decoder.objective
    kls = [t for t in obj.terms if isinstance(t, KL)]
    rest = [t for t in obj.terms if not isinstance(t, KL)]
    if (len(kls) != 1 or kls[0].reference is not None or not rest or not all(isinstance(t, Coverage) for t in rest)
            or len(obj.transforms) != 1 or not isinstance(obj.transforms[0], Temperature) or obj.support):
        return None
    lam, t = np.asarray(kls[0].weight), np.asarray(obj.transforms[0].t)
    if lam.ndim or t.ndim or lam <= 0 or t <= 0:
        return None
    lam, t = float(lam), float(t)
    solver = decoder.solver.select(obj) if isinstance(decoder.solver, Auto) else decoder.solver
    if isinstance(solver, Mirror) and solver.tol is None and solver.step_size is not None:
        eta = np.asarray(solver.step_size)
        if eta.ndim:
            return None
        J = solver.steps
        c = (1.0 - (1.0 - float(eta) * lam) ** J) / lam
        how = f"c_J = (1 − (1 − ηλ)^J)/λ with J = {J}, η = {float(eta):g}, λ = {lam:g}"
    elif isinstance(solver, Exact):
        c, how = 1.0 / lam, f"1/λ with λ = {lam:g}"
    else:
        return None
    return 1.0 / (1.0 + c / t), c, how


def summarise(runs, *, prompt: str, width: int | None = None, header: str = "") -> str:
    """The demo's text report: a statistics table, what it measures, then each decoder's
    reading and completions in full."""
    width = width or terminal_width()
    K = max(len(r.texts) for r in runs)
    lines = ([header] if header else []) + [f"prompt: {prompt!r}", ""]
    head = (f"{'decoder':<15} {'H(q)':>6} {'|supp q|':>9} {'KL(q‖p)':>8} {'distinct':>8} {'τ_eff':>6} "
            f"{'step ms':>8} {'decoder ms':>10} {'tok/s':>7}")
    lines += [head, "-" * len(head)]
    for r in runs:
        lines.append(
            f"{r.label:<15} {_num(r.mean_entropy()):>6} {_num(r.mean_support(), '.1f'):>9} {_num(r.mean_kl()):>8} "
            f"{f'{r.distinct()}/{len(r.texts)}':>8} {_num(r.tau_eff):>6} {_num(r.step_ms(), '.1f'):>8} "
            f"{_num(r.decoder_seconds * 1e3, '.2f'):>10} {_num(r.tokens_per_s(), '.1f'):>7}"
        )
    notes = (
        f"H(q) (nats), |supp q| (tokens with q > 0) and KL(q‖p) to the model's softmax are means over every "
        f"generated step of the {K} samples; distinct: different first lines among them; τ_eff: the temperature "
        f"whose softmax(logits/τ) is closest to q (KL) on the prompt's first step. Timing after compilation: "
        f"step ms = median wall time of one decode step of the {K} rows (model forward pass + decoder + sampler, "
        f"first step left out), tok/s = tokens those rows emitted per second; decoder ms = the decoder alone: one "
        f"jitted call that solves and samples {K} rows of the first step's logits (median of 10, dispatch "
        f"included; `simplex-decode bench SPEC` times it amortised in a loop). The model's "
        f"forward pass dominates the step, so tok/s differs between decoders mostly by machine load; the "
        f"decoders' own costs are the README's Performance tables."
    )
    lines += [""] + wrap(notes, width)
    for r in runs:
        lines += ["", f"{r.label}: {r.spec}"]
        lines += wrap(reading(r), width, indent="  ")
        counts = Counter(" ".join(t.split()) for t in r.texts)
        cut = {" ".join(t.split()) for t, f in zip(r.texts, r.finished, strict=True) if not f}
        for text, n in counts.items():
            mark = " [stopped at --max-new-tokens]" if text in cut else ""
            lines += wrap(f"{text or '(empty)'}{mark}", width, indent=f"  {n}× ", subsequent=" " * (len(str(n)) + 4))
    return "\n".join(lines)


def write_plot(runs, path, *, prompt: str) -> None:
    """Entropy and support size per step, distinct answers and step time; atomic PNG write."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 8.5), dpi=100)
    axes = fig.subplots(2, 2)
    for r in runs:
        steps = np.arange(1, r.entropy.shape[1] + 1)
        axes[0, 0].plot(steps, r.per_step(r.entropy), label=r.label, marker=".")
        axes[0, 1].plot(steps, r.per_step(r.support), label=r.label, marker=".")
    axes[0, 0].set(title="entropy of q per step (mean over the samples still generating)", xlabel="step",
                   ylabel="nats")
    axes[0, 1].set(title="support size of q per step", xlabel="step", ylabel="tokens with q > 0", yscale="log")
    axes[0, 0].legend(fontsize=8)
    labels = [r.label for r in runs]
    x = np.arange(len(runs))
    axes[1, 0].bar(x, [r.distinct() for r in runs], color="tab:blue")
    for i, r in enumerate(runs):
        if np.isfinite(r.tau_eff):
            axes[1, 0].annotate(f"τ_eff {r.tau_eff:.2f}", (i, r.distinct()), ha="center", va="bottom", fontsize=7)
    axes[1, 0].set(title=f"distinct answers among {len(runs[0].texts)} samples", xticks=x)
    axes[1, 0].set_xticklabels(labels, rotation=20, fontsize=8)
    step = np.array([r.step_ms() for r in runs])
    dec = np.array([r.decoder_seconds * 1e3 for r in runs])
    dec = np.where(np.isfinite(dec), np.minimum(dec, step), 0.0)
    lo = np.array([np.percentile(r.step_seconds, 25) * 1e3 if r.step_seconds.size else np.nan for r in runs])
    hi = np.array([np.percentile(r.step_seconds, 75) * 1e3 if r.step_seconds.size else np.nan for r in runs])
    ok = np.isfinite(step)
    axes[1, 1].bar(x[ok], (step - dec)[ok], color="0.7", label="model forward + sampler + host callback")
    axes[1, 1].bar(x[ok], dec[ok], bottom=(step - dec)[ok], color="tab:green", label="decoder alone")
    axes[1, 1].errorbar(x[ok], step[ok], yerr=[(step - lo)[ok], (hi - step)[ok]], fmt="none", ecolor="black",
                        capsize=3, lw=1)
    axes[1, 1].set(title="decode step after compilation (median, quartiles), ms", xticks=x, ylabel="ms per step")
    axes[1, 1].set_xticklabels(labels, rotation=20, fontsize=8)
    axes[1, 1].legend(fontsize=7)
    fig.suptitle(f"simplex_decode demo: {prompt[:90]!r}", fontsize=10)
    fig.tight_layout()
    write_png(fig, path)


def _first_step_logits(model, ids):
    """The model's next-token logits after the prompt, ``(V,)`` float32."""
    import jax.numpy as jnp

    P = len(ids)
    logits, _ = model.step(model.params, jnp.asarray([ids], jnp.int32), model.cache(1, P),
                           jnp.arange(P, dtype=jnp.int32)[None])
    return np.asarray(logits[0, -1], np.float32)


def _decoder_alone(decoder, logits, K, repeats=10):
    """(median seconds of one jitted call that solves and samples ``K`` rows of ``logits`` —
    what one decode step asks of the decoder, dispatch included — and ``q`` of the row, or
    None if its status is not OK). One compilation per decoder serves both."""
    import jax
    import jax.numpy as jnp

    from ..sampling import sample_from_probs

    @jax.jit
    def step(decoder, key, x):
        sol = decoder.solve(x)
        return sample_from_probs(key, sol.q, valid=sol.status == 0), sol.q[0], sol.status[0]

    rows = jnp.broadcast_to(jnp.asarray(logits), (K,) + logits.shape)
    key = jax.random.key(0)
    _, q, status = jax.block_until_ready(step(decoder, key, rows))  # compile
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(step(decoder, jax.random.fold_in(key, i), rows))
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), (np.asarray(q) if int(status) == 0 else None)


def run_demo(args) -> int:
    """Run the demo for parsed CLI ``args`` (see ``simplex-decode demo --help``)."""
    import jax

    from .. import analysis
    from ..generation import generate

    out_path = check_out(args.out)
    decoders = []
    for label, spec in DEMO_DECODERS:
        try:
            decoders.append((label, spec, build_decoder(spec)))
        except ValueError as e:  # pragma: no cover - the demo's SPECs are tested
            raise CLIError(f"demo decoder {spec!r}: {e}") from None
    t_start = time.perf_counter()
    model = model_loading.load_model(args.model)
    ids = model.encode(args.prompt, chat=args.chat, system=args.system)
    check_context(len(ids), args.max_new_tokens, model.context)
    K, T = args.num_samples, args.max_new_tokens
    first = _first_step_logits(model, ids)

    bar = progress(len(decoders) * T, "demo")
    runs = []
    try:
        for label, spec, decoder in decoders:
            stamps = []

            def on_step(t, tokens, done, stamps=stamps):
                stamps.append(time.perf_counter())
                bar.update(1)

            bar.set_description(f"demo: {label}")
            out = generate(
                model.step, model.params, [ids], decoder=decoder, key=jax.random.key(args.seed), max_new_tokens=T,
                eos_id=model.eos_ids, cache=model.cache, num_samples=K, pad_id=model.pad_id,
                return_diagnostics=True, callback=on_step,
            )
            tokens, lengths, finished, status, diag = jax.device_get(
                (out.tokens, out.lengths, out.finished, out.status, out.diagnostics))
            bar.update(T - len(stamps))
            if np.any(status != 0):
                raise CLIError(f"{label}: the model produced invalid logits (NaN or +inf)")
            dec_s, q1 = _decoder_alone(decoder, first, K)
            tau = float(analysis.effective_temperature(q1, first)) if q1 is not None else float("nan")
            texts = [model.decode(tokens[0, k, : lengths[0, k]]) for k in range(K)]
            runs.append(DecoderRun(
                label, spec, texts, lengths[0], finished[0], diag["entropy"][0], diag["support_size"][0],
                diag["kl_to_model"][0], np.diff(np.asarray(stamps)), tau_eff=tau, decoder_seconds=dec_s,
                tau_beta0=beta_zero_temperature(decoder), vocab_size=int(first.shape[-1]),
            ))
    finally:
        bar.close()
    elapsed = time.perf_counter() - t_start
    header = (f"simplex-decode demo: {getattr(model, 'name', 'model')}, {K} samples of up to {T} new tokens per "
              f"decoder, seed {args.seed} ({elapsed:.0f} s including model loading and compilation)")
    print(summarise(runs, prompt=args.prompt, header=header))
    write_plot(runs, out_path, prompt=args.prompt)
    print(f"\nplot written to {out_path}")
    return 0
