"""Run a module as ``__main__`` and, on exit, write the process's peak RSS in KiB to a file.

    python -m bench.peak PEAK_FILE MODULE [ARGS...]

The peak is VmHWM from /proc/self/status: the high-water mark of this process's own
memory since exec. (getrusage's ru_maxrss would also count the parent's pages, which a
vfork'ed child shares until exec.) Where /proc is missing, ru_maxrss stands in.
"""

from __future__ import annotations

import atexit
import resource
import runpy
import sys


def peak_rss_kb() -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def main() -> None:
    peak_file, module, *args = sys.argv[1:]

    def report() -> None:
        with open(peak_file, "w") as fh:
            fh.write(str(peak_rss_kb()))

    atexit.register(report)
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
