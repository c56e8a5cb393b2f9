# Source at the start of every command on the lent GPU machine (Python 3.12, torch and triton preinstalled, no
# network). Beforehand, on the development machine:
#   pip download --no-deps -d .whl xdsl==0.74.0 immutabledict ordered_set pytest pluggy iniconfig
#   git rev-parse --short HEAD > build/commit        # the device copy has no usable git history
#   python -m benchmarks.corpus_pack --out build/corpus-gpu --subset --limit 120
# and carry [".whl", "build"] (64 MiB at most).
python3 -m pip install -q --no-deps --target /tmp/pylib .whl/*.whl 2>&1 | tail -2
# a .pth file, not PYTHONPATH alone: test subprocesses that set their own PYTHONPATH find the wheels too
echo /tmp/pylib > "$(python3 -c 'import site; print(site.getsitepackages()[0])')/solder-wheels.pth"
export PYTHONPATH=$PWD SOLDER_CACHE_DIR=/tmp/solder-cache SOLDER_COMMIT="$(cat build/commit 2>/dev/null || echo unknown)"
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader
python3 -c "import torch, triton, xdsl; print('torch', torch.__version__, 'triton', triton.__version__)"
