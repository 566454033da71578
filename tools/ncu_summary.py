#!/usr/bin/env python3
"""Sums kernel durations from `ncu --csv --metrics gpu__time_duration.sum` by kernel name.

  python3 tools/ncu_summary.py ncu.csv [TOP]
"""

import collections
import csv
import sys


def main():
    path = sys.argv[1]
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    with open(path) as f:
        lines = [line for line in f if line.startswith('"')]
    total = collections.defaultdict(float)
    count = collections.Counter()
    for row in csv.DictReader(lines):
        if row.get("Metric Name") != "gpu__time_duration.sum":
            continue
        # ncu writes "ns"/"us"/"ms" (older versions: "nsecond"/"usecond"/"msecond").
        units = {"ns": 1e-3, "nsecond": 1e-3, "us": 1.0, "usecond": 1.0, "ms": 1e3, "msecond": 1e3}
        unit = row["Metric Unit"]
        if unit not in units:
            raise SystemExit(f"unknown time unit {unit!r} in {path}")
        scale = units[unit]
        name = row["Kernel Name"].split("(")[0][:70]
        total[name] += float(row["Metric Value"].replace(",", "")) * scale
        count[name] += 1
    grand = sum(total.values())
    print(f"{'us total':>12} {'calls':>6} {'us/call':>10} {'share':>6}  kernel")
    for name, us in sorted(total.items(), key=lambda item: -item[1])[:top]:
        print(f"{us:12.1f} {count[name]:6d} {us / count[name]:10.1f} {us / grand:6.1%}  {name}")


if __name__ == "__main__":
    main()
