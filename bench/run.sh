#!/usr/bin/env bash
# Whole-process benchmark of `backprop train` (the book's recipe) against its peers, run one
# after another on this machine for several rounds: the book's code on numpy (float32 and
# float64), PyTorch (float32, one thread), and the floor (the recipe's matrix products alone on
# OpenBLAS with one thread). Prints each one's median wall time, its ratio to the fastest peer,
# its final test accuracy and its peak resident memory; raw figures go to bench/results/.
#
# --scaling: instead, for each row of a table of network sizes (wider, float64, deeper, larger
# batches), `backprop train` with its default settings against the book's code on numpy and
# PyTorch with one and with two threads, and the row's floor (its matrix products' operations
# over this machine's two-core GEMM rate); a Markdown table and a CSV (see bench/README.md).
#
# --ch06: instead, the chapter 6 rows of issue 13: `compare optimizers`' Adam run (784-100x4-10,
# He, Adam lr 0.001, batch 128, 2000 iterations, float32) as `backprop train`, and its BatchNorm +
# Dropout (0.5) variant, each against the same network and recipe in PyTorch with one and with two
# threads (bench/peers/torch_ch06.py); the ratio to the faster PyTorch run and the peak RSS.
#
# Usage: bench/run.sh [--rounds N] [--iters N]
#        bench/run.sh --scaling [--rows NAME,NAME,...] [--rounds N] [--iters N]
#        bench/run.sh --ch06 [--rounds N] [--iters N]
# Needs: the .NET SDK; python3-numpy python3-torch libopenblas0-pthread libopenblas-dev time
# (Debian), run as root: bench/run.sh installs them when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
scaling=0 ch06=0 rounds='' iters='' rows=''
while [ $# -gt 0 ]; do
  case "$1" in
    --scaling) scaling=1; shift ;;
    --ch06) ch06=1; shift ;;
    --rounds) rounds=$2; shift 2 ;;
    --iters) iters=$2; shift 2 ;;
    --rows) rows=$2; shift 2 ;;
    *) echo "bench/run.sh: unknown option $1 (use --rounds N, --iters N, --scaling, --rows NAMES, --ch06)" >&2; exit 2 ;;
  esac
done

# The scaling table: name -> hidden sizes | batch | dtype (784-H...-10, ReLU, 10 classes).
declare -A row_spec=(
  [h50]="50|100|float32" [h300]="300|100|float32" [h1000]="1000|100|float32" [h2000]="2000|100|float32"
  [h50-f64]="50|100|float64" [h300-f64]="300|100|float64" [h1000-f64]="1000|100|float64" [h2000-f64]="2000|100|float64"
  [d5-h100]="100 100 100 100|100|float32" [d5-h1000]="1000 1000 1000 1000|100|float32"
  [b1000-h300]="300|1000|float32" [b1000-h1000]="1000|1000|float32"
)
all_rows=(h50 h300 h1000 h2000 h50-f64 h300-f64 h1000-f64 h2000-f64 d5-h100 d5-h1000 b1000-h300 b1000-h1000)
# The rows whose runs take seconds (the fastest peer 2-9 s, train 1-3 s), where one slow second of
# this kind of machine moves the ratio by a fifth: by default they run three rounds (interleaved
# with the others' one) and the table takes each one's medians; --rounds N gives every row N.
short_rows=(h50 h300 h50-f64 d5-h100)
[ "$scaling" = 1 ] && [ "$ch06" = 1 ] && { echo "bench/run.sh: --scaling and --ch06 are separate modes" >&2; exit 2; }
if [ "$ch06" = 1 ]; then
  [ -z "$rows" ] || { echo "bench/run.sh: --rows goes with --scaling" >&2; exit 2; }
  rounds=${rounds:-3} iters=${iters:-2000}
elif [ "$scaling" = 1 ]; then
  rounds_given=${rounds:+1}
  rounds=${rounds:-1} iters=${iters:-2000}
  if [ -z "$rows" ] || [ "$rows" = all ]; then
    selected=("${all_rows[@]}")
  else
    IFS=, read -r -a selected <<<"$rows"
    for r in "${selected[@]}"; do
      [ -n "${row_spec[$r]+set}" ] || { echo "bench/run.sh: unknown row $r (rows: ${all_rows[*]})" >&2; exit 2; }
    done
  fi
else
  [ -z "$rows" ] || { echo "bench/run.sh: --rows goes with --scaling" >&2; exit 2; }
  rounds=${rounds:-3} iters=${iters:-10000}
fi

# The header and the library to link (-lopenblas), not dangling alternatives links.
exists_any() { for f in "$@"; do [ -e "$f" ] && return 0; done; return 1; }
have_cblas() { exists_any /usr/include/cblas.h /usr/include/*/cblas.h && exists_any /usr/lib/libopenblas.so /usr/lib/*/libopenblas.so; }
if ! /usr/bin/python3 -c 'import numpy, torch' 2>/dev/null || [ ! -x /usr/bin/time ] || ! have_cblas; then
  apt-get update -qq && apt-get install -y -qq python3-numpy python3-torch libopenblas0-pthread libopenblas-dev time >/dev/null
fi

mkdir -p bench/results
out=bench/results/$(date +%Y%m%d-%H%M%S)
mkdir -p "$out"
# train runs as a ReadyToRun build (precompiled, so the run does not start by JIT-compiling):
# what `dotnet publish -p:PublishReadyToRun=true` gives a user (see the README).
rid=linux-$(uname -m | sed -e 's/x86_64/x64/' -e 's/aarch64/arm64/')
dotnet publish src/Cli/Cli.fsproj -c Release -r "$rid" --self-contained false -p:PublishReadyToRun=true -o "$out/cli" -v q -nologo >/dev/null
py=/usr/bin/python3

machine_info() {
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"
  echo "simd: $(grep -o -w -E 'avx2|fma|avx512f|avx512bw|avx512vl' /proc/cpuinfo | sort -u | xargs)"
  echo "OPENBLAS_CORETYPE: ${OPENBLAS_CORETYPE-unset}"
  echo "numpy: $($py -c 'import numpy; print(numpy.__version__)'), torch: $($py -c 'import torch; print(torch.__version__)'), dotnet: $(dotnet --version)"
  $py -c 'import threadpoolctl, json; print("numpy blas:", json.dumps([{k: i[k] for k in ("internal_api", "version", "num_threads", "architecture") if k in i} for i in threadpoolctl.threadpool_info()]))' 2>/dev/null || true
}

if [ "$ch06" = 1 ]; then
  # The chapter 6 rows (issue 13). `train` takes the chapter 6 options of issue 13 (--weight-init,
  # --optimizer, --batchnorm, --dropout); the peer the same network and recipe in PyTorch.
  { machine_info; echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"; echo "iters: $iters, rounds: $rounds"; } | tee "$out/machine.txt"
  recipe="--hidden 100 100 100 100 --batch 128 --iters $iters"
  declare -A run=(
    [adam.train]="$out/cli/Backprop.Cli train $recipe --weight-init he --optimizer adam --lr 0.001"
    [adam.torch1]="$py bench/peers/torch_ch06.py $recipe --lr 0.001 --threads 1"
    [adam.torch2]="$py bench/peers/torch_ch06.py $recipe --lr 0.001 --threads 2"
    [adam-bn-dropout.train]="$out/cli/Backprop.Cli train $recipe --weight-init he --optimizer adam --lr 0.001 --batchnorm --dropout 0.5"
    [adam-bn-dropout.torch1]="$py bench/peers/torch_ch06.py $recipe --lr 0.001 --batchnorm --dropout 0.5 --threads 1"
    [adam-bn-dropout.torch2]="$py bench/peers/torch_ch06.py $recipe --lr 0.001 --batchnorm --dropout 0.5 --threads 2"
  )
  order=(adam.torch1 adam.torch2 adam.train adam-bn-dropout.torch1 adam-bn-dropout.torch2 adam-bn-dropout.train)
  for round in $(seq 1 "$rounds"); do
    for name in "${order[@]}"; do
      base="$out/$name.$round"
      echo "${run[$name]}" >"$base.cmd"
      # A failed run is recorded (exit status, log) and the rest go on.
      status=0
      /usr/bin/time -o "$base.time" -f '%e %M' ${run[$name]} >"$base.log" 2>&1 || status=$?
      echo "$status" >"$base.status"
      echo "round $round $name: $(tail -1 "$base.time") exit $status $(grep -o -E 'test[_ ]acc[= ][0-9.]+' "$base.log" | tail -1)"
    done
  done
  $py - "$out" "$rounds" <<'PY'
import re, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
def run(name, r):
    status = int(open(f'{out}/{name}.{r}.status').read())
    wall, rss = open(f'{out}/{name}.{r}.time').read().split()[-2:]
    found = re.findall(r'test[_ ]acc[= ]([0-9.]+)', open(f'{out}/{name}.{r}.log').read())
    return (float(wall), int(rss) / 1024, float(found[-1]) if found else None) if status == 0 else None
lines = [f"{'row':16} {'torch 1t s':>10} {'torch 2t s':>10} {'train s':>8} {'train/faster torch':>19} {'train peak RSS MB':>18} {'test acc train / torch':>23}"]
for row in ('adam', 'adam-bn-dropout'):
    t1, t2, tr, ratios, rss = [], [], [], [], []
    acc = ('-', '-')
    for r in range(1, rounds + 1):
        a, b, c = run(f'{row}.torch1', r), run(f'{row}.torch2', r), run(f'{row}.train', r)
        if a: t1.append(a[0])
        if b: t2.append(b[0])
        if c: tr.append(c[0]); rss.append(c[1])
        peers = [p[0] for p in (a, b) if p]
        if c and peers: ratios.append(c[0] / min(peers))  # the faster PyTorch run of the same round counts
        faster = min((p for p in (a, b) if p), key=lambda p: p[0]) if peers else None
        acc = (c[2] if c else '-', faster[2] if faster else '-')
    med = lambda xs: f'{statistics.median(xs):.2f}' if xs else 'fail'
    ratio = f"{statistics.median(ratios):.3f}x" if ratios else 'fail'
    lines.append(f"{row:16} {med(t1):>10} {med(t2):>10} {med(tr):>8} {ratio:>19} {(f'{max(rss):.0f}' if rss else 'fail'):>18} {f'{acc[0]} / {acc[1]}':>23}")
    if ratios: lines.append(f"  {row}: per-round ratios {', '.join(f'{x:.3f}' for x in ratios)}")
lines.append("issue 13 asks: train/faster torch <= 0.5x, peak RSS <= 250 MB")
print("\n".join(lines))
open(f'{out}/ch06.txt', 'w').write("\n".join(lines) + "\n")
PY
  echo "raw results: $out" >&2
  exit 0
fi

if [ "$scaling" = 1 ]; then
  # The floors' rate: a 2048^3 product on OpenBLAS with two threads, best of 3, once per run.
  cc -O2 -o "$out/gemm_rate" bench/floor/gemm_rate.c -lopenblas
  rate=$("$out/gemm_rate" 2048 2)
  # The load average says whether others were busy on the machine (then the rates are low).
  { machine_info; echo "gemm (2 threads, 2048^3, best of 3): $rate"; echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "iters: $iters, rounds: $rounds$([ -n "$rounds_given" ] || echo " (3 for ${short_rows[*]})")"; } >"$out/machine.txt"
  : >"$out/rows.txt"
  for r in "${selected[@]}"; do echo "$r|${row_spec[$r]}" >>"$out/rows.txt"; done
  # Each row's rounds: --rounds N if given, else 3 for the short rows and 1 for the others.
  declare -A row_rounds=()
  most=$rounds
  for r in "${selected[@]}"; do
    row_rounds[$r]=$rounds
    if [ -z "$rounds_given" ] && [[ " ${short_rows[*]} " == *" $r "* ]]; then row_rounds[$r]=3; most=3; fi
  done
  for round in $(seq 1 "$most"); do
    for r in "${selected[@]}"; do
      [ "$round" -le "${row_rounds[$r]}" ] || continue
      IFS='|' read -r hidden batch dtype <<<"${row_spec[$r]}"
      shape="--hidden $hidden --batch $batch --iters $iters"
      train="$out/cli/Backprop.Cli train $shape"
      [ "$dtype" = float64 ] && train+=" --precision double"
      declare -A run=(
        [numpy]="$py bench/peers/numpy_book.py $shape --dtype $dtype"
        [torch1]="$py bench/peers/torch_peer.py $shape --dtype $dtype --threads 1"
        [torch2]="$py bench/peers/torch_peer.py $shape --dtype $dtype --threads 2"
        [train]="$train"
      )
      for name in numpy torch1 torch2 train; do
        base="$out/$r.$name.$round"
        echo "${run[$name]}" >"$base.cmd"
        # A failed run (say, out of memory) is recorded and the table goes on.
        status=0
        /usr/bin/time -o "$base.time" -f '%e %M' ${run[$name]} >"$base.log" 2>&1 || status=$?
        echo "$status" >"$base.status"
        echo "round $round $r $name: $(tail -1 "$base.time") exit $status $(grep -o -E 'test[_ ]acc[= ][0-9.]+' "$base.log" | tail -1)" >&2
      done
    done
  done
  $py bench/scaling_table.py "$out" "$iters" "$rounds" "$rate"
  $py bench/plot_scaling.py "$out/scaling.csv" "$out/scaling.svg" || true
  echo "raw results: $out" >&2
  exit 0
fi

cc -O2 -o "$out/floor" bench/floor/floor.c -lopenblas
cli="$out/cli/Backprop.Cli train --iters $iters"
declare -A cmd=(
  [backprop-f32-openblas]="$cli --precision single --backend openblas"
  [backprop-f32-managed]="$cli --precision single --backend managed"
  [backprop-f64-openblas]="$cli --precision double --backend openblas"
  [backprop-f32-dense]="$cli --precision single --backend openblas --input-storage dense"
  [numpy-f32]="$py bench/peers/numpy_book.py --iters $iters --dtype float32"
  [numpy-f64]="$py bench/peers/numpy_book.py --iters $iters --dtype float64"
  [torch-f32-1thread]="$py bench/peers/torch_peer.py --iters $iters --dtype float32 --threads 1"
  [floor-f32]="$out/floor $iters"
  [floor-f64]="$out/floor $iters --double"
)
order=(backprop-f32-openblas backprop-f32-managed backprop-f64-openblas backprop-f32-dense numpy-f32 numpy-f64 torch-f32-1thread floor-f32 floor-f64)

machine_info | tee "$out/machine.txt"

for round in $(seq 1 "$rounds"); do
  for name in "${order[@]}"; do
    log="$out/$name.$round.log"
    /usr/bin/time -o "$out/$name.$round.time" -f '%e %M' ${cmd[$name]} >"$log" 2>&1
    echo "round $round $name: $(cat "$out/$name.$round.time") $(grep -o -E 'test[_ ]acc[= ][0-9.]+' "$log" | tail -1)"
  done
done

$py - "$out" "$rounds" "${order[@]}" <<'PY'
import re, statistics, sys
out, rounds, names = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
rows = {}
for n in names:
    walls, rss, acc, gc = [], [], None, '-'
    for r in range(1, rounds + 1):
        w, m = open(f'{out}/{n}.{r}.time').read().split()[-2:]
        walls.append(float(w)); rss.append(int(m) / 1024)
        log = open(f'{out}/{n}.{r}.log').read()
        found = re.findall(r'test[_ ]acc[= ]([0-9.]+)', log)
        acc = float(found[-1]) if found else None
        collections = re.findall(r'garbage collections ([0-9/]+) \(gen0/1/2\), paused ([0-9.]+)s', log)
        if collections: gc = f'{collections[-1][0]} ({collections[-1][1]} s)'
    rows[n] = (statistics.median(walls), max(rss), acc, gc)
peers = [n for n in names if n.startswith(('numpy', 'torch'))]
fastest = min(rows[n][0] for n in peers)
lines = [f"{'run':24} {'median s':>9} {'vs fastest peer':>16} {'test acc':>9} {'peak RSS MB':>12}  GCs gen0/1/2 (pause)"]
for n in names:
    w, m, a, g = rows[n]
    lines.append(f"{n:24} {w:9.2f} {w / fastest:15.2f}x {('%.4f' % a) if a else '-':>9} {m:12.0f}  {g}")
def wall(n, r): return float(open(f'{out}/{n}.{r}.time').read().split()[-2])
def paired(a, b):
    # the median over rounds of a's time over b's in the same round (b: a name, or 'peer' for
    # the fastest peer of that round), with the per-round ratios
    rs = [wall(a, r) / (min(wall(p, r) for p in peers) if b == 'peer' else wall(b, r)) for r in range(1, rounds + 1)]
    return f"{statistics.median(rs):.3f}x (rounds: {', '.join(f'{x:.3f}' for x in rs)})"
lines.append("paired ratios, the median of each round's own ratio:")
lines.append(f"backprop-f32-openblas / fastest peer: {paired('backprop-f32-openblas', 'peer')}")
lines.append(f"backprop-f64-openblas / numpy-f64: {paired('backprop-f64-openblas', 'numpy-f64')}")
lines.append(f"backprop-f32-managed / fastest peer: {paired('backprop-f32-managed', 'peer')}")
lines.append(f"backprop-f32-openblas / floor-f32: {paired('backprop-f32-openblas', 'floor-f32')}")
lines.append(f"backprop-f32-dense / fastest peer: {paired('backprop-f32-dense', 'peer')}")
lines.append(f"backprop-f32-dense / floor-f32: {paired('backprop-f32-dense', 'floor-f32')}")
print("\n".join(lines))
open(f'{out}/summary.txt', 'w').write("\n".join(lines) + "\n")
PY
echo "raw results: $out"
