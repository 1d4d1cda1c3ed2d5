"""`prt hello`: prints a greeting; bad input is a prtcore.ConfigError, which `prt` prints as one line."""

from prtcore import ConfigError


def add_arguments(parser):
    parser.add_argument("--name", default="world", help="whom to greet")
    parser.add_argument("--times", type=int, default=1, help="how many greetings")


def run(args) -> int:
    if args.times < 1:
        raise ConfigError(f"--times {args.times}: must be >= 1")
    for _ in range(args.times):
        print(f"hello, {args.name}!")
    return 0
