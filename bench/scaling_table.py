#!/usr/bin/env python3
"""The table of `bench/run.sh --scaling`, from the raw files of its results folder: for each row,
the median wall times of numpy, PyTorch on one and on two threads, and `backprop train`, the
paired ratio of train to the fastest peer (the median over rounds of each round's own ratio), the
row's floor (its matrix products' operations over the two-core GEMM rate) and train's ratio to
it, train's peak RSS and its final test accuracy. Writes scaling.md and scaling.csv into the
folder and prints the Markdown.

Usage: scaling_table.py OUT ITERS ROUNDS "sgemm_gflops=X dgemm_gflops=Y ..." (run.sh calls it)"""
import csv, math, os, re, statistics, sys

TRAIN_SIZE, TEST_SIZE, INPUTS, CLASSES = 60000, 10000, 784, 10
out, iters, rounds, rate_line = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
rates = {k: float(v) for k, v in re.findall(r'([sd]gemm)_gflops=([0-9.]+)', rate_line)}
KINDS = ('numpy', 'torch1', 'torch2', 'train')


def floor_flops(sizes, batch):
    """Per step: x·W and xᵀ·dout for every layer, dout·Wᵀ for all but the first; then, once an
    epoch and after the last step (as train evaluates), the whole training and test sets'
    forward products."""
    products = [a * b for a, b in zip(sizes[:-1], sizes[1:])]
    step = 2 * batch * (2 * sum(products) + sum(products[1:]))
    evaluations = math.ceil(iters / max(TRAIN_SIZE // batch, 1))
    return iters * step + evaluations * 2 * (TRAIN_SIZE + TEST_SIZE) * sum(products)


def run(row, kind, r):
    """(wall s, peak RSS MB, test acc) of one run, or None if it failed."""
    base = f'{out}/{row}.{kind}.{r}'
    if open(base + '.status').read().strip() != '0':
        return None
    wall, rss = open(base + '.time').read().split()[-2:]
    acc = re.findall(r'test[_ ]acc[= ]([0-9.]+)', open(base + '.log').read())
    return float(wall), int(rss) / 1024, float(acc[-1]) if acc else None


def fmt(x, digits=2, suffix=''):
    return 'fail' if x is None else f'{x:.{digits}f}{suffix}'


table = []
for line in open(f'{out}/rows.txt').read().split('\n'):
    if not line:
        continue
    row, hidden, batch, dtype = line.split('|')
    hidden, batch = [int(h) for h in hidden.split()], int(batch)
    # This row's rounds: those run.sh ran (by default the short rows run three).
    row_rounds = max([1] + [r for r in range(2, 100) if os.path.exists(f'{out}/{row}.train.{r}.status')])
    runs = {k: [run(row, k, r) for r in range(1, row_rounds + 1)] for k in KINDS}
    med = {k: statistics.median(x[0] for x in v if x) if any(v) else None for k, v in runs.items()}
    ratios = []
    for r in range(row_rounds):
        peers = [runs[k][r][0] for k in KINDS[:3] if runs[k][r]]
        if runs['train'][r] and peers:
            ratios.append(runs['train'][r][0] / min(peers))
    flops = floor_flops([INPUTS] + hidden + [CLASSES], batch)
    floor_s = flops / (rates['dgemm' if dtype == 'float64' else 'sgemm'] * 1e9)
    trains = [x for x in runs['train'] if x]
    fastest = min((med[k] for k in KINDS[:3] if med[k]), default=None)  # the fastest peer's median time
    table.append(dict(
        row=row, hidden=' '.join(map(str, hidden)), depth=len(hidden) + 1, batch=batch, dtype=dtype, rounds=row_rounds,
        numpy_s=med['numpy'], torch1_s=med['torch1'], torch2_s=med['torch2'], train_s=med['train'],
        train_over_fastest_peer=statistics.median(ratios) if ratios else None,
        floor_s=floor_s, train_over_floor=med['train'] / floor_s if med['train'] else None,
        peer_gflops=flops / 1e9 / fastest if fastest else None,
        target_over_floor=0.5 * fastest / floor_s if fastest else None,
        train_rss_mb=max(x[1] for x in trains) if trains else None,
        train_test_acc=trains[-1][2] if trains else None, floor_gflop=flops / 1e9))

head = ['row', 'hidden', 'depth', 'batch', 'dtype', 'rounds', 'numpy s', 'torch 1t s', 'torch 2t s', 'train s',
        'train/fastest peer', 'floor s', 'train/floor', 'fastest peer GFLOP/s', '0.5x peer / floor',
        'train peak RSS MB', 'train test acc']
md = [f'# backprop train scaling: {iters} iterations', '', '```',
      open(f'{out}/machine.txt').read().rstrip(), '```', '',
      '| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
for t in table:
    hidden = t['hidden'].split()
    md.append('| ' + ' | '.join([
        t['row'], hidden[0] if len(set(hidden)) == 1 else '-'.join(hidden), str(t['depth']),
        str(t['batch']), t['dtype'], str(t['rounds']), fmt(t['numpy_s']), fmt(t['torch1_s']), fmt(t['torch2_s']),
        fmt(t['train_s']), fmt(t['train_over_fastest_peer'], 3, 'x'), fmt(t['floor_s'], 3),
        fmt(t['train_over_floor'], 2, 'x'), fmt(t['peer_gflops'], 0), fmt(t['target_over_floor'], 2, 'x'),
        fmt(t['train_rss_mb'], 0), fmt(t['train_test_acc'], 4)]) + ' |')
md.append('')
md.append('Times are whole-process wall seconds (medians over the row\'s rounds; train/fastest peer is the median of each round\'s own ratio); depth counts the Affine layers; '
          'the floor is the row\'s matrix-product operations over the 2-thread GEMM rate above; '
          '"fastest peer GFLOP/s" is those operations over the fastest peer\'s whole-process time (its start included), '
          'and "0.5x peer / floor" is half that time over the floor: below 1x, the issue\'s target of 0.5x the fastest '
          'peer lies below the dense arithmetic floor, and only the operations train skips (the zero pixels of the '
          'first layer) can reach it.')
text = '\n'.join(md) + '\n'
open(f'{out}/scaling.md', 'w').write(text)
with open(f'{out}/scaling.csv', 'w', newline='') as f:
    w = csv.DictWriter(f, fieldnames=list(table[0]) if table else ['row'])
    w.writeheader()
    for t in table:
        w.writerow({k: ('' if v is None else round(v, 4) if isinstance(v, float) else v) for k, v in t.items()})
print(text, end='')
