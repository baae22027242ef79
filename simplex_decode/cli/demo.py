"""``simplex-decode demo``: one prompt, six decoders, side by side, with a plot.

On the default model (SmolLM2-135M-Instruct) the demo samples K completions of one
prompt with greedy, temperature, top-p, min-p, Best-of-K solved the paper's way (mirror
ascent, J = 5 steps from p) and Best-of-K solved exactly, and reports per decoder the
mean entropy of q, the mean support size of q, the number of distinct answers among the
K samples, and decode throughput (tokens/s after compilation and prefill, timed by the
streaming callback). The plot (PNG) shows entropy and support size per step and the two
bar charts; it is written to a temporary file first and renamed, so an error never
leaves half a file behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from . import model as model_loading
from .model import check_context
from .spec import CLIError, build_decoder

__all__ = ["DEFAULT_PROMPT", "DEMO_DECODERS", "DecoderRun", "run_demo", "write_plot", "summarise"]

DEFAULT_PROMPT = "Suggest a name for a new coffee shop. Reply with the name only."

#: (label, SPEC) of the decoders the demo compares; SPECs go through the CLI's safe parser.
DEMO_DECODERS = (
    ("greedy", "greedy"),
    ("temperature", "temperature(t=0.8)"),
    ("top-p", "top_p(p=0.9, temperature=0.8)"),
    ("min-p", "min_p(p=0.1, temperature=0.8)"),
    ("BoK mirror J=5", 'best_of_k(k=8, lam=0.2, beta=0.02, temperature=0.8, solver="mirror", steps=5)'),
    ("BoK exact", "best_of_k(k=8, lam=0.2, beta=0.02, temperature=0.8)"),
)


class DecoderRun:
    """One decoder's samples and statistics."""

    def __init__(self, label, spec, texts, lengths, entropy, support, tokens_per_s, seconds):
        self.label, self.spec, self.texts = label, spec, texts
        self.lengths = lengths  # (K,)
        self.entropy = entropy  # (K, T), valid where t < length
        self.support = support  # (K, T)
        self.tokens_per_s = tokens_per_s
        self.seconds = seconds

    @property
    def valid(self):
        return np.arange(self.entropy.shape[1])[None, :] < self.lengths[:, None]

    def mean_entropy(self) -> float:
        v = self.valid
        return float(self.entropy[v].mean()) if v.any() else float("nan")

    def mean_support(self) -> float:
        v = self.valid
        return float(self.support[v].mean()) if v.any() else float("nan")

    def per_step(self, x):
        """Mean over the samples still generating at each step (NaN once none is)."""
        v = self.valid
        n = v.sum(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n > 0, (x * v).sum(0) / np.maximum(n, 1), np.nan)

    def distinct(self) -> int:
        return len({_answer(t) for t in self.texts})


def _answer(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    first = lines[0] if lines else ""
    return first.strip(" \"'`*.!?,;:").lower()


def summarise(runs, *, prompt: str, width: int | None = None) -> str:
    """The demo's text report: a stats table and the samples side by side."""
    width = width or shutil.get_terminal_size((120, 24)).columns
    lines = [f"prompt: {prompt!r}", ""]
    head = f"{'decoder':<16} {'mean H(q)':>9} {'support':>9} {'distinct':>9} {'tok/s':>8}  spec"
    lines += [head, "-" * min(width, len(head) + 40)]
    for r in runs:
        k = len(r.texts)
        tps = f"{r.tokens_per_s:8.1f}" if np.isfinite(r.tokens_per_s) else f"{'n/a':>8}"
        lines.append(
            f"{r.label:<16} {r.mean_entropy():9.3f} {r.mean_support():9.1f} {f'{r.distinct()}/{k}':>9} {tps}  {r.spec}"
        )
    lines += ["", "samples (one column per decoder):"]
    cols = len(runs)
    cell = max(8, (width - 4 - 3 * cols) // max(cols, 1))

    def fit(text):
        text = " ".join(text.split())
        return text if len(text) <= cell else text[: cell - 1] + "…"

    lines.append("    " + " | ".join(f"{r.label[:cell]:<{cell}}" for r in runs))
    for i in range(max(len(r.texts) for r in runs)):
        row = [fit(r.texts[i]) if i < len(r.texts) else "" for r in runs]
        lines.append(f"{i + 1:>2}  " + " | ".join(f"{c:<{cell}}" for c in row))
    return "\n".join(lines)


def write_plot(runs, path, *, prompt: str) -> None:
    """Entropy and support size per step, distinct answers and tokens/s; atomic PNG write."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 8), dpi=100)
    axes = fig.subplots(2, 2)
    for r in runs:
        steps = np.arange(1, r.entropy.shape[1] + 1)
        axes[0, 0].plot(steps, r.per_step(r.entropy), label=r.label, marker=".")
        axes[0, 1].plot(steps, r.per_step(r.support), label=r.label, marker=".")
    axes[0, 0].set(title="entropy of q per step (mean over samples)", xlabel="step", ylabel="nats")
    axes[0, 1].set(title="support size of q per step", xlabel="step", ylabel="tokens with q > 0", yscale="log")
    axes[0, 0].legend(fontsize=8)
    labels = [r.label for r in runs]
    x = np.arange(len(runs))
    axes[1, 0].bar(x, [r.distinct() for r in runs], color="tab:blue")
    axes[1, 0].set(title=f"distinct answers among {len(runs[0].texts)} samples", xticks=x)
    axes[1, 0].set_xticklabels(labels, rotation=20, fontsize=8)
    axes[1, 1].bar(x, [r.tokens_per_s if np.isfinite(r.tokens_per_s) else 0.0 for r in runs], color="tab:green")
    axes[1, 1].set(title="decode throughput (tokens/s, CPU/accelerator as run)", xticks=x)
    axes[1, 1].set_xticklabels(labels, rotation=20, fontsize=8)
    fig.suptitle(f"simplex_decode demo: {prompt[:90]!r}", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fig.savefig(fh, format="png")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _check_out(out) -> Path:

    path = Path(out)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise CLIError(f"--out: directory {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK):
        raise CLIError(f"--out: directory {str(parent)!r} is not writable")
    if path.is_dir():
        raise CLIError(f"--out: {str(path)!r} is a directory; give a file name such as demo.png")
    return path


def _progress(total, desc):
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm ships with the model extra
        return None
    return tqdm(total=total, desc=desc, unit="step", leave=False)


def run_demo(args) -> int:
    """Run the demo for parsed CLI ``args`` (see ``simplex-decode demo --help``)."""
    import jax

    from ..generation import generate

    out_path = _check_out(args.out)
    decoders, skipped = [], []
    for label, spec in DEMO_DECODERS:
        try:
            decoders.append((label, spec, build_decoder(spec)))
        except ValueError as e:
            if str(e).startswith("unknown decoder"):
                skipped.append(label)
                continue
            raise CLIError(f"demo decoder {spec!r}: {e}") from None
    model = model_loading.load_model(args.model)
    ids = model.encode(args.prompt, chat=args.chat, system=args.system)
    check_context(len(ids), args.max_new_tokens, model.context)
    K, T = args.num_samples, args.max_new_tokens

    bar = _progress(len(decoders) * T, "demo")
    runs = []
    try:
        for label, spec, decoder in decoders:
            stamps = []

            def on_step(t, tokens, done, stamps=stamps):
                stamps.append(time.perf_counter())
                if bar is not None:
                    bar.update(1)

            if bar is not None:
                bar.set_description(f"demo: {label}")
            t0 = time.perf_counter()
            out = generate(
                model.step, model.params, [ids], decoder=decoder, key=jax.random.key(args.seed), max_new_tokens=T,
                eos_id=model.eos_ids, cache=model.cache, num_samples=K, pad_id=model.pad_id,
                return_diagnostics=True, callback=on_step,
            )
            tokens, lengths, status, diag = jax.device_get((out.tokens, out.lengths, out.status, out.diagnostics))
            jax.effects_barrier()
            seconds = time.perf_counter() - t0
            if bar is not None:
                bar.update(T - len(stamps))
            if np.any(status != 0):
                raise CLIError(f"{label}: the model produced invalid logits (NaN or +inf)")
            # decode throughput: tokens emitted after the first step / time between first and last step
            emitted = (np.arange(T)[None, :] < lengths[0][:, None]).sum(0)
            n_steps = len(stamps)
            tps = float(emitted[1:n_steps].sum() / (stamps[-1] - stamps[0])) if n_steps > 1 else float("nan")
            texts = [model.decode(tokens[0, k, : lengths[0, k]]) for k in range(K)]
            runs.append(DecoderRun(label, spec, texts, lengths[0], diag["entropy"][0], diag["support_size"][0], tps,
                                   seconds))
    finally:
        if bar is not None:
            bar.close()
    print(summarise(runs, prompt=args.prompt))
    if skipped:
        print(f"\n(not available in this installation, skipped: {', '.join(skipped)})")
    write_plot(runs, out_path, prompt=args.prompt)
    print(f"\nplot written to {out_path}")
    return 0
