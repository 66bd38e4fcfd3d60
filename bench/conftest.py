"""pytest-benchmark suites: tape alone, and kernel implementations against each other.

Comparisons with PyTorch are not made here: in one process each library's thread pools
and settings change the other's speed. ``python bench/compare.py`` runs each library in a
process of its own (see bench/README.md).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # workloads.py
