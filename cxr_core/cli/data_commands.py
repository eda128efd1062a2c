"""Commands about data folders: what the Home and Dataset pages show, the demo set, the real download."""

from __future__ import annotations

import json

from .common import data_arg, store_of


def best_run_line(best: dict | None) -> str:
    """`info`'s line about the run chosen on validation, as the Home page shows it."""
    if best is None:
        return ("best run: none finished with a validation AUC and scored on the official test split yet "
                "(train one: python -m cxr_core train --model regularized_cnn)")
    figures = ", ".join(f"{m} {best[m]:.3f}" for m in ("accuracy", "sensitivity", "specificity", "auc")
                        if best.get(m) is not None)
    split = "the demo set's test split" if best["synthetic"] else "the official test split"
    return (f"best run: {best['run']} ({best['model']}), {best['rule']}; on {split} ({best['where']}, "
            f"{best['n']} images): " + figures + ("  (SYNTHETIC demo data)" if best["synthetic"] else ""))


def cmd_info(args) -> int:
    from .. import data, explore, run_tables

    data_dir = data_arg(args.data)
    scan = data.scan_folder(data_dir)
    split = data.assign_splits(scan.manifest, seed=args.seed)
    summary = data.split_summary(split)
    info = {
        **explore.dataset_summary(scan),  # what the Home page shows
        "splits": summary.to_dict(orient="records"),
        "patient_overlap": data.patient_overlap(split),
        "leakage": data.leakage_report(split),
        "seed": args.seed,
        # The Home page's result: the best finished run trained on this folder, by official-split AUC.
        "best_run": run_tables.best_run(store_of(args).list(), data_dir),
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{info['root']}{'  (SYNTHETIC demo data)' if scan.synthetic else ''}")
    print(f"{info['images']} images of {info['patients']} patients: "
          + ", ".join(f"{k} {v}" for k, v in sorted(info["classes"].items())))
    print("official folders: " + ", ".join(f"{k} {v}" for k, v in info["official_splits"].items() if v))
    if scan.skipped:
        print("skipped: " + ", ".join(f"{v} {k}" for k, v in scan.skipped.items()))
    print(f"\nsplits used for training (by patient, seed {args.seed}):")
    print(summary.to_string(index=False))
    for severity, sentence in explore.leakage_findings(info["leakage"], explore.naive_split_leakage(scan.manifest)):
        print(f"error: {sentence}" if severity == explore.LEAKAGE else sentence)  # what the Dataset page shows
    print(best_run_line(info["best_run"]))
    return 0


def cmd_explore(args) -> int:
    from .. import data, explore

    scan = data.scan_folder(data_arg(args.data))
    split = data.assign_splits(scan.manifest, seed=args.seed)
    sizes = explore.image_size_table(scan.manifest, n=args.sample)
    report = {
        "summary": explore.dataset_summary(scan),
        "class_balance": explore.class_balance(split).to_dict(orient="records"),
        "images_per_patient": explore.images_per_patient(split).to_dict(orient="records"),
        "patient_overlap": data.patient_overlap(split),
        "naive_split_leakage": explore.naive_split_leakage(scan.manifest),
        "image_sizes": sizes.describe().round(2).to_dict() if not sizes.empty else {},
    }
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return 0
    print(f"{report['summary']['root']}{'  (SYNTHETIC demo data)' if scan.synthetic else ''}")
    print("\nclass balance (always answering PNEUMONIA scores the last column):")
    print(explore.class_balance(split).to_string(index=False))
    print("\nimages per patient:")
    print(explore.images_per_patient(split).to_string(index=False))
    print("\npatients in two splits, by patient (ours): " + ", ".join(f"{k} {v}" for k, v in report["patient_overlap"].items()))
    leaks = ", ".join(f"{k} {v}" for k, v in report["naive_split_leakage"].items())
    print("patients in two splits, if split by image at random: " + leaks)
    if not sizes.empty:
        print(f"\nimage sizes (sample of {len(sizes)}):")
        print(sizes.describe().round(2).to_string())
    return 0


def cmd_demo_data(args) -> int:
    from ..demo import ensure_demo_dataset, write_demo_dataset

    path = write_demo_dataset(args.out) if args.out else ensure_demo_dataset()
    print(path)
    return 0


def cmd_download(args) -> int:
    from ..download import download, export_line

    root = download(args.source, args.out, sha256=args.sha256, echo=lambda line: print(line, flush=True))
    print(export_line(root))
    return 0


def register(add, runs, as_json) -> None:
    """Add these commands to the parser (cli.parser calls it)."""
    p = add("info", cmd_info, "describe a data folder, the splits training would use and the best run on it",
            runs, as_json)
    p.add_argument("--data", help="Kaggle-layout folder (default: $CXR_DATA_DIR, else the synthetic demo set)")
    p.add_argument("--seed", type=int, default=42, help="the seed of the patient-grouped split, as train's")

    p = add("explore", cmd_explore, "what the Dataset page shows: balance, patients, leakage, image sizes", as_json)
    p.add_argument("--data", help="Kaggle-layout folder (default: $CXR_DATA_DIR, else the synthetic demo set)")
    p.add_argument("--seed", type=int, default=42, help="the seed of the patient-grouped split, as train's")
    p.add_argument("--sample", type=int, default=300, help="images whose headers are read for sizes")

    p = add("demo-data", cmd_demo_data, "write the synthetic demo data set")
    p.add_argument("--out", help="write a fresh demo set into this folder (default: the cache's, once)")

    p = add("download", cmd_download,
            "fetch the Kermany data set (CC BY 4.0) in Kaggle layout; prints the CXR_DATA_DIR line last")
    p.add_argument("--source", default="kaggle", help="kaggle (default, with kagglehub), an http(s) URL of a zip, or a local zip")
    p.add_argument("--out", help="folder to create (default: ~/data/chest_xray)")
    p.add_argument("--sha256", help="expected SHA-256 of the zip at --source URL")

