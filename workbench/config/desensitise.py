"""Config of `desensitise`: text → anonymous integer ids with a secret key."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import field_validator

from workbench.config._base import StageConfig, _as_list
from workbench.config.prepare import ReadConfig


class DesensitiseConfig(StageConfig):
    """Desensitise a Chinese corpus: each character (or jieba word) → a secret integer id; labels kept."""

    output_dir_name: typing.ClassVar[str] = "desensitised"

    input: list[str] = []
    """Corpus files, folders or globs (txt, jsonl, csv/tsv; read like `prepare.input`)."""
    read: ReadConfig = ReadConfig()
    """How to read the input files. `read.text_field` is the main text (desensitised); `read.keep_fields` (e.g. [label]) are copied unchanged only when they hold no letters in any row (see `text_fields`, `public_fields`)."""
    text_fields: list[str] = []
    """More keys/columns holding text, e.g. `[text_b]` of a sentence pair: desensitised with the same key as `read.text_field` (same unit → same id) and written in their own columns. Kept without listing them in `read.keep_fields`."""
    public_fields: list[str] = []
    """Keys/columns copied IN CLEAR although they may hold letters, e.g. `[label]` with values like `体育` or `pos`: your statement that they reveal nothing. Kept without listing them in `read.keep_fields`. Rule: a kept field that is in neither list must hold no letter (CJK, Latin, ...) in any row (ids, numeric labels, scores pass); otherwise the stage stops naming the file, row and field."""
    unit: Literal["char", "word"] = "char"
    """What one id stands for: a non-space character, or a jieba word."""
    offset: int = 0
    """First id; ids are offset..offset+units-1, leaving 0..offset-1 free for special tokens."""
    key_seed: int | None = None
    """Seed of the secret unit → id permutation; null (recommended) draws a fresh random one. Deliberately not the shared `seed`: whoever knows it can rebuild the key. Never recorded in the manifest, the command line there, logs or error messages."""
    key_file: str | None = None
    """Where the SECRET key (`id<TAB>unit`, mode 0600) goes; default `<output>.key.tsv`, beside the output directory, never inside it nor in an input. An existing file there is replaced only when it is this output's own key (its sha256 is in the output's manifest). Never copy it into exports or model cards."""

    @field_validator("input", mode="before")
    @classmethod
    def _input_list(cls, v: Any) -> Any:
        return _as_list(v)

    @field_validator("text_fields", "public_fields", mode="before")
    @classmethod
    def _fields_list(cls, v: Any) -> Any:
        return _as_list(v)

    @field_validator("key_seed", mode="before")
    @classmethod
    def _secret_seed(cls, v: Any) -> Any:
        # A config error echoes the value it got; a mistyped seed must not be echoed.
        if v is None or (isinstance(v, int) and not isinstance(v, bool)):
            return v
        try:
            if isinstance(v, str) and v.strip().lstrip("+-").isdigit():
                return int(v)
        except ValueError:
            pass
        return "<secret: not an integer>"

    def kept_fields(self) -> list[str]:
        """Every key/column the stage reads besides `read.text_field`, in order, once."""
        return list(dict.fromkeys([*self.read.keep_fields, *self.text_fields, *self.public_fields]))

    def key_path(self) -> Path:
        out = self.output_path()
        return Path(self.key_file) if self.key_file else out.parent / f"{out.name}.key.tsv"

    def problems(self) -> list[str]:
        out = []
        if not self.input:
            out.append("input: no corpus given; set desensitise.input or pass input=PATH")
        if self.offset < 0:
            out.append("offset: must be >= 0")
        out += self.read.problems()
        key = self.key_path().resolve()
        if key == self.output_path().resolve() or self.output_path().resolve() in key.parents:
            out.append(f"key_file: {self.key_file} is inside the output directory; put the secret key beside it")
        main = self.read.text_field
        for name, values in (("text_fields", self.text_fields), ("public_fields", self.public_fields)):
            if main in values:
                out.append(f"{name}: contains read.text_field '{main}', which is always desensitised")
            dup = sorted({v for v in values if values.count(v) > 1})
            if dup:
                out.append(f"{name}: {dup} listed twice")
        both = sorted(set(self.text_fields) & set(self.public_fields))
        if both:
            out.append(f"public_fields: {both} also in text_fields; a field is either desensitised or copied in clear")
        if not self.read.header and any(not f.isdigit() for f in self.text_fields + self.public_fields):
            out.append("text_fields/public_fields: read.header is false, so fields are 0-based column numbers")
        return out
