"""The demo's optional dependency: Gradio, imported only when an app is built.

``import hf_shapley`` and ``import hf_shapley.demo`` never import Gradio (a heavy optional
extra); :func:`require_gradio` imports it on first use and, where it is missing, raises an
``ImportError`` that says how to install it.
"""

from __future__ import annotations

import os
from types import ModuleType

__all__ = ["DEMO_EXTRA_INSTALL", "require_gradio"]

#: What to install for the demo (the ``demo`` extra of the package).
DEMO_EXTRA_INSTALL = 'pip install "hf-shapley[demo]"'


def require_gradio() -> ModuleType:
    """Import and return ``gradio``, with Gradio's usage analytics switched off.

    Raises:
        ImportError: When Gradio is not installed; the message names the extra to install.
    """
    # Gradio would otherwise send usage analytics at import and launch time.
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio
    except ImportError as error:
        raise ImportError(
            f"The hf-shapley demo needs Gradio, which is not installed: {DEMO_EXTRA_INSTALL} "
            "(or pip install gradio)."
        ) from error
    return gradio
