"""`sound-generator bench [--json] [--only NAME ...]`: speed figures, one module per area.

Each module in `SUITES` has `run(quick: bool) -> dict[str, float]`, figures whose names carry
units (`_ms`, `_s`, `_per_s`, `_pct`). Figures print one per line; with `--json` the last line
is one JSON object with every figure, plus the machine description.
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import time

SUITES = {
    "dsp": "bench.dsp",
    "generator": "bench.generator",
    "server": "bench.server",
    "voices": "bench.voices",
    "export": "bench.export",
}


def configure(parser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    parser.add_argument("--only", nargs="+", choices=sorted(SUITES), help="run only these suites")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (for smoke tests)")


def machine() -> dict[str, str]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": cpu, "cores": str(os.cpu_count()), "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d")}


def run(args) -> int:
    figures: dict[str, object] = {}
    for name in args.only or SUITES:
        module = importlib.import_module(SUITES[name])
        result = module.run(quick=args.quick)
        for key, value in result.items():
            print(f"{key}: {value:.3f}" if isinstance(value, float) else f"{key}: {value}", flush=True)
        figures.update(result)
    if args.json:
        print(json.dumps({**figures, "machine": machine()}))
    return 0
