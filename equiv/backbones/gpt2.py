"""GPT-2 for generation: pretrained weights from the Hugging Face hub (offline-safe) or a tiny
random model with a locally built word-level tokenizer (tests, benchmarks).

``CausalLM`` is the small interface the generation symmetrizers need: one step of a
left-padded batch with a KV cache, returning the last position's logits and hidden state.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from equiv.errors import MissingResourceError

EOS_TOKEN = "<|endoftext|>"
UNK_TOKEN = "<unk>"
PRETRAINED_NAMES = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "distilgpt2")
FETCH_COMMAND = "python scripts/prefetch.py task=nlg_gender_respect"


def hf_cache_dir(cache_dir: str | Path) -> Path:
    """Where the suite keeps Hugging Face downloads (GPT-2, the regard classifier)."""
    return Path(cache_dir) / "huggingface"


@dataclass
class StepOutput:
    logits: Tensor          # [N, V] next-token logits at the last position
    hidden: Tensor          # [N, H] last hidden state at the last position (λ's input)
    past: object            # the KV cache (transformers ``Cache``)


class CausalLM(nn.Module):
    """A GPT-2 LM head model behind a one-step interface that handles left padding.

    Positions count real tokens only (``cumsum(mask) - 1``), so a left-padded row is computed
    exactly as the same row without padding.
    """

    def __init__(self, model: nn.Module, tokenizer, name: str, pretrained: bool) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.pretrained = pretrained
        self.eos_id = int(tokenizer.convert_tokens_to_ids(EOS_TOKEN))
        # transformers 5 renamed ``past_key_values`` to ``cache`` (the old name warns, then goes)
        params = inspect.signature(type(model.transformer).forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"

    @property
    def vocab_size(self) -> int:
        return int(self.model.config.vocab_size)

    def step(self, input_ids: Tensor, attention_mask: Tensor, past: object = None,
             use_cache: bool = True) -> StepOutput:
        """Run ``input_ids`` (the new tokens, or the whole prefix when ``past`` is None).

        ``attention_mask`` covers the past and the new tokens: ``[N, past + new]``.
        """
        positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        positions = positions[:, -input_ids.shape[1]:]
        out = self.model.transformer(input_ids=input_ids, attention_mask=attention_mask,
                                     position_ids=positions, use_cache=use_cache,
                                     **{self._cache_kw: past})
        hidden = out.last_hidden_state[:, -1]
        return StepOutput(self.model.lm_head(hidden), hidden, getattr(out, self._cache_kw))

    def encode_word(self, word: str) -> list[int]:
        return list(self.tokenizer.encode(word, add_special_tokens=False))

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)

    def stop_ids(self) -> list[int]:
        """End-of-text and every token whose text contains a newline (GPT-2 has ``\\n``,
        ``\\n\\n``, ``\\n\\n\\n``, ...), so generation stops at the first line break
        however the model spells it."""
        n = len(self.tokenizer)
        texts = self.tokenizer.batch_decode([[i] for i in range(n)], skip_special_tokens=False)
        return [self.eos_id, *(i for i, s in enumerate(texts) if "\n" in s and i != self.eos_id)]


def load_gpt2(model: str, cache_dir: str | Path, offline: bool | None = None) -> CausalLM:
    """Pretrained GPT-2 ``model`` (``gpt2``, ``gpt2-medium``, ...) from
    ``cache_dir/huggingface``.

    Only local files are read (``scripts/prefetch.py`` downloads; a run never contacts the hub);
    missing weights raise ``MissingResourceError`` naming the fetch command, never a random
    substitute.
    """
    from transformers import AutoTokenizer, GPT2LMHeadModel

    offline = True if offline is None else offline       # runs: local files only
    folder = hf_cache_dir(cache_dir)
    try:
        tokenizer = AutoTokenizer.from_pretrained(model, cache_dir=folder,
                                                  local_files_only=offline)
        net = GPT2LMHeadModel.from_pretrained(model, cache_dir=folder, local_files_only=offline)
    except (OSError, ValueError) as err:
        where = [folder] if offline else [folder, f"https://huggingface.co/{model}"]
        raise MissingResourceError(f"GPT-2 weights {model!r}", where, FETCH_COMMAND) from err
    net.eval()
    return CausalLM(net, tokenizer, model, pretrained=True)


def word_level_tokenizer(words: Iterable[str]):
    """A GPT-2-style tokenizer whose vocabulary is whole words (with their leading space).

    Byte-level pre-tokenization as in GPT-2 (``" man"`` -> ``"Ġman"``), so words are written
    exactly as for the real tokenizer; unknown words map to ``<unk>``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    pre = pre_tokenizers.ByteLevel(add_prefix_space=False)
    vocab = {EOS_TOKEN: 0, UNK_TOKEN: 1}
    for word in [*words, "\n"]:
        for piece, _ in pre.pre_tokenize_str(word):
            vocab.setdefault(piece, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK_TOKEN))
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS_TOKEN, bos_token=EOS_TOKEN,
                                   unk_token=UNK_TOKEN, pad_token=EOS_TOKEN)


def tiny_gpt2(words: Iterable[str], n_layer: int = 2, n_embd: int = 32, n_head: int = 2,
              n_positions: int = 64, seed: int = 0, vocab_size: int | None = None) -> CausalLM:
    """A randomly initialised GPT-2 over a word-level vocabulary (tests and benchmarks only).

    ``vocab_size`` larger than the word list pads the output layer (e.g. to GPT-2's 50,257, so a
    benchmark pays for the real vocabulary); the extra ids have no text.
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = word_level_tokenizer(words)
    if vocab_size is not None and vocab_size < len(tokenizer):
        raise ValueError(f"vocab_size={vocab_size} < the {len(tokenizer)} words of the tokenizer")
    config = GPT2Config(vocab_size=vocab_size or len(tokenizer), n_layer=n_layer, n_embd=n_embd,
                        n_head=n_head, n_positions=n_positions, bos_token_id=0, eos_token_id=0)
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config)
    model.eval()
    return CausalLM(model, tokenizer, "tiny_gpt2", pretrained=False)
