#!/usr/bin/env python3
# Usage: /usr/bin/python3 bench/book_adam.py SEED [MNIST_DIR]  (numpy; about 1 CPU minute)
# The book's MultiLayerNet (784-100-100-10, ReLU, He init) with its Adam (lr 0.001), batch 100
# drawn with np.random.choice, 20 epochs of 600 steps: test accuracy after each epoch.
import gzip, sys
import numpy as np
seed = int(sys.argv[1]); np.random.seed(seed)
d = sys.argv[2] if len(sys.argv) > 2 else 'data/mnist'
def imgs(f): return np.frombuffer(gzip.open(f'{d}/{f}').read(), np.uint8, offset=16).reshape(-1, 784).astype(np.float32) / 255.0
def labs(f): return np.frombuffer(gzip.open(f'{d}/{f}').read(), np.uint8, offset=8).astype(np.int64)
xtr, ttr, xte, tte = imgs('train-images-idx3-ubyte.gz'), labs('train-labels-idx1-ubyte.gz'), imgs('t10k-images-idx3-ubyte.gz'), labs('t10k-labels-idx1-ubyte.gz')
sizes = [784, 100, 100, 10]
p = {}
for i in range(3):
    p[f'W{i+1}'] = np.sqrt(2.0 / sizes[i]) * np.random.randn(sizes[i], sizes[i+1])
    p[f'b{i+1}'] = np.zeros(sizes[i+1])
m = {k: np.zeros_like(v) for k, v in p.items()}; v = {k: np.zeros_like(x) for k, x in p.items()}
lr, b1, b2 = 0.001, 0.9, 0.999
def forward(x):
    a1 = x @ p['W1'] + p['b1']; z1 = np.maximum(a1, 0)
    a2 = z1 @ p['W2'] + p['b2']; z2 = np.maximum(a2, 0)
    return a1, z1, a2, z2, z2 @ p['W3'] + p['b3']
for it in range(1, 12001):
    idx = np.random.choice(60000, 100)
    x, t = xtr[idx], ttr[idx]
    a1, z1, a2, z2, s = forward(x)
    s = s - s.max(axis=1, keepdims=True); y = np.exp(s); y /= y.sum(axis=1, keepdims=True)
    dout = y.copy(); dout[np.arange(100), t] -= 1; dout /= 100
    g = {'W3': z2.T @ dout, 'b3': dout.sum(0)}
    dz2 = dout @ p['W3'].T; dz2[a2 <= 0] = 0
    g['W2'] = z1.T @ dz2; g['b2'] = dz2.sum(0)
    dz1 = dz2 @ p['W2'].T; dz1[a1 <= 0] = 0
    g['W1'] = x.T @ dz1; g['b1'] = dz1.sum(0)
    lr_t = lr * np.sqrt(1.0 - b2**it) / (1.0 - b1**it)
    for k in p:
        m[k] += (1 - b1) * (g[k] - m[k]); v[k] += (1 - b2) * (g[k]**2 - v[k])
        p[k] -= lr_t * m[k] / (np.sqrt(v[k]) + 1e-7)
    if it % 600 == 0:
        acc = (forward(xte)[4].argmax(1) == tte).mean()
        print(f'epoch {it // 600} test acc {acc:.4f}', flush=True)
