"""Labelled demo transactions as JSON Lines, for ``streamscore optimize --label`` and ``streamscore profile``.

    python -m load.labelled_sample --events 10000 --seed 99 sample.jsonl

Each line is a generated transaction with ``is_fraud`` (0/1) added. The default seed is not the
training seed (42), so the sample is data the demo model did not train on.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import orjson

from streamscore.demo.transactions import TransactionGenerator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=99)
    args = parser.parse_args()
    events, labels = TransactionGenerator(seed=args.seed).labelled(args.events)
    args.out.write_bytes(b"\n".join(orjson.dumps({**e, "is_fraud": int(y)})
                                    for e, y in zip(events, labels, strict=True)) + b"\n")
    print(f"wrote {args.out}: {args.events:,} events, {int(labels.sum()):,} fraud")


if __name__ == "__main__":
    main()
