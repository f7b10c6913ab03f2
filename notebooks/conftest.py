# nbval starts each notebook's kernel with this environment: the `ci` profile, no hub access.
import os

os.environ.setdefault("B2B_PROFILE", "ci")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
