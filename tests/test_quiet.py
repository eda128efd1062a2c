"""Contracts of cxr_core.quiet and of TensorFlow's log level (cxr_core.config.set_tensorflow_log_level):
TensorFlow's C++ start-up lines stay off the terminal, unless every line is asked for.

A stand-in `tensorflow` package writes to descriptor 2 as the real one does while it loads and lists
GPUs: no test here pays for the real import."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

FAKE_TENSORFLOW = '''
import os
os.write(2, b"oneDNN custom operations are on\\n")

class config:
    @staticmethod
    def list_physical_devices(kind):
        os.write(2, b"failed call to cuInit: INTERNAL: CUDA error\\n")
        return []
'''


@pytest.fixture
def python_with_fake_tensorflow(tmp_path):
    """run(code, **env): `python -c code` with the stand-in tensorflow importable; (stdout, stderr)."""
    (tmp_path / "tensorflow").mkdir()
    (tmp_path / "tensorflow" / "__init__.py").write_text(FAKE_TENSORFLOW)

    def run(code: str, **env) -> tuple[str, str]:
        child_env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
        child_env.update(env, PYTHONPATH=str(tmp_path))  # the stand-in only, in the child
        done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                              env=child_env, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout, done.stderr
    return run


def test_native_writes_inside_the_block_are_dropped_and_descriptor_2_comes_back():
    code = """
        import os, sys
        from cxr_core.quiet import native_stderr_silenced
        with native_stderr_silenced():
            os.write(2, b"C++ chatter\\n")
        os.write(2, b"after\\n")
        try:
            with native_stderr_silenced():
                raise KeyError("inside")
        except KeyError:
            pass
        print("python error text", file=sys.stderr)
    """
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr == "after\npython error text\n"


def test_tensorflow_is_imported_quietly_by_default(python_with_fake_tensorflow):
    out, err = python_with_fake_tensorflow("""
        import os, sys
        from cxr_core.quiet import import_tensorflow
        import_tensorflow()
        print(os.environ["TF_CPP_MIN_LOG_LEVEL"], "tensorflow" in sys.modules)
    """)
    assert err == "" and out.split() == ["2", "True"]


def test_every_line_is_shown_when_asked_for(python_with_fake_tensorflow):
    _, err = python_with_fake_tensorflow("""
        from cxr_core.config import set_tensorflow_log_level
        from cxr_core.quiet import import_tensorflow
        set_tensorflow_log_level(verbose=True)  # what `python -m cxr_core --verbose` does
        import_tensorflow()
    """)
    assert "oneDNN custom operations are on" in err


def test_importing_the_engine_sets_a_quiet_level_and_keeps_a_persons_own(python_with_fake_tensorflow):
    code = "import os, cxr_core; print(os.environ['TF_CPP_MIN_LOG_LEVEL'])"
    assert python_with_fake_tensorflow(code)[0].strip() == "2"
    assert python_with_fake_tensorflow(code, TF_CPP_MIN_LOG_LEVEL="1")[0].strip() == "1"
    # Children inherit it: the worker and the predictor process start with the same level.
    inherited = python_with_fake_tensorflow(
        "import cxr_core, subprocess, sys; subprocess.run([sys.executable, '-c', "
        "'import os; print(os.environ[\"TF_CPP_MIN_LOG_LEVEL\"])'])")[0]
    assert inherited.strip() == "2"
