#!/usr/bin/env python3
"""Peer for the chapter 6 rows of issue 13: the Adam run of `backprop compare optimizers` as a
PyTorch user writes it (nn.Sequential, CrossEntropyLoss, optim.Adam), on the CPU: 784-100x4-10
ReLU, He's initial weights (N(0, 2/n_in), biases 0), Adam lr 0.001 (betas 0.9, 0.999), batch 128
drawn with replacement, 2000 iterations, float32. --batchnorm puts BatchNorm1d after each hidden
Linear and --dropout R a Dropout(R) after each hidden ReLU (the book's MultiLayerNetExtend order:
Affine, BatchNorm, ReLU, Dropout). The accuracy on the whole training and test sets is measured,
in eval mode, after every epoch (60,000 / batch steps) and after the last step, as `backprop
train` does.

Where PyTorch's modules differ from the book's (and from backprop's), kept as a PyTorch user gets
them except where noted: Adam's eps 1e-8 added to the bias-corrected sqrt(v) (the book: 1e-7 to
sqrt(v), the correction folded into lr); Dropout is inverted (train x*mask/(1-p), eval x);
BatchNorm1d is given the book's eps 1e-6 (PyTorch's default 1e-5) and keeps its own running
variance (unbiased, starting at 1). The speed does not depend on these.

Usage: torch_ch06.py [--data DIR] [--iters N] [--seed N] [--threads N] [--batch B]
                     [--hidden H [H ...]] [--lr LR] [--batchnorm] [--dropout R]
                     [--dtype float32|float64]
Prints a final `test_acc=... train_acc=... wall_s=... threads=...` line."""
import argparse, gzip, math, time
import numpy as np
import torch


def load_idx(path, images):
    data = gzip.open(path).read()
    return np.frombuffer(data, np.uint8, offset=16 if images else 8)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--data', default='data/mnist')
    ap.add_argument('--iters', type=int, default=2000)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--batch', type=int, default=128)
    ap.add_argument('--hidden', type=int, nargs='+', default=[100, 100, 100, 100])
    ap.add_argument('--lr', type=float, default=0.001)
    ap.add_argument('--batchnorm', action='store_true')
    ap.add_argument('--dropout', type=float, default=None)
    ap.add_argument('--dtype', default='float32', choices=['float32', 'float64'])
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
    for k, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        linear = torch.nn.Linear(n_in, n_out)
        with torch.no_grad():
            linear.weight.normal_(0.0, math.sqrt(2.0 / n_in))  # He: N(0, 2/n_in)
            linear.bias.zero_()
        layers.append(linear)
        if k < len(sizes) - 2:  # a hidden layer
            if a.batchnorm:
                layers.append(torch.nn.BatchNorm1d(n_out, eps=1e-6, momentum=0.1))
            layers.append(torch.nn.ReLU())
            if a.dropout is not None:
                layers.append(torch.nn.Dropout(a.dropout))
    model = torch.nn.Sequential(*layers).to(dtype)
    optimizer = torch.optim.Adam(model.parameters(), lr=a.lr, betas=(0.9, 0.999))
    loss_fn = torch.nn.CrossEntropyLoss()

    @torch.no_grad()
    def accuracy(x, t):
        model.eval()
        # the whole set in one forward pass, as a PyTorch user writes it (and as torch_peer.py does)
        correct = (model(x).argmax(dim=1) == t).float().mean().item()
        model.train()
        return correct

    iter_per_epoch = max(x_train.shape[0] // a.batch, 1)
    train_acc = test_acc = float('nan')
    for i in range(a.iters):
        batch = torch.randint(0, x_train.shape[0], (a.batch,))
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x_train[batch]), t_train[batch])
        loss.backward()
        optimizer.step()
        if (i + 1) % iter_per_epoch == 0 or i + 1 == a.iters:
            train_acc, test_acc = accuracy(x_train, t_train), accuracy(x_test, t_test)
    print(f'test_acc={test_acc:.4f} train_acc={train_acc:.4f} wall_s={time.perf_counter() - start:.2f} threads={torch.get_num_threads()}')


main()
