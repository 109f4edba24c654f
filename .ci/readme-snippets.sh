#!/usr/bin/env bash
# Runs every ```bash and ```fsharp snippet of README.md, in order, from the repository root, and
# fails on the first that fails. Usage: .ci/readme-snippets.sh [README.md]
set -euo pipefail
readme=${1:-README.md}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Split the README into numbered snippet files: NNN.sh or NNN.fsx.
awk -v dir="$work" '
  /^```bash$/   { n++; file = sprintf("%s/%03d.sh", dir, n); next }
  /^```fsharp$/ { n++; file = sprintf("%s/%03d.fsx", dir, n); next }
  /^```/        { file = ""; next }
  file != ""    { print > file }
' "$readme"

for snippet in "$work"/*; do
  echo "::: README snippet $(basename "$snippet"):"
  sed 's/^/    /' "$snippet"
  case "$snippet" in
    *.sh)  bash -euo pipefail "$snippet" 2>&1 | tee "$snippet.out" ;;
    # an .fsx resolves #r paths from its own folder: run it from the repository root
    *.fsx) cp "$snippet" ./.readme-snippet.fsx
           dotnet fsi --quiet ./.readme-snippet.fsx 2>&1 | tee "$snippet.out"; status=${PIPESTATUS[0]}
           rm -f ./.readme-snippet.fsx; [ "$status" -eq 0 ] ;;
  esac
  # The README promises the book's accuracy from `train` with defaults: hold it to that.
  if grep -q -- '-- train$' "$snippet"; then
    acc=$(grep -o 'test acc [0-9.]*' "$snippet.out" | tail -1 | awk '{print $3}')
    awk -v a="$acc" 'BEGIN { if (a + 0 < 0.965) { print "train with defaults: test acc " a " < 0.965"; exit 1 } }'
    echo "::: train with defaults reached test acc $acc (>= 0.965)"
  fi
done
