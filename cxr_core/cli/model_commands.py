"""Commands that make runs from other runs or from outside: import-model and ensemble."""

from __future__ import annotations

from .common import store_of


def cmd_import_model(args) -> int:
    from ..imported import InputHandling, import_model

    classes = tuple(c.strip().upper() for c in args.classes.split(","))
    handling = InputHandling(image_size=args.image_size, channels=args.channels, scale=args.scale,
                             output=args.output, classes=classes)
    run_id = import_model(args.path, args.name, store_of(args), handling, threshold=args.threshold,
                          threshold_on=args.threshold_on, target_sensitivity=args.target_sensitivity)
    run = store_of(args).get(run_id)
    print(f"imported {run.settings['source_name']} (sha256 {run.settings['source_sha256'][:12]}...) as "
          f"{run.settings['image_size']} px, {run.settings['channels']} channel(s), scale {run.settings['scale']}, "
          f"output {run.settings['output']}; score it with `python -m cxr_core evaluate {run_id} --data DIR`")
    print(run_id)
    return 0


def cmd_ensemble(args) -> int:
    from ..ensemble import new_ensemble_run

    run_id = new_ensemble_run(args.members, args.name, store_of(args), threshold=args.threshold,
                              threshold_on=args.threshold_on)
    print(run_id)
    return 0


def register(add, runs, as_json) -> None:
    """Add these commands to the parser (cli.parser calls it)."""
    p = add("import-model", cmd_import_model, "store a Keras model (.keras, .h5 or SavedModel folder) as a run; "
            "prints the run id last", runs)
    p.add_argument("path", metavar="PATH", help="a .keras or .h5 file, or a SavedModel folder (TF 2.x model.save)")
    p.add_argument("--name", required=True, help="what the run is called in listings (letters, digits, _)")
    p.add_argument("--image-size", type=int, metavar="PX", help="side of the square input (default: the model's)")
    p.add_argument("--channels", type=int, choices=(1, 3), help="1 (grayscale) or 3 (RGB) (default: the model's)")
    p.add_argument("--scale", default="0-255", choices=("0-255", "0-1"),
                   help="the input range the model expects: 0-255 when it rescales inside (default), else 0-1")
    p.add_argument("--output", default="sigmoid", choices=("sigmoid", "logits2", "probs2"),
                   help="one sigmoid (default), or two logits, or two probabilities in the --classes order")
    p.add_argument("--classes", default="NORMAL,PNEUMONIA",
                   help="the order of the model's classes (default NORMAL,PNEUMONIA)")
    p.add_argument("--threshold", type=float, default=0.5, help="fixed decision threshold (default 0.5)")
    p.add_argument("--threshold-on", metavar="DIR",
                   help="choose the threshold on this labelled folder's images instead (highest specificity with "
                        "sensitivity >= --target-sensitivity); score the model on other images")
    p.add_argument("--target-sensitivity", type=float, default=0.95, help="for --threshold-on (default 0.95)")

    p = add("ensemble", cmd_ensemble, "store a run whose probability is the mean of RUNs'; prints its id last", runs)
    p.add_argument("members", nargs="+", metavar="RUN", help="finished runs that take the same image size")
    p.add_argument("--name", default="ensemble", help="what the run is called in listings (default ensemble)")
    p.add_argument("--threshold", type=float, help="fixed threshold (needed, or --threshold-on, with imported members)")
    p.add_argument("--threshold-on", metavar="DIR",
                   help="choose the threshold on this labelled folder (no member may have trained on it)")
