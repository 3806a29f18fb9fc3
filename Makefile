# The README's two commands: `make run` and `make test`. Both set up .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Override for another build, e.g. TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed
export SDL_VIDEODRIVER ?= dummy
export PYTHONUNBUFFERED := 1

.PHONY: setup run test test-fast bench bench-suite tensorboard lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m rlkit.demo

test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

# Held-out seeds 20-29 (tuning used 0-4), SB3 with the RL Zoo's and with rlkit's hyperparameters.
bench: $(STAMP)
	$(PY) bench/time_to_solve.py --env CartPole-v1 --algos ppo sb3-ppo sb3-ppo@bench/sb3_ppo_rlkit_cartpole.yaml \
		--seeds 20 21 22 23 24 25 26 27 28 29 --eval-every 2048 --baseline-threads 1 --out runs/time_to_solve_cartpole.json

# Every (agent, env) pair of the standard suite at the RL Zoo's budgets, seeds 20-22, rlkit and SB3
# alternating; many hours (run it in the background; a rerun resumes). Writes docs/benchmarks.md.
bench-suite: $(STAMP)
	$(PY) bench/suite.py --write-docs

tensorboard: $(STAMP)
	$(VENV)/bin/rlkit tensorboard

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info
