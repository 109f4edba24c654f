bench/results/20261204-170011/cli/Backprop.Cli train --hidden 50 --batch 100 --iters 2000
