"""Fine-tuning tasks: classification, sentence pairs, multi-label and character tagging (NER).

The library layer the finetune stage composes, one concern per module:
  - ``data``     readers (TSV/CSV/JSONL, CoNLL, CLUENER JSONL) → records with file + line;
  - ``tags``     BIO / BIOES / BMES ↔ entity spans (start, end_exclusive, type);
  - ``labels``   label maps inferred from train, dev/test checked against them;
  - ``windows``  sliding windows over characters for tagging, stitching predictions back,
                 truncation for classification;
  - ``metrics``  accuracy / F1 / confusion matrix, multi-label F1, seqeval entity F1;
  - ``crf``      a linear-chain CRF layer with BIO/BIOES transition constraints.
Modules are imported directly (``from workbench.tasks.crf import CRF``); this package
imports nothing itself, so reading data never pulls in torch.
"""
