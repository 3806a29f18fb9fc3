"""Ground truth of the rlkit/* envs: exact solvers on hand-solved instances, and each reference
reproduced by simulating its policy in the env."""

import os

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import gymnasium as gym
import numpy as np
import pytest

import envs
from envs.arm_reach import pd_ik_controller
from envs.catch import tracker_action
from envs.gridworld import GridWorldVectorEnv, solve_finite_horizon
from envs.inventory import InventoryEnv, InventoryVectorEnv

# ----------------------------------------------------------------------------- GridWorld


def _gw_value(rows, slip=0.0, cost=0.01, horizon=100, goal=1.0, pit=-1.0):
    values, _ = solve_finite_horizon(tuple(rows), slip, cost, goal, pit, horizon)
    start = "".join(rows).index("S")
    return values[horizon, start]


def test_gridworld_corridor_by_hand():
    # S . G, no slip: step to the middle (-c), then into the goal (+1)
    assert _gw_value(["S.G"], cost=0.01) == pytest.approx(1 - 0.01, abs=1e-12)
    # horizon 1: the goal cannot be reached, the best is one step cost
    assert _gw_value(["S.G"], cost=0.01, horizon=1) == pytest.approx(-0.01, abs=1e-12)
    # horizon 2 is just enough
    assert _gw_value(["S.G"], cost=0.01, horizon=2) == pytest.approx(0.99, abs=1e-12)
    # slip p: sideways moves bump into the walls, each move succeeds with q = 1 - p, so on
    # average 2/q attempts, the last of which earns +1 instead of -c
    p, c = 0.5, 0.01
    q = 1 - p
    assert _gw_value(["S.G"], slip=p, cost=c, horizon=2000) == pytest.approx(1 - c * (2 / q - 1), abs=1e-9)
    # a pit on the way and a detour: S P G over . . . ; the detour costs 4 steps
    assert _gw_value(["SPG", "..."], cost=0.01) == pytest.approx(1 - 3 * 0.01, abs=1e-12)
    # goal walled off (the solver does not validate layouts): jumping into the pit (-1) or
    # paying the step cost until the TimeLimit, whichever is better
    assert _gw_value(["S#G", "P#."], cost=0.005) == pytest.approx(-0.5, abs=1e-12)
    assert _gw_value(["S#G", "P#."], cost=0.02) == pytest.approx(-1.0, abs=1e-12)


def test_gridworld_reference_reproduced_by_simulation():
    env = gym.make("rlkit/GridWorld-v0")
    ref = env.unwrapped.reference()
    assert ref["name"] == "value iteration optimum" and 0.5 < ref["score"] < 0.87
    policy = env.unwrapped.optimal_policy()  # (100, cells), time-dependent
    n = 4000
    vec = GridWorldVectorEnv(num_envs=n, max_episode_steps=100)
    vec.reset(seed=0)
    returns, done = np.zeros(n), np.zeros(n, dtype=bool)
    for t in range(100):
        _, r, term, trunc, _ = vec.step(policy[t, vec.cells])
        returns += np.where(done, 0.0, r)
        done |= term | trunc
    assert done.all()
    se = returns.std() / np.sqrt(n)
    assert abs(returns.mean() - ref["score"]) < 4 * se + 1e-9


@pytest.mark.parametrize("layout", ["8x8", "16x16"])
def test_gridworld_stationary_policy_attains_the_optimum(layout):
    # the optimum is time-dependent in general; for the built-in layouts the first-step policy,
    # used at every step, is exactly as good from the start (exact policy evaluation)
    env = gym.make("rlkit/GridWorld-v0", layout=layout).unwrapped
    policy = env.optimal_policy()[0]
    next3, reward, terminal = env._next3, env._reward, env._terminal
    probs = np.array([0.05, 0.05, 0.9])
    value = np.zeros(len(reward))
    n3 = next3[np.arange(len(reward)), policy]
    for _ in range(100):
        value = ((reward[n3] + np.where(terminal[n3], 0.0, value[n3])) * probs).sum(axis=1)
    assert value[env.start] == pytest.approx(env.reference()["score"], abs=1e-12)


def test_gridworld_reference_follows_horizon():
    short = envs.reference("rlkit/GridWorld-v0", max_episode_steps=14)["score"]
    full = envs.reference("rlkit/GridWorld-v0")["score"]
    assert short < full
    assert envs.reference("rlkit/GridWorld-v0", slip_prob=0.0)["score"] == pytest.approx(1 - 13 * 0.01)


# ----------------------------------------------------------------------------- Catch


@pytest.mark.parametrize("kwargs", [{}, {"obs_type": "vector"}, {"rows": 8, "cols": 10, "n_balls": 25}])
def test_catch_tracker_reaches_the_optimum(kwargs):
    env = gym.make("rlkit/Catch-v0", **kwargs)
    optimum = env.unwrapped.reference()["score"]
    assert optimum == env.unwrapped.n_balls
    for seed in range(5):
        obs, _ = env.reset(seed=seed)
        total, done, steps = 0.0, False, 0
        while not done:
            if kwargs.get("obs_type") == "vector":
                a = tracker_action(obs, env.unwrapped.rows, env.unwrapped.cols)
            else:
                a = env.unwrapped.tracker_action()
            obs, r, term, trunc, _ = env.step(a)
            total, done, steps = total + r, term or trunc, steps + 1
        assert total == optimum
        assert steps == env.unwrapped.n_balls * (env.unwrapped.rows - 1)


def test_catch_vector_tracker_and_random_policy():
    vec = gym.make_vec("rlkit/Catch-v0", num_envs=64, vectorization_mode="vector_entry_point")
    vec.reset(seed=0)
    u = vec.unwrapped
    total = np.zeros(64)
    for _ in range(150):
        _, r, term, _, _ = vec.step(u.tracker_actions())
        total += r
    assert term.all() and (total == 10).all()
    vec.reset(seed=0)
    total[:] = 0
    rng = np.random.default_rng(0)
    for _ in range(150):
        total += vec.step(rng.integers(0, 3, 64))[1]
    assert total.mean() < 0  # random play misses most balls


# ----------------------------------------------------------------------------- Inventory


@pytest.mark.parametrize("lead_time", [0, 1])
def test_inventory_deterministic_demand_by_hand(lead_time):
    # demand is always 1; capacity 2. Ordering 1 every step earns p - f - u = 1.0; ordering 2
    # every other step earns (p - f - 2u - h + p) / 2 = 1.9; never ordering loses b = 1 per step.
    env = InventoryEnv(demand_pmf=[0.0, 1.0], lead_time=lead_time, max_stock=2, max_order=2,
                       price=5.0, order_fixed_cost=2.0, order_unit_cost=2.0, holding_cost=0.2,
                       stockout_cost=1.0)
    assert env.reference()["score"] == pytest.approx(1.9, abs=1e-8)
    ss = env.best_ss_policy()
    assert ss["score"] == pytest.approx(1.9, abs=1e-8)
    # a huge fixed cost makes ordering pointless: the optimum is to lose every sale
    env = InventoryEnv(demand_pmf=[0.0, 1.0], lead_time=lead_time, max_stock=2, max_order=2,
                       order_fixed_cost=50.0)
    assert env.reference()["score"] == pytest.approx(-1.0, abs=1e-8)


def test_inventory_one_state_instance():
    # capacity 1, no lead time, demand 1 w.p. 0.5: stock 0 or 1. Keep ordering up to 1:
    # each step pays f + u if the last unit sold; sells w.p. 1/2.
    p, f, u, h, b = 4.0, 0.5, 1.0, 0.1, 0.3
    env = InventoryEnv(demand_pmf=[0.5, 0.5], lead_time=0, max_stock=1, max_order=1, price=p,
                       order_fixed_cost=f, order_unit_cost=u, holding_cost=h, stockout_cost=b,
                       initial_stock=1)
    # order-up-to-1: stock is 1 before demand; the order is placed after a sale (prob 1/2).
    # Each step: E[revenue] = p/2, E[holding] = h/2, E[order cost] = (f + u)/2 (at steady state
    # the order happens in the step after a sale, i.e. with probability 1/2).
    up_to_1 = p / 2 - h / 2 - (f + u) / 2
    never = -b / 2
    assert env.reference()["score"] == pytest.approx(max(up_to_1, never), abs=1e-8)


def test_inventory_ss_close_to_and_below_optimum():
    for kwargs in ({}, {"season_period": 4, "season_amplitude": 0.5}):
        env = gym.make("rlkit/Inventory-v0", **kwargs).unwrapped
        opt = env.reference()["score"]
        ss = env.best_ss_policy()
        assert ss["score"] <= opt + 1e-7
        assert ss["score"] >= opt - 0.03 * abs(opt)
        assert 0 <= ss["s"] < ss["S"]


def test_inventory_rvi_rate_reproduced_by_simulation():
    vec = InventoryVectorEnv(num_envs=64, max_episode_steps=None)
    policy, ref = vec.optimal_policy(), vec.reference()
    assert ref["name"] == "relative value iteration optimum" and ref["metric"] == "reward_per_step"
    vec.reset(seed=123)
    total = np.zeros(64)
    for _ in range(3000):
        total += vec.step(policy[vec.state_indices()])[1]
    per_copy = total / 3000
    se = per_copy.std() / np.sqrt(64)
    assert abs(per_copy.mean() - ref["score"]) < 5 * se + 0.01
    # and the single env agrees with its own state index
    env = gym.make("rlkit/Inventory-v0")
    env.reset(seed=0)
    for _ in range(20):
        env.step(env.unwrapped.optimal_action())
        i = env.unwrapped.state_index()
        assert 0 <= i < len(policy)


# ----------------------------------------------------------------------------- ArmReach


def test_arm_reach_controller_rate_reproduced():
    env = gym.make("rlkit/ArmReach-v0")
    ref = env.unwrapped.reference()
    assert ref["name"] == "PD/IK controller" and ref["metric"] == "reward_per_step"
    rates = []
    for seed in range(100, 106):
        obs, _ = env.reset(seed=seed)
        total, truncated = 0.0, False
        while not truncated:
            obs, r, terminated, truncated, _ = env.step(pd_ik_controller(obs))
            assert not terminated
            total += r
        rates.append(total / 500)
    assert abs(np.mean(rates) - ref["score"]) < 0.05
    assert env.unwrapped.controller_action().shape == (2,)
    # the controller is far better than doing nothing
    obs, _ = env.reset(seed=100)
    idle = sum(env.step(np.zeros(2, dtype=np.float32))[1] for _ in range(500)) / 500
    assert idle < 5 * ref["score"]


def test_inventory_solver_refuses_huge_state_spaces():
    env = InventoryEnv(max_stock=1000, max_order=50, lead_time=3)  # fine to simulate
    env.reset(seed=0)
    env.step(3)
    with pytest.raises(ValueError, match="state-action pairs"):
        env.reference()
