#!/usr/bin/env python3
"""Time against hidden size for the float32 784-H-10 rows (batch 100) of a scaling.csv from
`bench/run.sh --scaling`: numpy, PyTorch (the faster of 1 and 2 threads), train and the floor,
log-log, as a hand-written SVG (no matplotlib needed).

Usage: plot_scaling.py scaling.csv [out.svg]   (default: scaling.svg next to the CSV)"""
import csv, math, os, sys

src = sys.argv[1]
dst = sys.argv[2] if len(sys.argv) > 2 else os.path.join(os.path.dirname(src), 'scaling.svg')
rows = [r for r in csv.DictReader(open(src))
        if r['dtype'] == 'float32' and r['depth'] == '2' and r['batch'] == '100']
rows.sort(key=lambda r: int(r['hidden']))
if len(rows) < 2:
    sys.exit(f'plot_scaling.py: fewer than two float32 784-H-10 rows in {src}, no plot')


def value(r, *keys):  # the smallest of the named columns that ran, or None
    got = [float(r[k]) for k in keys if r[k]]
    return min(got) if got else None


series = [('numpy', '#1f77b4', ('numpy_s',)), ('torch', '#ff7f0e', ('torch1_s', 'torch2_s')),
          ('train', '#2ca02c', ('train_s',)), ('floor', '#7f7f7f', ('floor_s',))]
xs = [int(r['hidden']) for r in rows]
ys = {name: [value(r, *keys) for r in rows] for name, _, keys in series}
every = [y for v in ys.values() for y in v if y]
lx0, lx1 = math.log10(min(xs)), math.log10(max(xs))
ly0, ly1 = math.floor(math.log10(min(every))), math.ceil(math.log10(max(every)))
W, H, L, R, T, B = 640, 420, 70, 110, 30, 50


def px(x):
    return L + (math.log10(x) - lx0) / (lx1 - lx0) * (W - L - R)


def py(y):
    return H - B - (math.log10(y) - ly0) / max(ly1 - ly0, 1) * (H - T - B)


svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
       f'<rect width="{W}" height="{H}" fill="white"/>',
       f'<text x="{W / 2}" y="18" text-anchor="middle">wall time vs hidden size, 784-H-10 float32, batch 100</text>']
for e in range(ly0, ly1 + 1):
    y = py(10 ** e)
    svg.append(f'<line x1="{L}" y1="{y:.1f}" x2="{W - R}" y2="{y:.1f}" stroke="#ddd"/>')
    svg.append(f'<text x="{L - 6}" y="{y + 4:.1f}" text-anchor="end">{10.0 ** e:g} s</text>')
for x in xs:
    svg.append(f'<line x1="{px(x):.1f}" y1="{T}" x2="{px(x):.1f}" y2="{H - B}" stroke="#ddd"/>')
    svg.append(f'<text x="{px(x):.1f}" y="{H - B + 16}" text-anchor="middle">{x}</text>')
svg.append(f'<text x="{(L + W - R) / 2}" y="{H - 12}" text-anchor="middle">hidden size H (log)</text>')
for i, (name, color, _) in enumerate(series):
    pts = [(px(x), py(y)) for x, y in zip(xs, ys[name]) if y]
    dash = ' stroke-dasharray="5,4"' if name == 'floor' else ''
    svg.append(f'<polyline fill="none" stroke="{color}" stroke-width="2"{dash} points="'
               + ' '.join(f'{a:.1f},{b:.1f}' for a, b in pts) + '"/>')
    svg += [f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3" fill="{color}"/>' for a, b in pts]
    svg.append(f'<line x1="{W - R + 12}" y1="{T + 10 + 18 * i}" x2="{W - R + 34}" y2="{T + 10 + 18 * i}" stroke="{color}" stroke-width="2"{dash}/>')
    svg.append(f'<text x="{W - R + 40}" y="{T + 14 + 18 * i}">{name}</text>')
svg.append('</svg>')
open(dst, 'w').write('\n'.join(svg) + '\n')
print(f'plot: {dst}', file=sys.stderr)
