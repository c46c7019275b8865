"""Publishing: the model card, and the complete Hub repository of a self-explaining model."""

from .hub import HubOfflineError, check_online, push_to_hub, save_for_hub, write_model_card
from .model_card import EXAMPLE_FIGURE, MODEL_CARD_TEMPLATE, render_model_card

__all__ = [
    "EXAMPLE_FIGURE",
    "MODEL_CARD_TEMPLATE",
    "HubOfflineError",
    "check_online",
    "push_to_hub",
    "render_model_card",
    "save_for_hub",
    "write_model_card",
]
