"""b2b: RLHF with REINFORCE-style methods, back to basics.

The lesson, read in this order: `rollout` (sampling, masks, log-probs) -> `reward` (the two reward
models) -> `advantages` (baselines, KL, RLOO, returns, whitening, the clipped loss) -> `train`
(the one policy-gradient loop; its settings in `rl_config`) -> `evaluate`. Around it: `config`
(profiles), `data`, `models`, `recipes` (each profile's settings), `reward_models`, `runs` (run
directories), `guards` (one-line errors), `decoding` (the rollout's fast path), and the notebook
helpers (`plots`, `widgets`, `exercises`, `reward_eval`, `analysis`). `b2b.tinyworld` is the
simulator and its gold judge; `b2b.tools` the command line, benchmark, showdown and checks.
"""
from b2b.config import Profile, data_dir, get_profile, pick_dtype
from b2b.session import setup
from b2b.data import heldout_prompts, load_preferences, load_prompts
from b2b.advantages import moving_average_baseline, reinforce_loss, repeated_ngram_fraction
from b2b.errors import B2BError, ConfigError, DataError, ModelError, TrainingError
from b2b.evaluate import evaluate_policy, proxy_rewards
from b2b.tinyworld.gold import annotator_rating, gold_rating, judge
from b2b.metrics import distinct_n
from b2b.models import fix_tokenizer, load_policy, load_reward_model, load_tokenizer
from b2b.reward import (RewardConfig, bradley_terry_loss, expected_class, ordinal_loss,
                        pair_accuracy, prob_at_least, reward_scores, save_reward_model, scalar_reward, score_responses,
                        train_reward_model, win_probability)
from b2b.rollout import (Rollout, completion_logprobs, completion_mask, decode_completions,
                         last_token_index, rollout_logprobs, sample_completions)
from b2b.rl_config import RLConfig
from b2b.runs import History
from b2b.train import train
from b2b.tinyworld.world import World

__version__ = "0.1.0"


def __getattr__(name: str):
    """Notebook helpers load on first use (`b2b.plots`, `b2b.widgets`, ...), keeping `import b2b` light."""
    if name in ("plots", "widgets", "reward_eval", "exercises", "analysis", "recipes", "reward_models", "runs",
                "tinyworld", "tools", "decoding", "guards", "rl_config", "algorithms", "step", "data", "memory",
                "metrics", "models", "reward", "rollout", "evaluate", "config", "advantages", "course",
                "budget", "colab", "precision", "session", "reinforce"):
        import importlib
        return importlib.import_module(f"b2b.{name}")
    raise AttributeError(f"module 'b2b' has no attribute {name!r}")
