"""Vanilla REINFORCE's step, written out in its five lines: what notebook 03's learner writes
(`b2b.exercises.check_rl_step` compares a learner's step with it).

    baseline, rewards = reinforce_step(policy, tok, rm, prompts, optimizer, baseline, generator)

The course's loop runs `b2b.step.rl_step`, the same step for every algorithm of the course.
"""
from __future__ import annotations

import torch

from b2b.advantages import moving_average_baseline, reinforce_loss
from b2b.reward import rollout_reward_scores, scalar_reward
from b2b.rollout import rollout_logprobs, sample_completions


def reinforce_step(policy, tokenizer, reward_model, prompts: list[str], optimizer, baseline: float | None,
                   generator: torch.Generator, max_new_tokens: int = 64, max_grad_norm: float = 1.0,
                   decay: float = 0.9) -> tuple[float, torch.Tensor]:
    """Vanilla REINFORCE's step in its five lines (notebook 03's exercise; `b2b.step.rl_step` is the
    same step for every algorithm, with the reward clamp, shaping, metrics and mixed precision around
    it, and tests/test_exercises.py holds the two equal):

        1. sample     y_i ~ pi_theta(. | x_i), one answer a prompt, at temperature 1
        2. score      r_i = R(x_i, y_i), read at each sequence's last real token (no gradient)
        3. advantage  A_i = r_i - b,   then  b <- decay * b + (1 - decay) * mean_i r_i
        4. loss       L = -(1/B) sum_i A_i sum_t m_it log pi_theta(y_it | x_i, y_i,<t)
        5. update     zero the gradients, backpropagate L, clip the gradient norm to max_grad_norm, step

    Returns (the new baseline, the rewards (B,))."""
    policy.eval()
    ro = sample_completions(policy, tokenizer, prompts, max_new_tokens, 1.0, generator)     # 1. sample
    with torch.no_grad():  # 2. score (`reward_scores` of ro.input_ids; re-encoded for another tokenizer's model)
        rewards = scalar_reward(rollout_reward_scores(reward_model, ro, prompts=prompts))
    advantages, baseline = moving_average_baseline(rewards, baseline, decay)                # 3. advantage
    policy.train()
    loss = reinforce_loss(advantages, rollout_logprobs(policy, ro), ro.completion_mask)     # 4. loss
    optimizer.zero_grad(set_to_none=True)                                                   # 5. update
    loss.backward()
    torch.nn.utils.clip_grad_norm_(policy.parameters(), max_grad_norm)
    optimizer.step()
    return baseline, rewards
