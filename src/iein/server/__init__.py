"""``iein serve``: an HTTP service (FastAPI) and a web page over :class:`iein.recognizer.Recognizer`.

::

    from iein.recognizer import Recognizer
    from iein.server import Limits, create_app

    app = create_app(Recognizer.load("model.safetensors"), Limits(max_utterances=100))

Needs the ``serve`` extra: ``pip install 'iein[serve]'``.
"""
from __future__ import annotations

from .app import Limits, create_app, serve
from .live import StreamLimits

__all__ = ["Limits", "StreamLimits", "create_app", "serve"]
