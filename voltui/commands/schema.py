"""`voltui schema`: the JSON Schema of workflow files, for editors."""

from __future__ import annotations

import argparse

from voltui.cli import EXIT_OK
from voltui.commands.common import print_json
from voltui.engine.loader import workflow_json_schema


def cmd_schema(args: argparse.Namespace) -> int:
    print_json(workflow_json_schema())
    return EXIT_OK
