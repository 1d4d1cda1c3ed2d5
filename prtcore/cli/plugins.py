"""`prt plugins`: installed plugins with their hooks, versions and backends, as JSON."""

import json


def add_arguments(parser):
    pass


def run(args) -> int:
    from ..plugins import describe_plugins

    print(json.dumps(describe_plugins(), indent=2))
    return 0
