"""Lambda entry point of the scoring API (``lambdas.api.handler.handler``).

Settings and the model bundle are loaded at import, once per execution environment (Lambda's init
phase); a bad setting or a bundle whose hash disagrees with its card fails the cold start with a
clear message instead of answering requests.
"""

from __future__ import annotations

import os

from lambdas.init_phase import init_phase

with init_phase():
    from lambdas.api.wiring import create_handler

    handler = create_handler(os.environ)
