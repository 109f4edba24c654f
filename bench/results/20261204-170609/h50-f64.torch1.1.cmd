/usr/bin/python3 bench/peers/torch_peer.py --hidden 50 --batch 100 --iters 2000 --dtype float64 --threads 1
