"""b2b: RLHF with REINFORCE-style methods, back to basics.

The package behind the notebooks: the tiny world and its gold judge, loaders, the rollout
engine, reward models and the one policy-gradient training loop.
"""
from b2b.config import Profile, data_dir, get_profile, pick_dtype, setup
from b2b.data import heldout_prompts, load_preferences, load_prompts
from b2b.advantages import moving_average_baseline, reinforce_loss, repeated_ngram_fraction
from b2b.errors import B2BError, ConfigError, DataError, ModelError, TrainingError
from b2b.evaluate import evaluate_policy, proxy_rewards
from b2b.gold import annotator_rating, gold_rating, judge
from b2b.metrics import distinct_n
from b2b.models import fix_tokenizer, load_policy, load_reward_model, load_tokenizer
from b2b.reward import (RewardConfig, bradley_terry_loss, expected_class, ordinal_loss,
                        pair_accuracy, prob_at_least, save_reward_model, scalar_reward, score_responses,
                        train_reward_model, win_probability)
from b2b.rollout import (Rollout, completion_logprobs, completion_mask, decode_completions,
                         last_token_index, reward_scores, rollout_logprobs, sample_completions)
from b2b.train import History, RLConfig, train
from b2b.world import World

__version__ = "0.1.0"


def __getattr__(name: str):
    """Notebook helpers load on first use (`b2b.plots`, `b2b.widgets`, ...), keeping `import b2b` light."""
    if name in ("plots", "widgets", "pipeline", "reward_eval", "exercises", "trl_bridge", "analysis",
                "showdown", "bench"):
        import importlib
        return importlib.import_module(f"b2b.{name}")
    raise AttributeError(f"module 'b2b' has no attribute {name!r}")
