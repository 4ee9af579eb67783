PYTHON ?= python3
PIP    ?= $(PYTHON) -m pip

.PHONY: install test lint gradcheck bench tensorboard clean

install:  ## install the package editable with its dev extras
	$(PIP) install -q -e ".[dev]"

test:  ## the whole test suite (CPU; CUDA checks run when a GPU is present)
	$(PYTHON) -m pytest -q

lint:
	$(PYTHON) -m ruff check manualbp scripts tests

gradcheck:  ## table of every op: checks run, largest backward error against the reference
	$(PYTHON) scripts/gradcheck.py

tensorboard:
	$(PYTHON) -m tensorboard.main --logdir runs

clean:
	rm -rf .pytest_cache build dist *.egg-info
