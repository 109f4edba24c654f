#!/usr/bin/env python3
"""Peer: the book's recipe as a PyTorch user writes it (nn.Sequential, CrossEntropyLoss,
optim.SGD), on the CPU with one thread by default: 784-50-10 ReLU, lr 0.1, batch 100 drawn
with replacement, 10,000 iterations, weights N(0, 0.01^2), accuracy on the whole training and
test sets once an epoch (every 60,000 / batch iterations, as the book's loop does). --hidden
gives more or wider hidden layers (784-H1-...-Hn-10, ReLU between them).

Usage: torch_peer.py [--data DIR] [--iters N] [--seed N] [--dtype float32|float64] [--threads N]
                     [--hidden H [H ...]] [--batch B]
Prints a final `test_acc=... train_acc=... wall_s=...` line."""
import argparse, gzip, time
import numpy as np
import torch


def load_idx(path, images):
    data = gzip.open(path).read()
    return np.frombuffer(data, np.uint8, offset=16 if images else 8)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--data', default='data/mnist')
    ap.add_argument('--iters', type=int, default=10000)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--dtype', default='float32', choices=['float32', 'float64'])
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--hidden', type=int, nargs='+', default=[50])
    ap.add_argument('--batch', type=int, default=100)
    a = ap.parse_args()
    start = time.perf_counter()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    dtype = getattr(torch, a.dtype)
    x_train = torch.from_numpy(load_idx(f'{a.data}/train-images-idx3-ubyte.gz', True).reshape(-1, 784).copy()).to(dtype) / 255
    t_train = torch.from_numpy(load_idx(f'{a.data}/train-labels-idx1-ubyte.gz', False).astype(np.int64))
    x_test = torch.from_numpy(load_idx(f'{a.data}/t10k-images-idx3-ubyte.gz', True).reshape(-1, 784).copy()).to(dtype) / 255
    t_test = torch.from_numpy(load_idx(f'{a.data}/t10k-labels-idx1-ubyte.gz', False).astype(np.int64))

    sizes = [784] + a.hidden + [10]
    layers = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [torch.nn.Linear(n_in, n_out), torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers[:-1]).to(dtype)  # no ReLU after the last Linear
    with torch.no_grad():
        for layer in model[::2]:
            layer.weight.normal_(0.0, 0.01)
            layer.bias.zero_()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss_fn = torch.nn.CrossEntropyLoss()

    @torch.no_grad()
    def accuracy(x, t):
        return (model(x).argmax(dim=1) == t).float().mean().item()

    iter_per_epoch = max(x_train.shape[0] // a.batch, 1)
    for i in range(a.iters):
        batch = torch.randint(0, x_train.shape[0], (a.batch,))
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x_train[batch]), t_train[batch])
        loss.backward()
        optimizer.step()
        if i % iter_per_epoch == 0:
            accuracy(x_train, t_train), accuracy(x_test, t_test)
    test_acc, train_acc = accuracy(x_test, t_test), accuracy(x_train, t_train)
    print(f'test_acc={test_acc:.4f} train_acc={train_acc:.4f} wall_s={time.perf_counter() - start:.2f} threads={torch.get_num_threads()}')


main()
