"""The one compiled part of kws: the GRU recurrence (kws/_gru.c), optional. Metadata is in pyproject.toml.

Where the extension cannot be built (no C compiler), the install still succeeds and the engine runs
its numpy loop (same posteriors, ~1.7x slower per 100 ms chunk; README, "Streaming cost")."""
import sys

from setuptools import Extension, setup

flags = [] if sys.platform == "win32" else ["-O3", "-Wno-psabi"]   # psabi: GCC notes on the SSE2 clone
setup(ext_modules=[Extension("kws._gru", ["kws/_gru.c"], extra_compile_args=flags, optional=True)])
