"""Building a BERT-Chinese-style vocabulary from a corpus.

Google's Chinese vocab.txt (bert-base-chinese, 21128 lines) is laid out as
    [PAD]=0, [unused1..99]=1..99, [UNK]=100, [CLS]=101, [SEP]=102, [MASK]=103,
then punctuation and ASCII, single CJK characters, and WordPiece pieces for the latin
words and numbers in between ("iphone", "##15"). This module builds the same kind of
list from counts over a corpus, in four groups:
  specials  the layout above (the number of [unusedN] is configurable);
  base      ASCII printable characters and every punctuation/symbol character seen;
  CJK       single CJK characters, most frequent first;
  pieces    WordPiece pieces trained (tokenizers' WordPieceTrainer) on the non-CJK runs.

What counts as CJK, punctuation or a word character is decided by the tokenizer itself
(its normaliser and pre-tokenizer, see `CharClasses`), and the text is normalised by it
before counting, so the counts are over exactly the characters the tokenizer will look
up: lower-cased, accents stripped, compatibility ideographs (U+F900..) mapped to their
unified forms. BertNormalizer does NOT fold full-width forms: ＡＢＣ becomes ａｂｃ, and
，stays ，. Full-width letters and digits are folded by `prepare` (clean.fullwidth), and
full-width punctuation that occurs is kept in the base group as it is seen.
"""

from __future__ import annotations

import tempfile
import unicodedata
from collections import Counter
from pathlib import Path
from typing import Iterable, TextIO

SPECIAL_AFTER_UNUSED = ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]

# classes of a (normalised) character
CJK, PUNCT, SPACE, WORD = "cjk", "punct", "space", "word"


def special_tokens(unused: int) -> list[str]:
    """[PAD], [unused1]..[unusedN], [UNK], [CLS], [SEP], [MASK] — Google's first 104 lines for N=99."""
    return ["[PAD]"] + [f"[unused{i}]" for i in range(1, unused + 1)] + SPECIAL_AFTER_UNUSED


def bert_tokenizer(directory: str | Path, tokens: list[str], *, lowercase: bool):
    """Write `directory/vocab.txt` and load it with `BertTokenizer.from_pretrained`.

    `BertTokenizer(vocab_file=...)` would silently build a 5-token vocabulary in
    transformers 5; `from_pretrained` on a directory with a vocab.txt reads it. The size
    is checked, so a duplicate line or a reader change cannot slip through.
    """
    from transformers import BertTokenizer

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.txt").write_text("".join(t + "\n" for t in tokens), encoding="utf-8")
    tok = BertTokenizer.from_pretrained(str(directory), do_lower_case=lowercase)
    if len(tok) != len(tokens):
        raise RuntimeError(f"BertTokenizer read {len(tok)} tokens from a vocab.txt of {len(tokens)} lines (a bug)")
    return tok


def reference_tokenizer(*, lowercase: bool):
    """A BertTokenizer with only the special tokens: its normaliser and pre-tokenizer are
    the ones the finished tokenizer will have (same class, same options)."""
    with tempfile.TemporaryDirectory() as d:
        return bert_tokenizer(d, special_tokens(0), lowercase=lowercase)


class CharClasses:
    """Classifies characters of normalised text the way the tokenizer treats them.

    CJK: the normaliser puts spaces around it (always one token on its own);
    PUNCT: the pre-tokenizer splits it off ("a,a" → a , a);
    SPACE: the pre-tokenizer drops it;
    WORD: anything else (latin, digits, kana, emoji, ℃ ...): runs of these are words
          that WordPiece splits into pieces.
    """

    def __init__(self, normalizer, pre_tokenizer):
        self.normalizer, self.pre_tokenizer = normalizer, pre_tokenizer
        self.of: dict[str, str] = {}
        self.cjk_to_space: dict[int, str] = {}  # str.translate table

    def classify(self, c: str) -> str:
        cls = self.of.get(c)
        if cls is None:
            if self.normalizer.normalize_str(c) == f" {c} ":
                cls = CJK
                self.cjk_to_space[ord(c)] = " "
            else:
                words = self.pre_tokenizer.pre_tokenize_str(f"a{c}a")
                cls = PUNCT if len(words) == 3 else SPACE if len(words) == 2 else WORD
            self.of[c] = cls
        return cls


def scan(batches: Iterable[list[str]], normalizer, classes: CharClasses, words_out: TextIO) -> Counter:
    """Count every character of the normalised texts; write their non-CJK text to `words_out`.

    Per batch the counting and the CJK removal run in C (Counter over one string,
    str.translate); only the normaliser call is per document. `words_out` gets one line
    per document with CJK characters replaced by spaces: the word runs that WordPiece
    will see, bounded exactly as the tokenizer bounds them (its normaliser isolates every
    CJK character anyway). It is small for Chinese text.
    """
    counts: Counter = Counter()
    for texts in batches:
        normed = "\n".join(normalizer.normalize_str(t) for t in texts if t)
        counts.update(normed)
        for c in set(normed) - classes.of.keys():
            classes.classify(c)
        for line in normed.translate(classes.cjk_to_space).split("\n"):
            words = line.split()
            if words:
                words_out.write(" ".join(words) + "\n")
    return counts


def base_tokens(counts: Counter, classes: CharClasses, *, lowercase: bool) -> list[str]:
    """ASCII printable characters and their full-width forms (upper case only when not
    lower-casing: the tokenizer could never produce it), CJK punctuation, then every other
    punctuation/symbol character seen, most frequent first."""
    ascii_chars = [chr(i) for i in range(33, 127) if not (lowercase and "A" <= chr(i) <= "Z")]
    # Full-width forms (！..～) and CJK punctuation (、。《》「」【】...) are always in: BERT's
    # normaliser does not fold full-width to half-width, so raw text at fine-tuning or
    # inference time (not cleaned by prepare) would otherwise turn them into [UNK].
    fullwidth = [chr(i) for i in range(0xFF01, 0xFF5F) if not (lowercase and 0xFF21 <= i <= 0xFF3A)]
    cjk_punct = [chr(i) for i in range(0x3001, 0x3040) if unicodedata.category(chr(i))[0] in "PS"]
    ascii_chars += [c for c in fullwidth + cjk_punct if classes.classify(c) in (PUNCT, WORD)]
    seen = {c for c in ascii_chars}
    others = [c for c in counts if c not in seen and classes.classify(c) in (PUNCT, WORD)
              and unicodedata.category(c)[0] in "PS"]
    return ascii_chars + sorted(others, key=lambda c: (-counts[c], c))


def cjk_ranked(counts: Counter, classes: CharClasses, min_count: int) -> list[str]:
    """CJK characters seen at least `min_count` times, most frequent first (ties by code point)."""
    chars = [c for c, n in counts.items() if n >= min_count and classes.classify(c) == CJK]
    return sorted(chars, key=lambda c: (-counts[c], c))


def train_pieces(words_file: Path, max_pieces: int, counts: Counter) -> list[str]:
    """WordPiece pieces for the word runs in `words_file`, most useful first.

    Ranked: single characters (word-initial, then `##` continuations), most frequent
    first, so that every character seen can be spelled; then the merged pieces in the
    trainer's merge order (most frequent pair first). The first k merges of a BPE-style
    trainer do not depend on the target size, so cutting this list at k gives what a
    training run with k pieces would.

    Determinism: tokenizers' trainer numbers the `##x` continuation tokens in hash-map
    order, and those numbers break ties between equally frequent merges, so two runs can
    give different vocabularies (huggingface/tokenizers#1794). A first, merge-free pass
    finds the set of `##x` tokens; the second pass gets them, sorted, as its first
    (special) tokens, which fixes their numbers.
    """
    from tokenizers import Tokenizer
    from tokenizers.models import WordPiece
    from tokenizers.pre_tokenizers import BertPreTokenizer
    from tokenizers.trainers import WordPieceTrainer

    if max_pieces <= 0 or words_file.stat().st_size == 0:
        return []

    def train(vocab_size: int, first: list[str]) -> list[str]:
        tok = Tokenizer(WordPiece(unk_token="[UNK]"))
        tok.pre_tokenizer = BertPreTokenizer()
        trainer = WordPieceTrainer(vocab_size=vocab_size, special_tokens=first, show_progress=False)
        tok.train([str(words_file)], trainer=trainer)
        return [t for t, _ in sorted(tok.get_vocab().items(), key=lambda kv: kv[1])]

    alphabet = train(1, [])  # characters and ##characters only (no room for merges)
    continuations = sorted(t for t in alphabet if t.startswith("##"))
    vocab = train(len(alphabet) + max_pieces, continuations)
    def by_count(t: str) -> tuple[int, str]:
        return -counts[t.removeprefix("##")], t

    singles = sorted((t for t in vocab if len(t) == 1), key=by_count)
    cont_set = set(continuations)
    conts = sorted((t for t in vocab if t in cont_set), key=by_count)
    single_set = set(singles) | cont_set
    merges = [t for t in vocab if t not in single_set]
    return singles + conts + merges


def piece_slots(size: int, taken: int, wordpiece_share: float) -> int:
    """Slots for WordPiece pieces: `wordpiece_share` of what is left after the first `taken` tokens."""
    return round(wordpiece_share * max(size - taken, 0))


def assemble(specials: list[str], base: list[str], cjk: list[str], pieces: list[str], *,
             size: int, wordpiece_share: float) -> tuple[list[str], dict[str, int]]:
    """The vocabulary: specials, base, CJK, pieces; at most `size` tokens, no duplicates.

    The slots left after specials and base are split `wordpiece_share` : rest between
    pieces and CJK characters. Slots the pieces cannot fill go to CJK characters, but
    never the other way: pieces beyond their share are mostly numbers and codes seen
    once, whose embeddings would never be trained. A list shorter than `size` means the
    corpus had fewer tokens to offer.
    """
    tokens = list(specials)
    present = set(tokens)
    base = [t for t in base if t not in present][: max(size - len(tokens), 0)]
    tokens += base
    present.update(base)
    cjk = [c for c in cjk if c not in present]
    present.update(cjk)
    pieces = [p for p in pieces if p not in present]
    n_pieces = min(len(pieces), piece_slots(size, len(tokens), wordpiece_share))
    n_cjk = min(len(cjk), size - len(tokens) - n_pieces)
    tokens += cjk[:n_cjk] + pieces[:n_pieces]
    return tokens, {"specials": len(specials), "base": len(base), "cjk_chars": n_cjk, "pieces": n_pieces,
                    "cjk_available": len(cjk), "pieces_available": len(pieces)}
