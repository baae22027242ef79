"""A simplex_decode decoder inside Hugging Face transformers' generate().

    python examples/transformers_generate.py             # a tiny random Llama (nothing downloaded)
    python examples/transformers_generate.py PATH        # a local transformers checkpoint directory

Needs ``pip install -e '.[transformers]'``.
"""

from __future__ import annotations

import sys

import torch
import transformers

import simplex_decode as sd
from simplex_decode.integrations.transformers import DecoderLogitsProcessor, generate_kwargs


def load(path):
    if path:
        tok = transformers.AutoTokenizer.from_pretrained(path)
        return transformers.AutoModelForCausalLM.from_pretrained(path).eval(), tok
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, pad_token_id=0)
    return transformers.LlamaForCausalLM(cfg).eval(), None


def main(argv):
    model, tok = load(argv[1] if len(argv) > 1 else None)
    prompt = tok("The capital of France is", return_tensors="pt").input_ids if tok else torch.tensor([[5, 9, 3, 7]])
    decoders = {
        "greedy": sd.greedy(),
        "top_p(0.9, temperature=0.7)": sd.top_p(0.9, temperature=0.7),
        "best_of_k(k=8, lam=0.2, beta=0.02)": sd.best_of_k(k=8, lam=0.2, beta=0.02, top_m=8),
        "chain(RepetitionPenalty(1.3), MinP(0.05))": sd.chain(sd.RepetitionPenalty(1.3), sd.MinP(0.05)),
    }
    for name, dec in decoders.items():
        torch.manual_seed(0)
        # do_sample=True samples from q: transformers' own warpers (its default top_k=50!) are switched off
        out = model.generate(prompt, max_new_tokens=12, pad_token_id=0, **generate_kwargs(dec))
        new = out[0, prompt.shape[1]:]
        print(f"{name:45s}", tok.decode(new) if tok else new.tolist())
    greedy = model.generate(prompt, max_new_tokens=12, do_sample=False, pad_token_id=0,
                            logits_processor=transformers.LogitsProcessorList([DecoderLogitsProcessor(sd.greedy())]))
    assert torch.equal(greedy, model.generate(prompt, max_new_tokens=12, do_sample=False, pad_token_id=0))
    print("greedy through the adapter equals transformers' greedy")


if __name__ == "__main__":
    main(sys.argv)
