PYTHON ?= python3
PIP    ?= $(PYTHON) -m pip

.PHONY: install test lint gradcheck bench gpu-check tensorboard clean zca zca-sound zca-article zca-ablation weights-pov weights-pov-cifar15 weights-pov-full gradient-pov gradient-pov-cifar15 gradient-pov-full sparse-filtering sparse-filtering-penn sparse-filtering-full optimizers optimizers-article-cpu optimizers-sound-cpu optimizers-article-gpu optimizers-sound-gpu optimizers-article optimizers-sound

install:  ## install the package editable with its dev extras
	$(PIP) install -q -e ".[dev]"

test:  ## the whole test suite (CPU; CUDA checks run when a GPU is present)
	$(PYTHON) -m pytest -q

lint:
	$(PYTHON) -m ruff check manualbp scripts tests

gradcheck:  ## table of every op: checks run, largest backward error against the reference
	$(PYTHON) scripts/gradcheck.py

gpu-check:  ## on a CUDA machine: CUDA tests, GPU benchmark, one short training per model family (~8 min); runs/gpu-check/report.md
	$(PYTHON) scripts/gpu_check.py $(ARGS)

tensorboard:  ## serve runs/ (every run's events, and each sweep's report figures)
	$(PYTHON) -m tensorboard.main --logdir runs

WORKERS ?= 1
zca:  ## zca, quick preset: every whitening variant x 2 seeds, a few minutes on a CPU
	$(PYTHON) scripts/sweep.py zca --preset quick --seeds 0,1 --workers $(WORKERS) $(ARGS)

zca-sound:  ## zca, the sound preset: 15 epochs on all of Fashion-MNIST, every variant x 10 seeds (100 runs)
	$(PYTHON) scripts/sweep.py zca --preset sound --workers $(WORKERS) $(ARGS)

zca-article:  ## zca, the article preset: the article's own script as named options (float64) x 10 seeds
	$(PYTHON) scripts/sweep.py zca --preset article --workers $(WORKERS) $(ARGS)

zca-ablation:  ## zca, the ablation: from the article preset, its errors fixed one at a time, up to the sound configuration (40 runs)
	$(PYTHON) scripts/sweep.py zca --preset ablation --workers $(WORKERS) $(ARGS)

weights-pov:  ## weights-pov, quick preset: 13 regularizers (+ batch 20) x BN on/off x 2 episodes on a CIFAR-10 subset
	$(PYTHON) scripts/sweep.py weights-pov --preset quick --workers $(WORKERS) $(ARGS)

weights-pov-cifar15:  ## weights-pov as reported in docs/experiments/weights-pov.md: CIFAR-10 10k/5k subsets, 15 epochs, 3 episodes
	$(PYTHON) scripts/sweep.py weights-pov --preset cifar15 --workers $(WORKERS) $(ARGS)

weights-pov-full:  ## weights-pov, the article's configuration: STL-10 and CIFAR-10, 10 episodes
	$(PYTHON) scripts/sweep.py weights-pov --preset full --workers $(WORKERS) $(ARGS)

gradient-pov:  ## gradient-pov, quick preset: 11 regularizers x 3 seeds, probes every epoch, on a CIFAR-10 subset
	$(PYTHON) scripts/sweep.py gradient-pov --preset quick --workers $(WORKERS) $(ARGS)

gradient-pov-cifar15:  ## gradient-pov as reported in docs/experiments/gradient-pov.md: CIFAR-10 5k/5k subsets, batch 20, 15 epochs, 3 seeds
	$(PYTHON) scripts/sweep.py gradient-pov --preset cifar15 --workers $(WORKERS) $(ARGS)

gradient-pov-full:  ## gradient-pov, the article's configuration: STL-10, batch 20, 150 epochs
	$(PYTHON) scripts/sweep.py gradient-pov --preset full --workers $(WORKERS) $(ARGS)

sparse-filtering:  ## sparse-filtering, quick preset: five auto-encoders x 3 seeds on Penn-Fudan, 3 (+3) epochs
	$(PYTHON) scripts/sweep.py sparse-filtering --preset quick --workers $(WORKERS) $(ARGS)

sparse-filtering-penn:  ## sparse-filtering as reported in docs/experiments/sparse-filtering.md: 200 sparse-filtering epochs, 50 end to end
	$(PYTHON) scripts/sweep.py sparse-filtering --preset penn --workers $(WORKERS) $(ARGS)

sparse-filtering-full:  ## sparse-filtering, the article's schedule: 200 sparse-filtering epochs, then 100 end to end
	$(PYTHON) scripts/sweep.py sparse-filtering --preset full --workers $(WORKERS) $(ARGS)

optimizers:  ## optimizers, quick preset: 17 cases x 4 trials, one run each, widths / 4, 5 epochs on 5k MNIST images
	$(PYTHON) scripts/sweep.py optimizers --preset quick --workers $(WORKERS) $(ARGS)

optimizers-article-cpu:  ## optimizers, the article's code on a CPU budget: widths / 4, 20 epochs, 3 runs per trial (204 runs)
	$(PYTHON) scripts/sweep.py optimizers --preset article-cpu --workers $(WORKERS) $(ARGS)

optimizers-sound-cpu:  ## optimizers, the sound configuration on the same budget
	$(PYTHON) scripts/sweep.py optimizers --preset sound-cpu --workers $(WORKERS) $(ARGS)

optimizers-article-gpu:  ## optimizers, the article's code at full width: 30 epochs, 3 runs per trial (GPU)
	$(PYTHON) scripts/sweep.py optimizers --preset article-gpu --workers $(WORKERS) $(ARGS)

optimizers-sound-gpu:  ## optimizers, the sound configuration at full width: 30 epochs, 3 runs per trial (GPU)
	$(PYTHON) scripts/sweep.py optimizers --preset sound-gpu --workers $(WORKERS) $(ARGS)

optimizers-article:  ## optimizers, the article's code and schedule: 801 epochs, 10 runs per trial
	$(PYTHON) scripts/sweep.py optimizers --preset article --workers $(WORKERS) $(ARGS)

optimizers-sound:  ## optimizers, the sound configuration on the article's schedule: 801 epochs, 10 runs per trial
	$(PYTHON) scripts/sweep.py optimizers --preset sound --workers $(WORKERS) $(ARGS)

bench:  ## manual backward against autograd (ops, model steps, whitening back ends); JSON in runs/bench/
	$(PYTHON) scripts/bench.py $(ARGS)

clean:
	rm -rf .pytest_cache build dist *.egg-info
