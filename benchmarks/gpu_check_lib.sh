# Helpers of benchmarks/gpu_check.sh: a deadline per step and one summary row per step (sourced; tested on CPU).
# Needs DEADLINE, START, OUT, LOG and SUMMARY set by the caller.

left() { echo $(( DEADLINE - ($(date +%s) - START) )); }

# step NAME CAP_S command...: runs with min(CAP_S, time left) as its deadline; a row of the summary either way
step() {
  local name=$1 cap=$2; shift 2
  local l; l=$(left)
  if (( l < 15 )); then
    echo "=== $name: SKIPPED (no time left)" >>"$LOG"
    printf '%s\tSKIPPED\t0\t%s\n' "$name" "no time left of the ${DEADLINE}s" >>"$SUMMARY"
    return
  fi
  (( cap > l )) && cap=$l
  echo "=== $name (cap ${cap}s) $(date +%T): $*" >>"$LOG"
  local t0; t0=$(date +%s)
  timeout --kill-after=5 "$cap" "$@" >"$OUT/steps/$name.log" 2>&1
  local rc=$? seconds=$(( $(date +%s) - t0 ))
  cat "$OUT/steps/$name.log" >>"$LOG"
  echo "=== $name: rc=$rc in ${seconds}s" >>"$LOG"
  local state=ok
  (( rc == 124 || rc == 137 )) && state="TIMEOUT(${cap}s)"
  (( rc != 0 && rc != 124 && rc != 137 )) && state="FAIL(rc=$rc)"
  # the step's last informative line: a pytest tally, a table's last row, or the error
  local last; last=$(grep -v '^\s*$' "$OUT/steps/$name.log" | grep -v '━━' | tail -n 1 | tr '\t' ' ' | cut -c1-90)
  printf '%s\t%s\t%s\t%s\n' "$name" "$state" "$seconds" "$last" >>"$SUMMARY"
}
