"""Run example scripts as child processes forked from one parent that imported torch and transformers.

``python script_zygote.py OUT_DIR SCRIPT...``: for each script, a forked child runs it as ``__main__``
with its stdout and stderr in ``OUT_DIR/<name>.log`` and its exit status in ``OUT_DIR/<name>.json``,
two children at a time. Importing torch and transformers costs seconds per process on a small machine
and is the same for every script, so it is paid once; the parent runs no tensor op before forking,
which keeps fork safe for torch's thread pools.
"""

from __future__ import annotations

import json
import os
import runpy
import sys
import time
from pathlib import Path

import torch  # noqa: F401  (imported for the children)
import transformers.models.llama.modeling_llama  # noqa: F401


def child(script: Path, log: Path) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.argv = [str(script)]
    code = 0
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # noqa: BLE001 - the traceback goes to the log, the status says it failed
        import traceback

        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main() -> int:
    out, scripts = Path(sys.argv[1]), [Path(s) for s in sys.argv[2:]]
    out.mkdir(parents=True, exist_ok=True)
    running: dict[int, tuple[Path, float]] = {}
    pending = list(scripts)
    while pending or running:
        while pending and len(running) < 2:
            script = pending.pop(0)
            pid = os.fork()
            if pid == 0:
                child(script, out / f"{script.name}.log")
            running[pid] = (script, time.monotonic())
        pid, status = os.wait()
        script, started = running.pop(pid)
        result = {"returncode": os.waitstatus_to_exitcode(status), "seconds": time.monotonic() - started}
        (out / f"{script.name}.json").write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
