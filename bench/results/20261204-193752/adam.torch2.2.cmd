/usr/bin/python3 bench/peers/torch_ch06.py --hidden 100 100 100 100 --batch 128 --iters 2000 --lr 0.001 --threads 2
