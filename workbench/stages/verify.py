"""verify: check a stage output against its manifest, or record a deliberate change.

    workbench verify input=runs/demo/prepared
    workbench verify input=runs/demo/prepared accept="valid split replaced by the 2024 sample"

Every stage already verifies what it reads (``manifest.verify_output``: the manifest's
seal, every file's size and hash). This command runs the same check on demand, hashing
every file in full by default, and prints what differs. A directory changed on purpose
(an edited config in the manifest, a replaced split) is accepted with `accept="why"`: the
files are re-hashed, the change is appended to the manifest's `accepted_changes` (when,
who, why, which files) and the manifest is re-sealed; every later stage that reads the
directory logs that reason. Nothing is ever passed silently.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from workbench.config import VerifyConfig
from workbench.errors import StageInputError
from workbench.manifest import MANIFEST, accept_changes, claim_output, output_problems, read_manifest


def run(cfg: VerifyConfig) -> dict[str, Any]:
    directory = Path(cfg.input)
    manifest = read_manifest(directory) if directory.is_dir() else None
    if manifest is None:
        raise StageInputError(f"verify: {directory} is not a stage output (no {MANIFEST}); "
                              "pass input= a directory written by a workbench stage")
    stage = manifest.get("stage")
    problems = output_problems(directory, manifest, full=cfg.full)
    if cfg.accept is None:
        if problems:
            raise StageInputError(
                f"verify: {directory} (a `{stage}` output) does not match its {MANIFEST}:\n"
                + "\n".join(f"    - {p}" for p in problems)
                + f"\n  fix: re-run `workbench {stage}`, or if you changed it on purpose: "
                  f"`workbench verify input={directory} accept=\"<why>\"`")
        n = len(manifest.get("files") or manifest.get("outputs") or {})
        accepted = len(manifest.get("accepted_changes") or [])
        print(f"verify: {directory} ({stage}) matches its manifest: {n} files"
              + (f"; {accepted} accepted change(s) on record" if accepted else ""))
        return {"directory": str(directory), "stage": stage, "problems": []}
    # Accepting rewrites the manifest: take the output's lock so no run writes it meanwhile.
    with claim_output(directory, stage=stage):
        entry = accept_changes(directory, cfg.accept)
    print(f"verify: accepted {len(entry['changed'])} changed file(s) in {directory} ({stage}): "
          f"{', '.join(entry['changed'][:8]) or 'manifest only'}; reason recorded: {cfg.accept}")
    return {"directory": str(directory), "stage": stage, "problems": problems, "accepted": entry}
