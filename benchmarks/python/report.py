"""Merges the benchmark's per-run JSON files into one table and one JSON document.

    python report.py RESULTS_DIR OUT.json
"""

from __future__ import annotations

import json
import pathlib
import platform
import sys
import time

WORKLOADS = [
    ("fetch_one", "fetch_one by key, raw SQL (2,000 sequential)"),
    ("fetch_one_paused", "fetch_one by key, 50 us of Python work after each (2,000)"),
    ("fetch_one_core", "fetch_one by key, SQLAlchemy Core (2,000)"),
    ("fetch_all", "fetch_all 10,000 rows x 5 columns"),
    ("iterate", "iterate 10,000 rows"),
    ("execute_many", "execute_many 5,000 rows"),
    ("transactions", "1,000 transactions of one insert"),
    ("concurrent_fetch_one", "32 tasks x 100 fetch_one, pool of 10"),
]
MEMORY = [("iterate", "peak memory, iterate 1,000,000 rows"), ("fetch_all", "peak memory, fetch_all 100,000 rows")]
RAW = {"postgresql": "asyncpg", "mysql": "asyncmy", "sqlite": "aiosqlite"}


def main() -> None:
    results_dir, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    doc: dict = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "backends": {},
    }
    for backend_dir in sorted(p for p in results_dir.iterdir() if p.is_dir()):
        backend = backend_dir.name
        entry: dict = {"raw_driver": RAW[backend], "speed": {}, "memory": {}}
        for impl in ("ours", "upstream", "raw"):
            speed = backend_dir / f"{impl}.json"
            if speed.exists():
                entry["speed"][impl] = json.loads(speed.read_text())
            for which, _ in MEMORY:
                mem = backend_dir / f"{impl}-memory-{which}.json"
                if mem.exists():
                    entry["memory"].setdefault(which, {})[impl] = json.loads(mem.read_text())
        doc["backends"][backend] = entry

    for backend, entry in doc["backends"].items():
        raw = entry["raw_driver"]
        print(f"\n## {backend} (raw driver: {raw})\n")
        print(f"| workload | ours | upstream 0.9.0 | {raw} | ours / upstream | ours / {raw} |")
        print("|---|---:|---:|---:|---:|---:|")
        speed = entry["speed"]
        for key, label in WORKLOADS:
            figures = {impl: speed.get(impl, {}).get(key) for impl in ("ours", "upstream", "raw")}
            if not figures["ours"]:
                continue
            unit = figures["ours"]["unit"]

            def cell(impl: str) -> str:
                f = figures[impl]
                return f"{f['per_second']:,.0f} {unit}/s" if f else "—"

            def ratio(impl: str) -> str:
                f = figures[impl]
                return f"{figures['ours']['per_second'] / f['per_second']:.2f}x" if f else "—"

            print(f"| {label} | {cell('ours')} | {cell('upstream')} | {cell('raw')} | {ratio('upstream')} | {ratio('raw')} |")
        for which, label in MEMORY:
            figures = entry["memory"].get(which, {})
            if "ours" not in figures:
                continue

            def mib(impl: str) -> str:
                f = figures.get(impl)
                return f"{f['peak_bytes'] / 2**20:,.1f} MiB ({f['bytes_per_row']:,.0f} B/row)" if f else "—"

            def mratio(impl: str) -> str:
                f = figures.get(impl)
                # Below a MiB the peak is noise (allocator arenas), not the workload.
                if not f or f["peak_bytes"] < 2**20 or figures["ours"]["peak_bytes"] < 2**20:
                    return "flat" if f else "—"
                return f"{figures['ours']['peak_bytes'] / f['peak_bytes']:.2f}x"

            print(f"| {label} | {mib('ours')} | {mib('upstream')} | {mib('raw')} | {mratio('upstream')} | {mratio('raw')} |")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\nJSON: {out}  (memory ratios: ours / other, lower is better)")


if __name__ == "__main__":
    main()
