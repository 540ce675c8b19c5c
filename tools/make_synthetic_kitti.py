"""Write synthetic scans in the SemanticKITTI layout.

python tools/make_synthetic_kitti.py --out datasets/semantic_kitti --sequences 00 08 --scans 20
"""

from __future__ import annotations

import argparse
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="data root (dataset/sequences/<SS>/ is written under it)")
    parser.add_argument("--sequences", nargs="+", default=["00", "08"], help="sequence ids, e.g. 00 08")
    parser.add_argument("--scans", type=int, default=20, help="scans per sequence")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--columns", type=int, default=1024, help="simulated azimuth steps per revolution")
    parser.add_argument("--no-labels", action="store_true", help="write no labels (like test sequences 11-21)")
    args = parser.parse_args(argv)

    from lazytrain.lidar.synthetic import write_synthetic_kitti

    sequences = [f"{int(s):02d}" for s in args.sequences]
    start = time.perf_counter()
    write_synthetic_kitti(args.out, sequences, args.scans, seed=args.seed, columns=args.columns,
                          labels=not args.no_labels)  # fmt: skip
    print(f"wrote {args.scans} scans x {len(sequences)} sequences to {args.out} in {time.perf_counter() - start:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
