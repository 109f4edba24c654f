bench/results/accuracy-20261204-185301/cli/Backprop.Cli train --hidden 100 100 --weight-init he --optimizer adam --lr 0.001 --epochs 20 --seed 3
