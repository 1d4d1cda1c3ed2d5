"""`prt demo`: train a reward on one tiny base and apply it to another, end to end, offline."""

import json


def add_arguments(parser) -> None:
    parser.add_argument("--out", default="prt-demo", help="working directory (default ./prt-demo)")
    parser.add_argument("--backend")
    parser.add_argument("--reward", choices=("linear", "transformer", "twin"), default="linear")
    parser.add_argument("--iters", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args) -> int:
    from ..demo import format_table, run_demo

    result = run_demo(args.out, backend=args.backend, seed=args.seed, iters=args.iters, kind=args.reward,
                      quiet=args.json)
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    return 0
