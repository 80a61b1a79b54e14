"""Known failures of a ``kedro run`` as one line; the traceback goes to a file.

A :class:`~pvg_pipeline.pvg.errors.RunError` (a diverged loss, a checkpoint that
cannot be resumed, a dataset that does not fit the parameters, a missing device)
or a Kedro ``DatasetError`` (a missing or unreadable dataset version) says in its
message what is wrong and how to fix it; the 200-line traceback around it only
hides that line. Other exceptions are bugs and keep their traceback.
``PVG_DEBUG=1`` shows every traceback.
"""

from __future__ import annotations

import re
import sys
import traceback
from pathlib import Path
from types import TracebackType

from kedro.io.core import DatasetError

from pvg_pipeline.pvg import overrides
from pvg_pipeline.pvg.errors import RunError

#: Exception types reported as one line.
KNOWN = (RunError, DatasetError)
#: Where the traceback of the last known failure is written (under the project).
ERROR_LOG = Path("logs") / "last_error.log"


def one_line(error: BaseException) -> str:
    """The part of the message that says what is wrong, on one line.

    Kedro wraps a dataset's own error as ``Failed while loading data from
    dataset ...`` followed by it: the dataset's line is the informative one.
    """
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    if isinstance(error, DatasetError) and lines[0].startswith("Failed while"):
        lines = lines[1:] or lines
    return " ".join(lines)


def unknown_pipeline(error: BaseException) -> str | None:
    """For Kedro's error about a pipeline name it does not know, the one line
    naming the pipelines there are; ``None`` for any other error."""
    match = re.match(r"Failed to find the pipeline named '(.*?)'", str(error))
    if not isinstance(error, ValueError) or match is None:
        return None
    from kedro.framework.project import pipelines

    known = ", ".join(sorted(name for name in pipelines if name != "__default__"))
    return f"unknown pipeline '{match[1]}'; the pipelines are: {known}"


def install(project_path: Path) -> None:
    """Report :data:`KNOWN` failures that end the process as one line."""
    previous = sys.excepthook
    if getattr(previous, "one_line_errors", False):
        return

    def report(
        kind: type[BaseException],
        error: BaseException,
        trace: TracebackType | None,
    ) -> None:
        message = unknown_pipeline(error)
        if overrides.debugging() or not (message or isinstance(error, KNOWN)):
            previous(kind, error, trace)
            return
        log = project_path / ERROR_LOG
        where = ""
        try:
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text("".join(traceback.format_exception(kind, error, trace)))
            where = f"traceback in {log}; "
        except OSError:
            pass
        sys.stderr.write(
            f"Error: {message or one_line(error)}\n"
            f"  ({where}PVG_DEBUG=1 shows it here)\n"
        )

    report.one_line_errors = True  # type: ignore[attr-defined]
    sys.excepthook = report
