"""Keep TensorFlow's C++ start-up lines off the terminal.

TensorFlow writes lines such as "oneDNN custom operations are on", "Could not
find cuda drivers" and, on a machine without a GPU, "failed call to cuInit:
INTERNAL: CUDA error" straight to file descriptor 2 while it loads, before its
own log level applies. A newcomer reads them as failures. The CLI imports
TensorFlow through `import_tensorflow()` with descriptor 2 pointed at
/dev/null for that moment only; Python warnings and errors raised later are
untouched. `python -m cxr_core --verbose ...` skips all of this.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager

from .config import tensorflow_verbose


@contextmanager
def native_stderr_silenced():
    """Descriptor 2 goes to /dev/null inside the block (C++ writes too), then comes back."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def import_tensorflow() -> None:
    """Import TensorFlow and look for GPUs (the two moments it prints), silently.

    When every line is asked for (`--verbose`, see config.set_tensorflow_log_level), nothing is hidden.
    """
    if tensorflow_verbose():
        import tensorflow  # noqa: F401
        return
    with native_stderr_silenced():
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")
