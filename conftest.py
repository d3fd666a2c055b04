"""Test configuration shared by tests/ and the notebooks run under nbval.

``CRATE_EDU_QUICK=1`` shrinks every notebook to a CPU run of seconds; it is set here, before any
kernel starts, so that nbval's kernels inherit it.
"""

import os

os.environ.setdefault("CRATE_EDU_QUICK", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
