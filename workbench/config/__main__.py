"""`python -m workbench.config README.md`: regenerate the README's config reference (`make docs`)."""

import sys
from pathlib import Path

from workbench.config import readme_with_reference

target = Path(sys.argv[1] if len(sys.argv) > 1 else "README.md")
target.write_text(readme_with_reference(target.read_text(encoding="utf-8")), encoding="utf-8")
print(f"updated the config reference in {target}")
