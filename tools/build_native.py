#!/usr/bin/env python
"""
Compile d2_nucleus's C++ CPU kernels (d2_nucleus/modeling/cpu/csrc: the channels-last RoIAlign of
MODEL.NATIVE_ROI_ALIGN) with the system g++ and cache them, so a first prediction does not wait
for the compiler. `make install` runs it. Without it they are compiled on first use; where they
cannot be built d2_nucleus warns once and uses PyTorch's kernels.

    python tools/build_native.py [-v]

The cache is $D2_NUCLEUS_NATIVE_CACHE (default ~/.cache/d2_nucleus/native), one build per
environment: sources, flags, torch (version, location, include paths), Python, compiler and CPU
(model and flags); see d2_nucleus/modeling/cpu/native.py. Exit status 1 (one line on stderr) if the
build fails.
"""
import argparse
import sys

from d2_nucleus.utils.cli import error_line, quiet_known_warnings

PROG = "build_native"


def get_parser():
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-v", "--verbose", action="store_true", help="show the compiler's commands and output")
    return p


def main(argv=None):
    args = get_parser().parse_args(argv)
    quiet_known_warnings()
    from d2_nucleus.modeling.cpu.native import build_dir, build_native_ops

    try:
        build_native_ops(verbose=args.verbose)
    except Exception as e:  # the compiler's or ninja's failure, summarised
        print(error_line(PROG, RuntimeError(f"building the C++ kernels failed: {e}")), file=sys.stderr)
        return 1
    print(f"{PROG}: C++ kernels ready in {build_dir()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
