"""Print the teacher's overhead per case from a pytest-benchmark JSON file.

Usage: python benchmarks/report.py BENCH.json
(made by: python -m pytest benchmarks/test_step_overhead.py --benchmark-enable
--benchmark-json=BENCH.json)
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict


def main(path: str) -> None:
    data = json.load(open(path))
    table: dict[str, dict[str, float]] = defaultdict(dict)
    device = "?"
    for b in data["benchmarks"]:
        info = b.get("extra_info", {})
        device = info.get("device", device)
        table[info["case"]][info["policy"]] = b["stats"]["median"] * 1e3
    machine = data.get("machine_info", {})
    print(f"device: {device}; cpu: {machine.get('cpu', {}).get('brand_raw', '?')}")
    print(f"date: {data.get('datetime', '?')}")
    print()
    policies = ["off", "none", "random", "greedy", "greedy-released", "greedy-compiled"]
    timed = ["greedy", "greedy-compiled"]
    for extra in (
        "greedy-cudagraphs", "greedy-linesearch", "greedy-linesearch-compiled", "greedy-fixed"
    ):
        if any(extra in row for row in table.values()):  # only where they ran
            policies.append(extra)
            timed.append(extra)
    head = " | ".join(f"{p} ms" for p in policies)
    print(f"| case | {head} | " + " | ".join(f"{p} overhead" for p in timed) + " |")
    print("|---" * (len(policies) + 1 + len(timed)) + "|")
    for case, row in table.items():
        cells = [f"{row[p]:.3f}" if p in row else "-" for p in policies]
        over = [
            f"{(row[p] - row['off']) / row['off']:.2f}x" if p in row and "off" in row else "-"
            for p in timed
        ]
        print(f"| {case} | " + " | ".join(cells) + " | " + " | ".join(over) + " |")


if __name__ == "__main__":
    main(sys.argv[1])
