#!/usr/bin/env bash
# Runs every ```bash and ```fsharp snippet of README.md, in order, from the repository root, and
# fails on the first that fails; checks that each ```csharp snippet is the Program.cs of the sample
# it names (`--project samples/NAME` in its comment).
# The test command (a block running `--project tests`) is left to .ci/run, which runs it first.
# Usage: .ci/readme-snippets.sh [README.md]
set -euo pipefail
readme=${1:-README.md}
work=$(mktemp -d)
trap 'rm -rf "$work"; rm -f ./.readme-snippet.fsx' EXIT

# Split the README into numbered snippet files: NNN.sh, NNN.fsx or NNN.cs.
awk -v dir="$work" '
  /^```bash$/   { n++; file = sprintf("%s/%03d.sh", dir, n); next }
  /^```fsharp$/ { n++; file = sprintf("%s/%03d.fsx", dir, n); next }
  /^```csharp$/ { n++; file = sprintf("%s/%03d.cs", dir, n); next }
  /^```/        { file = ""; next }
  file != ""    { print > file }
' "$readme"

for snippet in "$work"/*; do
  case "$snippet" in *.out) continue ;; esac
  if grep -q -- '--project tests ' "$snippet"; then continue; fi
  echo "::: README snippet $(basename "$snippet"):"
  sed 's/^/    /' "$snippet"
  case "$snippet" in
    *.sh)  bash -euo pipefail "$snippet" 2>&1 | tee "$snippet.out" ;;
    # an .fsx resolves #r paths from its own folder: run it from the repository root
    *.fsx) cp "$snippet" ./.readme-snippet.fsx
           dotnet fsi --quiet ./.readme-snippet.fsx 2>&1 | tee "$snippet.out" ;;
    *.cs)  sample=$(grep -o -m1 -E -- '--project samples/[A-Za-z0-9_.-]+' "$snippet" | cut -d/ -f2 || true)
           [ -n "$sample" ] || { echo "a README C# snippet names no sample (--project samples/NAME)"; exit 1; }
           diff -u "samples/$sample/Program.cs" "$snippet" ||
             { echo "README's C# snippet differs from samples/$sample/Program.cs"; exit 1; }
           touch "$snippet.out" ;;
  esac
  # The README promises the book's accuracy from `train` with defaults and from the sample.
  if grep -q -E -- '(-- train|CSharpQuickstart)$' "$snippet"; then
    acc=$(grep -o -E 'test acc [0-9.]+' "$snippet.out" | tail -1 | awk '{print $3}')
    awk -v a="$acc" 'BEGIN { if (a + 0 < 0.965) { print "the book recipe reached test acc " a " < 0.965"; exit 1 } }'
    echo "::: the book's recipe reached test acc $acc (>= 0.965)"
  fi
done
