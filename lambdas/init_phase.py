"""The init phase of a Lambda entry point: imports and model load, once per execution environment.

Cold start is mostly this phase. Left on, the garbage collector keeps walking the hundreds of
thousands of objects that imports create, all of which live for the whole environment (8 % of the
instructions of the API's cold start under callgrind); switching it off until init is done took the
API's fresh-process time to first response from about 0.41 s to 0.31 s on the development machine
(medians of interleaved runs; ``benchmarks/bench_api.py`` measures the cold start end to end).
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def init_phase() -> Iterator[None]:
    """Run the imports and set-up of a handler module with the collector paused, then freeze them.

    Enter it before numpy is imported: the two settings below are read at import.
    """
    # numpy's OpenBLAS starts a spinning thread per core at import; nothing here uses BLAS, and on
    # Lambda's fraction of a vCPU that thread competes with the init phase.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    # No pydantic plugins are used: skip scanning every installed distribution's entry points.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
    # Everything created so far lives as long as the environment: later collections skip it.
    gc.freeze()
