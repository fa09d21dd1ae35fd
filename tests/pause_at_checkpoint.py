"""``python tests/pause_at_checkpoint.py <run.py overrides>``: run.py, stopped at a known point.

Also used to hold a run at that point until the test lets it go on (``EQUIV_RESUME_FILE``), and
to make that save fail as a full disk or a read-only file system would
(``EQUIV_FAIL_ERRNO=ENOSPC`` / ``EROFS``).

For the SIGKILL tests (tests/test_reliability.py): just before the child's ``EQUIV_PAUSE_AT``-th
atomic save of a file matching the glob ``EQUIV_PAUSE_GLOB`` (absolute; ``*`` spans folders),
it writes ``EQUIV_PAUSE_MARKER`` and sleeps until it is killed. The earlier checkpoint is then
complete on disk and the run has done work past it, whatever the machine's load: the test waits
for the marker instead of racing the child with a fixed sleep or a poll.
"""

from __future__ import annotations

import fnmatch
import os
import runpy
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def pause_before_save(pattern: str, nth: int, marker: Path, resume: Path | None = None,
                      fail_errno: str | None = None) -> None:
    """Wrap ``equiv.pretraining.save_atomic`` (which every family's checkpoints go through).

    At the ``nth`` matching save: write ``marker``, then wait until ``resume`` exists (without
    ``resume``: until SIGKILL); with ``fail_errno`` (e.g. ``ENOSPC``, ``EROFS``) the save's
    write then fails inside ``save_atomic`` as the OS would (a full disk, a read-only file
    system). Meanwhile a test may remove or replace the run directory."""
    import errno

    import equiv.pretraining as pretraining

    save = pretraining.save_atomic
    seen = 0

    def pausing(obj: Any, path: Path) -> None:
        nonlocal seen
        if fnmatch.fnmatchcase(str(Path(path).resolve()), pattern):
            seen += 1
            if seen == nth:
                marker.write_text(f"{path}\n")
                while resume is None or not resume.exists():
                    time.sleep(0.05 if resume else 3600)
                if fail_errno:
                    code = getattr(errno, fail_errno)

                    def failing(*args: Any, **kwargs: Any) -> None:
                        raise OSError(code, os.strerror(code))

                    pretraining.torch.save = failing       # this process stops at this save
        save(obj, path)

    # Modules import it by name: patch before run.py imports them, and any already imported.
    for module in list(sys.modules.values()):
        if getattr(module, "save_atomic", None) is save:
            module.save_atomic = pausing


if __name__ == "__main__":
    resume_file = os.environ.get("EQUIV_RESUME_FILE")
    pause_before_save(os.environ["EQUIV_PAUSE_GLOB"], int(os.environ["EQUIV_PAUSE_AT"]),
                      Path(os.environ["EQUIV_PAUSE_MARKER"]),
                      Path(resume_file) if resume_file else None,
                      os.environ.get("EQUIV_FAIL_ERRNO"))
    sys.path.insert(0, str(ROOT))                # as ``python run.py`` would have it
    sys.argv = [str(ROOT / "run.py"), *sys.argv[1:]]
    runpy.run_path(str(ROOT / "run.py"), run_name="__main__")
