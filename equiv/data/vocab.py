"""Token vocabularies with the special ids every sequence model here shares."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

PAD, SOS, EOS = 0, 1, 2
SPECIALS = ("<pad>", "<sos>", "<eos>")


class Vocab:
    """Words ↔ ids, specials first (``PAD=0, SOS=1, EOS=2``), words in the given order."""

    def __init__(self, words: Iterable[str]) -> None:
        self.itos = [*SPECIALS, *dict.fromkeys(words)]
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, word: str) -> bool:
        return word in self.stoi

    def ids(self, words: Sequence[str]) -> list[int]:
        """Ids of known words; an unknown word is an error naming it."""
        try:
            return [self.stoi[w] for w in words]
        except KeyError as err:
            raise KeyError(f"word {err.args[0]!r} is not in the vocabulary") from None

    def encode(self, text: str, eos: bool = True) -> list[int]:
        return self.ids(text.split()) + ([EOS] if eos else [])

    def decode(self, ids: Iterable[int]) -> str:
        """Words up to the first EOS, specials dropped."""
        words = []
        for i in ids:
            if i == EOS:
                break
            if i >= len(SPECIALS):
                words.append(self.itos[i])
        return " ".join(words)
