PYTHON ?= python3
PIP    ?= $(PYTHON) -m pip

.PHONY: install test lint gradcheck bench tensorboard clean zca zca-full

install:  ## install the package editable with its dev extras
	$(PIP) install -q -e ".[dev]"

test:  ## the whole test suite (CPU; CUDA checks run when a GPU is present)
	$(PYTHON) -m pytest -q

lint:
	$(PYTHON) -m ruff check manualbp scripts tests

gradcheck:  ## table of every op: checks run, largest backward error against the reference
	$(PYTHON) scripts/gradcheck.py

tensorboard:  ## serve runs/ (every run's events, and each sweep's report figures)
	$(PYTHON) -m tensorboard.main --logdir runs

WORKERS ?= 1
zca:  ## experiment 2, quick preset: every whitening variant x 2 seeds, a few minutes on a CPU
	$(PYTHON) scripts/sweep.py zca --preset quick --seeds 0,1 --workers $(WORKERS) $(ARGS)

zca-full:  ## experiment 2, the paper's configuration: 15 epochs on all of Fashion-MNIST, 3 seeds
	$(PYTHON) scripts/sweep.py zca --preset full --workers $(WORKERS) $(ARGS)

bench:  ## manual backward against autograd (ops, model steps, whitening back ends); JSON in runs/bench/
	$(PYTHON) scripts/bench.py $(ARGS)

clean:
	rm -rf .pytest_cache build dist *.egg-info
