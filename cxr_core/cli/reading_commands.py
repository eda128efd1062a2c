"""`reads`: the class's reading sets (what the Read page shows), from a terminal.

    python -m cxr_core reads                                   list the sets
    python -m cxr_core reads new --images 20 --seed 7 [--data DIR]   draw a set; prints its id last
    python -m cxr_core reads SET [--json] [--csv FILE] [--run RUN]   its readers beside the model
    python -m cxr_core reads close SET | reads delete SET
"""

from __future__ import annotations

import json
import sys

from ..config import UserError
from .common import data_arg, store_of

ACTIONS = ("new", "close", "delete")


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _list(store, as_json: bool) -> int:
    from .. import reads

    sets = [{**{k: s.get(k) for k in ("id", "state", "drawn_from", "seed", "synthetic")},
             "images": len(s["images"]), "readers": len(reads.readers(s, store))}
            for s in reads.list_sets(store, warn=_warn)]
    if as_json:
        print(json.dumps(sets))
    elif not sets:
        print("no reading sets yet; draw one with `python -m cxr_core reads new --images 20 --seed 7`")
    for s in sets if not as_json else []:
        print(f"{s['id']}  {s['state']:<6}  {s['images']} images from the {s['drawn_from']} (seed {s['seed']}), "
              f"{s['readers']} readers" + ("  [SYNTHETIC demo data]" if s["synthetic"] else ""))
    return 0


def _number(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _show(store, set_id: str, args) -> int:
    from .. import reader_metrics, reads
    from ..store import atomic_write_csv

    result = reader_metrics.report(reads.get_set(set_id, store), store, args.run, warn=_warn)
    if args.csv:
        atomic_write_csv(args.csv, reader_metrics.answer_rows(result))
    if args.json:
        print(json.dumps({**result["set"], "readers": result["readers"], "majority_vote": result["majority_vote"],
                          "model": result["model"], "findings": result["findings"]}, default=str))
        return 0
    shown = result["set"]
    print(f"reading set {shown['id']} ({shown['state']}): {len(shown['images'])} images from the {shown['drawn_from']}"
          + ("  [SYNTHETIC demo data]" if shown.get("synthetic") else ""))
    print("reader                                    sensitivity  specificity  AUC (from confidences)")
    for reader in result["readers"]:
        print(f"{reader['name']:<40}  {_number(reader['sensitivity']):>11}  {_number(reader['specificity']):>11}  "
              f"{_number(reader['auc']):>6}")
    vote, model = result["majority_vote"], result["model"]
    if vote:
        print(f"{'majority vote':<40}  {_number(vote['sensitivity']):>11}  {_number(vote['specificity']):>11}")
    if model:
        print(f"{'model: run ' + model['run']:<40}  {_number(model['sensitivity']):>11}  "
              f"{_number(model['specificity']):>11}  {_number(model['auc']):>6}  (threshold {model['threshold']:.3f})")
    for sentence in result["findings"]:
        print(sentence)
    if args.csv:
        print(f"answers written to {args.csv}")
    return 0


def cmd_reads(args) -> int:
    from .. import reads

    store = store_of(args)
    words = list(args.words)
    if not words:
        return _list(store, args.json)
    action = words.pop(0)
    if action == "new":
        if words:
            raise UserError("`reads new` takes no set id; its options are --images, --seed, --pneumonia-share, --data")
        record = reads.create_set(data_arg(args.data), store, images=args.images, seed=args.seed,
                                  pneumonia_share=args.pneumonia_share, run_id=args.run)
        print(f"reading set of {len(record['images'])} images from the {record['drawn_from']}; students open the "
              f"Read page (its address: /read?set={record['id']})")
        print(record["id"])
        return 0
    if action in ("close", "delete"):
        if len(words) != 1:
            raise UserError(f"`reads {action}` takes one set id, as `python -m cxr_core reads` lists them")
        if action == "close":
            reads.close_set(words[0], store)
        else:
            reads.delete_set(words[0], store)
        print(f"reading set {words[0]} {action}d")
        return 0
    if words:
        raise UserError(f"`reads {action}` takes nothing more; to act on a set, write `reads close SET` or `reads delete SET`")
    return _show(store, action, args)


def register(add, runs, as_json) -> None:
    """Add `reads` to the parser (cli.parser calls it)."""
    from ..reads import DEFAULT_IMAGES, DEFAULT_PNEUMONIA_SHARE, DEFAULT_SEED

    p = add("reads", cmd_reads, "the class's reading sets: draw one, list them, each reader beside the model",
            runs, as_json)
    p.add_argument("words", nargs="*", metavar="WORD",
                   help="none: list the sets; SET (an id): its readers beside the model; new: draw a set; "
                        "close SET: take no more answers; delete SET: remove it and its answers")
    p.add_argument("--images", type=int, default=DEFAULT_IMAGES, help=f"new: how many X-rays (default {DEFAULT_IMAGES})")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"new: the draw's seed (default {DEFAULT_SEED})")
    p.add_argument("--pneumonia-share", type=float, default=DEFAULT_PNEUMONIA_SHARE,
                   help=f"new: the share of PNEUMONIA images (default {DEFAULT_PNEUMONIA_SHARE})")
    p.add_argument("--data", help="new: Kaggle-layout folder (default: $CXR_DATA_DIR, else the synthetic demo set)")
    p.add_argument("--run", help="new: draw from this run's own test split (for a folder without test/); "
                                 "SET: the run to compare with (default: the newest with predictions on the images)")
    p.add_argument("--csv", metavar="FILE", help="SET: also write one row per answer to FILE, for a spreadsheet")
