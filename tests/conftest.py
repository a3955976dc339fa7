"""Test-session setup shared by every test file."""

import os

# Same as the CLI: OpenMP threads sleep instead of spinning between parallel regions (must be
# set before torch or numba load their OpenMP runtime, which happens when tests import them).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
