#!/usr/bin/env python3
# Usage: /usr/bin/python3 bench/book_trainer.py BOOK_DIR SEED [--batchnorm] [MNIST_DIR]
# The book's own chapter 6 code, unchanged: common/multi_layer_net_extend.py's MultiLayerNetExtend
# (784-100-100-10, ReLU, weight_init_std='he', use_batchnorm as given) trained by
# common/trainer.py's Trainer (epochs 20, mini_batch_size 100, optimizer 'adam', lr 0.001: batches
# drawn with np.random.choice, 20 * 60000 / 100 = 12,000 steps), after np.random.seed(SEED).
# BOOK_DIR is a checkout of github.com/oreilly-japan/deep-learning-from-scratch (its common/
# folder is imported from there); the data come from MNIST_DIR (default data/mnist) read as the
# book's load_mnist(normalize=True) gives them: float32 pixels / 255, integer labels.
# Prints the Trainer's per-epoch lines and its final "test acc" line (numpy, about 1 CPU minute).
import gzip, sys
import numpy as np
args = [a for a in sys.argv[1:] if not a.startswith('--')]
book, seed = args[0], int(args[1])
d = args[2] if len(args) > 2 else 'data/mnist'
sys.path.insert(0, book)
from common.multi_layer_net_extend import MultiLayerNetExtend
from common.trainer import Trainer
def imgs(f): return np.frombuffer(gzip.open(f'{d}/{f}').read(), np.uint8, offset=16).reshape(-1, 784).astype(np.float32) / 255.0
def labs(f): return np.frombuffer(gzip.open(f'{d}/{f}').read(), np.uint8, offset=8).astype(np.int64)
xtr, ttr, xte, tte = imgs('train-images-idx3-ubyte.gz'), labs('train-labels-idx1-ubyte.gz'), imgs('t10k-images-idx3-ubyte.gz'), labs('t10k-labels-idx1-ubyte.gz')
np.random.seed(seed)
net = MultiLayerNetExtend(input_size=784, hidden_size_list=[100, 100], output_size=10,
                          weight_init_std='he', use_batchnorm='--batchnorm' in sys.argv)
trainer = Trainer(net, xtr, ttr, xte, tte, epochs=20, mini_batch_size=100,
                  optimizer='adam', optimizer_param={'lr': 0.001}, verbose=False)
for i in range(trainer.max_iter):
    trainer.train_step()
    if i % 600 == 599:
        print(f'epoch {(i + 1) // 600} iter {i + 1} test acc {net.accuracy(xte, tte):.4f}', flush=True)
print(f'test acc {net.accuracy(xte, tte):.4f}', flush=True)
