"""Run one fuzz target under atheris: ``python fuzz/run.py TARGET [libFuzzer options]``."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import atheris  # noqa: E402  (pip install atheris)

with atheris.instrument_imports():
    import targets  # noqa: E402


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in targets.TARGETS:
        raise SystemExit(f"usage: python fuzz/run.py {{{'|'.join(targets.TARGETS)}}} [libFuzzer options]")
    target = targets.TARGETS[sys.argv.pop(1)]
    atheris.Setup(sys.argv, lambda data: targets.check(target, data))
    atheris.Fuzz()


if __name__ == "__main__":
    main()
