#!/usr/bin/env python
"""Write a synthetic H&E nuclei dataset in the raw layout (see d2_nucleus.data.synthetic)."""
import argparse
import sys

from d2_nucleus.data.synthetic import generate_dataset


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", required=True, help="output folder (raw layout: train/, test/, test_img_ids.json)")
    p.add_argument("--num-train", type=int, default=8, help="training images (default 8)")
    p.add_argument("--num-test", type=int, default=2, help="test images (default 2)")
    p.add_argument("--size", type=int, default=256, help="image side in pixels (default 256)")
    p.add_argument("--nuclei", type=int, nargs=2, default=(120, 200), metavar=("MIN", "MAX"),
                   help="nuclei per image, drawn in [MIN, MAX] (default 120 200)")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same files)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    args = p.parse_args(argv)
    try:
        s = generate_dataset(args.out, args.num_train, args.num_test, args.size, tuple(args.nuclei),
                             seed=args.seed, overwrite=args.overwrite)
    except (FileExistsError, ValueError) as e:
        print(f"make_synthetic: error: {e}", file=sys.stderr)
        return 2
    print(f"make_synthetic: {len(s['train'])} training images ({sum(s['nuclei'].values())} nuclei), "
          f"{len(s['test'])} test images -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
