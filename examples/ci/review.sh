#!/usr/bin/env bash
# Review a change to nemoclaw.yaml in CI, without the host: validate it, plan it offline against a
# snapshot of the host (`nemoclaw observe -f nemoclaw.yaml -o json > host.json`, taken on the host),
# write the markdown for the pull-request comment, and save the exact plan for `nemoclaw apply`.
#
#   review.sh [FILE] [SNAPSHOT] [OUT_DIR]      defaults: nemoclaw.yaml host.json nemoclaw-review
#
# Writes OUT_DIR/plan.md (the comment) and OUT_DIR/plan.json (the saved plan).
# Exit: 0 no changes, 2 changes to review, 3 something is blocked (needs a person), 1 error.
set -uo pipefail
NEMOCLAW=${NEMOCLAW:-nemoclaw}
file=${1:-nemoclaw.yaml}
snapshot=${2:-host.json}
out=${3:-nemoclaw-review}
mkdir -p "$out" || exit 1

"$NEMOCLAW" validate -f "$file" || exit 1
"$NEMOCLAW" plan -f "$file" --observed "$snapshot" -o markdown --detailed-exitcode \
  --out "$out/plan.json" > "$out/plan.md"
code=$?
case $code in
  0) echo "no changes" ;;
  2) echo "changes to review: see $out/plan.md" ;;
  3) echo "blocked: the plan needs a person (see $out/plan.md)" ;;
  *) echo "nemoclaw plan failed (exit $code)" >&2 ;;
esac
exit $code
