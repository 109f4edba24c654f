#!/usr/bin/env bash
# Issue 13's accuracy recipe over seeds, on both sides: `backprop train --hidden 100 100
# --weight-init he --optimizer adam --lr 0.001 --epochs 20 --seed N [--batchnorm]
# [--precision double]` against the book's own code unchanged (bench/book_trainer.py:
# MultiLayerNetExtend and Trainer after np.random.seed(N)). Each run's final test accuracy (after
# step 12,000) and best epoch go to a table; bench/accuracy_table.py then compares the sides'
# means over seeds (Welch's t), which is the check that can fail only for a real difference: one
# run's third decimal is its draw's (docs/CHAPTER6-ACCURACY.md).
#
# Usage: bench/accuracy.sh BOOK_DIR [--seeds A-B] [--sides ours,ours-f64,book]
#                          [--variants plain,batchnorm] [--jobs N]
#   BOOK_DIR   a checkout of github.com/oreilly-japan/deep-learning-from-scratch
#   --seeds    the seeds, a range A-B or a list A,B,C (default 1-10)
#   --sides    ours (float32, the default precision), ours-f64 (--precision double), book
#              (default: ours,book)
#   --variants plain (no BatchNorm), batchnorm (default: both)
#   --jobs     runs at once (default 2; the book's numpy runs use one BLAS thread each)
# Writes bench/results/accuracy-<timestamp>/ (each run's command and log, results.csv) and prints
# the summary. A book run takes about a CPU minute, one of ours about 20 CPU seconds.
# Needs: the .NET SDK, python3-numpy (installed when missing, as root).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: bench/accuracy.sh BOOK_DIR [--seeds A-B] [--sides ours,ours-f64,book] [--variants plain,batchnorm] [--jobs N]" >&2; exit 2; }
book=$(cd "$1" 2>/dev/null && pwd) || { echo "bench/accuracy.sh: BOOK_DIR $1 is not a directory" >&2; exit 2; }
# (the runs' command lines are split on spaces, so the paths must have none)
case "$book$PWD" in *[[:space:]]*) echo "bench/accuracy.sh: BOOK_DIR $book or the checkout $PWD has a space in its path; move it to one without" >&2; exit 2 ;; esac
[ -f "$book/common/multi_layer_net_extend.py" ] || { echo "bench/accuracy.sh: $1 has no common/multi_layer_net_extend.py (not the book's repository)" >&2; exit 2; }
shift
seeds=1-10 sides=ours,book variants=plain,batchnorm jobs=2
while [ $# -gt 0 ]; do
  case "$1" in
    --seeds) seeds=$2; shift 2 ;;
    --sides) sides=$2; shift 2 ;;
    --variants) variants=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    *) echo "bench/accuracy.sh: unknown option $1 (use --seeds, --sides, --variants, --jobs)" >&2; exit 2 ;;
  esac
done
if [[ $seeds =~ ^([0-9]+)-([0-9]+)$ ]]; then
  seed_list=$(seq "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}")
elif [[ $seeds =~ ^[0-9]+(,[0-9]+)*$ ]]; then
  seed_list=${seeds//,/ }
else
  echo "bench/accuracy.sh: --seeds $seeds is neither A-B nor A,B,C" >&2; exit 2
fi
[[ $jobs =~ ^[1-9][0-9]?$ ]] || { echo "bench/accuracy.sh: --jobs $jobs is not a number from 1 to 99" >&2; exit 2; }
IFS=, read -r -a side_list <<<"$sides"
IFS=, read -r -a variant_list <<<"$variants"
for s in "${side_list[@]}"; do
  case "$s" in ours|ours-f64|book) ;; *) echo "bench/accuracy.sh: unknown side $s (ours, ours-f64, book)" >&2; exit 2 ;; esac
done
for v in "${variant_list[@]}"; do
  case "$v" in plain|batchnorm) ;; *) echo "bench/accuracy.sh: unknown variant $v (plain, batchnorm)" >&2; exit 2 ;; esac
done

py=/usr/bin/python3
$py -c 'import numpy' 2>/dev/null || { apt-get update -qq && apt-get install -y -qq python3-numpy >/dev/null; }
out=bench/results/accuracy-$(date +%Y%m%d-%H%M%S)
mkdir -p "$out"
rid=linux-$(uname -m | sed -e 's/x86_64/x64/' -e 's/aarch64/arm64/')
dotnet publish src/Cli/Cli.fsproj -c Release -r "$rid" --self-contained false -p:PublishReadyToRun=true -o "$out/cli" -v q -nologo >/dev/null
echo "commit $(git rev-parse --short HEAD), book $(git -C "$book" rev-parse --short HEAD 2>/dev/null || echo '?'), seeds $seeds, sides $sides, variants $variants, jobs $jobs" | tee "$out/info.txt"

# One line per run: name and command; xargs runs them $jobs at a time.
recipe="train --hidden 100 100 --weight-init he --optimizer adam --lr 0.001 --epochs 20"
: >"$out/runs.txt"
for seed in $seed_list; do
  for v in "${variant_list[@]}"; do
    bn=''; [ "$v" = batchnorm ] && bn=' --batchnorm'
    for s in "${side_list[@]}"; do
      case "$s" in
        ours) cmd="$out/cli/Backprop.Cli $recipe --seed $seed$bn" ;;
        ours-f64) cmd="$out/cli/Backprop.Cli $recipe --seed $seed$bn --precision double" ;;
        book) cmd="env OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 $py bench/book_trainer.py $book $seed$bn" ;;
      esac
      echo "$s.$v.$seed $cmd" >>"$out/runs.txt"
    done
  done
done
export out
# shellcheck disable=SC2016
xargs -P "$jobs" -L 1 bash -c 'name=$0; echo "$*" >"$out/$name.cmd"
  status=0; "$@" >"$out/$name.log" 2>&1 </dev/null || status=$?
  echo "$name: exit $status, $(grep -E "test acc" "$out/$name.log" | tail -1)"' <"$out/runs.txt"
$py bench/accuracy_table.py "$out" | tee "$out/summary.md"
