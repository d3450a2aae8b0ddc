#!/usr/bin/env bash
# Passes `go test -v` output through and ends with what failed and one line
# that counts the tests: "N passed, N failed, N skipped". A package that fails
# with no failed test (its TestMain, a build error, a timeout) is named with
# the last lines it printed, so the end of the log says why. Exits non-zero
# when a test or a package failed (the caller runs with pipefail, so go test's
# own status counts too).
set -u
passed=0 failed=0 skipped=0 pkgfail=0
tail_lines=40
recent=()  # the current package's last lines
failed_tests=()
report=""
while IFS= read -r line; do
  printf '%s\n' "$line"
  recent+=("$line")
  [ ${#recent[@]} -gt $tail_lines ] && recent=("${recent[@]:1}")
  case "$line" in
    *"--- PASS: "*) passed=$((passed + 1)) ;;
    *"--- FAIL: "*) failed=$((failed + 1)); failed_tests+=("${line#*--- FAIL: }") ;;
    *"--- SKIP: "*) skipped=$((skipped + 1)) ;;
    "ok "*|"ok	"*) recent=() ;;
    FAIL[[:space:]]*)
      pkgfail=1
      report+=$'\n'"== ${line}: its last lines =="$'\n'
      report+=$(printf '%s\n' "${recent[@]}")$'\n'
      recent=() ;;
  esac
done
echo
if [ -n "$report" ] || [ ${#failed_tests[@]} -gt 0 ]; then
  echo "==== what failed ===="
  for t in "${failed_tests[@]}"; do echo "test: $t"; done
  printf '%s' "$report"
  echo
fi
echo "tests: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ] && [ "$pkgfail" -eq 0 ]
