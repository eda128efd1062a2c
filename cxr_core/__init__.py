"""cxr_core: the engine behind the chest X-ray pneumonia dashboard.

Everything the dashboard shows can be had from here or from the CLI
(`python -m cxr_core --help`). Not for clinical use.
"""

from .config import set_tensorflow_log_level

__version__ = "0.1.0"

# Before anything here imports TensorFlow, in every process that imports the engine.
set_tensorflow_log_level()
