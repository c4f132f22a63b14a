"""One entry point: ``workbench <command> [--config FILE.yaml] [key=value ...]``.

Overrides are dotted keys relative to the command's config section
(``clean.urls=false``); ``run=`` and ``seed=`` set the shared keys. Values are parsed as
YAML, so ``input=[a.txt,b.txt]`` is a list and ``max_chars=null`` is None.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys

import yaml

from workbench import __version__
from workbench.config import COMMANDS, fields_help, load_stage_config
from workbench.errors import WorkbenchError


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().splitlines()[0] if doc else ""


def build_parser() -> argparse.ArgumentParser:
    commands = "\n".join(f"  {name:<10} {_first_line(model.__doc__)}" for name, model in COMMANDS.items())
    parser = argparse.ArgumentParser(
        prog="workbench",
        description="zh-workbench: Chinese domain-adaptation and desensitised-data pretraining workbench.",
        epilog=f"commands:\n{commands}\n\n`workbench <command> --help` lists every config key with its default.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"zh-workbench {__version__}")
    # The deepspeed launcher passes --local_rank=N before the command; the rank also comes in
    # the LOCAL_RANK environment variable, which is what Trainer reads.
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for name, model in COMMANDS.items():
        p = sub.add_parser(
            name,
            help=_first_line(model.__doc__),
            description=_first_line(model.__doc__),
            epilog=f"config keys (set in the YAML section `{name}:` or as key=value):\n{fields_help(name)}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.add_argument("--config", "-c", metavar="FILE.yaml", help="YAML config file (see configs/)")
        p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
        p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. clean.urls=false")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        cfg = load_stage_config(args.command, args.config, args.overrides)
        if args.print_config:
            from workbench.manifest import redact

            print(yaml.safe_dump({args.command: redact(cfg.model_dump(mode="json"))}, allow_unicode=True,
                                 sort_keys=False), end="")
            return 0
        from workbench.stages import get_runner

        get_runner(args.command)(cfg)
    except WorkbenchError as e:
        print(f"workbench {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"workbench {args.command}: interrupted; the output directory was left untouched", file=sys.stderr)
        return 130
    except OSError as e:
        if os.environ.get("WORKBENCH_DEBUG"):
            raise
        print(f"workbench {args.command}: error: {os_error_message(e)}", file=sys.stderr)
        return 2
    return 0


def entry() -> None:
    """The program (console script and ``python -m workbench``): main(), then exit.

    A rank started by a distributed launcher (deepspeed, torchrun: LOCAL_RANK is set) ends
    with ``os._exit`` once its stdio is flushed. Its work is done by then (outputs are renamed
    into place and the process group torn down), but the C++ collective backends can abort
    in their static destructors at interpreter exit ("terminate called without an active
    exception", SIGABRT; seen with gloo + ZeRO-3), and the launcher then reports a finished
    run as failed and kills the other ranks. Skipping those destructors is the usual cure."""
    rc = main()
    if "LOCAL_RANK" in os.environ and "torch.distributed" in sys.modules:
        if "deepspeed" in sys.modules:  # os._exit skips atexit: release DeepSpeed's /dev/shm segment here
            from workbench import deepspeed_shm

            deepspeed_shm.release_own()
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(rc)
    raise SystemExit(rc)


# What to do about the operating-system errors a user can fix.
_OS_FIXES = {
    errno.ENOSPC: "free disk space there (or point output= / TMPDIR at a larger disk) and re-run",
    errno.EDQUOT: "free space within your disk quota there and re-run",
    errno.EACCES: "check the permissions of that path, or write the output somewhere you own",
    errno.EPERM: "check the permissions of that path, or write the output somewhere you own",
    errno.EROFS: "the file system is read-only; write the output somewhere writable",
    errno.EMFILE: "raise the open-file limit (ulimit -n) or lower num_proc",
}


def os_error_message(e: OSError) -> str:
    """One line naming the path, what the system said and the fix; no traceback. The
    output of the stage was not replaced (stages write into a temp dir and rename last)."""
    where = e.filename if e.filename is not None else "(no path given by the system)"
    if getattr(e, "filename2", None):
        where = f"{where} -> {e.filename2}"
    fix = _OS_FIXES.get(e.errno, "check that path; set WORKBENCH_DEBUG=1 to see the traceback")
    return (f"{e.strerror or type(e).__name__} ({errno.errorcode.get(e.errno, e.errno)}) at {where}; "
            f"the stage's previous output, if any, is untouched\n  fix: {fix}")
