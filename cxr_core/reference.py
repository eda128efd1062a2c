"""Published results on the official Kaggle test split (624 images: 234 normal, 390 pneumonia).

Shown beside our own figures on the Compare page and in the benchmark table,
always labelled as published. They are not comparable with a test split
carved from train: that split comes from the same hospital batches as the
training images, while the official test split's distribution differs (the
seed study's baseline looked excellent on validation and reached a normal
recall of 0.27 there).
"""

from __future__ import annotations

# Keys match cxr_core.evaluate: sensitivity = pneumonia recall, specificity = normal recall.
PUBLISHED = [
    {
        "name": "Seed study: baseline CNN",
        "source": "seed study, official test split",
        "model": "baseline_cnn",  # the registry's model that `train --recipe study` builds for it
        "accuracy": 0.72, "specificity": 0.27, "sensitivity": 0.99, "macro_f1": 0.62, "auc": None,
    },
    {
        "name": "Seed study: regularized CNN",
        "source": "seed study, official test split",
        "model": "regularized_cnn",
        "accuracy": 0.86, "specificity": 0.65, "sensitivity": 0.98, "macro_f1": 0.84, "auc": None,
    },
    {
        "name": "Kermany et al. 2018: Inception-V3 transfer",
        "source": "Cell 172(5), 2018, official test split",
        "accuracy": 0.928, "specificity": 0.901, "sensitivity": 0.932, "macro_f1": None, "auc": 0.968,
    },
    {
        "name": "MedMNIST v2 PneumoniaMNIST: ResNet-50 (224 px)",
        "source": "Yang et al. 2023, Scientific Data, same test split",
        "accuracy": 0.884, "specificity": None, "sensitivity": None, "macro_f1": None, "auc": 0.962,
    },
    {
        "name": "MedMNIST v2 PneumoniaMNIST: Google AutoML Vision",
        "source": "Yang et al. 2023, Scientific Data, same test split",
        "accuracy": 0.946, "specificity": None, "sensitivity": None, "macro_f1": None, "auc": 0.991,
    },
]

NOT_COMPARABLE = (
    "Published figures are on the official test split; a test split carved from train comes from "
    "the same distribution as training and flatters a model, so the two are not directly comparable."
)
