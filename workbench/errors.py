"""User-facing errors.

Anything a user can fix (bad config, bad input file, wrong stage directory) raises a
subclass of ``WorkbenchError``; the CLI prints its message and exits with status 2 instead
of a traceback. Messages name the file, the line/row and the fix.
"""

from __future__ import annotations


class WorkbenchError(Exception):
    """Base class: the message is complete and meant for the user."""

    def __reduce__(self):
        # Raised in a worker process, it crosses back by pickle: Exception's default rebuilds
        # it by calling __init__ with the message alone, which the subclasses' signatures refuse.
        return _restore, (type(self), self.args, self.__dict__)


def _restore(cls: type, args: tuple, state: dict) -> "WorkbenchError":
    err = cls.__new__(cls)
    Exception.__init__(err, *args)
    err.__dict__.update(state)
    return err


class ConfigError(WorkbenchError):
    """One or more config problems; ``problems`` lists every one of them."""

    def __init__(self, problems: list[str], source: str | None = None):
        self.problems = list(problems)
        self.source = source
        where = f" in {source}" if source else ""
        lines = [f"{len(self.problems)} config problem(s){where}:"]
        lines += [f"  - {p}" for p in self.problems]
        super().__init__("\n".join(lines))


class InputError(WorkbenchError):
    """A corpus file cannot be read as configured."""

    def __init__(self, path: str, problem: str, fix: str, *, line: int | None = None, row: int | None = None):
        self.path, self.line, self.row = str(path), line, row
        where = str(path)
        if line is not None:
            where += f", line {line}"
        elif row is not None:
            where += f", row {row}"
        super().__init__(f"{where}: {problem}\n  fix: {fix}")


class StageInputError(WorkbenchError):
    """A stage was pointed at a directory that is not the output of the stage it needs."""


class OutputRefusedError(StageInputError):
    """Writing the output would destroy something that is not this stage's own output."""


class OutputBusyError(WorkbenchError):
    """Another run holds the lock of this output."""
