"""Training the lab's models with optax: next-token (teacher-forced), teacherless and
multi-token objectives, on a task's fixed-length sequences.

The loss of a model with ``n`` heads on a sequence ``x_0 … x_{S−1}`` whose answer span
starts at ``P`` (the prompt length) is

.. math::

    \\mathcal{L} = \\sum_{i=0}^{n-1} \\frac{1}{|A_i|} \\sum_{t \\in A_i} -\\log p_i(x_{t+1+i} \\mid \\tilde x_{\\le t}),
    \\qquad A_i = \\{t : P \\le t + 1 + i < S\\},

head ``i`` predicting ``i + 1`` tokens ahead (Gloeckle et al. 2024; ``n = 1`` is next-token
prediction) and the loss read on answer tokens only, as in Bachmann & Nagarajan (2024).
The inputs ``x̃`` are the tokens themselves (teacher forcing), or with
``teacherless=True`` the dummy token on the answer span (``x̃_t = $`` for ``t ≥ P``): the
model must then predict the whole answer from the prompt "in one go". Reversed targets
are a property of the task (``Addition(reverse=True)``, ``PathStar(reverse=True)``).

The training step is jitted and runs ``chunk`` optimizer steps per call in a ``lax.scan``
(batches drawn on device from the training set), so Python runs once per chunk.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .model import LabConfig, check_params, head_logits, init_params, make_cache, make_step
from .tasks import Examples

__all__ = ["Trained", "TrainResult", "train", "sequence_loss", "save_checkpoint", "load_checkpoint"]


class Trained:
    """A trained model with what running it needs: ``step`` and ``cache`` for
    :func:`simplex_decode.generate` (teacherless models get the dummy inputs), the task's
    ``eos_id`` and ``pad_id``."""

    def __init__(self, config: LabConfig, params, *, prompt_len: int, eos_id: int, pad_id: int,
                 teacherless: bool = False, dummy_id: int | None = None):
        check_params(config, params)
        self.config, self.params = config, params
        self.prompt_len, self.eos_id, self.pad_id = int(prompt_len), int(eos_id), int(pad_id)
        self.teacherless, self.dummy_id = bool(teacherless), dummy_id
        if self.teacherless:
            self.step = make_step(config, dummy_from=self.prompt_len, dummy_id=int(dummy_id))
        else:
            self.step = make_step(config)
        self.cache = make_cache(config)

    @classmethod
    def for_task(cls, config, params, task, *, teacherless=False) -> Trained:
        return cls(config, params, prompt_len=task.prompt_len, eos_id=task.eos_id, pad_id=task.pad_id,
                   teacherless=teacherless, dummy_id=task.dummy_id)


class TrainResult(NamedTuple):
    """``params`` after training, the ``log`` (a list of dicts: ``step``, ``loss``, ``seconds``,
    and whatever ``eval_fn`` returned), and ``steps`` actually run (early stop)."""

    params: Any
    log: list
    steps: int


def _targets(tokens, prompt_len, n_heads):
    """Targets ``(n, B, S−1)`` and their mask for head i (token t+1+i, answer span only)."""
    B, S = tokens.shape
    cols = jnp.arange(S)
    tg, mk = [], []
    for i in range(n_heads):
        t = jnp.concatenate([tokens[:, 1 + i:], jnp.zeros((B, i), tokens.dtype)], axis=1)
        m = (cols[1 + i:] >= prompt_len)
        m = jnp.concatenate([m, jnp.zeros((i,), bool)])
        tg.append(t)
        mk.append(jnp.broadcast_to(m, (B, S - 1)))
    return jnp.stack(tg), jnp.stack(mk)


def sequence_loss(config: LabConfig, params, tokens, *, prompt_len: int, teacherless: bool = False,
                  dummy_id: int | None = None):
    """The objective above on int32 sequences ``(B, S)``: ``(total, per-head losses (n,))``."""
    tokens = jnp.asarray(tokens, jnp.int32)
    inputs = tokens[:, :-1]
    if teacherless:
        pos = jnp.arange(inputs.shape[1])
        inputs = jnp.where(pos[None, :] >= prompt_len, dummy_id, inputs)
    logits = head_logits(config, params, inputs)  # (n, B, S-1, V)
    targets, mask = _targets(tokens, prompt_len, config.mtp_heads)
    nll = -jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), targets[..., None], axis=-1)[..., 0]
    per_head = jnp.sum(jnp.where(mask, nll, 0.0), axis=(1, 2)) / jnp.maximum(jnp.sum(mask, axis=(1, 2)), 1)
    return jnp.sum(per_head), per_head


@functools.lru_cache(maxsize=32)
def _optimizer(learning_rate, warmup, total, weight_decay):
    """AdamW, linear warmup then cosine decay to 10 %, gradients clipped to norm 1 (built from
    hashable hyperparameters, so equal settings share one compiled training chunk)."""
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, learning_rate, min(warmup, total - 1) if total > 1 else 0, total, end_value=0.1 * learning_rate)
    return optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule, b1=0.9, b2=0.98,
                                                                    weight_decay=weight_decay))


@functools.partial(
    jax.jit,
    static_argnames=("config", "hyper", "chunk", "batch_size", "prompt_len", "teacherless", "dummy_id"),
    donate_argnames=("params", "opt_state"),
)
def _run_chunk(params, opt_state, data, key, step0, *, config, hyper, chunk, batch_size, prompt_len,
               teacherless, dummy_id):
    optimizer = _optimizer(*hyper)

    def body(carry, i):
        params, opt_state = carry
        k = jax.random.fold_in(key, step0 + i)
        idx = jax.random.randint(k, (batch_size,), 0, data.shape[0])
        batch = data[idx]
        (loss, per_head), grads = jax.value_and_grad(
            lambda p: sequence_loss(config, p, batch, prompt_len=prompt_len, teacherless=teacherless,
                                    dummy_id=dummy_id), has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return (params, opt_state), (loss, per_head)

    (params, opt_state), (loss, per_head) = jax.lax.scan(body, (params, opt_state), jnp.arange(chunk))
    return params, opt_state, jnp.mean(loss), jnp.mean(per_head, axis=0)


class _Progress:
    """tqdm on a terminal, else one line per ``log_every`` steps on stderr (or nothing)."""

    def __init__(self, total, desc, enabled):
        self.bar, self.enabled, self.desc = None, enabled, desc
        if enabled and sys.stderr.isatty():
            try:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=total, desc=desc, leave=False)
            except ImportError:  # tqdm is optional (the `model` extra)
                self.bar = None

    def update(self, n, step, total, info):
        if self.bar is not None:
            self.bar.update(n)
            self.bar.set_postfix(info, refresh=False)
        elif self.enabled:
            text = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in info.items())
            print(f"[{self.desc}] step {step}/{total} {text}", file=sys.stderr, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def train(
    config: LabConfig,
    data: Examples,
    *,
    steps: int,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
    warmup: int = 100,
    weight_decay: float = 0.01,
    seed: int = 0,
    teacherless: bool = False,
    dummy_id: int | None = None,
    params: Any = None,
    chunk: int = 50,
    log_every: int = 500,
    eval_fn: Callable[[Any], dict] | None = None,
    stop: Callable[[dict], bool] | None = None,
    progress: bool = True,
    desc: str = "train",
) -> TrainResult:
    """Train a :class:`LabConfig` model on ``data`` (fixed-length problems) with AdamW.

    Args:
      config: the model (``mtp_heads = n`` trains every head, the sum of their losses).
      data: the training problems (:class:`~simplex_decode.lab.tasks.Examples`); batches of
        ``batch_size`` are drawn uniformly with replacement, on device, from
        ``data.sequences``; the loss is read on the answer span (``t ≥ prompt length``).
      steps: optimizer steps (rounded up to a multiple of ``chunk``).
      learning_rate, warmup, weight_decay: AdamW with linear warmup then cosine decay to
        10 % (gradients clipped to global norm 1).
      seed: initialisation and batch order (same seed, same model).
      teacherless, dummy_id: dummy inputs on the answer span (the Pitfalls paper's objective).
      params: start from these instead of a fresh initialisation.
      chunk: optimizer steps per jitted call.
      log_every: steps between log entries (and ``eval_fn`` calls).
      eval_fn: ``eval_fn(params) -> dict`` of metrics, logged every ``log_every`` steps.
      stop: ``stop(entry) -> bool`` on each log entry: stop training early when True.
      progress: a tqdm bar when stderr is a terminal, otherwise a one-line log per entry.

    Returns:
      A :class:`TrainResult`.
    """
    for name, v, lo in (("steps", steps, 1), ("batch_size", batch_size, 1), ("chunk", chunk, 1),
                        ("log_every", log_every, 1), ("warmup", warmup, 0)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"train: `{name}` must be an integer >= {lo}, got {v!r}")
    if not (learning_rate > 0):
        raise ValueError(f"train: `learning_rate` must be > 0, got {learning_rate!r}")
    if teacherless and dummy_id is None:
        raise ValueError("train: teacherless=True needs `dummy_id` (the task's dummy token)")
    seqs = jnp.asarray(data.sequences, jnp.int32)
    prompt_len = int(data.prompts.shape[1])
    if int(seqs.max()) >= config.vocab_size:
        raise ValueError(f"train: data hold token ids >= config.vocab_size = {config.vocab_size}")
    n_chunks = -(-steps // chunk)
    total = n_chunks * chunk
    hyper = (float(learning_rate), int(warmup), int(total), float(weight_decay))
    optimizer = _optimizer(*hyper)
    key = jax.random.key(seed)
    if params is None:
        params = init_params(config, jax.random.fold_in(key, 1))
    else:
        check_params(config, params)
        params = jax.tree.map(jnp.array, params)  # a copy: the chunks donate their buffers
    opt_state = optimizer.init(params)
    data_key = jax.random.fold_in(key, 2)
    log, bar = [], _Progress(total, desc, progress)
    t0 = time.perf_counter()
    done, since = 0, 0
    try:
        for c in range(n_chunks):
            params, opt_state, loss, per_head = _run_chunk(
                params, opt_state, seqs, data_key, jnp.int32(c * chunk), config=config, hyper=hyper,
                chunk=chunk, batch_size=int(batch_size), prompt_len=prompt_len, teacherless=bool(teacherless),
                dummy_id=None if dummy_id is None else int(dummy_id))
            done += chunk
            since += chunk
            if since >= log_every or c == n_chunks - 1:
                since = 0
                entry = {"step": done, "loss": float(loss), "seconds": time.perf_counter() - t0}
                entry.update({f"loss_head{i}": float(v) for i, v in enumerate(np.asarray(per_head))})
                if eval_fn is not None:
                    entry.update(eval_fn(params))
                log.append(entry)
                bar.update(chunk if bar.bar is None else 0, done, total,
                           {k: v for k, v in entry.items() if k in ("loss", "accuracy")})
                if stop is not None and stop(entry):
                    break
            if bar.bar is not None:
                bar.update(chunk, done, total, {"loss": float(loss)})
    finally:
        bar.close()
    return TrainResult(params=params, log=log, steps=done)


# --------------------------------------------------------------------------------------
# checkpoints: numpy .npz, no pickle
# --------------------------------------------------------------------------------------


def save_checkpoint(path, config: LabConfig, params, meta: dict | None = None) -> Path:
    """Write ``config``, ``params`` and a JSON-able ``meta`` dict to ``path`` (``.npz``, no pickle)."""
    path = Path(path)
    flat = {"param/" + "/".join(str(getattr(k, "key", k)) for k in kp): np.asarray(v)
            for kp, v in jax.tree_util.tree_leaves_with_path(params)}
    flat["config.json"] = np.frombuffer(json.dumps(config.to_dict()).encode(), np.uint8)
    flat["meta.json"] = np.frombuffer(json.dumps(meta or {}).encode(), np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        np.savez(f, **flat)
    return path


def load_checkpoint(path) -> tuple[LabConfig, dict, dict]:
    """Read a checkpoint written by :func:`save_checkpoint`: ``(config, params, meta)``."""
    with np.load(Path(path), allow_pickle=False) as z:
        config = LabConfig(**json.loads(bytes(z["config.json"]).decode()))
        meta = json.loads(bytes(z["meta.json"]).decode())
        params: dict = {}
        for name in z.files:
            if not name.startswith("param/"):
                continue
            node = params
            *parents, leaf = name[len("param/"):].split("/")
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = jnp.asarray(z[name])
    check_params(config, params)
    return config, params, meta
