"""`prt demo`: a reward trained on an old base, reused on a newer, bigger base, compared with the baselines."""

import json

import attrs
from pathlib import Path


def add_arguments(parser) -> None:
    parser.add_argument("--out", default="prt-demo", help="working directory, reused as a cache (default ./prt-demo; "
                                                          "--quick runs use its quick/ subdirectory)")
    parser.add_argument("--backend", help="mlx or torch (default: PRT_BACKEND, else MLX on Apple silicon, torch elsewhere)")
    parser.add_argument("--seed", type=int, default=0, help="the first seed (default 0)")
    parser.add_argument("--seeds", type=int, help="how many seeds, from --seed on; the tables give mean ± standard "
                                                  "deviation (default 3; 1 with --quick)")
    parser.add_argument("--quick", action="store_true", help="a smaller world and shorter training (under a minute)")
    study = parser.add_argument_group("method settings (docs/method.md studies them; defaults: the demo's own)")
    study.add_argument("--fine-tune-type", choices=("full", "lora"), help="how the twin reward trains (default full)")
    study.add_argument("--init", choices=("copy", "zero_head"), help="the twin reward's initialisation (default copy)")
    study.add_argument("--entropy-coeff", type=float, help="the rewards' entropy term")
    study.add_argument("--lambda", dest="lam", type=float, help="λ of the rewards, in training and in use")
    study.add_argument("--task-schedule", choices=("constant", "cosine"),
                       help="learning-rate schedule of the rewards and LoRA fine-tunes")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args) -> int:
    from ..apps.demo import DemoSettings, markdown, run_demo
    from ..config import RewardConfig
    from ..errors import ConfigError
    from .common import check_seed

    seeds = args.seeds if args.seeds is not None else 1 if args.quick else 3
    if not 1 <= seeds <= 100:
        raise ConfigError(f"--seeds {seeds}: must be from 1 to 100")
    check_seed(args.seed)
    check_seed(args.seed + seeds - 1)
    settings = DemoSettings.quick(args.seed) if args.quick else DemoSettings(seed=args.seed)
    chosen = {"twin_fine_tune": args.fine_tune_type, "twin_init": args.init, "entropy_coeff": args.entropy_coeff, "lam": args.lam,
              "task_schedule": args.task_schedule}
    settings = attrs.evolve(settings, **{k: v for k, v in chosen.items() if v is not None})
    RewardConfig(kind="twin", init=settings.twin_init, fine_tune_type=settings.twin_fine_tune,  # checks the values
                 entropy_coeff=settings.entropy_coeff, lam=settings.lam)
    out = Path(args.out) / "quick" if args.quick else Path(args.out)
    result = run_demo(out, backend=args.backend, settings=settings, seeds=seeds)
    print(json.dumps(result, indent=2) if args.json else markdown(result))
    return 0
