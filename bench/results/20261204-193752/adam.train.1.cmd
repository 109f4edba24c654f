bench/results/20261204-193752/cli/Backprop.Cli train --hidden 100 100 100 100 --batch 128 --iters 2000 --weight-init he --optimizer adam --lr 0.001
