"""``scripts/stack``: the command line (see the package's docstring)."""

from __future__ import annotations

import argparse
import sys

import deploy
from deploy.checks import bench, check
from deploy.stack import PROJECT, STATE, StackError, down, environment, images, replay, up


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/stack", description=(deploy.__doc__ or "").split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("images")
    p = sub.add_parser("up")
    p.add_argument("--workers", type=int, default=1)
    sub.add_parser("down")
    p = sub.add_parser("replay")
    p.add_argument("args", nargs=argparse.REMAINDER)
    sub.add_parser("check")
    p = sub.add_parser("bench")
    p.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    try:
        if args.command == "images":
            images()
        elif args.command == "up":
            up(workers=args.workers)
            auth = environment()["FLOWER_BASIC_AUTH"]
            port = environment().get("FLOWER_PORT", "5555")
            print(f"stack: up; Flower at http://127.0.0.1:{port} (user:password {auth}, also in"
                  f" {STATE / (PROJECT + '.env')})")  # fmt: skip
        elif args.command == "down":
            down()
        elif args.command == "replay":
            replay(PROJECT, *args.args)
        elif args.command == "check":
            check()
        else:
            bench(runs=args.runs)
    except StackError as exc:
        print(f"stack: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
