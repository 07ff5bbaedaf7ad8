"""The project's benchmarks, run by hand from the repository root, one command each:

    .venv/bin/python -m bench.serving      # serving, batching, V2 -> bench/results/serving.json
    .venv/bin/python -m bench.swap         # alias following, splits, shadow -> swap.json
    .venv/bin/python -m bench.gate_seeds   # the gate on seeds and shuffled labels -> gate.json
    .venv/bin/python -m bench.readme       # README's measured figures from bench/results

Each has `--quick` (the README writer `--check`). Measuring records raw results; analysis.py
computes figures and goals from them; report.py (terminal) and readme.py (README) render
them. load.py holds the load generators (wrk and closed-loop threads), processes.py the
benchmarked processes, on modelyard.processes.
"""
