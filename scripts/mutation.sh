#!/usr/bin/env bash
# Mutation testing (not run by CI): mutmut changes one operator, constant or call at a time in the code whose
# plausible bugs must fail a test (DoRA's importance, schedule, regulariser and pruning; the run identity; the
# GLUE and SQuAD metrics) and runs the fast tests that cover it. A surviving mutant is a bug no test would notice,
# or an equivalent program: README "Test" records the last run and why each survivor is harmless.
#
#   pip install -e ".[dev]"        # mutmut is pinned there
#   bash scripts/mutation.sh       # MUTATION_WORKERS=2 to use two cores (default 1)
#
# Which files and tests: [tool.mutmut] in pyproject.toml; which functions: SCOPE below. mutmut works in ./mutants
# (ignored by git) and leaves its per-mutant results there (`python -m mutmut show NAME` prints a mutant's diff).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

CONTROLLER="dora_bench.dora.controller.xǁDoraControllerǁ"
SCOPE=(
  "dora_bench.dora.importance.*"
  "dora_bench.dora.schedule.*"
  "dora_bench.dora.regularizer.*"
  # the controller's pruning and reporting; injection (apply_dora) and checkpoint state are left to the
  # end-to-end tests (test_dora_model, test_reliability), too slow to run per mutant
  "${CONTROLLER}__init__*" "${CONTROLLER}regularization*" "${CONTROLLER}_raw_scores*" "${CONTROLLER}_prune*"
  "${CONTROLLER}_write_mask*" "${CONTROLLER}_kept*" "${CONTROLLER}rank_pattern*" "${CONTROLLER}current_budget*"
  "${CONTROLLER}trainable_parameter_count*" "${CONTROLLER}initial_parameter_count*" "${CONTROLLER}_follow_device*"
  # run identity: what a result's fingerprint is made of
  "dora_bench.results.x_identity*" "dora_bench.results.x__canonical*" "dora_bench.results.x__data_by_content*"
  "dora_bench.results.x_fingerprint*" "dora_bench.results.x_leaves*"
  # metrics
  "dora_bench.tasks.glue.x_glue_metrics*"
  "dora_bench.tasks.squad.x_normalize_answer*" "dora_bench.tasks.squad.x_exact_match*"
  "dora_bench.tasks.squad.x_token_f1*" "dora_bench.tasks.squad.x_squad_scores*"
)

rm -rf mutants   # a fresh run: no result cached from other code or tests
started=$(date +%s)
"$PYTHON" -m mutmut run --max-children "${MUTATION_WORKERS:-1}" "${SCOPE[@]}" > mutants.log 2>&1 || {
  tail -c 3000 mutants.log; exit 1; }
"$PYTHON" -m mutmut results --all true > mutants/results.txt
"$PYTHON" - "$(( $(date +%s) - started ))" "${SCOPE[@]}" <<'PY'
"""Counts per module and status over SCOPE, then each survivor's diff."""
import collections
import fnmatch
import subprocess
import sys

seconds, scope = int(sys.argv[1]), sys.argv[2:]
status = {}
for line in open("mutants/results.txt", encoding="utf-8"):
    name, _, state = line.strip().rpartition(": ")
    if name and any(fnmatch.fnmatch(name, pattern) for pattern in scope):
        status[name] = state
by_module = collections.defaultdict(collections.Counter)
for name, state in status.items():
    module = name.split(".x")[0] if ".x" in name else name
    by_module[module][state] += 1
states = sorted({s for c in by_module.values() for s in c})
print(f"| module | mutants | {' | '.join(states)} |")
print(f"|---|---|{'---|' * len(states)}")
for module, counts in sorted(by_module.items()):
    print(f"| {module} | {sum(counts.values())} | {' | '.join(str(counts[s]) for s in states)} |")
total = collections.Counter(status.values())
print(f"| **all** | {sum(total.values())} | {' | '.join(str(total[s]) for s in states)} |")
print(f"\n{len(status)} mutants in {seconds // 60} min {seconds % 60} s")
for name, state in sorted(status.items()):
    if state not in ("killed",):
        diff = subprocess.run([sys.executable, "-m", "mutmut", "show", name], capture_output=True, text=True).stdout
        print(f"\n{state}: {name}\n" + "\n".join(l for l in diff.splitlines() if l[:1] in "+-" and l[:3] not in ("+++", "---")))
PY
