#!/usr/bin/env python3
"""Peer: the book's network (chapter 5 of "Deep Learning from Scratch") on numpy, written the
way the book writes it: layer objects with forward/backward (common/layers.py), TwoLayerNet
(ch05/two_layer_net.py) generalized to any number of hidden layers the way the book's
MultiLayerNet (common/multi_layer_net.py) does, and the training loop of
ch05/train_neuralnet.py. By default the recipe: 784-50-10 ReLU, softmax-with-loss, SGD lr 0.1,
batch 100 drawn with replacement, 10,000 iterations, weights N(0, 0.01^2), accuracy on the whole
training and test sets once an epoch (every 60,000 / batch iterations).

Usage: numpy_book.py [--data DIR] [--iters N] [--seed N] [--dtype float32|float64]
                     [--hidden H [H ...]] [--batch B]
Prints one line per evaluation and a final `test_acc=... train_acc=... wall_s=...` line."""
import argparse, gzip, struct, time
from collections import OrderedDict
import numpy as np


def load_idx(path):
    with gzip.open(path, 'rb') as f:
        data = f.read()
    dims = data[3]
    shape = struct.unpack('>' + 'I' * dims, data[4:4 + 4 * dims])
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def softmax(x):
    x = x - x.max(axis=1, keepdims=True)  # no overflow in exp
    e = np.exp(x)
    return e / e.sum(axis=1, keepdims=True)


def cross_entropy_error(y, t):
    return -np.sum(np.log(y[np.arange(y.shape[0]), t] + 1e-7)) / y.shape[0]


class Relu:
    def forward(self, x):
        self.mask = x <= 0
        out = x.copy()
        out[self.mask] = 0
        return out

    def backward(self, dout):
        dout[self.mask] = 0
        return dout


class Affine:
    def __init__(self, W, b):
        self.W, self.b = W, b

    def forward(self, x):
        self.x = x
        return np.dot(x, self.W) + self.b

    def backward(self, dout):
        self.dW = np.dot(self.x.T, dout)
        self.db = np.sum(dout, axis=0)
        return np.dot(dout, self.W.T)


class SoftmaxWithLoss:
    def forward(self, x, t):
        self.t, self.y = t, softmax(x)
        return cross_entropy_error(self.y, t)

    def backward(self):
        dx = self.y.copy()
        dx[np.arange(self.t.shape[0]), self.t] -= 1
        return dx / self.t.shape[0]


class MultiLayerNet:
    """784-H1-...-Hn-10: Affine1, Relu1, ..., Affine(n+1), then softmax-with-loss. With one
    hidden layer of 50 this is the book's TwoLayerNet (same parameters, same random draws)."""

    def __init__(self, rng, dtype, input_size=784, hidden_size_list=(50,), output_size=10, std=0.01):
        sizes = [input_size] + list(hidden_size_list) + [output_size]
        self.hidden_layer_num = len(hidden_size_list)
        self.params = {}
        for idx in range(1, len(sizes)):
            self.params['W' + str(idx)] = (std * rng.standard_normal((sizes[idx - 1], sizes[idx]))).astype(dtype)
            self.params['b' + str(idx)] = np.zeros(sizes[idx], dtype)
        self.layers = OrderedDict()
        for idx in range(1, self.hidden_layer_num + 1):
            self.layers['Affine' + str(idx)] = Affine(self.params['W' + str(idx)], self.params['b' + str(idx)])
            self.layers['Relu' + str(idx)] = Relu()
        idx = self.hidden_layer_num + 1
        self.layers['Affine' + str(idx)] = Affine(self.params['W' + str(idx)], self.params['b' + str(idx)])
        self.last_layer = SoftmaxWithLoss()

    def predict(self, x):
        for layer in self.layers.values():
            x = layer.forward(x)
        return x

    def accuracy(self, x, t):
        return float(np.mean(self.predict(x).argmax(axis=1) == t))

    def gradient(self, x, t):
        loss = self.last_layer.forward(self.predict(x), t)
        dout = self.last_layer.backward()
        for layer in reversed(list(self.layers.values())):
            dout = layer.backward(dout)
        grads = {}
        for idx in range(1, self.hidden_layer_num + 2):
            grads['W' + str(idx)] = self.layers['Affine' + str(idx)].dW
            grads['b' + str(idx)] = self.layers['Affine' + str(idx)].db
        return loss, grads


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--data', default='data/mnist')
    ap.add_argument('--iters', type=int, default=10000)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--dtype', default='float32', choices=['float32', 'float64'])
    ap.add_argument('--hidden', type=int, nargs='+', default=[50])
    ap.add_argument('--batch', type=int, default=100)
    a = ap.parse_args()
    start = time.perf_counter()
    dtype = np.dtype(a.dtype)
    x_train = load_idx(f'{a.data}/train-images-idx3-ubyte.gz').reshape(-1, 784).astype(dtype) / dtype.type(255)
    t_train = load_idx(f'{a.data}/train-labels-idx1-ubyte.gz').astype(np.int64)
    x_test = load_idx(f'{a.data}/t10k-images-idx3-ubyte.gz').reshape(-1, 784).astype(dtype) / dtype.type(255)
    t_test = load_idx(f'{a.data}/t10k-labels-idx1-ubyte.gz').astype(np.int64)
    rng = np.random.default_rng(a.seed)
    net = MultiLayerNet(rng, dtype, hidden_size_list=a.hidden)
    lr, batch, train_size = dtype.type(0.1), a.batch, x_train.shape[0]
    iter_per_epoch = max(train_size // batch, 1)
    for i in range(a.iters):
        mask = rng.choice(train_size, batch)
        loss, grads = net.gradient(x_train[mask], t_train[mask])
        for key in net.params:
            net.params[key] -= lr * grads[key]  # in place: the layers hold the same arrays
        if i % iter_per_epoch == 0:
            print(f'iter {i} train acc {net.accuracy(x_train, t_train):.4f} test acc {net.accuracy(x_test, t_test):.4f}', flush=True)
    test_acc, train_acc = net.accuracy(x_test, t_test), net.accuracy(x_train, t_train)
    print(f'test_acc={test_acc:.4f} train_acc={train_acc:.4f} wall_s={time.perf_counter() - start:.2f}')


main()
