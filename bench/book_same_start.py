#!/usr/bin/env python3
# Usage: /usr/bin/python3 bench/book_same_start.py BOOK_DIR SEED INIT.npz [MNIST_DIR]
# Both sides from one start: draws the book's He initial weights for 784-100-100-10 after
# np.random.seed(SEED) (common/multi_layer_net.py's MultiLayerNet), writes them to INIT.npz
# (W1, b1, ..., b3, float64) for `backprop train --init-from INIT.npz`, then trains that
# network with the book's Adam (common/optimizer.py, lr 0.001) on sequential batches (step k
# takes images 100k .. 100k+99, wrapping; what `--sampling sequential` draws) for 20 epochs of
# 600 steps, printing the test accuracy after each. The same run on our side:
#   backprop train --init-from INIT.npz --sampling sequential --optimizer adam --lr 0.001
#                  --epochs 20 --precision double
# With --compare K MODEL.npz (a model that run saved after K steps: `--iters K --save MODEL.npz`)
# it prints, after step K, each parameter's largest difference from MODEL.npz's, and stops.
# BOOK_DIR is a checkout of github.com/oreilly-japan/deep-learning-from-scratch.
import gzip, sys
import numpy as np
args = sys.argv[1:]
compare = None
if '--compare' in args:
    i = args.index('--compare'); compare = (int(args[i + 1]), args[i + 2]); del args[i:i + 3]
book, seed, init = args[0], int(args[1]), args[2]
d = args[3] if len(args) > 3 else 'data/mnist'
sys.path.insert(0, book)
from common.multi_layer_net import MultiLayerNet
from common.optimizer import Adam
def imgs(f): return np.frombuffer(gzip.open(f'{d}/{f}').read(), np.uint8, offset=16).reshape(-1, 784).astype(np.float32) / 255.0
def labs(f): return np.frombuffer(gzip.open(f'{d}/{f}').read(), np.uint8, offset=8).astype(np.int64)
xtr, ttr, xte, tte = imgs('train-images-idx3-ubyte.gz'), labs('train-labels-idx1-ubyte.gz'), imgs('t10k-images-idx3-ubyte.gz'), labs('t10k-labels-idx1-ubyte.gz')
np.random.seed(seed)
net = MultiLayerNet(input_size=784, hidden_size_list=[100, 100], output_size=10, weight_init_std='he')
np.savez(init, **net.params)
opt = Adam(lr=0.001)
for k in range(12000):
    idx = (k * 100 + np.arange(100)) % 60000
    opt.update(net.params, net.gradient(xtr[idx], ttr[idx]))
    if compare and k + 1 == compare[0]:
        theirs = np.load(compare[1])
        for key, v in net.params.items():
            print(f'step {k + 1} {key}: max |book - model| {np.abs(v - theirs[key]).max():.3g} (max |book| {np.abs(v).max():.3g})', flush=True)
        sys.exit(0)
    if k % 600 == 599:
        print(f'epoch {(k + 1) // 600} iter {k + 1} test acc {net.accuracy(xte, tte):.4f}', flush=True)
print(f'test acc {net.accuracy(xte, tte):.4f}', flush=True)
