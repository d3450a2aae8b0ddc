#!/usr/bin/env bash
# Passes `go test -v` output through and ends with one line that counts the
# tests: "N passed, N failed, N skipped". Exits non-zero when a test or a
# package failed (the caller runs with pipefail, so go test's own status counts too).
set -u
passed=0 failed=0 skipped=0 pkgfail=0
while IFS= read -r line; do
  printf '%s\n' "$line"
  case "$line" in
    *"--- PASS: "*) passed=$((passed + 1)) ;;
    *"--- FAIL: "*) failed=$((failed + 1)) ;;
    *"--- SKIP: "*) skipped=$((skipped + 1)) ;;
    FAIL*) pkgfail=1 ;;
  esac
done
echo
echo "tests: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ] && [ "$pkgfail" -eq 0 ]
