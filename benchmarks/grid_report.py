"""The grid's tables from stored results: the models (docs/results.md), the recipes and threshold rules
(docs/results.md) and the README's headline table (the withheld half beside the dev half and the
published figures). Brackets always mean a 95% interval over patients; the seeds' lowest and highest
figures have their own "seed range" column."""

from __future__ import annotations

import statistics
from pathlib import Path

import common
from cxr_core import evaluate, reference, registry
from cxr_core.config import METRIC_LABELS, METRICS

LABELS = [METRIC_LABELS[m] for m in METRICS]
RANGE_HEADER = "seed range, lowest-highest (" + " / ".join(LABELS) + ")"
# (model, recipe) -> its label in the README's table: ours, then the study's recipe for both of its CNNs.
README_CELLS = {(registry.DEFAULT_MODEL, "defaults"): f"ours: {registry.DEFAULT_MODEL}, our recipe",
                (registry.DEFAULT_MODEL, "study"): f"{registry.DEFAULT_MODEL}, the study's recipe",
                (registry.REFERENCE_MODEL, "study"): f"{registry.REFERENCE_MODEL}, the study's recipe"}
QUALITY_RECIPES = ("defaults", "study", "ensemble_3")
LEGEND = ("Brackets are 95% bootstrap intervals over patients (one run's, or the pooled interval of the seeds' "
          "mean, seeds held fixed, where every seed's predictions were stored); the seed range is the lowest and "
          "highest seed, not an interval. Each run's threshold comes from its recipe's rule: chosen on its "
          "validation split for ours, a fixed 0.5 for the study's. Sensitivity is pneumonia recall, specificity "
          "normal recall.")


def split_label(rows: list[dict], key: str) -> str:
    """Which images a table is on, by name and size."""
    scores = rows[0][key]
    if scores.get("split"):
        return scores["split"]
    sizes = "/".join(sorted({str(r[key]["n"]) for r in rows if r[key].get("n")})) or "?"
    if key == "own":
        unknown = "; not recorded for every row" if any(not r[key].get("n") for r in rows) else ""
        return f"test split carved from train by each run's seed ({sizes} images{unknown})"
    if Path(rows[0]["test_data"]).name == "chest_xray_test_dev":
        return f"official test split, dev half ({sizes} images)"
    return f"`{rows[0]['test_data']}` ({sizes} images)"


def cells(runs: list[dict], keep=lambda row: True) -> dict[tuple, list[dict]]:
    """Runs grouped by (model, recipe): the registry's models in order (ensembles last), defaults and the
    study's recipe first, the other recipes in the order they were stored."""
    out: dict[tuple, list[dict]] = {}
    for row in runs:
        if keep(row):
            out.setdefault((row["model"], row["recipe"]), []).append(row)
    models, first = [*registry.names(), None], ["defaults", "study", None]

    def order(cell: tuple) -> tuple:
        model, recipe = cell
        return models.index(model if model in models else None), first.index(recipe if recipe in first else None)

    return {cell: out[cell] for cell in sorted(out, key=order)}


def figures(rows: list[dict], key: str, pooled: dict | None = None) -> dict:
    """{metric: (mean over seeds, lowest, highest, 95% interval or None)}."""
    out = {}
    for m in METRICS:
        values = [r[key][m] for r in rows if r.get(key) and r[key].get(m) is not None]
        if not values:
            out[m] = (None, None, None, None)
            continue
        if len(rows) == 1:
            interval = (rows[0][key].get("ci95") or {}).get(m)
        else:  # only an interval computed from these very runs' predictions
            interval = pooled[m] if pooled and pooled["runs"] == [r["run"] for r in rows] else None
        out[m] = (statistics.fmean(values), min(values), max(values), interval)
    return out


def seed_range(figs: dict, runs: int) -> str:
    if runs < 2:
        return "one run"
    return " / ".join("n/a" if low is None else f"{low:.3f}-{high:.3f}" for _, low, high, _ in figs.values())


def seeds(rows: list[dict]) -> str:
    known = [str(r["seed"]) for r in rows if r.get("seed") is not None]
    return ", ".join(known) if len(known) == len(rows) else f"{len(rows)} run{'s' * (len(rows) > 1)}"


def commits(rows: list[dict]) -> str:
    labels = {common.commit_label({"commit": r.get("commit")}) + (" with uncommitted changes" if r.get("dirty") else "")
              for r in rows}
    return ", ".join(sorted(labels))


def minutes(rows: list[dict]) -> str:
    values = [r["train_seconds"] for r in rows if r.get("train_seconds")]
    return f"{statistics.fmean(values) / 60:.1f}" if values else "n/a"


def metric_cells(rows: list[dict], key: str, pooled: dict | None) -> list[str]:
    figs = figures(rows, key, pooled)
    return [*[evaluate.with_interval(mean, interval) for mean, _, _, interval in figs.values()], seed_range(figs, len(rows))]


def provenance(rows: list[dict]) -> str:
    """Who measured the rows: each command once, with its commit, date and machine."""
    seen = dict.fromkeys((r.get("command"), commits([r]), r.get("date"), r.get("machine")) for r in rows)
    return "\n".join(f"- {f'`{cmd}`' if str(cmd).startswith('python') else cmd} at commit {commit} on {str(date)[:10]}, "
                     f"{machine}" for cmd, commit, date, machine in seen)


def model_table(groups: dict, key: str, pools: dict) -> str:
    rows = [[model, f"`{recipe}`", "/".join(sorted({str(r.get('image_size')) for r in rs})), commits(rs), seeds(rs),
             *metric_cells(rs, key, pools.get(f"{model}/{recipe}")), minutes(rs)] for (model, recipe), rs in groups.items()]
    return common.markdown_table(["model", "recipe", "px", "commit", "seeds", *LABELS, RANGE_HEADER, "train min"], rows)


def published_table() -> str:
    return common.markdown_table(["published (not measured here), whole official test split (624 images)", "source", *LABELS],
                                 [[p["name"], p["source"], *[p.get(m) for m in METRICS]] for p in reference.PUBLISHED])


def render_quality(result: dict) -> str:
    """docs/results.md: each model with its shipped defaults and the study's recipe, on both test splits."""
    groups = cells(result["runs"], lambda r: r["recipe"] in QUALITY_RECIPES)
    if not groups:
        return "No model has been run yet: `python benchmarks/grid.py --models MODEL --keep --update-docs`."
    rows = [r for rs in groups.values() for r in rs]
    lines = [LEGEND, ""]
    if any(r.get("synthetic") for r in rows):
        lines += ["**SYNTHETIC demo data: these figures only show that the grid runs; they say nothing about X-rays.**", ""]
    lines += [f"**{split_label(rows, 'test')}**: the dev half chose the recipes, so its figures are optimistic.", "",
              model_table(groups, "test", result.get("pooled") or {}), "", where_the_study_lands(result), "",
              f"**{split_label(rows, 'own')}**: in-distribution, it flatters every model.", "",
              model_table(groups, "own", {}), "",
              "Each row's commit and image size are its own: a row from an older commit shows that commit's defaults. "
              "Measured by:", provenance(rows), "", published_table(), "", reference.NOT_COMPARABLE]
    return "\n".join(lines)


def rules_table(groups: dict) -> str:
    out = []
    for (_, recipe), rs in groups.items():
        for rule in dict.fromkeys(x["rule"] for r in rs for x in r.get("rules") or []):
            found = [x for r in rs for x in r.get("rules") or [] if x["rule"] == rule]
            figs = {k: [x[k] for x in found] for k in ("threshold", "accuracy", "sensitivity", "specificity")}
            out.append([f"`{recipe}`", rule, len(found), *[statistics.fmean(v) for v in figs.values()],
                        " / ".join(f"{min(v):.3f}-{max(v):.3f}" for v in figs.values())])
    return common.markdown_table(["recipe", "rule", "runs", "threshold", "accuracy", "sensitivity", "specificity",
                                  "seed range (threshold / accuracy / sensitivity / specificity)"], out)


def render_ablation(result: dict) -> str:
    """docs/results.md: what each recipe choice of the default model is worth, and each threshold rule."""
    groups = cells(result["runs"], lambda r: r["model"] == registry.DEFAULT_MODEL)
    if not groups:
        return "No recipe has been run yet."
    rows = [r for rs in groups.values() for r in rs]
    pools = result.get("pooled") or {}
    table = common.markdown_table(
        ["recipe", "what it changes", "train flags", "px", "commit", "seeds", *LABELS, RANGE_HEADER,
         "own-split accuracy", "own-split AUC", "train min"],
        [[f"`{recipe}`", rs[0]["what"], " ".join(rs[0]["flags"]) or "(none)",
          "/".join(sorted({str(r.get("image_size")) for r in rs})), commits(rs), seeds(rs),
          *metric_cells(rs, "test", pools.get(f"{model}/{recipe}")),
          *[common.fmt(figures(rs, "own")[m][0]) for m in ("accuracy", "auc")], minutes(rs)]
         for (model, recipe), rs in groups.items()])
    return "\n".join([
        f"`{registry.DEFAULT_MODEL}` on the **{split_label(rows, 'test')}**; own-split figures (means) are on the test "
        "split carved from train by each run's seed. " + LEGEND, "", table, "",
        "Threshold rules on the same runs: each rule sees only a run's validation predictions; the threshold it "
        f"gives is scored on the {split_label(rows, 'test')}. Means over the runs; the seed range is the "
        "rule's instability.", "", rules_table(groups), "",
        "\"train min\" is each `train` command's wall time, decoding included, on a machine shared with other work: "
        "a rough size, not a speed comparison (docs/performance.md measures speed). Measured by:", provenance(rows)])


def where_the_study_lands(result: dict) -> str:
    """One sentence per CNN of the study: its recipe's runs here against its published figures, and why
    they spread (empty when no run of the study's recipe is stored)."""
    said = []
    for published in reference.PUBLISHED:
        rows = [r for r in result["runs"] if r["model"] == published.get("model") and r["recipe"] == "study"]
        if not rows:
            continue
        parts = []
        for metric in ("accuracy", "specificity"):
            values, target = [r["test"][metric] for r in rows], published[metric]
            place = ("spans" if min(values) <= target <= max(values) else
                     "is below" if max(values) < target else "is above")
            parts.append(f"{METRIC_LABELS[metric].lower()} {statistics.fmean(values):.3f} (seeds "
                         f"{min(values):.3f}-{max(values):.3f}; the range {place} the published {target:.2f})")
        said.append(f"`{published['model']}` over {len(rows)} seed{'s' * (len(rows) > 1)}: " + ", ".join(parts))
    if not said:
        return ""
    return ("The study's recipe as this product runs it, on the " + split_label(result["runs"], "test") + ": "
            + "; ".join(said) + ". Its threshold is a fixed 0.5, never chosen on validation, so where a run lands "
            "between sensitivity and specificity moves with the seed; the published figures are one run each on "
            "the whole official split. These runs follow the study's recipe; where the seeds' range misses a "
            "published figure, they do not reproduce it.")


def render_readme(result: dict, withheld: dict) -> str:
    """README: the withheld half (scored independently) first, the dev half beside it, then the published figures."""
    table = []
    for source, where in ((withheld, "withheld"), (result, "dev")):
        groups = cells(source["runs"], lambda r: (r["model"], r["recipe"]) in README_CELLS)
        for (model, recipe), rs in sorted(groups.items(), key=lambda cell: list(README_CELLS).index(cell[0])):
            label = README_CELLS[model, recipe] + (" (withheld half, scored independently)" if where == "withheld" else "")
            table.append([label, split_label(rs, "test"), seeds(rs),
                          *metric_cells(rs, "test", (source.get("pooled") or {}).get(f"{model}/{recipe}"))])
    table += [[f"published: {p['name']}", "whole official test split (624 images)", "-",
               *[common.fmt(p.get(m)) for m in METRICS], "-"] for p in reference.PUBLISHED]
    rows = [r for r in result["runs"] if (r["model"], r["recipe"]) in README_CELLS]
    return "\n".join([
        common.markdown_table(["model and recipe", "test images", "seeds", *LABELS, RANGE_HEADER], table), "",
        "The dev half chose the recipe; the withheld half was scored once, independently, and is the honest estimate. "
        + withheld["provenance"] + " " + where_the_study_lands(result) + " " + LEGEND
        + " Every recipe and rule tried: [docs/results.md](docs/results.md). "
        "Measured by:", provenance(rows)])


def render_docs(result: dict, withheld: dict) -> dict[str, str]:
    """{marker name: body} for common.update_docs."""
    return {"quality": render_quality(result), "ablation": render_ablation(result),
            "results": render_readme(result, withheld)}


def render_markdown(result: dict) -> str:
    return "\n\n".join(["# Quality grid", "## Models", render_quality(result), "## Recipes", render_ablation(result)])
