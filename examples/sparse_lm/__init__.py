"""A small causal LM trained on a synthetic task that needs local and long-range heads.

It is the accuracy yardstick of the sparse-attention rewrite: `benchmarks/sparse_accuracy.py` runs it
dense and under each policy and reports task accuracy. `model.py` (the model), `task.py` (the data),
`train.py` (CPU training in a few minutes), `checkpoint.pt` (the shipped weights).
"""
