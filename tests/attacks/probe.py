"""What an attacker inside a sandbox tries, each attempt's outcome recorded (never raised).

Used as the body of attacking candidates and agent commands in ``test_attacks.py``: it reads, writes,
looks for other processes and stops or traces them, mounts, unmounts, opens raw sockets, reaches for
loopback and abstract-socket services outside, and leaves a daemon behind.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys

libc = ctypes.CDLL(None, use_errno=True)
PTRACE_ATTACH, MS_REMOUNT, MS_BIND, MNT_DETACH = 16, 32, 4096, 2


def attempt(fn) -> str:  # noqa: ANN001
    try:
        out = fn()
    except OSError as e:
        return e.strerror or type(e).__name__
    except Exception as e:  # noqa: BLE001 - every outcome is recorded
        return f"{type(e).__name__}: {e}"
    return "ok" if out is None else str(out)


def _errno_call(rc: int) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def others() -> list[int]:
    """The processes this one can see, itself and its own children aside."""
    me = os.getpid()
    mine = {me, os.getppid()}
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) not in mine]


def _read(path: str, n: int = 16) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def _append(path: str, text: str) -> None:
    with open(path, "a") as f:
        f.write(text)


def _forge(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def probe(plan: dict) -> dict:
    out: dict = {"pid": os.getpid()}
    out["visible_processes"] = [_read(f"/proc/{p}/cmdline", 200).replace(b"\0", b" ").decode()[:80]
                                for p in others() if os.path.exists(f"/proc/{p}/cmdline")]
    status = _read("/proc/self/status", 8192).decode()
    out["cap_eff"] = next(line.split()[1] for line in status.splitlines() if line.startswith("CapEff"))
    for path in plan.get("read", []):
        out[f"read {path}"] = attempt(lambda p=path: _read(p) and None)
    for path in plan.get("write", []):
        out[f"write {path}"] = attempt(lambda p=path: _append(p, "forged"))
    for path, text in plan.get("forge", {}).items():
        out[f"forge {path}"] = attempt(lambda p=path, t=text: _forge(p, t))
    out["signal others"] = [attempt(lambda p=p: os.kill(p, signal.SIGSTOP)) for p in others()
                            if p != 1] or "nobody to signal"
    out["ptrace others"] = [attempt(lambda p=p: _errno_call(libc.ptrace(PTRACE_ATTACH, p, 0, 0)))
                            for p in others() if p != 1] or "nobody to trace"
    for path in plan.get("unmount", []):
        out[f"umount {path}"] = attempt(lambda p=path: _errno_call(libc.umount2(p.encode(), MNT_DETACH)))
        out[f"remount rw {path}"] = attempt(lambda p=path: _errno_call(
            libc.mount(b"none", p.encode(), None, MS_REMOUNT | MS_BIND, None)))
    out["mount tmpfs"] = attempt(lambda: _errno_call(libc.mount(b"x", b"/tmp", b"tmpfs", 0, None)))
    out["raw socket"] = attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP).close())
    out["new user namespace"] = attempt(lambda: _errno_call(libc.unshare(0x10000000)))
    if plan.get("tcp"):
        out["tcp outside"] = attempt(lambda: socket.create_connection(("127.0.0.1", plan["tcp"]), timeout=2).close())
    if plan.get("abstract"):
        def abstract() -> None:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(2)
            s.connect("\0" + plan["abstract"])
            s.close()
        out["abstract socket outside"] = attempt(abstract)
    if plan.get("daemon"):
        out["daemon"] = attempt(lambda: subprocess.Popen(
            [sys.executable, "-c", f"import time; time.sleep(300)  # {plan['daemon']}"], start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) and None)
    return out


if __name__ == "__main__":
    print("PROBE " + json.dumps(probe(json.loads(sys.argv[1]))), flush=True)
