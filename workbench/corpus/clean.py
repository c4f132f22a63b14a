"""Weibo-aware text cleaning, PII scrubbing and length filters.

``Cleaner(cfg).clean(text)`` returns the cleaned text and a reason code when the
document must be rejected (``empty``, ``too_short``, ``too_long``, ``low_cjk_ratio``).
Every step is switchable in ``CleanConfig``; ``Cleaner.counts`` tallies how often each
step changed something, for the manifest.

Order matters and is fixed: invisible characters and full-width forms are normalised
first (so ＠ and ＃ match the Weibo patterns), PII next (an e-mail contains an @ that
the mention rule would otherwise eat), then URLs (they may contain @ and #), then the
Weibo markup, then whitespace, then the length checks on what is left.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections import Counter

from workbench.config import CleanConfig

# Characters allowed in URLs (RFC 3986); stops at the first CJK character so
# "https://t.cn/abc看看" keeps 看看.
URL_RE = re.compile(r"(?:https?://|www\.)[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+", re.IGNORECASE)
# Weibo user names: 1-30 letters, digits, CJK, '-' or '_'.
_USER = r"[\w\-]{1,30}"
REPLY_RE = re.compile(rf"回复\s*[@＠]{_USER}\s*[:：]\s*")
REPOST_MARK_RE = re.compile(rf"//\s*[@＠]{_USER}\s*[:：]?")
MENTION_RE = re.compile(rf"[@＠]{_USER}")
HASHTAG_RE = re.compile(r"[#＃]([^#＃\n]{1,60})[#＃]")
# [哈哈] [doge] [二哈]: short bracketed CJK/latin words; digits excluded so "[1]" survives.
EMOJI_CODE_RE = re.compile(r"\[[\u4e00-\u9fffA-Za-z]{1,8}\]")
EMAIL_RE = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}")
# EMAIL_RE.sub over a whole text is quadratic on a long run of address characters (a base64
# blob, a run of digits): the engine retries the greedy local part from every position of
# the run and rescans it to its end each time (~20 s for 200k characters, hours for 10 MB).
# An address lies inside one maximal run of these characters that holds an @, after any @s
# that lead the run (an address starts with a non-empty local part). This finds exactly
# those runs, each starting only where a local part can start (the lookbehind) and never
# backtracking (possessive), so it is linear. _scrub_emails then tries EMAIL_RE once per @.
_EMAIL_RUN_RE = re.compile(r"(?<![A-Za-z0-9._%+\-])[A-Za-z0-9._%+\-]++@[A-Za-z0-9._%+\-@]*+")
PHONE_RE = re.compile(r"(?<![\dA-Za-z])(?:\+?86[\- ]?)?1[3-9]\d(?:[\- ]?\d{4}){2}(?![\dA-Za-z])")
ID_CARD_RE = re.compile(r"(?<![\dA-Za-z])[1-9]\d{5}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[\dXx](?![\dA-Za-z])")
_DIGIT_1_9_RE = re.compile(r"[1-9]")
_SPACES_RE = re.compile(r"[^\S\n]+")
_NEWLINES_RE = re.compile(r"\s*\n\s*")
_CJK_RE = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f]")
_CJK_RUN_RE = re.compile(_CJK_RE.pattern + "+")
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
# Punctuation missing from Google's bert-base-chinese vocab → ASCII equivalents it has.
_PUNCT_TO_ASCII = str.maketrans({"“": '"', "”": '"', "‘": "'", "’": "'", "—": "-", "–": "-", "…": "..."})


@functools.lru_cache(maxsize=None)
def _fullwidth_table(mode: str) -> dict[int, int]:
    table = {0x3000: 0x20}  # ideographic space
    if mode == "all":
        table.update({cp: cp - 0xFEE0 for cp in range(0xFF01, 0xFF5F)})
    elif mode == "alnum":
        for lo, hi in ((0xFF10, 0xFF19), (0xFF21, 0xFF3A), (0xFF41, 0xFF5A)):
            table.update({cp: cp - 0xFEE0 for cp in range(lo, hi + 1)})
    return table


def char_map(cfg: CleanConfig) -> dict[str, str]:
    """The one-character, context-free part of this cleaning (full-width folding, punct_to_ascii),
    as {character: replacement}: what a tokenizer must also do to raw text so that text meets
    the vocabulary of a model trained on cleaned text (workbench.vocab.normalize)."""
    out = {chr(a): chr(b) for a, b in _fullwidth_table(cfg.fullwidth).items()} if cfg.fullwidth != "off" else {}
    if cfg.punct_to_ascii:
        out.update({chr(a): b for a, b in _PUNCT_TO_ASCII.items()})
    return out


@functools.lru_cache(maxsize=None)
def _invisible_table() -> dict[int, None]:
    """Control (Cc) and format (Cf) characters except tab/newline: zero-width spaces and
    joiners, BOM, bidi marks, soft hyphen... Built once over the BMP and the tag block."""
    keep = {0x09, 0x0A}
    drop = {}
    for cp in list(range(0x10000)) + list(range(0xE0000, 0xE0080)):
        if cp not in keep and unicodedata.category(chr(cp)) in ("Cc", "Cf"):
            drop[cp] = None
    return drop


def valid_id_card(number: str) -> bool:
    """ISO 7064 MOD 11-2 check digit of a mainland resident ID number."""
    total = sum(int(d) * w for d, w in zip(number[:17], _ID_WEIGHTS))
    return "10X98765432"[total % 11] == number[17].upper()


class Cleaner:
    def __init__(self, cfg: CleanConfig):
        self.cfg = cfg
        self.counts: Counter[str] = Counter()
        self._width = _fullwidth_table(cfg.fullwidth) if cfg.fullwidth != "off" else None
        self._invisible = _invisible_table() if cfg.control_chars else None
        # The three character maps in one table, one str.translate pass (each pass costs ~4 us
        # on a post): invisible characters are deleted first, then full width → half width,
        # then curly quotes / dashes → ASCII. None of the maps produces a character another
        # one changes, so the merged table is their composition.
        table: dict = {}
        if cfg.punct_to_ascii:
            table.update(_PUNCT_TO_ASCII)
        if self._width is not None:
            table.update(self._width)
        if self._invisible is not None:
            table.update(self._invisible)
        self._table = table or None
        self._t2s = None
        if cfg.traditional_to_simplified:
            import opencc  # the C++ OpenCC binding; only needed when switched on

            self._t2s = opencc.OpenCC("t2s")
        if cfg.unicode_emoji == "drop":
            import emoji

            self._emoji = emoji

    def _sub(self, name: str, pattern: re.Pattern, repl, text: str) -> str:
        new, n = pattern.subn(repl, text)
        if n:
            self.counts[name] += n
        return new

    def _scrub_emails(self, text: str) -> str:
        """``EMAIL_RE.sub(pii.email, text)``, the same matches, in linear time."""
        repl, found = self.cfg.pii.email, 0

        def run(m: re.Match) -> str:
            nonlocal found
            s, out, pos = m.group(), [], 0
            while (at := s.find("@", pos)) >= 0:
                # From any start in s[pos:at] the local part runs to this @ (it holds no @), so
                # one try from `pos` stands for all of them; none can start at the @ itself.
                e = EMAIL_RE.match(s, pos) if at > pos else None
                if e is None:
                    out.append(s[pos:at + 1])
                    pos = at + 1
                else:
                    out.append(e.expand(repl))
                    found += 1
                    pos = e.end()
            out.append(s[pos:])
            return "".join(out)

        text = _EMAIL_RUN_RE.sub(run, text)
        if found:
            self.counts["pii_email"] += found
        return text

    def _id_card(self, m: re.Match) -> str:
        # 18 digits with a date inside are common (order numbers): only checksum-valid ones go.
        if not valid_id_card(m.group()):
            return m.group()
        self.counts["pii_id_card"] += 1
        return self.cfg.pii.id_card

    def clean(self, text: str) -> tuple[str, str | None]:
        """(cleaned text, reject reason or None)."""
        c = self.cfg
        if c.max_chars is not None and len(text) > 4 * c.max_chars and self._surely_too_long(text):
            return text, "too_long"  # the same verdict the full cleaning would reach, without it
        if self._invisible is not None:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        if self._table is not None:
            text = text.translate(self._table)
        if self._t2s is not None:
            text = self._t2s.convert(text)
        # Each rule below runs only when the text holds the character its pattern cannot match
        # without (a substring test is ~50x cheaper than a regex pass on a short post); the
        # result is the same, pattern by pattern.
        if c.pii.enabled:
            if "@" in text:
                text = self._scrub_emails(text)
            if _DIGIT_1_9_RE.search(text):  # both patterns hold an ASCII 1-9
                text = ID_CARD_RE.sub(self._id_card, text)
                if "1" in text:
                    text = self._sub("pii_phone", PHONE_RE, c.pii.phone, text)
        if c.urls and ("://" in text or "." in text):
            text = self._sub("urls", URL_RE, " ", text)
        at = "@" in text or "＠" in text  # mentions, replies and repost markers all hold one
        if c.reply_prefix and at and "回复" in text:
            text = self._sub("reply_prefix", REPLY_RE, "", text)
        if c.repost_chains == "drop":
            m = REPOST_MARK_RE.search(text) if at and "//" in text else None
            if m:
                self.counts["repost_chains"] += 1
                text = text[: m.start()]
        elif c.repost_chains == "keep_text" and at and "//" in text:
            text = self._sub("repost_chains", REPOST_MARK_RE, " ", text)
        if c.mentions and ("@" in text or "＠" in text):
            text = self._sub("mentions", MENTION_RE, " ", text)
        if c.hashtags != "off" and ("#" in text or "＃" in text):
            text = self._sub("hashtags", HASHTAG_RE, r" \1 " if c.hashtags == "keep_text" else " ", text)
        if c.emoji_codes and "[" in text:
            text = self._sub("emoji_codes", EMOJI_CODE_RE, "", text)
        if c.unicode_emoji == "drop":
            new = self._emoji.replace_emoji(text, "")
            if new != text:
                self.counts["unicode_emoji"] += 1
                text = new
        if c.whitespace:
            text = _NEWLINES_RE.sub("\n", _SPACES_RE.sub(" ", text)).strip()
        return text, self.reject_reason(text)

    def _surely_too_long(self, text: str) -> bool:
        """Whether cleaning `text` must leave more than max_chars characters (so the verdict is
        too_long), from counts alone. Only CJK characters are counted as survivors, and only
        rules with a trigger character can delete them, each a bounded number per trigger: a
        mention / reply / repost marker ≤ 32 per @ (回复 + a 30-character name), a dropped
        #topic# ≤ 60 per #, an emoticon code ≤ 8 per [. Nothing creates triggers or deletes
        CJK otherwise; rules that could (t2s conversion, placeholders holding a trigger, a
        repost chain cut at its first marker) turn this off."""
        c = self.cfg
        if self._t2s is not None or c.repost_chains == "drop":
            return False
        if c.pii.enabled and any(ch in p for p in (c.pii.email, c.pii.phone, c.pii.id_card) for ch in "@＠#＃[［"):
            return False
        deletable = 32 * (text.count("@") + text.count("＠"))
        if c.hashtags == "drop":
            deletable += 60 * (text.count("#") + text.count("＃"))
        if c.emoji_codes:
            deletable += 8 * (text.count("[") + text.count("［"))
        if len(text) - deletable <= c.max_chars:
            return False
        return sum(map(len, _CJK_RUN_RE.findall(text))) - deletable > c.max_chars

    def reject_reason(self, text: str) -> str | None:
        c = self.cfg
        n = len(text)
        if n == 0 or not text.strip():
            return "empty"
        if n < c.min_chars:
            return "too_short"
        if c.max_chars is not None and n > c.max_chars:
            return "too_long"
        if c.min_cjk_ratio > 0:
            visible = n - text.count(" ") - text.count("\n")
            if len(_CJK_RE.findall(text)) < c.min_cjk_ratio * max(visible, 1):
                return "low_cjk_ratio"
        return None
