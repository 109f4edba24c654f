#!/usr/bin/env python3
# Usage: /usr/bin/python3 bench/accuracy_table.py DIR [DIR ...]
# Summarizes the runs bench/accuracy.sh left in DIR (logs named SIDE.VARIANT.SEED.log, SIDE ours,
# ours-f64 or book, VARIANT plain or batchnorm): each run's final test accuracy (the last "test
# acc" its log prints, after step 12,000) and its best epoch; per side and variant the mean, the
# standard deviation, the range and how many runs reach 0.98; and per variant each of our sides
# against the book's: the difference of the means, its standard error and Welch's t with its
# two-sided p (Student's t, Welch-Satterthwaite degrees of freedom). Markdown on stdout.
import glob, math, os, re, statistics, sys

runs = {}  # (side, variant) -> {seed: (final, best, best_epoch, epochs)}
for d in sys.argv[1:]:
    for path in sorted(glob.glob(os.path.join(d, '*.log'))):
        m = re.fullmatch(r'(ours|ours-f64|book)\.(plain|batchnorm)\.(\d+)\.log', os.path.basename(path))
        if not m:
            continue
        text = open(path).read()
        epochs = [(int(e), float(a)) for e, a in re.findall(r'^epoch (\d+)\s.*?test acc ([0-9.]+)', text, re.M)]
        finals = re.findall(r'test acc ([0-9.]+)', text)
        if len(epochs) < 20 or not finals:
            print(f'skipped {path}: {len(epochs)} epochs, unfinished or failed', file=sys.stderr)
            continue
        best_epoch, best = max(epochs, key=lambda ea: (ea[1], -ea[0]))
        runs.setdefault((m[1], m[2]), {})[int(m[3])] = (float(finals[-1]), best, best_epoch, [a for _, a in epochs])

if not runs:
    sys.exit('accuracy_table.py: no finished runs found in ' + ' '.join(sys.argv[1:]))

cols = sorted(runs, key=lambda k: (k[1], ['ours', 'ours-f64', 'book'].index(k[0])))
label = lambda k: f"{k[0]} {k[1]}"
seeds = sorted({s for k in cols for s in runs[k]})
print('Final test accuracy after 12,000 steps (best epoch in brackets).\n')
print('| seed | ' + ' | '.join(label(k) for k in cols) + ' |')
print('| --- |' + ' --- |' * len(cols))
for s in seeds:
    cells = [f'{runs[k][s][0]:.4f} ({runs[k][s][1]:.4f})' if s in runs[k] else '' for k in cols]
    print(f'| {s} | ' + ' | '.join(cells) + ' |')

def stats(k):
    finals = [r[0] for r in runs[k].values()]
    n = len(finals)
    sd = statistics.stdev(finals) if n > 1 else float('nan')
    last5 = statistics.mean(a for r in runs[k].values() for a in r[3][15:20])
    return n, statistics.mean(finals), sd, min(finals), max(finals), sum(f >= 0.98 for f in finals), sum(r[1] >= 0.98 for r in runs[k].values()), last5

print('\n| side, variant | runs | mean | sd | min | max | final >= 0.98 | best epoch >= 0.98 | mean of epochs 16-20 |')
print('| --- | --- | --- | --- | --- | --- | --- | --- | --- |')
for k in cols:
    n, mean, sd, lo, hi, ge, best_ge, last5 = stats(k)
    print(f'| {label(k)} | {n} | {mean:.4f} | {sd:.4f} | {lo:.4f} | {hi:.4f} | {ge}/{n} | {best_ge}/{n} | {last5:.4f} |')

def t_sf2(t, df):
    """Two-sided p of Student's t with df degrees of freedom: 1 - 2 * integral of its density from 0 to |t| (Simpson)."""
    c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)
    f = lambda x: c * (1 + x * x / df) ** (-(df + 1) / 2)
    steps, a = 4000, abs(t)
    h = a / steps
    s = f(0) + f(a) + sum((4 if i % 2 else 2) * f(i * h) for i in range(1, steps))
    return max(0.0, 1 - 2 * s * h / 3)

rows = []
for v in ('plain', 'batchnorm'):
    b = ('book', v)
    for side in ('ours', 'ours-f64'):
        k = (side, v)
        if k not in runs or b not in runs or len(runs[k]) < 2 or len(runs[b]) < 2:
            continue
        n1, m1, s1, *_ = stats(k)
        n2, m2, s2, *_ = stats(b)
        se = math.sqrt(s1 * s1 / n1 + s2 * s2 / n2)
        t = (m1 - m2) / se
        df = (s1 * s1 / n1 + s2 * s2 / n2) ** 2 / ((s1 * s1 / n1) ** 2 / (n1 - 1) + (s2 * s2 / n2) ** 2 / (n2 - 1))
        rows.append(f'| {label(k)} - book {v} | {m1 - m2:+.4f} | {se:.4f} | {t:+.2f} | {df:.1f} | {t_sf2(t, df):.3f} |')
if rows:
    print('\n| difference of means | ours - book | standard error | Welch t | df | two-sided p |')
    print('| --- | --- | --- | --- | --- | --- |')
    print('\n'.join(rows))
