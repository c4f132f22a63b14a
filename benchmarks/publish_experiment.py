"""Copy an experiment's results into benchmarks/results/ as experiment_<name>.{json,md,png}.

    .venv/bin/python benchmarks/publish_experiment.py runs/experiment_reviews/experiment reviews

The files are the stage's own output, unchanged, plus a header line naming the config, the
machine and the experiment's wall time (its cells' manifests summed: cells reused from an
earlier run count with the time they took then).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    src, name = Path(sys.argv[1]), sys.argv[2]
    manifest = json.loads((src / "manifest.json").read_text(encoding="utf-8"))
    r = json.loads((src / "results.json").read_text(encoding="utf-8"))
    cells_s = sum(r.get("cell_wall_s", {}).values())
    dst = REPO / "benchmarks" / "results"
    header = (f"<!-- {manifest.get('command') or 'workbench experiment'} -->\n"
              f"Produced by `workbench experiment` ({os.cpu_count()} CPU cores, {platform.machine()}, no GPU, one torch "
              f"thread per experiment while two ran side by side): cells {cells_s / 60:.0f} min in all, "
              f"{manifest['created']}.\n\n")
    (dst / f"experiment_{name}.md").write_text(
        header + (src / "results.md").read_text(encoding="utf-8").replace("](results.png)", f"](experiment_{name}.png)"),
        encoding="utf-8")
    r["published"] = {"source": str(src), "cells_wall_s": round(cells_s), "finished": manifest["created"]}
    (dst / f"experiment_{name}.json").write_text(json.dumps(r, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    shutil.copyfile(src / "results.png", dst / f"experiment_{name}.png")
    print(f"→ {dst}/experiment_{name}.{{json,md,png}}")


if __name__ == "__main__":
    main()
