"""Deep Q-learning around arbitrary (possibly symmetrized) Q-networks: DQN, replay, evaluation."""

from equiv.rl.dqn import DQNConfig, collect_transitions, evaluate, td_loss, train_dqn
from equiv.rl.replay import ReplayBuffer, Transitions

__all__ = ["DQNConfig", "ReplayBuffer", "Transitions", "collect_transitions", "evaluate",
           "td_loss", "train_dqn"]
