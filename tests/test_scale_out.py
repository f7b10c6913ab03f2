"""Past one GPU: TRL's trainers with b2b's settings, launched by accelerate (two CPU processes here)."""
import pytest

from b2b.rl_config import RLConfig


def test_trl_args_split_the_batch_and_carry_b2b_settings(tmp_path):
    from b2b.tools.trl_bridge import trl_args

    cfg = RLConfig(algo="rloo", k=4, batch_size=16, kl_coef=0.5, steps=3, lr=1e-5, max_new_tokens=24)
    a = trl_args("rloo", cfg, str(tmp_path), processes=2, use_cpu=True)
    assert (a.per_device_train_batch_size, a.num_generations, a.max_steps) == (8, 4, 3)   # 16 rollouts over 2
    assert (a.beta, a.learning_rate, a.max_completion_length, a.max_grad_norm) == (0.5, 1e-5, 24, 1.0)
    assert a.normalize_advantages is False and a.top_k == 0 and a.top_p == 1.0
    pp = RLConfig(algo="reinforce_pp_baseline", k=4, batch_size=16, kl_coef=0.5, minibatches=2, ppo_epochs=1, steps=3)
    g = trl_args("reinforce_pp_baseline", pp, str(tmp_path), processes=2, use_cpu=True)
    assert (g.per_device_train_batch_size, g.steps_per_generation, g.max_steps) == (4, 2, 6)  # 2 updates a batch
    assert (g.scale_rewards, g.loss_type, g.epsilon, g.beta) == ("batch", "dapo", 0.2, 0.5)
    with pytest.raises(ValueError, match="do not split over 3 processes"):
        trl_args("rloo", cfg, str(tmp_path), processes=3, use_cpu=True)
    with pytest.raises(ValueError, match="no maintained TRL trainer for 'reinforce'"):
        trl_args("reinforce", cfg, str(tmp_path))


def test_launch_command_is_accelerate_launch_of_this_module():
    from b2b.tools.scale_out import launch_command

    cmd = launch_command(["--algo", "rloo"], 2, cpu=True)
    assert cmd[1:3] == ["-m", "accelerate.commands.launch"] and "--multi_gpu" in cmd
    assert cmd[cmd.index("--num_processes") + 1] == "2" and cmd[-4:] == ["b2b.tools.scale_out", "--algo", "rloo", "--cpu"]
    ds = launch_command([], 8, cpu=False, config_file="zero2.yaml")
    assert "--multi_gpu" not in ds and ds[ds.index("--config_file") + 1] == "zero2.yaml"


@pytest.mark.slow
@pytest.mark.parametrize("algo,trainer", [("rloo", "RLOOTrainer"), ("reinforce_pp_baseline", "GRPOTrainer")])
def test_two_cpu_processes_train_two_steps(algo, trainer, tmp_path):
    """`b2b scale-out --cpu --num-processes 2`: two gloo processes, b2b's reward model and prompts,
    TRL's trainer; two steps, the policy saved."""
    from b2b.tools.scale_out import launch

    res = launch(algo, 2, cpu=True, profile="ci", steps=2, batch_size=8, max_new_tokens=12, out=str(tmp_path / "p"),
                 timeout=600)
    assert (res["algo"], res["trainer"], res["processes"]) == (algo, trainer, 2)
    assert res["steps"] == 2 * (2 if algo == "reinforce_pp_baseline" else 1) and len(res["reward"]) >= 1
    assert (tmp_path / "p" / "model.safetensors").exists()
