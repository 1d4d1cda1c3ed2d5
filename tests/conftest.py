"""Settings for the whole suite: nothing reaches the Hugging Face Hub (an argument shaped like `org/name` resolves
from the local cache only, or fails at once), here and in every `prt` subprocess the tests start."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
