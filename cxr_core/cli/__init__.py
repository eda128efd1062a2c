"""The command line: everything the dashboard shows, from a terminal.

    python -m cxr_core info      --data DIR [--json]
    python -m cxr_core train     --data DIR --model NAME [--epochs N] [--image-size PX]
                                 [--weights imagenet|none|PATH] [--seed S] [--runs DIR]
                                 [--zoom-in F] [--patience N] [--label-smoothing F]
                                 [--threshold-rule sensitivity|youden] [--ensemble K]
    python -m cxr_core import-model PATH --name NAME [--image-size PX] [--channels 1|3] [--scale 0-255|0-1]
                                 [--output sigmoid|logits2|probs2] [--classes NORMAL,PNEUMONIA]
                                 [--threshold P | --threshold-on DIR]   (a .keras, .h5 or SavedModel as a run)
    python -m cxr_core ensemble  RUN RUN... [--name NAME] [--threshold P | --threshold-on DIR]
                                 (a run whose probability is the members' mean)
    python -m cxr_core evaluate  RUN --split test [--data DIR] [--occlude lungs|outside] [--runs DIR] [--json]
    python -m cxr_core predict   RUN FILE... [--runs DIR] [--json]
                                 [--heatmap OUT.png [--randomized] [--heatmap-size PX]]   (one FILE)
    python -m cxr_core calibration RUN [--split test] [--data DIR] [--json]
                                 (ECE, Brier, reliability bins, temperature fitted on validation)
    python -m cxr_core report    RUN RUN... [--split test] [--on SOURCE] --out report.html
                                 (one self-contained HTML file: settings, data, intervals, figures)
    python -m cxr_core lesson    [--data DIR] [--prevalence P] [--runs DIR]   (the Lesson page's numbers, JSON)
                                 [--check | --prepare [--step N]...]   (is the class ready? queue what is missing)
    python -m cxr_core reads     [SET [--json] [--csv FILE] | new --images N --seed S | close SET | delete SET]
                                 (the class's reading sets, what the Read page shows)
    python -m cxr_core runs      [--runs DIR] [--json]
    python -m cxr_core demo-data [--out DIR]
    python -m cxr_core download  [--source kaggle|URL|ZIP] [--out DIR] [--sha256 HEX]
                                 (the real data set; prints the CXR_DATA_DIR line last)
    python -m cxr_core explore   --data DIR [--json]     (what the Dataset page shows)
    python -m cxr_core compare   RUN RUN... [--split test] [--on SOURCE] [--json]   (what the Compare page shows)
    python -m cxr_core worker    [--runs DIR]        (trains queued runs, then queued evaluations)
    python -m cxr_core cancel    RUN [--runs DIR]
    python -m cxr_core --verbose COMMAND ...         (with TensorFlow's own start-up lines)

Errors a person can fix print one line to stderr and exit 2; `predict` exits 1
when any file could not be read.
"""

from __future__ import annotations

import argparse
import sys

from ..config import UserError, set_tensorflow_log_level
from . import data_commands, model_commands, reading_commands, run_commands, study_commands


class _Parser(argparse.ArgumentParser):
    """Usage mistakes are one line too, like every other error (subcommands inherit this)."""

    def error(self, message):
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def parser() -> argparse.ArgumentParser:
    root = _Parser(prog="python -m cxr_core", description="Chest X-ray pneumonia study: data, training, evaluation.")
    root.add_argument("--verbose", action="store_true", help="show TensorFlow's own start-up and log lines")
    sub = root.add_subparsers(dest="command", required=True)

    # Options many commands share, declared once (argparse parents).
    runs = argparse.ArgumentParser(add_help=False)
    runs.add_argument("--runs", help="run store folder (default: $CXR_RUNS_DIR or ./runs)")
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print JSON instead of text")

    def add(name, func, help_text, *parents):
        p = sub.add_parser(name, help=help_text, parents=list(parents))
        p.set_defaults(func=func)
        return p

    # In the order `--help` lists them.
    for group in (data_commands, run_commands, model_commands, study_commands, reading_commands):
        group.register(add, runs, as_json)
    return root


# Commands that load TensorFlow (evaluate --occlude and predict --heatmap among them); the others stay
# light and never import it. calibration loads it only to score a folder (--data), and does so itself;
# the worker imports it quietly only once there is work, so an idle one stays light; train checks its
# flags and data folder first, then imports it quietly itself (a wrong flag is refused at once).
_TENSORFLOW_COMMANDS = {"evaluate", "predict", "import-model", "ensemble"}


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.verbose:
            set_tensorflow_log_level(verbose=True)  # the worker it may start inherits it
        elif args.command in _TENSORFLOW_COMMANDS:
            from ..quiet import import_tensorflow

            if getattr(args, "run", None) is not None:
                from .common import store_of

                store_of(args).get(args.run)  # an unknown run is refused before the slow import
            import_tensorflow()  # its C++ start-up lines read like failures to a newcomer
        return args.func(args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as error:  # an unwritable run store, a full disk: say so, no traceback
        where = f" ({error.filename})" if error.filename else ""
        print(f"error: {error.strerror or error}{where}", file=sys.stderr)
        return 2
