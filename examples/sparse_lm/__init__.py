"""A small causal LM trained on a synthetic task that needs local and long-range heads.

It is the accuracy yardstick of the sparse-attention rewrite: `benchmarks/sparse_accuracy.py` runs it
dense and under each policy and reports task accuracy. `model.py` (the model), `task.py` (the data),
`train.py` (CPU training in a few minutes, one thread), `checkpoint.pt` (the shipped weights),
`train_log.txt` (the log of the run that wrote them), `masks.py` (mask_mods for the `blocks` policy).
"""
