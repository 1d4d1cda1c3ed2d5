"""`prt demo`: a reward trained on an old base, reused on a newer, bigger base, compared with the baselines."""

import json
from pathlib import Path


def add_arguments(parser) -> None:
    parser.add_argument("--out", default="prt-demo", help="working directory, reused as a cache (default ./prt-demo; "
                                                          "--quick runs use its quick/ subdirectory)")
    parser.add_argument("--backend")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a smaller world and shorter training (under a minute)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args) -> int:
    from ..apps.demo import DemoSettings, markdown, run_demo
    from .common import check_seed

    check_seed(args.seed)
    settings = DemoSettings.quick(args.seed) if args.quick else DemoSettings(seed=args.seed)
    out = Path(args.out) / "quick" if args.quick else Path(args.out)
    result = run_demo(out, backend=args.backend, settings=settings)
    print(json.dumps(result, indent=2) if args.json else markdown(result))
    return 0
