"""Warnings and labels that several pages show word for word."""

DEMO_LABEL = "Demo data set (SYNTHETIC)"
NOT_CLINICAL = ("**Not for clinical use.** This is a teaching and research tool; its predictions must never "
                "inform the care of a patient.")
SYNTHETIC_NOTE = ("The demo images are SYNTHETIC: drawn shapes that resemble chest X-rays in outline, "
                  "not images of any person. Numbers on them say nothing about real X-rays.")
