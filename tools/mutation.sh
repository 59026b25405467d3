#!/usr/bin/env bash
# Mutation testing of the safety-critical modules (mutmut 3.x), on a throw-away copy of HEAD.
#
#   tools/mutation.sh                       # every module below
#   tools/mutation.sh scu-files admission   # only these
#   tools/mutation.sh --report [NAMES]      # score the last runs again, without running
#   tools/mutation.sh --again NAMES         # the last run's survivors only, against the
#                                           # tests added since (same mutants)
#
# Never mutates this tree: `git archive HEAD` is unpacked into $MUTATION_DIR/<module>
# (default /tmp/stgcmt-mutation) and mutmut runs there, with that copy's src/ first on
# PYTHONPATH (so subprocesses the tests start import the mutants too). For each mutant mutmut
# runs only the selected tests (below) that executed the mutated function, 2 in parallel
# (MUTATION_JOBS); tools/mutation_hits.py counts the calls made in the `stgcmt` processes the
# tests start as well. Mutants run in children of mutmut's fork server, never forked from the
# process that ran the stats: that one's engine-loop thread is gone in a fork, and every test
# would hang there (a false "timeout"). Log calls are not mutated: their wording is for people,
# no behaviour depends on it (what users rely on is tested: statuses, files, exit codes).
# mutmut is in the `test` extras; if missing it is pip-installed into .venv.
# Prints per module: killed / survived / timeout / no tests / score, the surviving mutants,
# and an overall score. Slow (minutes per module): not part of .ci/run.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
OUT=${MUTATION_DIR:-/tmp/stgcmt-mutation}
JOBS=${MUTATION_JOBS:-2}
"$PY" -c 'import mutmut' 2>/dev/null || "$PY" -m pip install -q 'mutmut>=3.8,<4'
MUTMUT=$(dirname "$PY")/mutmut

# name | file to mutate | mutant-name filter (glob, "" = all of the file) | tests (besides
# test_mutations.py; pytest's --deselect too). Deselected: a test that closes an index right
# after opening it, which can crash the whole stats run with SIGSEGV (the UID filter's fill
# thread still reads through a connection close() closes; reported, not ours to fix here).
# admission runs without tests/e2e/test_scp_limits.py: under load one of its timing-bound tests
# failed mutmut's clean run (it passes alone); test_mutations.py covers each refusal and its limit.
# delivery and scu-reports mutate their safety-relevant functions only (delivery: whom to report
# to, when to retry and when to give up; scu-reports: who may make the SCU act, which report is
# matched and acted upon), not thread and event plumbing, journal-outage holds or --reporter
# parsing: a full run of each takes well over an hour on a shared machine.
MODULES='
scu-files|src/stgcmt/scu/files.py||tests/unit/scu tests/unit/storage/test_scu_journal.py
scu-results|src/stgcmt/scu/results.py||tests/e2e/test_scu.py tests/e2e/test_send_ux.py
retry|src/stgcmt/config/model.py|stgcmt.config.model.xǁRetryPolicyǁ*|tests/unit/test_config.py tests/e2e/test_scp_faults.py
admission|src/stgcmt/scp/admission.py||tests/unit/scp/test_admission.py tests/e2e/test_scp_trust.py --deselect=tests/e2e/test_scp_trust.py::test_index_rows_outside_the_store_are_never_used
verification|src/stgcmt/scp/verification.py||tests/e2e/test_scp.py tests/e2e/test_scp_faults.py tests/unit/scp/test_verification_mutants.py
instances|src/stgcmt/storage/instances.py|stgcmt.storage.instances.xǁDurabilityBarrierǁ*,stgcmt.storage.instances.xǁInstanceStoreǁverify*,stgcmt.storage.instances.xǁInstanceStoreǁ_check__*,stgcmt.storage.instances.xǁInstanceStoreǁ_make_durable*,stgcmt.storage.instances.xǁInstanceStoreǁblob_problem*,stgcmt.storage.instances.xǁInstanceStoreǁdurability_round*|tests/unit/storage/test_instances.py tests/e2e/test_scp_faults.py tests/unit/scp/test_verification_mutants.py tests/unit/storage/test_instances_mutants.py
storage-files|src/stgcmt/storage/files.py|stgcmt.storage.files.*sync*|tests/unit/storage/test_files.py tests/unit/storage/test_instances.py tests/unit/storage/test_files_mutants.py
scu-reports|src/stgcmt/scu/reports.py|stgcmt.scu.reports.xǁTrustPolicyǁ*,stgcmt.scu.reports.xǁResolverǁ*,stgcmt.scu.reports.x_ip_literal*,stgcmt.scu.reports.x_verification_only*,stgcmt.scu.reports.xǁReportHandlerǁ_admit*,stgcmt.scu.reports.xǁReportHandlerǁon_report*,stgcmt.scu.reports.xǁReportHandlerǁ_handle*,stgcmt.scu.reports.x__refuse*|tests/unit/scu/test_reports.py tests/e2e/test_scu.py tests/e2e/test_scu_trust.py
delivery|src/stgcmt/scp/delivery.py|stgcmt.scp.delivery.xǁDeliveryǁ_send_report*,stgcmt.scp.delivery.xǁDeliveryǁ_failed_attempt*,stgcmt.scp.delivery.xǁDeliveryǁ_give_up_if_too_old*|tests/e2e/test_scp.py tests/e2e/test_scp_faults.py
'
# Scores one module's last run ($OUT/<name>/results.txt, then again.txt if re-checked): prints
# its line and survivors on stderr, "killed+timeout scored" on stdout.
score() {
    "$PY" - "$1" "$2" <<'PYEOF'
import fnmatch, os, sys
status = {}
pats = [p for p in sys.argv[2].split(",") if p]
for name in ("results.txt", "again.txt"):
    path = os.path.join(sys.argv[1], name)
    if not os.path.exists(path):
        continue
    for line in open(path, encoding="utf-8"):
        if ":" not in line:
            continue
        key, _, st = line.strip().rpartition(": ")
        if key and (not pats or any(fnmatch.fnmatch(key, p) for p in pats)):
            status[key] = st.strip()
k = sum(s == "killed" for s in status.values())
sv = [n for n, s in status.items() if s == "survived"]
t = sum(s == "timeout" for s in status.values())
nt = sum(s == "no tests" for s in status.values())
other = len(status) - k - len(sv) - t - nt
scored = k + t + len(sv) + nt
score = 100.0 * (k + t) / scored if scored else 0.0
print(f"{k + t} {scored}")
print(f"   killed {k}  survived {len(sv)}  timeout {t}  no tests {nt}  other {other}  score {score:.1f}%", file=sys.stderr)
for n in sv:
    print(f"   survived: {n}", file=sys.stderr)
PYEOF
}

# Runs mutmut on one module, in a fresh copy of HEAD.
run_module() {
    local name=$1 file=$2 filter=$3 tests=$4 dir=$OUT/$1 sel names=()
    rm -rf "$dir"; mkdir -p "$dir"
    git -C "$ROOT" rev-parse HEAD >"$dir/commit"   # what was run, for --again
    git -C "$ROOT" archive "$(cat "$dir/commit")" | tar -x -C "$dir"
    sel=$(printf '"%s", ' tests/e2e/test_mutations.py $tests)
    mkdir -p "$dir/.hooks"
    cp "$dir/tools/mutation_hits.py" "$dir/.hooks/"
    echo 'import mutation_hits; mutation_hits.install()' >"$dir/.hooks/sitecustomize.py"
    cat >> "$dir/pyproject.toml" <<TOML

[tool.mutmut]
source_paths = ["src/"]
also_copy = ["tools/"]
only_mutate = ["$file"]
pytest_add_cli_args_test_selection = [${sel%, }]
pytest_add_cli_args = ["-p", "no:cacheprovider", "-p", "mutation_hits", "-q"]
process_isolation = "forkserver"
do_not_mutate_patterns = ['^\\s*log\\.(debug|info|warning|error|exception)\\(']
timeout_multiplier = 4.0
timeout_constant = 10.0
TOML
    mkdir -p "$dir/mutants/src"   # must exist at start-up, or Python caches it as absent on sys.path
    if [ -n "$filter" ]; then
        IFS=',' read -ra names <<<"$filter"
    fi
    (cd "$dir" && PYTHONPATH="$dir/mutants/src:$dir/.hooks" "$MUTMUT" run --max-children "$JOBS" "${names[@]}") \
        >"$dir/run.log" 2>&1 || { echo "mutmut failed, see $dir/run.log"; tail -20 "$dir/run.log"; return 1; }
    (cd "$dir" && "$MUTMUT" results --all true) >"$dir/results.txt" 2>&1 || true
}

# The tests of test file $2 added since commit $1 (FILE::NAME), or the file if it is new.
new_tests() {
    if ! git -C "$ROOT" cat-file -e "$1:$2" 2>/dev/null; then
        echo "$2"
        return
    fi
    git -C "$ROOT" diff "$1" HEAD -- "$2" | sed -n "s|^+\\(async \\)\\?def \\(test_[A-Za-z0-9_]*\\).*|$2::\\2|p"
}

# Re-checks the survivors and timeouts of the module's last run against the tests of its
# selection added since that run (the tests written for them), with pytest directly in the run's
# tree: exit status 1 (a test failed) kills the mutant; results in again.txt, which the score
# reads over results.txt. Much faster than a new run, which repeats every old test per survivor.
run_again() {
    local dir=$OUT/$1 selection=" tests/e2e/test_mutations.py $2 " since path wanted entry m rc
    local names=() changed=() patterns=()
    since=$(cat "$dir/commit")
    IFS=',' read -ra patterns <<<"${3:-*}"
    while read -r entry; do   # only the mutants the module's filter selects (the score's)
        for wanted in "${patterns[@]}"; do
            # shellcheck disable=SC2053  # a glob on purpose
            [[ ${entry%: *} == $wanted ]] && { names+=("$entry"); break; }
        done
    done < <(sed -n 's/^ *\(.*: \(survived\|timeout\)\)$/\1/p' "$dir/results.txt")
    while read -r path; do
        for wanted in $selection; do
            [[ $wanted == --* || $path != "$wanted"* ]] || { changed+=($(new_tests "$since" "$path")); break; }
        done
    done < <(git -C "$ROOT" diff --name-only "$since" HEAD -- 'tests/unit/*.py'
             git -C "$ROOT" diff --name-only "$since" HEAD -- 'tests/e2e/*.py')  # fast ones first
    : >"$dir/again.txt"
    if [ ${#names[@]} -eq 0 ] || [ ${#changed[@]} -eq 0 ]; then
        echo "   nothing to re-check (survivors: ${#names[@]}, changed tests: ${#changed[@]})"
        return 0
    fi
    rm -rf "$dir/mutants/tests"
    git -C "$ROOT" archive HEAD tests tools | tar -x -C "$dir/mutants"
    # only the tests that pass on the unmutated code of that run can kill anything (one at a
    # time: a test that does not exist there would stop pytest before it runs any)
    local passing=()
    for path in "${changed[@]}"; do
        (cd "$dir/mutants" && MUTANT_UNDER_TEST="" PYTHONPATH="$dir/mutants/src" timeout 900 \
            "$PY" -m pytest -q -p no:cacheprovider "$path") >>"$dir/again.log" 2>&1 && passing+=("$path")
    done
    changed=("${passing[@]}")
    if [ ${#changed[@]} -eq 0 ]; then
        echo "   none of the new tests passes on the code of that run: nothing re-checked"
        return 0
    fi
    echo "   ${#names[@]} survivors and timeouts against ${changed[*]}"
    for entry in "${names[@]}"; do
        m=${entry%: *} rc=0
        if grep -qxF "$m" "$ROOT/tools/mutation_equivalent.txt"; then
            echo "    $entry" >>"$dir/again.txt"   # judged equivalent: survives, not re-run
            continue
        fi
        (cd "$dir/mutants" && MUTANT_UNDER_TEST=$m PYTHONPATH="$dir/mutants/src" timeout 900 \
            "$PY" -m pytest -x -q -p no:cacheprovider "${changed[@]}") >>"$dir/again.log" 2>&1 || rc=$?
        # killed now, or as it was (a timeout stays one: the old tests may still kill it)
        if [ $rc -eq 1 ]; then echo "    $m: killed"; else echo "    $entry"; fi >>"$dir/again.txt"
    done
}

main() {
    local mode=run total_k=0 total_n=0 counts k n
    case "${1:-}" in
        --report) mode=report; shift ;;
        --again) mode=again; shift ;;
    esac
    local wanted=" $* "
    mkdir -p "$OUT"
    while IFS='|' read -r name file filter tests; do
        [ -n "$name" ] || continue
        [ $# -eq 0 ] || [[ $wanted == *" $name "* ]] || continue
        echo "== $name: mutating $file ${filter:+($filter)} with: tests/e2e/test_mutations.py $tests"
        if [ $mode = run ]; then
            run_module "$name" "$file" "$filter" "$tests" || continue
        elif [ ! -f "$OUT/$name/results.txt" ]; then
            echo "   not run yet"; continue
        elif [ $mode = again ]; then
            run_again "$name" "$tests" "$filter" || continue
        fi
        counts=$(score "$OUT/$name" "$filter")
        read -r k n <<<"$counts"
        total_k=$((total_k + k)); total_n=$((total_n + n))
        echo "   (mutmut show <name> in $OUT/$name to see a mutant)"
    done <<<"$MODULES"
    [ "$total_n" -eq 0 ] || awk -v k="$total_k" -v n="$total_n" \
        'BEGIN { printf "== overall: %d/%d killed (incl. timeouts) = %.1f%%\n", k, n, 100 * k / n }'
}

main "$@"
exit
