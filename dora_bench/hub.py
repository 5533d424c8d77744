"""Whether the Hugging Face hub may be contacted (tests and CI set both variables)."""
import os


def hub_offline() -> bool:
    return any(os.environ.get(var, "0").lower() in ("1", "true", "yes")
               for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
