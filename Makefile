PYTHON ?= python3
PIP    ?= $(PYTHON) -m pip

.PHONY: install test mutate gradcheck gpu-check tensorboard zca zca-sound zca-article zca-ablation weights-pov weights-pov-article-cpu weights-pov-sound-cpu weights-pov-article weights-pov-sound gradient-pov gradient-pov-article-cpu gradient-pov-sound-cpu gradient-pov-article gradient-pov-sound sparse-filtering sparse-filtering-article-cpu sparse-filtering-sound-cpu sparse-filtering-article sparse-filtering-sound optimizers optimizers-article-cpu optimizers-sound-cpu optimizers-article-gpu optimizers-sound-gpu optimizers-article optimizers-sound whitening whitening-cpu whitening-full bench lint clean

install:  ## install the package editable with its dev extras
	$(PIP) install -q -e ".[dev]"

test:  ## the whole test suite (CPU; CUDA checks run when a GPU is present)
	$(PYTHON) -m pytest -q

mutate:  ## mutation run over the instruments, run folder, optimizers and article options (~1 h on 2 cores); ARGS="--workers 2"
	$(PYTHON) scripts/mutate.py $(ARGS)

lint:
	$(PYTHON) -m ruff check manualbp scripts tests

gradcheck:  ## table of every op: forward-AD and gradgrad columns, checks run, largest errors against the reference, refusals
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

weights-pov-article-cpu:  ## weights-pov, the article's code on CIFAR-10: all 50,000 images in file order, 20 of its 100 epochs, one episode (26 runs)
	$(PYTHON) scripts/sweep.py weights-pov --preset article-cpu --workers $(WORKERS) $(ARGS)

weights-pov-sound-cpu:  ## weights-pov, the errors fixed: CIFAR-10 10k/5k subsets, 12 epochs, 3 seeds as episodes (84 runs)
	$(PYTHON) scripts/sweep.py weights-pov --preset sound-cpu --workers $(WORKERS) $(ARGS)

weights-pov-article:  ## weights-pov, the article's code and schedule on CIFAR-10 (100 epochs)
	$(PYTHON) scripts/sweep.py weights-pov --preset article --workers $(WORKERS) $(ARGS)

weights-pov-sound:  ## weights-pov, the errors fixed, the article's schedule on CIFAR-10: 100 epochs, 10 seeds
	$(PYTHON) scripts/sweep.py weights-pov --preset sound --workers $(WORKERS) $(ARGS)

gradient-pov:  ## gradient-pov, quick preset: 11 regularizers x 3 seeds, probes every epoch, on a CIFAR-10 subset
	$(PYTHON) scripts/sweep.py gradient-pov --preset quick --workers $(WORKERS) $(ARGS)

gradient-pov-article-cpu:  ## gradient-pov, the article's code on CIFAR-10 subsets of STL-10's sizes: batch 20, 40 of its 150 epochs, one run per letter
	$(PYTHON) scripts/sweep.py gradient-pov --preset article-cpu --workers $(WORKERS) $(ARGS)

gradient-pov-sound-cpu:  ## gradient-pov, the errors fixed, on the same data: 40 epochs, 3 seeds
	$(PYTHON) scripts/sweep.py gradient-pov --preset sound-cpu --workers $(WORKERS) $(ARGS)

gradient-pov-article:  ## gradient-pov, the article's code and schedule: STL-10, batch 20, 150 epochs
	$(PYTHON) scripts/sweep.py gradient-pov --preset article --workers $(WORKERS) $(ARGS)

gradient-pov-sound:  ## gradient-pov, the errors fixed: STL-10, batch 20, 150 epochs, 3 seeds
	$(PYTHON) scripts/sweep.py gradient-pov --preset sound --workers $(WORKERS) $(ARGS)

sparse-filtering:  ## sparse-filtering, quick preset: six auto-encoders x 3 seeds on Penn-Fudan, 2 (+2) epochs
	$(PYTHON) scripts/sweep.py sparse-filtering --preset quick --workers $(WORKERS) $(ARGS)

sparse-filtering-article-cpu:  ## sparse-filtering, the article's code: 30 epochs of pre-training + 90 supervised (120 of its 801), float64
	$(PYTHON) scripts/sweep.py sparse-filtering --preset article-cpu --workers $(WORKERS) $(ARGS)

sparse-filtering-sound-cpu:  ## sparse-filtering, every model 90 supervised epochs at 5e-3 (sparse-filtering ones after 30 of pre-training), 5 models x 3 seeds
	$(PYTHON) scripts/sweep.py sparse-filtering --preset sound-cpu --workers $(WORKERS) $(ARGS)

sparse-filtering-article:  ## sparse-filtering, the article's code and schedule: 801 epochs
	$(PYTHON) scripts/sweep.py sparse-filtering --preset article --workers $(WORKERS) $(ARGS)

sparse-filtering-sound:  ## sparse-filtering, the errors fixed at the article's schedule: 600 supervised epochs, 3 seeds
	$(PYTHON) scripts/sweep.py sparse-filtering --preset sound --workers $(WORKERS) $(ARGS)

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

whitening:  ## whitening, quick preset: CNN6 with batch norm, DBN and IterNorm (groups of 16 and 32) x 2 seeds on a CIFAR-10 subset, 2 epochs
	$(PYTHON) scripts/sweep.py whitening --preset quick --workers $(WORKERS) $(ARGS)

whitening-cpu:  ## whitening on all of CIFAR-10: 10 epochs, 5 seeds (25 runs, about 50 min on 2 cores with WORKERS=2)
	$(PYTHON) scripts/sweep.py whitening --preset cpu --workers $(WORKERS) $(ARGS)

whitening-full:  ## whitening at the scale its claims need: 60 epochs, 30 seeds (150 runs; a GPU)
	$(PYTHON) scripts/sweep.py whitening --preset full --workers $(WORKERS) $(ARGS)

bench:  ## manual backward against autograd (ops, model steps, whitening back ends, feature-map whitening, CNN6 with DBN / IterNorm eager and compiled) and the instruments' cost; JSON in runs/bench/
	$(PYTHON) scripts/bench.py $(ARGS)

clean:
	rm -rf .pytest_cache build dist *.egg-info
