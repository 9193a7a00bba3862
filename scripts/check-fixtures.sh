#!/usr/bin/env bash
# Regenerates the pipeline fixtures with scapy (tests/fixtures/gen_fixtures.py)
# and fails if they differ from the committed tests/fixtures/cases.json, which
# the tests read. After a deliberate change:
#   /usr/bin/python3 tests/fixtures/gen_fixtures.py --out tests/fixtures/cases.json
set -euo pipefail
cd "$(dirname "$0")/.."
fresh=$(mktemp)
trap 'rm -f "$fresh"' EXIT
/usr/bin/python3 tests/fixtures/gen_fixtures.py --out "$fresh"
if ! diff -u tests/fixtures/cases.json "$fresh"; then
  echo "check-fixtures: tests/fixtures/cases.json is not what gen_fixtures.py writes (see the diff above)" >&2
  exit 1
fi
echo "check-fixtures: $(grep -c '"name"' tests/fixtures/cases.json) cases match their generator"
