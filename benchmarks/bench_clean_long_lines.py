"""PII e-mail scrubbing on one long line: the workbench's linear scrub vs a plain `EMAIL_RE.sub`.

    .venv/bin/python benchmarks/bench_clean_long_lines.py            # ~1-2 min on 2 cores
    .venv/bin/python benchmarks/bench_clean_long_lines.py --sizes 10000 20000

The baseline is what `clean` did before (and what anyone writes first): `EMAIL_RE.sub`
over the whole text. On a long run of address characters with no valid address (a
base64-like blob, a long local part before a lone @) the regex engine restarts the greedy
local part at every position and rescans to the end of the run: time grows with the square
of the line. `Cleaner._scrub_emails` finds the candidate runs linearly and tries EMAIL_RE
once per @. Both run on the same lines in the same run, interleaved (round-robin, median of
`--repeats`); the outputs are checked equal. Printed: seconds per line for each size and
kind, the speed-up, and the growth factor per doubling (2 = linear, 4 = quadratic).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

from _common import save_results

from workbench.config import CleanConfig, PIIConfig
from workbench.corpus.clean import EMAIL_RE, Cleaner


def lines(n: int) -> dict[str, str]:
    blob = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0123456789+_-."
    return {"blob": (blob * (n // len(blob) + 1))[:n], "local_at": "a" * (n - 1) + "@"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[12_500, 25_000, 50_000])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    cleaner = Cleaner(CleanConfig(min_chars=1, max_chars=None, pii=PIIConfig(enabled=True)))
    repl = cleaner.cfg.pii.email
    rows = []
    for n in args.sizes:
        for kind, line in lines(n).items():
            times = {"baseline EMAIL_RE.sub": [], "workbench _scrub_emails": []}
            for _ in range(args.repeats):  # interleaved: both see the same machine state
                t = time.perf_counter()
                base = EMAIL_RE.sub(repl, line)
                times["baseline EMAIL_RE.sub"].append(time.perf_counter() - t)
                t = time.perf_counter()
                ours = cleaner._scrub_emails(line)
                times["workbench _scrub_emails"].append(time.perf_counter() - t)
                assert ours == base, f"outputs differ on {kind} n={n}"
            med = {k: statistics.median(v) for k, v in times.items()}
            rows.append({"chars": n, "kind": kind, **{k: round(v, 5) for k, v in med.items()},
                         "speedup": round(med["baseline EMAIL_RE.sub"] / max(med["workbench _scrub_emails"], 1e-9), 1)})

    out = [f"PII e-mail scrub of one line, median of {args.repeats} interleaved runs ({platform.processor() or platform.machine()}, "
           f"{platform.python_version()}); outputs identical",
           f"{'chars':>8} {'kind':<9} {'baseline s':>11} {'workbench s':>12} {'speed-up':>9}"]
    out += [f"{r['chars']:>8,} {r['kind']:<9} {r['baseline EMAIL_RE.sub']:>11.4f} {r['workbench _scrub_emails']:>12.5f} "
            f"{r['speedup']:>8.1f}x" for r in rows]
    growth = []
    for kind in ("blob", "local_at"):
        rs = [r for r in rows if r["kind"] == kind]
        for a, b in zip(rs, rs[1:]):
            f = b["chars"] / a["chars"]
            growth.append(f"{kind} {a['chars']:,}→{b['chars']:,}: baseline x{b['baseline EMAIL_RE.sub'] / a['baseline EMAIL_RE.sub']:.1f}, "
                          f"workbench x{b['workbench _scrub_emails'] / max(a['workbench _scrub_emails'], 1e-9):.1f} (size x{f:g})")
    out += ["growth per size step (x2 = linear, x4 = quadratic for a doubling):", *[f"  {g}" for g in growth]]
    save_results("bench_clean_long_lines", "\n".join(out), {"sizes": args.sizes, "repeats": args.repeats, "rows": rows})


if __name__ == "__main__":
    main()
