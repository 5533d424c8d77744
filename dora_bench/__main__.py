"""`python -m dora_bench ...` (also `accelerate launch -m dora_bench` / `torchrun -m dora_bench`)."""
from dora_bench.cli import main

main()
